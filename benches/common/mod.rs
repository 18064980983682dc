//! What the criterion benches and the table printer (`examples/bench_table.rs`) share:
//! the shapes of issue 6, one workspace per case, our kernels, a plain scalar
//! implementation of each, and the copy that sets the bandwidth limit.
//!
//! Limit: a kernel's *minimum traffic* (bytes that must cross the memory system per
//! element, see `traffic`) is compared with `copy_from_slice` moving the same number
//! of bytes (half read, half written) in the same process.

#![allow(dead_code)]

use batchnorm::{moments, BatchNorm, Grads, Layout, Moments, Momentum, Running, Shape};

/// Lower end of L2 per core on the machines we compare on; a channel whose values
/// (times the tensors read) fit in half of it stays cached between the two passes.
const L2_BYTES: usize = 2 << 20;

/// One shape of the issue.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
}

pub const CASES: [Case; 6] = [
    Case {
        name: "S1",
        batch: 1,
        channels: 64,
        spatial: 56 * 56,
    },
    Case {
        name: "S2",
        batch: 32,
        channels: 64,
        spatial: 56 * 56,
    },
    Case {
        name: "S3",
        batch: 32,
        channels: 256,
        spatial: 56 * 56,
    },
    Case {
        name: "S4",
        batch: 256,
        channels: 1024,
        spatial: 1,
    },
    Case {
        name: "S5",
        batch: 8,
        channels: 512,
        spatial: 7 * 7,
    },
    Case {
        name: "S6",
        batch: 16,
        channels: 3,
        spatial: 224 * 224,
    },
];

impl Case {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    /// The layouts that are different memory for this shape (one when `S = 1`).
    pub fn layouts(&self) -> &'static [Layout] {
        if self.spatial == 1 {
            &[Layout::ChannelsFirst]
        } else {
            &[Layout::ChannelsFirst, Layout::ChannelsLast]
        }
    }

    pub fn shape(&self, layout: Layout) -> Shape {
        match layout {
            Layout::ChannelsFirst => Shape::channels_first(self.batch, self.channels, self.spatial),
            Layout::ChannelsLast => Shape::channels_last(self.batch, self.channels, self.spatial),
        }
    }
}

pub fn layout_name(case: &Case, layout: Layout) -> &'static str {
    match (case.spatial, layout) {
        (1, _) => "NC",
        (_, Layout::ChannelsFirst) => "NCHW",
        (_, Layout::ChannelsLast) => "NHWC",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Moments,
    Eval,
    Train,
    Backward,
}

pub const KERNELS: [Kernel; 4] = [
    Kernel::Moments,
    Kernel::Eval,
    Kernel::Train,
    Kernel::Backward,
];

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Moments => "moments",
            Kernel::Eval => "eval",
            Kernel::Train => "train",
            Kernel::Backward => "backward",
        }
    }
}

/// Minimum bytes of memory traffic per element (issue 6): moments reads x once; eval
/// reads x and writes y; train reads x twice and writes y, backward reads dy and x twice
/// and writes dx — except channels-first where one channel's values fit in L2, so the
/// second read hits the cache.
pub fn traffic_per_elem(case: &Case, layout: Layout, kernel: Kernel) -> usize {
    let channel_bytes = case.batch * case.spatial * 4;
    let reuse = layout == Layout::ChannelsFirst && case.spatial > 1;
    match kernel {
        Kernel::Moments => 4,
        Kernel::Eval => 8,
        Kernel::Train if reuse && channel_bytes <= L2_BYTES / 2 => 8,
        Kernel::Train => 12,
        Kernel::Backward if reuse && 2 * channel_bytes <= L2_BYTES / 2 => 12,
        Kernel::Backward => 20,
    }
}

pub fn traffic_bytes(case: &Case, layout: Layout, kernel: Kernel) -> usize {
    traffic_per_elem(case, layout, kernel) * case.len()
}

/// Deterministic pseudo-normal values around `mean` (sum of uniforms; no denormals).
fn fill(xs: &mut [f32], seed: u64, mean: f32) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for x in xs {
        let mut u = 0.0f32;
        for _ in 0..4 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            u += (s >> 40) as f32 / (1u64 << 24) as f32;
        }
        *x = mean + (u - 2.0);
    }
}

/// Every buffer a case needs, allocated once and reused by every kernel.
pub struct Work {
    pub case: Case,
    pub layout: Layout,
    pub shape: Shape,
    pub x: Vec<f32>,
    pub dy: Vec<f32>,
    pub out: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub invstd: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
    pub parts: Vec<Moments>,
    /// Copy buffers, as long as the largest copy any kernel of the case needs.
    pub copy_src: Vec<f32>,
    pub copy_dst: Vec<f32>,
}

impl Work {
    pub fn new(case: Case, layout: Layout) -> Work {
        let (len, c) = (case.len(), case.channels);
        let mut x = vec![0.0; len];
        fill(&mut x, 1, 0.5);
        let mut dy = vec![0.0; len];
        fill(&mut dy, 2, 0.0);
        let mut gamma = vec![0.0; c];
        fill(&mut gamma, 3, 1.0);
        let mut beta = vec![0.0; c];
        fill(&mut beta, 4, 0.0);
        let copy_len = KERNELS
            .iter()
            .map(|&k| copy_floats(traffic_bytes(&case, layout, k)))
            .max()
            .unwrap_or(0);
        let mut work = Work {
            case,
            layout,
            shape: case.shape(layout),
            x,
            dy,
            out: vec![0.0; len],
            gamma,
            beta,
            mean: vec![0.0; c],
            invstd: vec![0.0; c],
            running_mean: vec![0.0; c],
            running_var: vec![1.0; c],
            dgamma: vec![0.0; c],
            dbeta: vec![0.0; c],
            parts: vec![Moments::EMPTY; c],
            copy_src: vec![1.0; copy_len],
            copy_dst: vec![0.0; copy_len],
        };
        // Real statistics, so backward and eval see the values they would in use.
        work.run(Kernel::Train);
        work.running_mean.copy_from_slice(&work.mean);
        work.running_var
            .iter_mut()
            .zip(&work.invstd)
            .for_each(|(v, i)| *v = 1.0 / (i * i));
        work
    }

    /// Our kernel.
    pub fn run(&mut self, kernel: Kernel) {
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: Some(&self.gamma),
            beta: Some(&self.beta),
        };
        let r = match kernel {
            Kernel::Moments => moments(&self.x, self.shape, &mut self.parts),
            Kernel::Eval => bn.eval(
                &self.x,
                &mut self.out,
                self.shape,
                &self.running_mean,
                &self.running_var,
            ),
            Kernel::Train => {
                let running = Running {
                    mean: &mut self.running_mean,
                    var: &mut self.running_var,
                    momentum: Momentum::Exponential(0.1),
                };
                bn.train(
                    &self.x,
                    &mut self.out,
                    self.shape,
                    &mut self.mean,
                    &mut self.invstd,
                    Some(running),
                )
            }
            Kernel::Backward => {
                let grads = Grads {
                    dx: &mut self.out,
                    dgamma: Some(&mut self.dgamma),
                    dbeta: Some(&mut self.dbeta),
                };
                bn.backward(
                    &self.dy,
                    &self.x,
                    self.shape,
                    &self.mean,
                    &self.invstd,
                    grads,
                )
            }
        };
        r.expect("valid benchmark arguments");
    }

    /// The copy of as many bytes as `kernel`'s minimum traffic.
    pub fn copy(&mut self, kernel: Kernel) {
        let n = copy_floats(traffic_bytes(&self.case, self.layout, kernel));
        self.copy_dst[..n].copy_from_slice(&self.copy_src[..n]);
    }

    /// The straightforward scalar implementation.
    pub fn scalar(&mut self, kernel: Kernel) {
        let (n, c, s) = (self.case.batch, self.case.channels, self.case.spatial);
        let idx = Index {
            n,
            c,
            s,
            last: self.layout == Layout::ChannelsLast,
        };
        let eps = 1e-5;
        match kernel {
            Kernel::Moments => {
                let (mean, var) = scalar::moments(&self.x, idx);
                self.mean.copy_from_slice(&mean);
                self.invstd
                    .iter_mut()
                    .zip(&var)
                    .for_each(|(o, v)| *o = 1.0 / (v + eps).sqrt());
            }
            Kernel::Eval => {
                let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
                    .map(|i| {
                        let sc = self.gamma[i] / (self.running_var[i] + eps).sqrt();
                        (sc, self.beta[i] - self.running_mean[i] * sc)
                    })
                    .unzip();
                scalar::affine(&self.x, &mut self.out, idx, &scale, &shift);
            }
            Kernel::Train => {
                let (mean, var) = scalar::moments(&self.x, idx);
                let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
                    .map(|i| {
                        let inv = 1.0 / (var[i] + eps).sqrt();
                        let sc = self.gamma[i] * inv;
                        self.invstd[i] = inv;
                        self.running_mean[i] = 0.9 * self.running_mean[i] + 0.1 * mean[i];
                        let m = (n * s) as f32;
                        self.running_var[i] =
                            0.9 * self.running_var[i] + 0.1 * var[i] * m / (m - 1.0);
                        (sc, self.beta[i] - mean[i] * sc)
                    })
                    .unzip();
                self.mean.copy_from_slice(&mean);
                scalar::affine(&self.x, &mut self.out, idx, &scale, &shift);
            }
            Kernel::Backward => scalar::backward(
                &self.dy,
                &self.x,
                &mut self.out,
                idx,
                &self.mean,
                &self.invstd,
                &self.gamma,
                &mut self.dgamma,
                &mut self.dbeta,
            ),
        }
    }
}

/// Floats to copy so that reading and writing them moves `bytes` bytes.
fn copy_floats(bytes: usize) -> usize {
    bytes / 8
}

/// The shape, for the scalar loops.
#[derive(Clone, Copy)]
pub struct Index {
    n: usize,
    c: usize,
    s: usize,
    last: bool,
}

/// What a user would write: f32 loops, per-channel constants hoisted, no SIMD by hand
/// (the compiler vectorizes what it can). Two passes for the variance, as a careful
/// user does to keep it accurate.
mod scalar {
    use super::Index;

    /// `f(channel, run)` over every contiguous run of a single channel's values (NCHW),
    /// or `g(row)` over every row of all channels (NHWC).
    pub fn moments(x: &[f32], i: Index) -> (Vec<f32>, Vec<f32>) {
        let m = (i.n * i.s) as f32;
        let mut mean = vec![0.0f32; i.c];
        let mut var = vec![0.0f32; i.c];
        if i.last {
            for row in x.chunks_exact(i.c) {
                for (acc, &v) in mean.iter_mut().zip(row) {
                    *acc += v;
                }
            }
            mean.iter_mut().for_each(|v| *v /= m);
            for row in x.chunks_exact(i.c) {
                for ((acc, &v), &mu) in var.iter_mut().zip(row).zip(&mean) {
                    *acc += (v - mu) * (v - mu);
                }
            }
        } else {
            for c in 0..i.c {
                let mut sum = 0.0f32;
                for n in 0..i.n {
                    for &v in &x[(n * i.c + c) * i.s..][..i.s] {
                        sum += v;
                    }
                }
                let mu = sum / m;
                let mut sq = 0.0f32;
                for n in 0..i.n {
                    for &v in &x[(n * i.c + c) * i.s..][..i.s] {
                        sq += (v - mu) * (v - mu);
                    }
                }
                mean[c] = mu;
                var[c] = sq;
            }
        }
        var.iter_mut().for_each(|v| *v /= m);
        (mean, var)
    }

    pub fn affine(x: &[f32], y: &mut [f32], i: Index, scale: &[f32], shift: &[f32]) {
        if i.last {
            for (xr, yr) in x.chunks_exact(i.c).zip(y.chunks_exact_mut(i.c)) {
                for c in 0..i.c {
                    yr[c] = xr[c] * scale[c] + shift[c];
                }
            }
        } else {
            for n in 0..i.n {
                for c in 0..i.c {
                    let at = (n * i.c + c) * i.s;
                    for (yv, &xv) in y[at..][..i.s].iter_mut().zip(&x[at..][..i.s]) {
                        *yv = xv * scale[c] + shift[c];
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        dy: &[f32],
        x: &[f32],
        dx: &mut [f32],
        i: Index,
        mean: &[f32],
        invstd: &[f32],
        gamma: &[f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let m = (i.n * i.s) as f32;
        let mut sum_dy = vec![0.0f32; i.c];
        let mut sum_dyx = vec![0.0f32; i.c];
        if i.last {
            for (dr, xr) in dy.chunks_exact(i.c).zip(x.chunks_exact(i.c)) {
                for c in 0..i.c {
                    sum_dy[c] += dr[c];
                    sum_dyx[c] += dr[c] * (xr[c] - mean[c]);
                }
            }
        } else {
            for c in 0..i.c {
                let (mut a, mut b) = (0.0f32, 0.0f32);
                for n in 0..i.n {
                    let at = (n * i.c + c) * i.s;
                    for (&d, &v) in dy[at..][..i.s].iter().zip(&x[at..][..i.s]) {
                        a += d;
                        b += d * (v - mean[c]);
                    }
                }
                sum_dy[c] = a;
                sum_dyx[c] = b;
            }
        }
        // dx = γ·invstd·(dy − Σdy/m − x̂·Σdy·x̂/m)
        let k: Vec<f32> = (0..i.c).map(|c| gamma[c] * invstd[c]).collect();
        let db: Vec<f32> = (0..i.c).map(|c| sum_dy[c] / m).collect();
        let dg: Vec<f32> = (0..i.c)
            .map(|c| sum_dyx[c] * invstd[c] * invstd[c] / m)
            .collect();
        for c in 0..i.c {
            dbeta[c] = sum_dy[c];
            dgamma[c] = sum_dyx[c] * invstd[c];
        }
        if i.last {
            let rows = dy
                .chunks_exact(i.c)
                .zip(x.chunks_exact(i.c))
                .zip(dx.chunks_exact_mut(i.c));
            for ((dr, xr), or) in rows {
                for c in 0..i.c {
                    or[c] = k[c] * (dr[c] - db[c] - (xr[c] - mean[c]) * dg[c]);
                }
            }
        } else {
            for n in 0..i.n {
                for c in 0..i.c {
                    let at = (n * i.c + c) * i.s;
                    let it = dy[at..][..i.s]
                        .iter()
                        .zip(&x[at..][..i.s])
                        .zip(&mut dx[at..][..i.s]);
                    for ((&d, &v), o) in it {
                        *o = k[c] * (d - db[c] - (v - mean[c]) * dg[c]);
                    }
                }
            }
        }
    }
}
