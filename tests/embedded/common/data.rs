// Deterministic test data shared by the firmware self-checks and the host tool that
// produces `expected.rs`: the same cases, the same LCG, the same values bit for bit.
// Only integer arithmetic and single IEEE f32 operations (which Rust never fuses into
// FMAs) are used, so every target generates identical inputs.

use batchnorm::Shape;

/// Largest tensor (elements) any case uses.
pub const MAX_LEN: usize = 4096;
/// Largest channel count any case uses (72: a group norm case with groups wider than a
/// band, see `NORM_CASES`).
pub const MAX_C: usize = 72;
/// eps of every case.
pub const EPS: f32 = 1e-5;
/// Exponential momentum of the running-statistics update in `train`.
pub const MOMENTUM: f32 = 0.1;
/// `num_batches_tracked` before the cumulative update in `train_in_place`.
pub const BATCHES_TRACKED: u64 = 3;
/// Batch Renormalization's limits in `train_renorm`: tight enough that the cases have
/// channels with `r` and `d` inside the limits and channels clipped to them (running
/// variances are 3/8 of the spread², batch variances about 1/3 of it).
pub const RMAX: f32 = 1.0625;
pub const DMAX: f32 = 0.125;

/// One tensor shape with the data drawn for it.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub shape: Shape,
    pub seed: u64,
    /// Added to every channel's centre: 1e4 makes |mean|/std about 1e4.
    pub offset: f32,
    /// A channel whose values are all equal (var 0).
    pub constant_channel: Option<usize>,
}

pub const CASES: &[Case] = &[
    // Odd sizes everywhere: vector tails in every loop.
    Case {
        name: "cf 3x5x7",
        shape: Shape::channels_first(3, 5, 7),
        seed: 1,
        offset: 0.0,
        constant_channel: None,
    },
    // Channels-last with C = 19: tails across the channel vector, one constant channel.
    Case {
        name: "cl 2x19x6",
        shape: Shape::channels_last(2, 19, 6),
        seed: 2,
        offset: 0.0,
        constant_channel: Some(7),
    },
    // Spatial 1 ([batch][channels]): both layouts are the same memory.
    Case {
        name: "rows 33x6",
        shape: Shape::rows(33, 6),
        seed: 3,
        offset: 0.0,
        constant_channel: None,
    },
    // Longer contiguous runs per channel (whole vectors).
    Case {
        name: "cf 2x3x64",
        shape: Shape::channels_first(2, 3, 64),
        seed: 4,
        offset: 0.0,
        constant_channel: None,
    },
    // C a multiple of the vector width.
    Case {
        name: "cl 4x8x16",
        shape: Shape::channels_last(4, 8, 16),
        seed: 5,
        offset: 0.0,
        constant_channel: None,
    },
    // Many values per channel and |mean|/std ~ 1e4: the single pass must stay accurate.
    Case {
        name: "cf 2x2x1024 +1e4",
        shape: Shape::channels_first(2, 2, 1024),
        seed: 6,
        offset: 1e4,
        constant_channel: None,
    },
    Case {
        name: "cl 1x4x1000 +1e4",
        shape: Shape::channels_last(1, 4, 1000),
        seed: 7,
        offset: 1e4,
        constant_channel: None,
    },
];

/// PCG-style 64-bit LCG (Knuth's MMIX constants); the high 32 bits are the output.
pub struct Lcg(u64);

impl Lcg {
    pub const fn new(seed: u64) -> Lcg {
        Lcg(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    /// Uniform in [-1, 1), a multiple of 2^-23: exact in f32 on every target.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 8_388_608.0) - 1.0
    }
}

/// Flat index of element (n, c, s).
pub fn index(shape: Shape, n: usize, c: usize, s: usize) -> usize {
    match shape.layout {
        batchnorm::Layout::ChannelsFirst => (n * shape.channels + c) * shape.spatial + s,
        batchnorm::Layout::ChannelsLast => (n * shape.spatial + s) * shape.channels + c,
    }
}

pub fn len(case: &Case) -> usize {
    case.shape.batch * case.shape.channels * case.shape.spatial
}

pub fn m(case: &Case) -> usize {
    case.shape.batch * case.shape.spatial
}

/// Channel c's centre and spread (all exact in f32).
pub fn centre(case: &Case, c: usize) -> f32 {
    case.offset + (c as f32 - 2.0) * 1.5
}

pub fn spread(c: usize) -> f32 {
    0.5 + 0.25 * (c % 5) as f32
}

/// The case's tensors: x, dy, z (len elements) and the per-channel parameters.
#[derive(Clone)]
pub struct Inputs {
    pub x: [f32; MAX_LEN],
    pub dy: [f32; MAX_LEN],
    /// The residual of BN + Add + ReLU.
    pub z: [f32; MAX_LEN],
    pub gamma: [f32; MAX_C],
    pub beta: [f32; MAX_C],
    pub running_mean: [f32; MAX_C],
    pub running_var: [f32; MAX_C],
}

impl Inputs {
    pub fn new(case: &Case) -> Inputs {
        let sh = case.shape;
        let mut r = Inputs {
            x: [0.0; MAX_LEN],
            dy: [0.0; MAX_LEN],
            z: [0.0; MAX_LEN],
            gamma: [0.0; MAX_C],
            beta: [0.0; MAX_C],
            running_mean: [0.0; MAX_C],
            running_var: [0.0; MAX_C],
        };
        let mut rng = Lcg::new(case.seed);
        // Walk in (n, c, s) order, whatever the layout, so each layout is filled the
        // same way per element.
        for n in 0..sh.batch {
            for c in 0..sh.channels {
                for s in 0..sh.spatial {
                    let i = index(sh, n, c, s);
                    let u = rng.uniform();
                    r.x[i] = if case.constant_channel == Some(c) {
                        2.5
                    } else {
                        centre(case, c) + spread(c) * u
                    };
                    r.dy[i] = rng.uniform() * 0.75 + 0.125;
                }
            }
        }
        for c in 0..sh.channels {
            r.gamma[c] = 0.5 + rng.uniform(); // includes negative γ
            r.beta[c] = 0.5 * rng.uniform();
            r.running_mean[c] = centre(case, c) + 0.125 * rng.uniform();
            let s = spread(c);
            r.running_var[c] = s * s * (0.375 + 0.0625 * rng.uniform());
        }
        // Drawn after everything else, so that the other values stay as they were.
        for z in r.z[..len_of(sh)].iter_mut() {
            *z = 0.75 * rng.uniform();
        }
        r
    }
}

/// Elements of a shape (cases are small: no overflow).
pub fn len_of(shape: Shape) -> usize {
    shape.batch * shape.channels * shape.spatial
}

// ---- folding (batchnorm::fold) -------------------------------------------------------

/// Largest channel count, kernel, input length and weight of the fold cases.
pub const FOLD_MAX_C: usize = 8;
pub const FOLD_MAX_W: usize = 256;
pub const FOLD_LEN: usize = 9;

/// One fold case: a 1-D layer (kernel `k`) and which side of it the BN sits.
#[derive(Clone, Copy)]
pub struct FoldCase {
    pub name: &'static str,
    pub layer: batchnorm::fold::Layer,
    /// BN after the layer (`into_preceding`), else before it (`into_following`).
    pub bn_after: bool,
    pub seed: u64,
}

const fn layer(
    layout: batchnorm::fold::WeightLayout,
    i: usize,
    o: usize,
    g: usize,
    k: usize,
) -> batchnorm::fold::Layer {
    use batchnorm::fold::{Layer, WeightLayout as L};
    match layout {
        L::Ohwi => Layer::conv_ohwi(i, o, &[k]),
        L::Hwio => Layer::conv_hwio(i, o, &[k]),
        L::Iohw => Layer::conv_transpose1d(i, o, k),
        _ => Layer::conv1d(i, o, k),
    }
    .grouped(g)
}

pub const FOLD_CASES: &[FoldCase] = {
    use batchnorm::fold::{Layer, WeightLayout as L};
    &[
        FoldCase {
            name: "after conv OIHW g1",
            layer: layer(L::Oihw, 4, 6, 1, 3),
            bn_after: true,
            seed: 11,
        },
        FoldCase {
            name: "after conv OHWI g2",
            layer: layer(L::Ohwi, 4, 6, 2, 3),
            bn_after: true,
            seed: 12,
        },
        FoldCase {
            name: "after dwconv HWIO",
            layer: layer(L::Hwio, 4, 8, 4, 3),
            bn_after: true,
            seed: 13,
        },
        FoldCase {
            name: "after convT IOHW g2",
            layer: layer(L::Iohw, 4, 6, 2, 3),
            bn_after: true,
            seed: 14,
        },
        FoldCase {
            name: "after linear [o][i]",
            layer: Layer::linear(5, 7),
            bn_after: true,
            seed: 15,
        },
        FoldCase {
            name: "before linear [o][i]",
            layer: Layer::linear(6, 3),
            bn_after: false,
            seed: 16,
        },
        FoldCase {
            name: "before linear [i][o]",
            layer: Layer::linear_in_out(6, 3),
            bn_after: false,
            seed: 17,
        },
        FoldCase {
            name: "before conv OIHW g2",
            layer: layer(L::Oihw, 4, 6, 2, 3),
            bn_after: false,
            seed: 18,
        },
    ]
};

/// Flat index of the weight joining output channel `o` and in-group input `q` at
/// kernel position `k` (batchnorm::fold's layout table, written out independently).
pub fn weight_index(l: batchnorm::fold::Layer, o: usize, q: usize, k: usize) -> usize {
    use batchnorm::fold::WeightLayout as L;
    let (og, ig, kk) = (
        l.out_channels / l.groups,
        l.in_channels / l.groups,
        l.kernel,
    );
    match l.layout {
        L::Oihw => (o * ig + q) * kk + k,
        L::Ohwi => (o * kk + k) * ig + q,
        L::Hwio => (k * ig + q) * l.out_channels + o,
        L::Iohw => {
            let (g, p) = (o / og, o % og);
            ((g * ig + q) * og + p) * kk + k
        }
        _ => usize::MAX,
    }
}

pub fn weight_len(l: batchnorm::fold::Layer) -> usize {
    l.out_channels * (l.in_channels / l.groups) * l.kernel
}

/// A fold case's tensors: weight, bias, the BN's parameters (as many channels as the
/// side it sits on), and an input x `[in_channels][FOLD_LEN]`.
pub struct FoldInputs {
    pub weight: [f32; FOLD_MAX_W],
    pub bias: [f32; FOLD_MAX_C],
    pub running_mean: [f32; FOLD_MAX_C],
    pub running_var: [f32; FOLD_MAX_C],
    pub gamma: [f32; FOLD_MAX_C],
    pub beta: [f32; FOLD_MAX_C],
    pub x: [f32; FOLD_MAX_C * FOLD_LEN],
}

impl FoldInputs {
    pub fn new(case: &FoldCase) -> FoldInputs {
        let mut rng = Lcg::new(case.seed);
        let mut r = FoldInputs {
            weight: [0.0; FOLD_MAX_W],
            bias: [0.0; FOLD_MAX_C],
            running_mean: [0.0; FOLD_MAX_C],
            running_var: [0.0; FOLD_MAX_C],
            gamma: [0.0; FOLD_MAX_C],
            beta: [0.0; FOLD_MAX_C],
            x: [0.0; FOLD_MAX_C * FOLD_LEN],
        };
        for w in r.weight[..weight_len(case.layer)].iter_mut() {
            *w = 0.5 * rng.uniform();
        }
        for b in r.bias[..case.layer.out_channels].iter_mut() {
            *b = rng.uniform();
        }
        let bn_channels = if case.bn_after {
            case.layer.out_channels
        } else {
            case.layer.in_channels
        };
        for c in 0..bn_channels {
            r.running_mean[c] = 2.0 * rng.uniform();
            r.running_var[c] = 0.25 + rng.uniform() + 1.0;
            r.gamma[c] = 0.5 + rng.uniform(); // includes negative γ
            r.beta[c] = 0.5 * rng.uniform();
        }
        for v in r.x[..case.layer.in_channels * FOLD_LEN].iter_mut() {
            *v = 2.0 * rng.uniform();
        }
        r
    }
}

// ---- batch norm's neighbours (layer, RMS, group and instance norm) ----------------

/// Which of batch norm's neighbours a `NormCase` runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormOp {
    /// `LayerNorm` over each sample's `C·S` values (`F.layer_norm` over `[C, S]`).
    Layer,
    /// `RmsNorm` over each sample's `C·S` values.
    Rms,
    /// `GroupNorm` with this many groups.
    Group(usize),
    /// `InstanceNorm`; with running statistics when `spatial ≥ 2`.
    Instance,
}

/// One case of a neighbour: the op, and a `Case` whose shape and data it runs on (the
/// data `Inputs::new` draws for it; γ and β of the row norms from `NormInputs`).
#[derive(Clone, Copy)]
pub struct NormCase {
    pub name: &'static str,
    pub op: NormOp,
    pub data: Case,
}

/// Statistic units (rows, or (sample, group)) of any norm case, at most.
pub const MAX_UNITS: usize = 256;

/// Extra shapes for the row and group norms: more rows than a band (64), constant
/// rows, and groups of 72 channels (wider than a band of the walk on Cortex-M4F in both
/// layouts, on AArch64 channels-first).
const ROWS_70: Case = Case {
    name: "cf 70x1x24",
    shape: Shape::channels_first(70, 1, 24),
    seed: 21,
    offset: 0.0,
    constant_channel: None,
};
const ROWS_CONST: Case = Case {
    name: "cf 3x1x40 const",
    shape: Shape::channels_first(3, 1, 40),
    seed: 22,
    offset: 0.0,
    constant_channel: Some(0),
};
const WIDE_CF: Case = Case {
    name: "cf 2x72x3",
    shape: Shape::channels_first(2, 72, 3),
    seed: 23,
    offset: 0.0,
    constant_channel: None,
};
const WIDE_CL: Case = Case {
    name: "cl 2x72x3",
    shape: Shape::channels_last(2, 72, 3),
    seed: 24,
    offset: 0.0,
    constant_channel: Some(5),
};

const fn norm(name: &'static str, op: NormOp, data: Case) -> NormCase {
    NormCase { name, op, data }
}

pub const NORM_CASES: &[NormCase] = {
    use NormOp::{Group, Instance, Layer, Rms};
    let c = CASES;
    &[
        // Rows of 35 (tails), 6 (short), 24 (70 rows: two bands), 40 (constant rows),
        // 2048 and 4000 (|mean|/std ~ 1e4; wider than the column sums' band).
        norm("ln cf 3x5x7", Layer, c[0]),
        norm("ln rows 33x6", Layer, c[2]),
        norm("ln cf 70x1x24", Layer, ROWS_70),
        norm("ln cf 3x1x40 const", Layer, ROWS_CONST),
        norm("ln cf 2x2x1024 +1e4", Layer, c[5]),
        norm("ln cl 1x4x1000 +1e4", Layer, c[6]),
        norm("rms cf 3x5x7", Rms, c[0]),
        norm("rms rows 33x6", Rms, c[2]),
        norm("rms cf 70x1x24", Rms, ROWS_70),
        norm("rms cf 3x1x40 const", Rms, ROWS_CONST),
        norm("rms cf 2x2x1024 +1e4", Rms, c[5]),
        // Both layouts, odd channel counts, a constant group (cl 2x19x6 g19), groups
        // wider than a band.
        norm("gn cf 3x5x7 g1", Group(1), c[0]),
        norm("gn cl 2x19x6 g19", Group(19), c[1]),
        norm("gn rows 33x6 g3", Group(3), c[2]),
        norm("gn cf 2x3x64 g3", Group(3), c[3]),
        norm("gn cl 4x8x16 g2", Group(2), c[4]),
        norm("gn cf 2x2x1024 +1e4 g1", Group(1), c[5]),
        norm("gn cl 1x4x1000 +1e4 g2", Group(2), c[6]),
        norm("gn cf 2x72x3 g1", Group(1), WIDE_CF),
        norm("gn cl 2x72x3 g1", Group(1), WIDE_CL),
        norm("gn cl 2x72x3 g8", Group(8), WIDE_CL),
        norm("in cf 3x5x7", Instance, c[0]),
        norm("in cl 2x19x6", Instance, c[1]),
        norm("in rows 33x6", Instance, c[2]),
        norm("in cf 2x3x64", Instance, c[3]),
        norm("in cl 4x8x16", Instance, c[4]),
        norm("in cf 2x2x1024 +1e4", Instance, c[5]),
        norm("in cl 1x4x1000 +1e4", Instance, c[6]),
    ]
};

impl NormCase {
    /// γ and β values (per position of a row, or per channel).
    pub fn params(&self) -> usize {
        let sh = self.data.shape;
        match self.op {
            NormOp::Layer | NormOp::Rms => sh.channels * sh.spatial,
            _ => sh.channels,
        }
    }

    /// Statistic units: rows, or (sample, group).
    pub fn units(&self) -> usize {
        let sh = self.data.shape;
        sh.batch * self.groups()
    }

    /// Groups per sample (1 for a row norm: its row).
    pub fn groups(&self) -> usize {
        match self.op {
            NormOp::Layer | NormOp::Rms => 1,
            NormOp::Group(g) => g,
            NormOp::Instance => self.data.shape.channels,
        }
    }

    /// Whether the forward updates running statistics (instance norm, spatial ≥ 2).
    pub fn running(&self) -> bool {
        self.op == NormOp::Instance && self.data.shape.spatial >= 2
    }

    /// The unit of flat element `i`.
    pub fn unit_of(&self, i: usize) -> usize {
        let sh = self.data.shape;
        let per_sample = sh.channels * sh.spatial;
        let n = i / per_sample;
        match self.op {
            NormOp::Layer | NormOp::Rms => n,
            _ => {
                let per = sh.channels / self.groups();
                n * self.groups() + crate::reference::channel_of(sh, i) / per
            }
        }
    }

    /// The γ/β index of flat element `i`.
    pub fn param_of(&self, i: usize) -> usize {
        let sh = self.data.shape;
        match self.op {
            NormOp::Layer | NormOp::Rms => i % (sh.channels * sh.spatial),
            _ => crate::reference::channel_of(sh, i),
        }
    }

    /// Calls `f` with every flat element of γ/β index `j`.
    pub fn for_param(&self, j: usize, mut f: impl FnMut(usize)) {
        let sh = self.data.shape;
        match self.op {
            NormOp::Layer | NormOp::Rms => {
                for n in 0..sh.batch {
                    f(n * sh.channels * sh.spatial + j)
                }
            }
            _ => {
                for n in 0..sh.batch {
                    for s in 0..sh.spatial {
                        f(index(sh, n, j, s))
                    }
                }
            }
        }
    }

    /// Calls `f` with every flat element of unit `u`.
    pub fn for_unit(&self, u: usize, mut f: impl FnMut(usize)) {
        let sh = self.data.shape;
        let per_sample = sh.channels * sh.spatial;
        let (n, g) = (u / self.groups(), u % self.groups());
        match self.op {
            NormOp::Layer | NormOp::Rms => {
                for i in n * per_sample..(n + 1) * per_sample {
                    f(i)
                }
            }
            _ => {
                let per = sh.channels / self.groups();
                for c in g * per..(g + 1) * per {
                    for s in 0..sh.spatial {
                        f(index(sh, n, c, s))
                    }
                }
            }
        }
    }
}

/// A norm case's tensors: the `Case`'s, with γ and β per position of a row for the row
/// norms (drawn after the case's own values; the group norms use the case's γ, β).
#[derive(Clone)]
pub struct NormInputs {
    pub t: Inputs,
    pub gamma: [f32; MAX_LEN],
    pub beta: [f32; MAX_LEN],
}

impl NormInputs {
    pub fn new(case: &NormCase) -> NormInputs {
        let t = Inputs::new(&case.data);
        let mut r = NormInputs {
            gamma: [0.0; MAX_LEN],
            beta: [0.0; MAX_LEN],
            t,
        };
        match case.op {
            NormOp::Layer | NormOp::Rms => {
                let mut rng = Lcg::new(case.data.seed ^ 0x5157);
                for j in 0..case.params() {
                    r.gamma[j] = 0.5 + rng.uniform(); // includes negative γ
                    r.beta[j] = 0.5 * rng.uniform();
                }
            }
            _ => {
                let c = case.params();
                r.gamma[..c].copy_from_slice(&r.t.gamma[..c]);
                r.beta[..c].copy_from_slice(&r.t.beta[..c]);
            }
        }
        r
    }
}

// ---- gradient clipping ----------------------------------------------------------------

/// Gradient slices of one clipping case: `SLICES` slices of `lens` values, drawn
/// uniform in `[-1, 1)` times `scale` (1e30 and 1e-30: the L2 norm's rescaled paths).
#[derive(Clone, Copy)]
pub struct ClipCase {
    pub name: &'static str,
    pub lens: [usize; CLIP_SLICES],
    pub scale: f32,
    /// `clip_grad_norm`'s bound, below the L2 norm (so that it scales).
    pub max_norm: f32,
    pub seed: u64,
}

pub const CLIP_SLICES: usize = 3;
pub const CLIP_MAX: usize = 1024;

pub const CLIP_CASES: &[ClipCase] = &[
    ClipCase {
        name: "clip 7+64+1",
        lens: [7, 64, 1],
        scale: 1.0,
        max_norm: 2.0,
        seed: 31,
    },
    ClipCase {
        name: "clip 1000+0+333",
        lens: [1000, 0, 333],
        scale: 3.0,
        max_norm: 20.0,
        seed: 32,
    },
    ClipCase {
        name: "clip 100+17+5 x1e30",
        lens: [100, 17, 5],
        scale: 1e30,
        max_norm: 1e30,
        seed: 33,
    },
    ClipCase {
        name: "clip 100+17+5 x1e-30",
        lens: [100, 17, 5],
        scale: 1e-30,
        max_norm: 1e-7,
        seed: 34,
    },
];

/// A clipping case's slices (`CLIP_MAX` values each, the first `lens[k]` used).
#[derive(Clone)]
pub struct ClipInputs {
    pub g: [[f32; CLIP_MAX]; CLIP_SLICES],
}

impl ClipInputs {
    pub fn new(case: &ClipCase) -> ClipInputs {
        let mut rng = Lcg::new(case.seed);
        let mut g = [[0.0; CLIP_MAX]; CLIP_SLICES];
        for (k, s) in g.iter_mut().enumerate() {
            for v in s[..case.lens[k]].iter_mut() {
                *v = rng.uniform() * case.scale;
            }
        }
        ClipInputs { g }
    }
}
