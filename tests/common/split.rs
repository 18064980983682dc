//! Checks of a train step whose batch was split into parts (ranks, threads) against
//! the f64 oracle of `common` on the whole batch, under its tolerance model: the
//! distributed tests (tests/distributed.rs), the parallel ones (tests/parallel.rs)
//! and the MPI example (integrations/mpi) all judge their results here.
//!
//! Included with `#[path = "common/split.rs"] mod split;` next to `mod common;`.
#![allow(dead_code)]

use crate::common::*;
use batchnorm::{BatchNorm, Correction, Shape};

/// The parts of a batch of `batch` samples cut at `cuts` (sample indices, any order),
/// as `(first sample, samples)`.
pub fn parts(batch: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut bounds = vec![0, batch];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < batch));
    bounds.sort_unstable();
    bounds.dedup();
    bounds.windows(2).map(|w| (w[0], w[1] - w[0])).collect()
}

/// The part of `x` that holds samples `first .. first + n` (both layouts hold a
/// sample's values contiguously), with its shape.
pub fn part_of(x: &[f32], shape: Shape, (first, n): (usize, usize)) -> (&[f32], Shape) {
    let per = shape.channels * shape.spatial;
    let part = Shape { batch: n, ..shape };
    (&x[first * per..(first + n) * per], part)
}

/// Running mean and variance.
pub type Stats<'a> = (&'a [f32], &'a [f32]);

/// What a train forward produced.
pub struct TrainOut<'a> {
    pub y: &'a [f32],
    pub save_mean: &'a [f32],
    pub save_invstd: &'a [f32],
    /// Running statistics before and after, with the factor of the update and the
    /// variance correction.
    pub running: Option<(Stats<'a>, Stats<'a>, f64, Correction)>,
}

/// Checks a train forward of the whole batch `x` against the oracle; panics with
/// every mismatch.
pub fn check_train(what: &str, bn: &BatchNorm, x: &[f32], shape: &Shape, out: &TrainOut) {
    let running = out.running.map(|((rm, rv), _, f, k)| (rm, rv, f, k));
    let r = ref_train(x, shape, bn.gamma, bn.beta, bn.eps, running);
    let mut ck = Checker::new(what.to_string());
    for c in 0..shape.channels {
        let s = &r.stats[c];
        let (g, b) = (gamma_of(bn.gamma, c), beta_of(bn.beta, c));
        ck.close(
            "save_mean",
            c,
            out.save_mean[c] as f64,
            s.mean,
            tol::mean(s),
        );
        let t = tol::invstd(s, bn.eps);
        ck.close("save_invstd", c, out.save_invstd[c] as f64, r.invstd[c], t);
        for i in channel_indices(shape, c) {
            let dev = x[i] as f64 - s.mean;
            let t = tol::train_y(dev, s, bn.eps, g, r.invstd[c], b, r.y[i]);
            ck.close("y", i, out.y[i] as f64, r.y[i], t);
        }
        if let (Some(((rm0, rv0), (rm, rv), f, k)), Some((erm, erv))) = (out.running, &r.running) {
            let t = tol::running(rm0[c] as f64, s.mean, f, tol::mean(s));
            ck.close("running_mean", c, rm[c] as f64, erm[c], t);
            let t = tol::running(rv0[c] as f64, s.batch_var(k), f, tol::batch_var(s, k));
            ck.close("running_var", c, rv[c] as f64, erv[c], t);
        }
    }
    ck.finish();
}

/// Checks a train backward of the whole batch (from the f32 `save_mean` and
/// `save_invstd` it was given) against the oracle.
#[allow(clippy::too_many_arguments)]
pub fn check_backward(
    what: &str,
    bn: &BatchNorm,
    dy: &[f32],
    x: &[f32],
    shape: &Shape,
    saved: (&[f32], &[f32]),
    dx: &[f32],
    dgamma: &[f32],
    dbeta: &[f32],
) {
    let r = ref_backward(dy, x, shape, bn.gamma, saved.0, saved.1);
    let t = tol::backward(&r, dy, shape);
    let mut ck = Checker::new(what.to_string());
    for c in 0..shape.channels {
        ck.close("dgamma", c, dgamma[c] as f64, r.dgamma[c], t.dgamma[c]);
        ck.close("dbeta", c, dbeta[c] as f64, r.dbeta[c], t.dbeta[c]);
        for i in channel_indices(shape, c) {
            ck.close("dx", i, dx[i] as f64, r.dx[i], t.dx[i]);
        }
    }
    ck.finish();
}
