//! The data set: interleaved 2-D spirals with noise, from a small seeded PRNG, so every
//! run on every machine sees the same points.

use std::f64::consts::TAU;

/// SplitMix64 (Steele, Lea, Flood 2014): a few lines, good enough for sampling and
/// shuffling, and the same stream everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box–Muller (one of the pair is enough here).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // in (0, 1]: ln is finite
        (-2.0 * u.ln()).sqrt() * (TAU * self.uniform()).cos()
    }

    /// Uniform in 0..n (n ≤ 2³², so the modulo bias is below 2⁻³²).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Labelled points: `x` is `[n][2]`, `label[i]` the class of point `i`.
pub struct Points {
    pub x: Vec<f32>,
    pub label: Vec<usize>,
}

impl Points {
    pub fn len(&self) -> usize {
        self.label.len()
    }

    /// The points at `indices`, in that order (a mini-batch or a split).
    pub fn select(&self, indices: &[usize]) -> Points {
        Points {
            x: indices
                .iter()
                .flat_map(|&i| [self.x[2 * i], self.x[2 * i + 1]])
                .collect(),
            label: indices.iter().map(|&i| self.label[i]).collect(),
        }
    }
}

/// `classes` spiral arms of `per_class` points each, winding `turns` times from the
/// centre to radius 1. Arm `c` starts at angle `c/classes` of a full turn; every point
/// gets Gaussian noise of standard deviation `noise` in x and y, so neighbouring arms
/// overlap a little near the centre and no classifier reaches 100 %.
pub fn spirals(classes: usize, per_class: usize, turns: f64, noise: f64, rng: &mut Rng) -> Points {
    let mut points = Points {
        x: Vec::with_capacity(2 * classes * per_class),
        label: Vec::with_capacity(classes * per_class),
    };
    for class in 0..classes {
        for _ in 0..per_class {
            // √u: points spread evenly over the disc rather than crowding the centre
            let r = rng.uniform().sqrt();
            let angle = TAU * (class as f64 / classes as f64 + turns * r);
            let x = r * angle.cos() + noise * rng.normal();
            let y = r * angle.sin() + noise * rng.normal();
            points.x.extend([x as f32, y as f32]);
            points.label.push(class);
        }
    }
    points
}

/// A random split into (train, test), `test_fraction` of the points in test.
pub fn split(points: &Points, test_fraction: f64, rng: &mut Rng) -> (Points, Points) {
    let mut order: Vec<usize> = (0..points.len()).collect();
    rng.shuffle(&mut order);
    let n_test = (points.len() as f64 * test_fraction).round() as usize;
    (
        points.select(&order[n_test..]),
        points.select(&order[..n_test]),
    )
}
