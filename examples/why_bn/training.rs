//! The training loop's schedule, shared by the `why_bn` and `small_batch` demos: the
//! order of the mini-batches and the learning rate at each step.

use std::f64::consts::PI;

use crate::data::{Points, Rng};

/// The mlp demo's seed of the batch order.
pub const SEED_ORDER: u64 = 7;

/// The same sequence of whole mini-batches for every run (every BN step sees the
/// same batch size).
pub struct Batches<'a> {
    train: &'a Points,
    order: Vec<usize>,
    rng: Rng,
    batch: usize,
}

impl<'a> Batches<'a> {
    pub fn new(train: &'a Points, batch: usize) -> Self {
        Batches {
            train,
            order: (0..train.len()).collect(),
            rng: Rng::new(SEED_ORDER),
            batch,
        }
    }

    pub fn per_epoch(&self) -> usize {
        self.train.len() / self.batch
    }

    /// The batches of the next epoch.
    pub fn epoch(&mut self) -> Vec<Points> {
        self.rng.shuffle(&mut self.order);
        let chunks = self.order.chunks_exact(self.batch);
        chunks.map(|indices| self.train.select(indices)).collect()
    }
}

/// From `peak` down to 0 along half a cosine, as in the mlp demo.
pub fn cosine(peak: f32, step: usize, total: usize) -> f32 {
    let progress = step as f64 / total as f64;
    (f64::from(peak) * 0.5 * (1.0 + (PI * progress).cos())) as f32
}
