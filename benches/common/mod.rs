//! What the criterion benches and the table printer (`examples/bench_table.rs`) share:
//! the shapes, one workspace per case, our kernels, a plain scalar implementation of
//! each, and the copy that sets the bandwidth limit.
//!
//! Limit: a kernel's *minimum traffic* (bytes that must cross the memory system per
//! element, see [`traffic_per_elem`]) is compared with `copy_from_slice` moving the same
//! number of bytes (half read, half written) in the same process.
//!
//! Adding a kernel: one line in [`kernels!`] (variant, name, family), then the compiler
//! asks for its arm in [`Kernel::traffic`], [`Work::run`] and [`Work::scalar`] (the
//! matches are exhaustive); give [`Work`] whatever buffers it needs beyond these.
//! `bench_table --list`, `benches/pytorch_compare.py` and `benches/readme_tables.py`
//! pick it up from there (the PyTorch script needs its PyTorch call to fill that column).

#![allow(dead_code)]

use std::hint::black_box;

mod norms;

use batchnorm::{
    moments, BatchNorm, Fusion, FusionGrad, Grads, Layout, Moments, Momentum, Renorm, RenormSaved,
    RenormSavedMut, Running, RunningStats, Saved, SavedMut, Shape,
};

/// The L2 per core assumed by the traffic model: a channel whose values (times the
/// tensors re-read) fit in half of it stays cached between two passes, so the second
/// read is not counted. Generous on purpose (this machine kind has 0.5–1 MiB): assuming
/// more reuse lowers the minimum traffic and makes the limit stricter, never looser.
const L2_BYTES: usize = 2 << 20;

/// eps of every kernel, ours and scalar.
const EPS: f32 = 1e-5;
/// Exponential momentum of the running statistics (PyTorch's default).
const MOMENTUM: f32 = 0.1;
/// Batch Renormalization's clipping limits: the relaxed end of the paper's schedule
/// (`rmax = 1`, `dmax = 0` would be plain batch norm).
pub const RENORM: Renorm = Renorm {
    rmax: 3.0,
    dmax: 5.0,
};

/// One shape of the comparison.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
    /// Tiny: what matters is the cost of a call, shown in µs per call.
    pub per_call: bool,
    /// Which normalization the case is for.
    pub norm: Norm,
}

/// The normalization a case measures: batch norm (every batch-norm kernel), or one
/// of its neighbours (their kernels only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    Batch,
    /// Layer and RMS norm over rows of `channels · spatial` values, one per sample.
    Rows,
    Group(usize),
    Instance,
}

const fn case(name: &'static str, batch: usize, channels: usize, spatial: usize) -> Case {
    Case {
        name,
        batch,
        channels,
        spatial,
        per_call: false,
        norm: Norm::Batch,
    }
}

const fn neighbour(
    name: &'static str,
    batch: usize,
    channels: usize,
    spatial: usize,
    norm: Norm,
) -> Case {
    Case {
        norm,
        ..case(name, batch, channels, spatial)
    }
}

const fn tiny(name: &'static str, batch: usize, channels: usize, spatial: usize) -> Case {
    Case {
        per_call: true,
        ..case(name, batch, channels, spatial)
    }
}

/// The shapes of /work/shared/ANCHORS.md, in its order (`S*` sized, `T*` per call),
/// then the neighbours' transformer and CNN shapes: layer and RMS norm on 4096 rows of
/// 768 and 32 rows of 4096 (`L*`), group norm N8 C256 56×56 in 32 groups (`G1`),
/// instance norm N4 C64 128×128 (`I1`).
pub const CASES: [Case; 12] = [
    case("S1", 1, 64, 56 * 56),
    case("S2", 32, 64, 56 * 56),
    case("S3", 32, 256, 56 * 56),
    case("S4", 256, 1024, 1),
    case("S5", 8, 512, 7 * 7),
    case("S6", 16, 3, 224 * 224),
    tiny("T0", 1, 8, 2 * 2),
    tiny("T1", 1, 64, 7 * 7),
    neighbour("L1", 4096, 768, 1, Norm::Rows),
    neighbour("L2", 32, 4096, 1, Norm::Rows),
    neighbour("G1", 8, 256, 56 * 56, Norm::Group(32)),
    neighbour("I1", 4, 64, 128 * 128, Norm::Instance),
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

    /// Whether `kernel` is measured on this case.
    pub fn runs(&self, kernel: Kernel) -> bool {
        use Kernel::*;
        match self.norm {
            Norm::Batch => kernel.norm_kernel().is_none(),
            Norm::Rows => matches!(
                kernel,
                LayerNorm | LayerNormBackward | RmsNorm | RmsNormBackward
            ),
            Norm::Group(_) => matches!(kernel, GroupNorm | GroupNormBackward),
            Norm::Instance => matches!(kernel, InstanceNorm | InstanceNormBackward),
        }
    }

    /// The statistics' units: rows, (sample, group) or (sample, channel).
    pub fn units(&self) -> usize {
        match self.norm {
            Norm::Batch => self.channels,
            Norm::Rows => self.batch,
            Norm::Group(g) => self.batch * g,
            Norm::Instance => self.batch * self.channels,
        }
    }

    /// Bytes of one unit of statistics (a row, a group or an instance of one sample).
    fn unit_bytes(&self) -> usize {
        let per = match self.norm {
            Norm::Batch => self.batch * self.spatial,
            Norm::Rows => self.channels * self.spatial,
            Norm::Group(g) => self.channels / g * self.spatial,
            Norm::Instance => self.spatial,
        };
        4 * per
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

/// Defines [`Kernel`], [`KERNELS`] (in table order) and each kernel's name and family
/// (the table of `benches/readme_tables.py` it goes into) from one line per kernel.
macro_rules! kernels {
    ($($(#[$doc:meta])* $variant:ident => $name:literal in $family:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kernel {
            $($(#[$doc])* $variant,)*
        }

        pub const KERNELS: &[Kernel] = &[$(Kernel::$variant,)*];

        impl Kernel {
            /// The name on the command line and in the CSV.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kernel::$variant => $name,)*
                }
            }

            /// Kernels of one family share a table.
            pub fn family(self) -> &'static str {
                match self {
                    $(Kernel::$variant => $family,)*
                }
            }
        }
    };
}

kernels! {
    /// `moments`: per-channel (count, mean, M2) in one read of x.
    Moments => "moments" in "forward",
    /// `BatchNorm::eval`: y = x·scale + shift from the running statistics.
    Eval => "eval" in "forward",
    /// `BatchNorm::train`: batch statistics, y, saved mean/invstd, running statistics.
    Train => "train" in "forward",
    /// `BatchNorm::backward`: dx, dγ, dβ from the saved mean and invstd.
    Backward => "backward" in "backward",
    /// `BatchNorm::backward_eval`: dx = dy·γ/√(rv + eps), dγ = Σdy·x̂, dβ = Σdy.
    BackwardEval => "backward_eval" in "backward",
    /// `BatchNorm::eval_fused` with `Fusion::Relu`: y = relu(x·scale + shift).
    EvalRelu => "eval_relu" in "fused",
    /// `BatchNorm::train_fused` with `Fusion::Relu`: train, y = relu(bn(x)).
    TrainRelu => "train_relu" in "fused",
    /// `BatchNorm::backward_fused` with `FusionGrad::Relu`: backward of g = dy masked by
    /// y > 0, y the output of `train_relu`.
    BackwardRelu => "backward_relu" in "fused",
    /// `BatchNorm::eval_fused` with `Fusion::AddRelu`: y = relu(x·scale + shift + z).
    EvalAddRelu => "eval_add_relu" in "fused",
    /// `BatchNorm::train_fused` with `Fusion::AddRelu`: train, y = relu(bn(x) + z).
    TrainAddRelu => "train_add_relu" in "fused",
    /// `BatchNorm::backward_fused` with `FusionGrad::AddRelu`: backward of g (dy masked
    /// by y > 0, y the output of `train_add_relu`), and dz = g.
    BackwardAddRelu => "backward_add_relu" in "fused",
    /// `BatchNorm::train_renorm` with [`RENORM`]: batch statistics, r and d from the
    /// running ones, y = γ·(x̂·r + d) + β, saved mean/invstd/r/d, running statistics.
    TrainRenorm => "train_renorm" in "renorm",
    /// `BatchNorm::backward_renorm`: dx = γ·r·invstd·(dy − Σdy/m − x̂·Σdy·x̂/m),
    /// dγ = r·Σdy·x̂ + d·Σdy, dβ = Σdy, from what `train_renorm` saved.
    BackwardRenorm => "backward_renorm" in "renorm",
    /// `LayerNorm::forward` over each row, with γ and β: y, saved mean/invstd.
    LayerNorm => "layer_norm" in "layer norm",
    /// `LayerNorm::backward`: dx, dγ, dβ.
    LayerNormBackward => "layer_norm_backward" in "layer norm",
    /// `RmsNorm::forward` with γ.
    RmsNorm => "rms_norm" in "rms norm",
    /// `RmsNorm::backward`: dx, dγ (and Σdy).
    RmsNormBackward => "rms_norm_backward" in "rms norm",
    /// `GroupNorm::forward` with γ and β.
    GroupNorm => "group_norm" in "group norm",
    /// `GroupNorm::backward`: dx, dγ, dβ.
    GroupNormBackward => "group_norm_backward" in "group norm",
    /// `InstanceNorm::forward` with γ and β, no running statistics (PyTorch's default).
    InstanceNorm => "instance_norm" in "instance norm",
    /// `InstanceNorm::backward`: dx, dγ, dβ.
    InstanceNormBackward => "instance_norm_backward" in "instance norm",
}

impl Kernel {
    pub fn from_name(name: &str) -> Option<Kernel> {
        KERNELS.iter().copied().find(|k| k.name() == name)
    }

    /// `Some` for the neighbours' kernels: whether it is a backward.
    fn norm_kernel(self) -> Option<bool> {
        use Kernel::*;
        match self {
            LayerNorm | RmsNorm | GroupNorm | InstanceNorm => Some(false),
            LayerNormBackward | RmsNormBackward | GroupNormBackward | InstanceNormBackward => {
                Some(true)
            }
            _ => None,
        }
    }

    /// Minimum traffic, in bytes per element (4 per f32 tensor read or written).
    ///
    /// `again` is what a second pass re-reads after a per-channel reduction: the
    /// inputs of the elementwise pass that the reduction pass read too. A tensor read
    /// by the elementwise pass only (z of `train_add_relu`) is read once, in `once`;
    /// a tensor written by the first pass and read by the second (dz of
    /// `backward_add_relu`) counts its write in `once` and its read in `again`, so it
    /// is free where it stays cached as x does. Only the re-read tensors count towards
    /// a channel's fit in the cache, though the first pass streams others through it
    /// too (dy and y of `backward_add_relu`): more reuse assumed, a stricter limit.
    pub fn traffic(self) -> Traffic {
        let (once, again) = match self {
            Kernel::Moments => (4, 0),       // read x
            Kernel::Eval => (8, 0),          // read x, write y
            Kernel::Train => (8, 4),         // read x, write y; read x again
            Kernel::Backward => (12, 8),     // read dy, x, write dx; read dy, x again
            Kernel::BackwardEval => (12, 0), // read dy, x, write dx (dx needs no sums)
            Kernel::EvalRelu => (8, 0),      // read x, write y
            Kernel::EvalAddRelu => (12, 0),  // read x, z, write y
            Kernel::TrainRelu => (8, 4),     // read x, write y; read x again
            Kernel::TrainAddRelu => (12, 4), // read x, z, write y; read x again
            // Pass 1 (sums of g) reads dy, y, x; pass 2 reads them again, writes dx.
            Kernel::BackwardRelu => (16, 12),
            // Pass 1 reads dy, y, x and writes dz = g; pass 2 reads dz, x, writes dx.
            Kernel::BackwardAddRelu => (20, 8),
            Kernel::TrainRenorm => (8, 4), // as train: r, d are per channel
            Kernel::BackwardRenorm => (12, 8), // as backward
            // The neighbours: as train (read x, write y; read x again) and backward
            // (read dy, x, write dx; read dy, x again), per row, group or instance.
            _ if self.norm_kernel() == Some(false) => (8, 4),
            _ => (12, 8),
        };
        Traffic { once, again }
    }
}

/// A kernel's minimum traffic, bytes per element.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    /// Every tensor the kernel reads or writes, once.
    pub once: usize,
    /// A second read (after a per-channel reduction) of `again / 4` tensors, which is
    /// free channels-first where one channel of them fits in half of [`L2_BYTES`].
    pub again: usize,
}

/// Minimum bytes of memory traffic per element: [`Kernel::traffic`], without the second
/// read where it hits the cache (channels-first, one channel of the re-read tensors in
/// half of L2).
pub fn traffic_per_elem(case: &Case, layout: Layout, kernel: Kernel) -> usize {
    let Traffic { once, again } = kernel.traffic();
    let fits = again / 4 * case.unit_bytes() <= L2_BYTES / 2;
    // Batch norm's channel is contiguous runs channels-first only; a neighbour's unit
    // (a row, a group or instance of one sample) is one sample's, in either layout.
    let reuse = match case.norm {
        Norm::Batch => layout == Layout::ChannelsFirst && case.spatial > 1 && fits,
        _ => fits,
    };
    once + if reuse { 0 } else { again }
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

/// Every buffer a case needs, allocated once (here) and reused by every kernel, ours and
/// scalar: nothing allocates inside [`Work::run`], [`Work::copy`] or [`Work::scalar`].
pub struct Work {
    pub case: Case,
    pub layout: Layout,
    pub shape: Shape,
    pub x: Vec<f32>,
    pub dy: Vec<f32>,
    /// The residual z of the Add+ReLU kernels.
    pub z: Vec<f32>,
    /// The outputs of `train_relu` and `train_add_relu` on x (and z): the y that
    /// `backward_relu` and `backward_add_relu` mask dy with.
    pub y_relu: Vec<f32>,
    pub y_add_relu: Vec<f32>,
    /// y or dx.
    pub out: Vec<f32>,
    /// dz of `backward_add_relu`.
    pub dz: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    /// Saved (batch) mean and invstd: written by train, read by backward.
    pub mean: Vec<f32>,
    pub invstd: Vec<f32>,
    /// Batch Renormalization's saved corrections: written by train_renorm, read by
    /// backward_renorm (which also reads mean and invstd).
    pub r: Vec<f32>,
    pub d: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
    pub parts: Vec<Moments>,
    /// The neighbours' saved statistics, one per unit (row, group, instance).
    pub unit_mean: Vec<f32>,
    pub unit_invstd: Vec<f32>,
    /// Per-channel scratch of the scalar kernels: batch variance, the affine's scale
    /// and shift, backward's `k` and `a`.
    pub var: Vec<f32>,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    pub k: Vec<f32>,
    pub a: Vec<f32>,
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
        let mut z = vec![0.0; len];
        fill(&mut z, 5, 0.0);
        let copy_len = KERNELS
            .iter()
            .filter(|&&k| case.runs(k))
            .map(|&k| copy_floats(traffic_bytes(&case, layout, k)))
            .max()
            .unwrap_or(0);
        let channel = || vec![0.0; c];
        let mut work = Work {
            case,
            layout,
            shape: case.shape(layout),
            x,
            dy,
            z,
            y_relu: vec![0.0; len],
            y_add_relu: vec![0.0; len],
            out: vec![0.0; len],
            dz: vec![0.0; len],
            gamma,
            beta,
            mean: channel(),
            invstd: channel(),
            r: channel(),
            d: channel(),
            running_mean: channel(),
            running_var: vec![1.0; c],
            dgamma: channel(),
            dbeta: channel(),
            parts: vec![Moments::EMPTY; c],
            unit_mean: vec![0.0; case.units()],
            unit_invstd: vec![1.0; case.units()],
            var: channel(),
            scale: channel(),
            shift: channel(),
            k: channel(),
            a: channel(),
            copy_src: vec![1.0; copy_len],
            copy_dst: vec![0.0; copy_len],
        };
        if case.norm != Norm::Batch {
            // The forwards' saved statistics, for the backwards.
            for k in KERNELS
                .iter()
                .filter(|k| case.runs(**k) && k.norm_kernel() == Some(false))
            {
                work.run(*k);
            }
            return work;
        }
        // Real statistics and outputs, so backward and eval see the values they would in
        // use: the fused outputs (about half of them 0) that the fused backwards mask dy
        // with, the saved statistics, running statistics equal to the batch's, and r, d
        // of renorm from them (r ≈ 1, d ≈ 0, as after the running statistics converged).
        work.run(Kernel::TrainRelu);
        work.y_relu.copy_from_slice(&work.out);
        work.run(Kernel::TrainAddRelu);
        work.y_add_relu.copy_from_slice(&work.out);
        work.run(Kernel::Train);
        work.running_mean.copy_from_slice(&work.mean);
        work.running_var
            .iter_mut()
            .zip(&work.invstd)
            .for_each(|(v, i)| *v = 1.0 / (i * i));
        work.run(Kernel::TrainRenorm);
        work
    }

    /// Our kernel.
    pub fn run(&mut self, kernel: Kernel) {
        if kernel.norm_kernel().is_some() {
            return norms::run(self, kernel).expect("valid benchmark arguments");
        }
        let bn = BatchNorm {
            eps: EPS,
            gamma: Some(&self.gamma),
            beta: Some(&self.beta),
        };
        let grads = Grads {
            dx: &mut self.out,
            dgamma: Some(&mut self.dgamma),
            dbeta: Some(&mut self.dbeta),
        };
        let r = match kernel {
            Kernel::Moments => moments(&self.x, self.shape, &mut self.parts),
            Kernel::Eval => bn.eval(
                &self.x,
                grads.dx,
                self.shape,
                RunningStats {
                    mean: &self.running_mean,
                    var: &self.running_var,
                },
            ),
            Kernel::Train => {
                let mut running = Running::new(
                    &mut self.running_mean,
                    &mut self.running_var,
                    Momentum::Exponential(MOMENTUM),
                );
                bn.train(
                    &self.x,
                    grads.dx,
                    self.shape,
                    SavedMut {
                        mean: &mut self.mean,
                        invstd: &mut self.invstd,
                    },
                    Some(&mut running),
                )
            }
            Kernel::Backward => bn.backward(
                &self.x,
                &self.dy,
                self.shape,
                Saved {
                    mean: &self.mean,
                    invstd: &self.invstd,
                },
                grads,
            ),
            Kernel::BackwardEval => bn.backward_eval(
                &self.x,
                &self.dy,
                self.shape,
                RunningStats {
                    mean: &self.running_mean,
                    var: &self.running_var,
                },
                grads,
            ),
            Kernel::EvalRelu | Kernel::EvalAddRelu => {
                let fusion = match kernel {
                    Kernel::EvalRelu => Fusion::Relu,
                    _ => Fusion::AddRelu { z: &self.z },
                };
                bn.eval_fused(
                    &self.x,
                    grads.dx,
                    self.shape,
                    fusion,
                    RunningStats {
                        mean: &self.running_mean,
                        var: &self.running_var,
                    },
                )
            }
            Kernel::TrainRelu | Kernel::TrainAddRelu => {
                let fusion = match kernel {
                    Kernel::TrainRelu => Fusion::Relu,
                    _ => Fusion::AddRelu { z: &self.z },
                };
                let mut running = Running::new(
                    &mut self.running_mean,
                    &mut self.running_var,
                    Momentum::Exponential(MOMENTUM),
                );
                bn.train_fused(
                    &self.x,
                    grads.dx,
                    self.shape,
                    fusion,
                    SavedMut {
                        mean: &mut self.mean,
                        invstd: &mut self.invstd,
                    },
                    Some(&mut running),
                )
            }
            Kernel::BackwardRelu => bn.backward_fused(
                &self.x,
                &self.dy,
                &self.y_relu,
                self.shape,
                FusionGrad::Relu,
                Saved {
                    mean: &self.mean,
                    invstd: &self.invstd,
                },
                grads,
            ),
            Kernel::BackwardAddRelu => bn.backward_fused(
                &self.x,
                &self.dy,
                &self.y_add_relu,
                self.shape,
                FusionGrad::AddRelu { dz: &mut self.dz },
                Saved {
                    mean: &self.mean,
                    invstd: &self.invstd,
                },
                grads,
            ),
            Kernel::TrainRenorm => {
                let saved = RenormSavedMut {
                    mean: &mut self.mean,
                    invstd: &mut self.invstd,
                    r: &mut self.r,
                    d: &mut self.d,
                };
                let mut running = Running::new(
                    &mut self.running_mean,
                    &mut self.running_var,
                    Momentum::Exponential(MOMENTUM),
                );
                bn.train_renorm(&self.x, grads.dx, self.shape, RENORM, saved, &mut running)
            }
            Kernel::BackwardRenorm => {
                let saved = RenormSaved {
                    mean: &self.mean,
                    invstd: &self.invstd,
                    r: &self.r,
                    d: &self.d,
                };
                bn.backward_renorm(&self.x, &self.dy, self.shape, saved, grads)
            }
            _ => unreachable!("{kernel:?} is run by `norms::run`"),
        };
        r.expect("valid benchmark arguments");
    }

    /// The copy of as many bytes as `kernel`'s minimum traffic.
    pub fn copy(&mut self, kernel: Kernel) {
        let n = copy_floats(traffic_bytes(&self.case, self.layout, kernel));
        self.copy_dst[..n].copy_from_slice(&self.copy_src[..n]);
    }

    /// The plain scalar implementation, composed as /work/shared/bench/scalar_baseline.rs
    /// says: per-channel constants in f32 here, the loops in [`scalar`].
    ///
    /// The fused kernels' scalar versions are fused too: the ReLU (and the add of z)
    /// goes into the affine's loop, the mask into both backward passes (and dz is
    /// written in the first), as a careful user writes them. The unfused composition
    /// (the BN loop, then a ReLU or add+ReLU loop; a masking loop, then backward)
    /// does the same arithmetic with one or two more passes over the tensor: on S2 it
    /// was 1.1–1.7× slower for each of eval and backward, ReLU and Add+ReLU, NCHW and
    /// NHWC (train's loops are eval's after the statistics).
    pub fn scalar(&mut self, kernel: Kernel) {
        if kernel.norm_kernel().is_some() {
            return norms::scalar(self, kernel);
        }
        // Rows (spatial 1) are walked channels-last whatever the layout: same memory.
        let i = Idx {
            n: self.case.batch,
            c: self.case.channels,
            s: self.case.spatial,
            last: self.layout == Layout::ChannelsLast || self.case.spatial == 1,
        };
        match kernel {
            Kernel::Moments => scalar::moments(&self.x, i, &mut self.mean, &mut self.var),
            Kernel::Eval => {
                self.eval_constants();
                scalar::affine(&self.x, &mut self.out, i, &self.scale, &self.shift);
            }
            Kernel::Train => {
                scalar::moments(&self.x, i, &mut self.mean, &mut self.var);
                self.train_constants(i, None);
                scalar::affine(&self.x, &mut self.out, i, &self.scale, &self.shift);
            }
            Kernel::Backward => scalar::backward(
                &self.dy,
                &self.x,
                &mut self.out,
                i,
                &self.mean,
                &self.invstd,
                &self.gamma,
                &mut self.dgamma,
                &mut self.dbeta,
                &mut self.k,
                &mut self.a,
            ),
            Kernel::BackwardEval => {
                // a = invstd = 1/√(rv + eps), k = γ·invstd.
                for c in 0..i.c {
                    let invstd = 1.0 / (self.running_var[c] + EPS).sqrt();
                    self.a[c] = invstd;
                    self.k[c] = self.gamma[c] * invstd;
                }
                scalar::backward_eval(
                    &self.dy,
                    &self.x,
                    &mut self.out,
                    i,
                    &self.running_mean,
                    &self.a,
                    &self.k,
                    &mut self.dgamma,
                    &mut self.dbeta,
                );
            }
            Kernel::EvalRelu => {
                self.eval_constants();
                scalar::affine_relu(&self.x, &mut self.out, i, &self.scale, &self.shift);
            }
            Kernel::EvalAddRelu => {
                self.eval_constants();
                let (a, b) = (&self.scale, &self.shift);
                scalar::affine_add_relu(&self.x, &self.z, &mut self.out, i, a, b);
            }
            Kernel::TrainRelu => {
                scalar::moments(&self.x, i, &mut self.mean, &mut self.var);
                self.train_constants(i, None);
                scalar::affine_relu(&self.x, &mut self.out, i, &self.scale, &self.shift);
            }
            Kernel::TrainAddRelu => {
                scalar::moments(&self.x, i, &mut self.mean, &mut self.var);
                self.train_constants(i, None);
                let (a, b) = (&self.scale, &self.shift);
                scalar::affine_add_relu(&self.x, &self.z, &mut self.out, i, a, b);
            }
            Kernel::BackwardRelu => {
                let (dg, db) = (&mut self.dgamma, &mut self.dbeta);
                scalar::relu_grad_sums(&self.dy, &self.y_relu, &self.x, i, &self.mean, dg, db);
                self.backward_constants(i, false);
                scalar::relu_grad_input(
                    &self.dy,
                    &self.y_relu,
                    &self.x,
                    &mut self.out,
                    i,
                    &self.mean,
                    &self.dbeta,
                    &self.k,
                    &self.a,
                );
            }
            Kernel::BackwardAddRelu => {
                scalar::add_relu_grad_sums(
                    &self.dy,
                    &self.y_add_relu,
                    &self.x,
                    &mut self.dz,
                    i,
                    &self.mean,
                    &mut self.dgamma,
                    &mut self.dbeta,
                );
                self.backward_constants(i, false);
                let (mean, db, k, a) = (&self.mean, &self.dbeta, &self.k, &self.a);
                scalar::grad_input(&self.dz, &self.x, &mut self.out, i, mean, db, k, a);
            }
            Kernel::TrainRenorm => {
                scalar::moments(&self.x, i, &mut self.mean, &mut self.var);
                self.train_constants(i, Some(RENORM));
                scalar::affine(&self.x, &mut self.out, i, &self.scale, &self.shift);
            }
            Kernel::BackwardRenorm => {
                let (dg, db) = (&mut self.dgamma, &mut self.dbeta);
                scalar::grad_sums(&self.dy, &self.x, i, &self.mean, dg, db);
                self.backward_constants(i, true);
                let (mean, db, k, a) = (&self.mean, &self.dbeta, &self.k, &self.a);
                scalar::grad_input(&self.dy, &self.x, &mut self.out, i, mean, db, k, a);
            }
            _ => unreachable!("{kernel:?} is run by `norms::scalar`"),
        }
    }

    /// Eval's per-channel constants: scale a = γ/√(rv + eps), shift b = β − rm·a.
    fn eval_constants(&mut self) {
        for c in 0..self.case.channels {
            let a = self.gamma[c] / (self.running_var[c] + EPS).sqrt();
            self.scale[c] = a;
            self.shift[c] = self.beta[c] - self.running_mean[c] * a;
        }
    }

    /// Train's per-channel step after `scalar::moments`: invstd, the running statistics'
    /// update, and the affine's scale a = γ·invstd, shift b = β − mean·a. With `renorm`,
    /// first r = clip(σ_B/σ, 1/rmax, rmax) and d = clip((mean − rm)/σ, −dmax, dmax)
    /// from the running statistics before the update (σ = √(rv + eps)), saved, and
    /// y = γ·(x̂·r + d) + β folded into a = γ·invstd·r, b = β + γ·d − mean·a.
    fn train_constants(&mut self, i: Idx, renorm: Option<Renorm>) {
        let m = (i.n * i.s) as f32;
        for c in 0..i.c {
            let (mean, var) = (self.mean[c], self.var[c]);
            let invstd = 1.0 / (var + EPS).sqrt();
            let (mut a, mut b) = (self.gamma[c] * invstd, 0.0);
            if let Some(Renorm { rmax, dmax }) = renorm {
                let sigma = (self.running_var[c] + EPS).sqrt();
                let r = ((var + EPS).sqrt() / sigma).clamp(1.0 / rmax, rmax);
                let d = ((mean - self.running_mean[c]) / sigma).clamp(-dmax, dmax);
                self.r[c] = r;
                self.d[c] = d;
                a *= r;
                b = self.gamma[c] * d;
            }
            self.invstd[c] = invstd;
            self.running_mean[c] = (1.0 - MOMENTUM) * self.running_mean[c] + MOMENTUM * mean;
            self.running_var[c] =
                (1.0 - MOMENTUM) * self.running_var[c] + MOMENTUM * var * m / (m - 1.0);
            self.scale[c] = a;
            self.shift[c] = self.beta[c] + b - mean * a;
        }
    }

    /// Backward's per-channel step between its two passes, from Σg in `dbeta` and
    /// Σg·(x − mean) in `dgamma`: dγ = invstd·Σg·(x − mean), and dx's constants
    /// k = γ·invstd, a = invstd·dγ/m, as `scalar::backward` computes them. With
    /// `renorm`, the saved r and d: k = γ·r·invstd and dγ = r·(invstd·Σg·(x − mean)) +
    /// d·Σg (a is unchanged).
    fn backward_constants(&mut self, i: Idx, renorm: bool) {
        let m = (i.n * i.s) as f32;
        for c in 0..i.c {
            let invstd = self.invstd[c];
            let dg = self.dgamma[c] * invstd;
            self.a[c] = invstd * dg / m;
            if renorm {
                self.k[c] = self.gamma[c] * self.r[c] * invstd;
                self.dgamma[c] = self.r[c] * dg + self.d[c] * self.dbeta[c];
            } else {
                self.k[c] = self.gamma[c] * invstd;
                self.dgamma[c] = dg;
            }
        }
    }

    /// `reps` calls of our kernel, the copy or the scalar one (`what`), each through
    /// `black_box` so that none of them can be merged or hoisted.
    pub fn repeat(&mut self, what: fn(&mut Work, Kernel), kernel: Kernel, reps: usize) {
        for _ in 0..reps {
            what(black_box(&mut *self), black_box(kernel));
        }
    }
}

/// Floats to copy so that reading and writing them moves `bytes` bytes.
fn copy_floats(bytes: usize) -> usize {
    bytes / 8
}

/// Scalar-reference shape: channels-last walk when `last` (NHWC, and rows: spatial 1).
#[derive(Clone, Copy)]
struct Idx {
    n: usize,
    c: usize,
    s: usize,
    last: bool,
}

/// Plain f32 loops a careful user writes: two passes for the variance, per-channel
/// constants hoisted, no SIMD by hand (LLVM vectorizes what strict f32 allows).
/// `moments`, `affine` and `backward` are those of /work/shared/bench/scalar_baseline.rs
/// as they stand there; `backward_eval` is written the same way, and so are the loops of
/// the fused and renorm kernels: `grad_sums` and `grad_input` are `backward`'s two passes
/// (its per-channel step is `Work::backward_constants`), the others the same loops with
/// the ReLU, the add of z or the mask (and the write of dz) in them.
mod scalar {
    use super::Idx;

    /// torch.relu: negative values become +0, NaN and −0 stay.
    #[inline]
    fn relu(v: f32) -> f32 {
        if v < 0.0 {
            0.0
        } else {
            v
        }
    }

    /// threshold_backward(dy, y, 0): 0 where y ≤ 0, else dy (a NaN y passes dy).
    #[inline]
    fn mask(dy: f32, y: f32) -> f32 {
        if y <= 0.0 {
            0.0
        } else {
            dy
        }
    }

    /// `affine` with the ReLU in its loop: y = relu(x·a + b).
    #[inline(never)]
    pub fn affine_relu(x: &[f32], y: &mut [f32], i: Idx, scale: &[f32], shift: &[f32]) {
        if i.last {
            for (xr, yr) in x.chunks_exact(i.c).zip(y.chunks_exact_mut(i.c)) {
                for (((yv, &xv), &a), &b) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                    *yv = relu(xv * a + b);
                }
            }
        } else {
            for (k, (xr, yr)) in x.chunks_exact(i.s).zip(y.chunks_exact_mut(i.s)).enumerate() {
                let ch = k % i.c;
                let (a, b) = (scale[ch], shift[ch]);
                for (yv, &xv) in yr.iter_mut().zip(xr) {
                    *yv = relu(xv * a + b);
                }
            }
        }
    }

    /// `affine` with the add and the ReLU in its loop: y = relu(x·a + b + z).
    #[inline(never)]
    pub fn affine_add_relu(
        x: &[f32],
        z: &[f32],
        y: &mut [f32],
        i: Idx,
        scale: &[f32],
        shift: &[f32],
    ) {
        if i.last {
            for ((xr, zr), yr) in x
                .chunks_exact(i.c)
                .zip(z.chunks_exact(i.c))
                .zip(y.chunks_exact_mut(i.c))
            {
                for ((((yv, &xv), &zv), &a), &b) in
                    yr.iter_mut().zip(xr).zip(zr).zip(scale).zip(shift)
                {
                    *yv = relu(xv * a + b + zv);
                }
            }
        } else {
            for (k, ((xr, zr), yr)) in x
                .chunks_exact(i.s)
                .zip(z.chunks_exact(i.s))
                .zip(y.chunks_exact_mut(i.s))
                .enumerate()
            {
                let ch = k % i.c;
                let (a, b) = (scale[ch], shift[ch]);
                for ((yv, &xv), &zv) in yr.iter_mut().zip(xr).zip(zr) {
                    *yv = relu(xv * a + b + zv);
                }
            }
        }
    }

    /// `backward`'s pass 1: Σg and Σg·(x − mean) into `dbeta` and `dgamma`.
    #[inline(never)]
    pub fn grad_sums(
        g: &[f32],
        x: &[f32],
        i: Idx,
        mean: &[f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        dbeta.fill(0.0);
        dgamma.fill(0.0);
        if i.last {
            for (dr, xr) in g.chunks_exact(i.c).zip(x.chunks_exact(i.c)) {
                for ch in 0..i.c {
                    dbeta[ch] += dr[ch];
                    dgamma[ch] += dr[ch] * (xr[ch] - mean[ch]);
                }
            }
        } else {
            for (r, (dr, xr)) in g.chunks_exact(i.s).zip(x.chunks_exact(i.s)).enumerate() {
                let ch = r % i.c;
                let (mut sd, mut sdx) = (0.0f32, 0.0f32);
                let mu = mean[ch];
                for (&d, &v) in dr.iter().zip(xr) {
                    sd += d;
                    sdx += d * (v - mu);
                }
                dbeta[ch] += sd;
                dgamma[ch] += sdx;
            }
        }
    }

    /// `grad_sums` of g = mask(dy, y).
    #[inline(never)]
    pub fn relu_grad_sums(
        dy: &[f32],
        y: &[f32],
        x: &[f32],
        i: Idx,
        mean: &[f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        dbeta.fill(0.0);
        dgamma.fill(0.0);
        if i.last {
            for ((dr, yr), xr) in dy
                .chunks_exact(i.c)
                .zip(y.chunks_exact(i.c))
                .zip(x.chunks_exact(i.c))
            {
                for ch in 0..i.c {
                    let g = mask(dr[ch], yr[ch]);
                    dbeta[ch] += g;
                    dgamma[ch] += g * (xr[ch] - mean[ch]);
                }
            }
        } else {
            for (r, ((dr, yr), xr)) in dy
                .chunks_exact(i.s)
                .zip(y.chunks_exact(i.s))
                .zip(x.chunks_exact(i.s))
                .enumerate()
            {
                let ch = r % i.c;
                let (mut sd, mut sdx) = (0.0f32, 0.0f32);
                let mu = mean[ch];
                for ((&d, &yv), &v) in dr.iter().zip(yr).zip(xr) {
                    let g = mask(d, yv);
                    sd += g;
                    sdx += g * (v - mu);
                }
                dbeta[ch] += sd;
                dgamma[ch] += sdx;
            }
        }
    }

    /// `relu_grad_sums` that also writes g into `dz`.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub fn add_relu_grad_sums(
        dy: &[f32],
        y: &[f32],
        x: &[f32],
        dz: &mut [f32],
        i: Idx,
        mean: &[f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        dbeta.fill(0.0);
        dgamma.fill(0.0);
        if i.last {
            for (((dr, yr), xr), zr) in dy
                .chunks_exact(i.c)
                .zip(y.chunks_exact(i.c))
                .zip(x.chunks_exact(i.c))
                .zip(dz.chunks_exact_mut(i.c))
            {
                for ch in 0..i.c {
                    let g = mask(dr[ch], yr[ch]);
                    zr[ch] = g;
                    dbeta[ch] += g;
                    dgamma[ch] += g * (xr[ch] - mean[ch]);
                }
            }
        } else {
            for (r, (((dr, yr), xr), zr)) in dy
                .chunks_exact(i.s)
                .zip(y.chunks_exact(i.s))
                .zip(x.chunks_exact(i.s))
                .zip(dz.chunks_exact_mut(i.s))
                .enumerate()
            {
                let ch = r % i.c;
                let (mut sd, mut sdx) = (0.0f32, 0.0f32);
                let mu = mean[ch];
                for (((&d, &yv), &v), o) in dr.iter().zip(yr).zip(xr).zip(zr) {
                    let g = mask(d, yv);
                    *o = g;
                    sd += g;
                    sdx += g * (v - mu);
                }
                dbeta[ch] += sd;
                dgamma[ch] += sdx;
            }
        }
    }

    /// `backward`'s pass 2: dx = k·(g − Σg/m − (x − mean)·a).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub fn grad_input(
        g: &[f32],
        x: &[f32],
        dx: &mut [f32],
        i: Idx,
        mean: &[f32],
        dbeta: &[f32],
        k: &[f32],
        a: &[f32],
    ) {
        let m = (i.n * i.s) as f32;
        if i.last {
            for ((dr, xr), or) in g
                .chunks_exact(i.c)
                .zip(x.chunks_exact(i.c))
                .zip(dx.chunks_exact_mut(i.c))
            {
                for ch in 0..i.c {
                    or[ch] = k[ch] * (dr[ch] - dbeta[ch] / m - (xr[ch] - mean[ch]) * a[ch]);
                }
            }
        } else {
            for (r, ((dr, xr), or)) in g
                .chunks_exact(i.s)
                .zip(x.chunks_exact(i.s))
                .zip(dx.chunks_exact_mut(i.s))
                .enumerate()
            {
                let ch = r % i.c;
                let (kk, aa, bb, mu) = (k[ch], a[ch], dbeta[ch] / m, mean[ch]);
                for ((o, &d), &v) in or.iter_mut().zip(dr).zip(xr) {
                    *o = kk * (d - bb - (v - mu) * aa);
                }
            }
        }
    }

    /// `grad_input` of g = mask(dy, y).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub fn relu_grad_input(
        dy: &[f32],
        y: &[f32],
        x: &[f32],
        dx: &mut [f32],
        i: Idx,
        mean: &[f32],
        dbeta: &[f32],
        k: &[f32],
        a: &[f32],
    ) {
        let m = (i.n * i.s) as f32;
        if i.last {
            for (((dr, yr), xr), or) in dy
                .chunks_exact(i.c)
                .zip(y.chunks_exact(i.c))
                .zip(x.chunks_exact(i.c))
                .zip(dx.chunks_exact_mut(i.c))
            {
                for ch in 0..i.c {
                    let g = mask(dr[ch], yr[ch]);
                    or[ch] = k[ch] * (g - dbeta[ch] / m - (xr[ch] - mean[ch]) * a[ch]);
                }
            }
        } else {
            for (r, (((dr, yr), xr), or)) in dy
                .chunks_exact(i.s)
                .zip(y.chunks_exact(i.s))
                .zip(x.chunks_exact(i.s))
                .zip(dx.chunks_exact_mut(i.s))
                .enumerate()
            {
                let ch = r % i.c;
                let (kk, aa, bb, mu) = (k[ch], a[ch], dbeta[ch] / m, mean[ch]);
                for (((o, &d), &yv), &v) in or.iter_mut().zip(dr).zip(yr).zip(xr) {
                    *o = kk * (mask(d, yv) - bb - (v - mu) * aa);
                }
            }
        }
    }

    #[inline(never)]
    pub fn moments(x: &[f32], i: Idx, mean: &mut [f32], var: &mut [f32]) {
        let m = (i.n * i.s) as f32;
        if i.last {
            mean.fill(0.0);
            var.fill(0.0);
            for row in x.chunks_exact(i.c) {
                for (a, &v) in mean.iter_mut().zip(row) {
                    *a += v;
                }
            }
            mean.iter_mut().for_each(|v| *v /= m);
            for row in x.chunks_exact(i.c) {
                for ((a, &v), &mu) in var.iter_mut().zip(row).zip(mean.iter()) {
                    let d = v - mu;
                    *a += d * d;
                }
            }
            var.iter_mut().for_each(|v| *v /= m);
        } else {
            for ch in 0..i.c {
                let mut sum = 0.0f32;
                for b in 0..i.n {
                    for &v in &x[(b * i.c + ch) * i.s..][..i.s] {
                        sum += v;
                    }
                }
                let mu = sum / m;
                let mut sq = 0.0f32;
                for b in 0..i.n {
                    for &v in &x[(b * i.c + ch) * i.s..][..i.s] {
                        let d = v - mu;
                        sq += d * d;
                    }
                }
                mean[ch] = mu;
                var[ch] = sq / m;
            }
        }
    }

    #[inline(never)]
    pub fn affine(x: &[f32], y: &mut [f32], i: Idx, scale: &[f32], shift: &[f32]) {
        if i.last {
            for (xr, yr) in x.chunks_exact(i.c).zip(y.chunks_exact_mut(i.c)) {
                for (((yv, &xv), &a), &b) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                    *yv = xv * a + b;
                }
            }
        } else {
            for (k, (xr, yr)) in x.chunks_exact(i.s).zip(y.chunks_exact_mut(i.s)).enumerate() {
                let ch = k % i.c;
                let (a, b) = (scale[ch], shift[ch]);
                for (yv, &xv) in yr.iter_mut().zip(xr) {
                    *yv = xv * a + b;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub fn backward(
        dy: &[f32],
        x: &[f32],
        dx: &mut [f32],
        i: Idx,
        mean: &[f32],
        invstd: &[f32],
        gamma: &[f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        k: &mut [f32],
        a: &mut [f32],
    ) {
        let m = (i.n * i.s) as f32;
        // Pass 1: Σdy and Σdy·(x − mean).
        dbeta.fill(0.0);
        dgamma.fill(0.0);
        if i.last {
            for (dr, xr) in dy.chunks_exact(i.c).zip(x.chunks_exact(i.c)) {
                for ch in 0..i.c {
                    dbeta[ch] += dr[ch];
                    dgamma[ch] += dr[ch] * (xr[ch] - mean[ch]);
                }
            }
        } else {
            for (r, (dr, xr)) in dy.chunks_exact(i.s).zip(x.chunks_exact(i.s)).enumerate() {
                let ch = r % i.c;
                let (mut sd, mut sdx) = (0.0f32, 0.0f32);
                let mu = mean[ch];
                for (&d, &v) in dr.iter().zip(xr) {
                    sd += d;
                    sdx += d * (v - mu);
                }
                dbeta[ch] += sd;
                dgamma[ch] += sdx;
            }
        }
        for ch in 0..i.c {
            dgamma[ch] *= invstd[ch];
            k[ch] = gamma[ch] * invstd[ch];
            a[ch] = invstd[ch] * dgamma[ch] / m;
        }
        // Pass 2: dx = γ·invstd·(dy − dβ/m − x̂·dγ/m).
        if i.last {
            for ((dr, xr), or) in dy
                .chunks_exact(i.c)
                .zip(x.chunks_exact(i.c))
                .zip(dx.chunks_exact_mut(i.c))
            {
                for ch in 0..i.c {
                    or[ch] = k[ch] * (dr[ch] - dbeta[ch] / m - (xr[ch] - mean[ch]) * a[ch]);
                }
            }
        } else {
            for (r, ((dr, xr), or)) in dy
                .chunks_exact(i.s)
                .zip(x.chunks_exact(i.s))
                .zip(dx.chunks_exact_mut(i.s))
                .enumerate()
            {
                let ch = r % i.c;
                let (kk, aa, bb, mu) = (k[ch], a[ch], dbeta[ch] / m, mean[ch]);
                for ((o, &d), &v) in or.iter_mut().zip(dr).zip(xr) {
                    *o = kk * (d - bb - (v - mu) * aa);
                }
            }
        }
    }

    /// Eval-mode backward, one pass: the statistics are constants, so dx = dy·k
    /// (k = γ·invstd) needs no sums and is written while Σdy and Σdy·(x − mean)
    /// accumulate; dγ = invstd·Σdy·(x − mean), dβ = Σdy.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub fn backward_eval(
        dy: &[f32],
        x: &[f32],
        dx: &mut [f32],
        i: Idx,
        mean: &[f32],
        invstd: &[f32],
        k: &[f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        dbeta.fill(0.0);
        dgamma.fill(0.0);
        if i.last {
            for ((dr, xr), or) in dy
                .chunks_exact(i.c)
                .zip(x.chunks_exact(i.c))
                .zip(dx.chunks_exact_mut(i.c))
            {
                for ch in 0..i.c {
                    dbeta[ch] += dr[ch];
                    dgamma[ch] += dr[ch] * (xr[ch] - mean[ch]);
                    or[ch] = k[ch] * dr[ch];
                }
            }
        } else {
            for (r, ((dr, xr), or)) in dy
                .chunks_exact(i.s)
                .zip(x.chunks_exact(i.s))
                .zip(dx.chunks_exact_mut(i.s))
                .enumerate()
            {
                let ch = r % i.c;
                let (mut sd, mut sdx) = (0.0f32, 0.0f32);
                let (kk, mu) = (k[ch], mean[ch]);
                for ((o, &d), &v) in or.iter_mut().zip(dr).zip(xr) {
                    sd += d;
                    sdx += d * (v - mu);
                    *o = kk * d;
                }
                dbeta[ch] += sd;
                dgamma[ch] += sdx;
            }
        }
        for ch in 0..i.c {
            dgamma[ch] *= invstd[ch];
        }
    }
}
