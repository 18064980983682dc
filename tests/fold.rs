//! `batchnorm::fold` end to end: the folded layer against BN and the original layer,
//! both evaluated by an f64 reference (linear, N-d convolution and N-d transposed
//! convolution, with groups, padding, stride and dilation), for every weight layout.
//! Then the per-element formulas, bit for bit, across tile boundaries; then every
//! error, each with a check that nothing was written.
//!
//! The reference reads weights through its own index formula for each layout
//! ([`at`]), written from the layout tables, not from the crate's strides.
//!
//! Error measure: the folded layer's output against the reference, divided by the
//! magnitude of what was summed (`Σ|w·x| + |b|` on either side, the scale a dot
//! product's rounding is relative to). Folding rounds every weight and bias once to
//! f32 (and the pad value once), so the bound is 2u = 2⁻²³; the tests assert it and
//! print the largest error seen (`cargo test --test fold -- --nocapture`).

#![allow(clippy::needless_range_loop)] // the f64 reference reads best as index loops

use std::cell::Cell;

use batchnorm::fold::{self, EvalBn, Layer, WeightLayout};
use batchnorm::{BatchNorm, Error, RunningStats};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

const LAYOUTS: [WeightLayout; 4] = [
    WeightLayout::Oihw,
    WeightLayout::Ohwi,
    WeightLayout::Hwio,
    WeightLayout::Iohw,
];

/// f32 unit roundoff.
const U: f64 = 1.0 / 16_777_216.0;
/// Folded weights, bias and pad values are each rounded once: two roundings meet in
/// one term (`W'·pad`), hence 2u.
const BOUND: f64 = 2.0 * U;

/// SplitMix64: fixed seeds, the same values on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// The layer of `layout` with these sizes, through the constructor that makes it
/// (an N-d convolution, TensorFlow's and TFLite's, or a transposed convolution).
fn make(
    layout: WeightLayout,
    in_channels: usize,
    out_channels: usize,
    groups: usize,
    kernel_shape: &[usize],
) -> Layer {
    let (i, o, k) = (in_channels, out_channels, kernel_shape);
    match layout {
        WeightLayout::Oihw => Layer::conv(i, o, k),
        WeightLayout::Ohwi => Layer::conv_ohwi(i, o, k),
        WeightLayout::Hwio => Layer::conv_hwio(i, o, k),
        WeightLayout::Iohw => Layer::conv_transpose(i, o, k),
        _ => unreachable!("a layout this test does not know"),
    }
    .grouped(groups)
}

/// Where `W[o][i][k]` lives (o, i: absolute channels; k: flat kernel position).
fn at(layer: &Layer, o: usize, i: usize, k: usize) -> usize {
    let (out, kernel) = (layer.out_channels, layer.kernel);
    let out_g = out / layer.groups;
    let in_g = layer.in_channels / layer.groups;
    let g = o / out_g;
    assert_eq!(g, i / in_g, "o and i must be in the same group");
    let (p, q) = (o - g * out_g, i - g * in_g);
    match layer.layout {
        WeightLayout::Oihw => (o * in_g + q) * kernel + k,
        WeightLayout::Ohwi => (o * kernel + k) * in_g + q,
        WeightLayout::Hwio => (k * in_g + q) * out + o,
        WeightLayout::Iohw => (i * out_g + p) * kernel + k,
        _ => unreachable!("a layout this test does not know"),
    }
}

/// Every `(o, i, k)` that has a weight.
fn connections(layer: &Layer) -> Vec<(usize, usize, usize)> {
    let out_g = layer.out_channels / layer.groups;
    let in_g = layer.in_channels / layer.groups;
    let mut all = Vec::new();
    for o in 0..layer.out_channels {
        let g = o / out_g;
        for i in g * in_g..(g + 1) * in_g {
            for k in 0..layer.kernel {
                all.push((o, i, k));
            }
        }
    }
    all
}

/// One spatial dimension of a convolution.
#[derive(Clone, Copy, Debug)]
struct Dim {
    len: usize,
    kernel: usize,
    pad: usize,
    stride: usize,
    dilation: usize,
}

impl Dim {
    fn out_len(&self, transposed: bool) -> usize {
        let reach = self.dilation * (self.kernel - 1);
        if transposed {
            (self.len - 1) * self.stride + reach + 1 - 2 * self.pad
        } else {
            (self.len + 2 * self.pad - reach - 1) / self.stride + 1
        }
    }

    /// The input position output `t` reads at kernel tap `kk`, or `None` when it reads
    /// outside `x` (padding; for a transposed conv also the holes between samples).
    fn source(&self, transposed: bool, t: usize, kk: usize) -> Option<usize> {
        let tap = (kk * self.dilation) as isize;
        let pos = if transposed {
            let num = t as isize + self.pad as isize - tap;
            if num < 0 || num % self.stride as isize != 0 {
                return None;
            }
            num / self.stride as isize
        } else {
            (t * self.stride) as isize + tap - self.pad as isize
        };
        (0..self.len as isize)
            .contains(&pos)
            .then_some(pos as usize)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Gamma {
    Absent,
    /// |γ| in [0.25, 2], channel 0 negative, the rest random signs.
    Signed,
    /// Like `Signed` with every third channel exactly 0.
    WithZeros,
}

/// One layer and one BN. Layout `Iohw` is a transposed convolution, the others a
/// convolution; no dims is a linear layer.
#[derive(Clone, Debug)]
struct Case {
    layer: Layer,
    dims: Vec<Dim>,
    bias: bool,
    gamma: Gamma,
    beta: bool,
    eps: f32,
    seed: u64,
}

/// Raw shape parameters of one dim: (extra length, kernel, pad, stride, dilation).
type RawDim = (usize, usize, usize, usize, usize);

impl Case {
    /// `groups`: 0 → 1 group, 1 → 2 groups, 2 → depthwise (`channels` groups of one
    /// input channel, `out_g` outputs each).
    #[allow(clippy::too_many_arguments)]
    fn new(
        layout: WeightLayout,
        groups: usize,
        in_g: usize,
        out_g: usize,
        channels: usize,
        raw: &[RawDim],
        bias: bool,
        gamma: Gamma,
        beta: bool,
        eps: f32,
        seed: u64,
    ) -> Case {
        let transposed = layout == WeightLayout::Iohw;
        let (groups, in_g) = match groups {
            0 => (1, in_g),
            1 => (2, in_g),
            _ => (channels, 1),
        };
        let dims: Vec<Dim> = raw
            .iter()
            .map(|&(extra, kernel, pad, stride, dilation)| {
                let reach = dilation * (kernel - 1);
                if transposed {
                    let len = 1 + extra;
                    let pad = pad.min(((len - 1) * stride + reach) / 2);
                    Dim {
                        len,
                        kernel,
                        pad,
                        stride,
                        dilation,
                    }
                } else {
                    let len = reach + 1 + extra;
                    Dim {
                        len,
                        kernel,
                        pad,
                        stride,
                        dilation,
                    }
                }
            })
            .collect();
        let layer = make(
            layout,
            groups * in_g,
            groups * out_g,
            groups,
            &dims.iter().map(|d| d.kernel).collect::<Vec<_>>(),
        );
        Case {
            layer,
            dims,
            bias,
            gamma,
            beta,
            eps,
            seed,
        }
    }

    fn transposed(&self) -> bool {
        self.layer.layout == WeightLayout::Iohw
    }

    /// Whether the layer ever reads outside `x` (then BN-before needs pad values).
    fn reads_outside(&self) -> bool {
        self.transposed() || self.dims.iter().any(|d| d.pad > 0)
    }

    fn in_spatial(&self) -> usize {
        self.dims.iter().map(|d| d.len).product()
    }

    fn out_spatial(&self) -> usize {
        let t = self.transposed();
        self.dims.iter().map(|d| d.out_len(t)).product()
    }
}

/// Row-major coordinates of `flat` in `dims`.
fn unravel(mut flat: usize, dims: impl DoubleEndedIterator<Item = usize>, out: &mut Vec<usize>) {
    out.clear();
    for d in dims.rev() {
        out.push(flat % d);
        flat /= d;
    }
    out.reverse();
}

/// The layer in f64: `y[o][t] = b_o + Σ_{i,k} W[o][i][k]·x_i(source)`, with `fill[i]`
/// wherever it reads outside `x`. `x` is `[in_channels][in_spatial]`. Returns `y`
/// (`[out_channels][out_spatial]`) and per output the magnitude `Σ|w·x| + |b|`.
fn run_layer(
    case: &Case,
    weight: &[f32],
    bias: &[f64],
    x: &[f64],
    fill: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let layer = &case.layer;
    let transposed = case.transposed();
    let (s_in, s_out) = (case.in_spatial(), case.out_spatial());
    let out_g = layer.out_channels / layer.groups;
    let in_g = layer.in_channels / layer.groups;
    let (mut y, mut mag) = (Vec::new(), Vec::new());
    let (mut t, mut kk) = (Vec::new(), Vec::new());
    for o in 0..layer.out_channels {
        let g = o / out_g;
        for t_flat in 0..s_out {
            unravel(
                t_flat,
                case.dims.iter().map(|d| d.out_len(transposed)),
                &mut t,
            );
            let (mut sum, mut abs) = (bias[o], bias[o].abs());
            for i in g * in_g..(g + 1) * in_g {
                for k in 0..layer.kernel {
                    unravel(k, case.dims.iter().map(|d| d.kernel), &mut kk);
                    let mut src = Some(0);
                    for (d, dim) in case.dims.iter().enumerate() {
                        src = match (src, dim.source(transposed, t[d], kk[d])) {
                            (Some(s), Some(p)) => Some(s * dim.len + p),
                            _ => None,
                        };
                    }
                    let xv = src.map_or(fill[i], |s| x[i * s_in + s]);
                    let term = f64::from(weight[at(layer, o, i, k)]) * xv;
                    sum += term;
                    abs += term.abs();
                }
            }
            y.push(sum);
            mag.push(abs);
        }
    }
    (y, mag)
}

/// The BN's parameters, owned.
struct Bn {
    mean: Vec<f32>,
    var: Vec<f32>,
    gamma: Option<Vec<f32>>,
    beta: Option<Vec<f32>>,
    eps: f32,
}

impl Bn {
    fn random(rng: &mut Rng, channels: usize, gamma: Gamma, beta: bool, eps: f32) -> Bn {
        let mean = rng.vec(channels, -2.0, 2.0);
        let floor = if eps == 0.0 { 0.05 } else { 0.0 };
        let mut var = rng.vec(channels, floor, 3.0);
        if eps > 0.0 && channels > 1 {
            var[1] = 0.0; // a constant channel: fine with eps > 0
        }
        let gamma = match gamma {
            Gamma::Absent => None,
            Gamma::Signed | Gamma::WithZeros => Some(
                (0..channels)
                    .map(|c| {
                        let mag = rng.uniform(0.25, 2.0);
                        let negative = c == 0 || rng.next() & 1 == 1;
                        if gamma == Gamma::WithZeros && c % 3 == 2 {
                            0.0
                        } else if negative {
                            -mag
                        } else {
                            mag
                        }
                    })
                    .collect(),
            ),
        };
        let beta = beta.then(|| rng.vec(channels, -1.0, 1.0));
        Bn {
            mean,
            var,
            gamma,
            beta,
            eps,
        }
    }

    fn eval(&self) -> EvalBn<'_> {
        EvalBn::new(
            BatchNorm {
                eps: self.eps,
                gamma: self.gamma.as_deref(),
                beta: self.beta.as_deref(),
            },
            RunningStats {
                mean: &self.mean,
                var: &self.var,
            },
        )
    }

    fn gamma(&self, c: usize) -> f64 {
        self.gamma.as_ref().map_or(1.0, |g| f64::from(g[c]))
    }

    fn beta(&self, c: usize) -> f64 {
        self.beta.as_ref().map_or(0.0, |b| f64::from(b[c]))
    }

    /// `γ/√(var + eps)` in f64.
    fn scale(&self, c: usize) -> f64 {
        self.gamma(c) / (f64::from(self.var[c]) + f64::from(self.eps)).sqrt()
    }

    /// BN in f64, as the definition writes it.
    fn apply(&self, c: usize, x: f64) -> f64 {
        (x - f64::from(self.mean[c])) / (f64::from(self.var[c]) + f64::from(self.eps)).sqrt()
            * self.gamma(c)
            + self.beta(c)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    /// BN after the layer: `into_preceding`.
    After,
    /// BN before the layer: `into_following`.
    Before,
}

/// Folds and compares the folded layer with BN + layer on random x; returns the
/// largest relative error.
fn run_case(case: &Case, side: Side) -> Result<f64, String> {
    let layer = case.layer;
    let (o_n, i_n) = (layer.out_channels, layer.in_channels);
    let mut rng = Rng(case.seed);
    let len = o_n * (i_n / layer.groups) * layer.kernel;
    let weight = rng.vec(len, -1.0, 1.0);
    let bias = case.bias.then(|| rng.vec(o_n, -1.0, 1.0));
    let x: Vec<f64> = rng
        .vec(i_n * case.in_spatial(), -3.0, 3.0)
        .into_iter()
        .map(f64::from)
        .collect();
    let zeros_in = vec![0.0; i_n];
    let b64: Vec<f64> = bias.as_ref().map_or(vec![0.0; o_n], |b| {
        b.iter().map(|&v| f64::from(v)).collect()
    });
    // The folded layer's bias: the layer's own, or zeros when it had none.
    let mut folded_w = weight.clone();
    let mut folded_b = bias.clone().unwrap_or_else(|| vec![0.0; o_n]);
    let mut worst = 0.0f64;
    let mut compare = |r: f64, r_mag: f64, f: f64, f_mag: f64| -> Result<(), String> {
        let err = (r - f).abs() / r_mag.max(f_mag).max(f64::MIN_POSITIVE);
        worst = worst.max(err);
        if err <= BOUND {
            Ok(())
        } else {
            Err(format!(
                "reference {r} folded {f}: relative error {err:e} > {BOUND:e}"
            ))
        }
    };
    match side {
        Side::After => {
            let bn = Bn::random(&mut rng, o_n, case.gamma, case.beta, case.eps);
            fold::into_preceding(&bn.eval(), layer, &mut folded_w, &mut folded_b)
                .map_err(|e| e.to_string())?;
            let (z, z_mag) = run_layer(case, &weight, &b64, &x, &zeros_in);
            let fb: Vec<f64> = folded_b.iter().map(|&v| f64::from(v)).collect();
            let (y, y_mag) = run_layer(case, &folded_w, &fb, &x, &zeros_in);
            let s_out = case.out_spatial();
            for (n, (&zv, &zm)) in z.iter().zip(&z_mag).enumerate() {
                let o = n / s_out;
                let r = bn.apply(o, zv);
                let r_mag =
                    bn.scale(o).abs() * (zm + f64::from(bn.mean[o]).abs()) + bn.beta(o).abs();
                compare(r, r_mag, y[n], y_mag[n])?;
            }
        }
        Side::Before => {
            // Zero scales are foldable only where no padding value is needed.
            let gamma = if case.reads_outside() && case.gamma == Gamma::WithZeros {
                Gamma::Signed
            } else {
                case.gamma
            };
            let bn = Bn::random(&mut rng, i_n, gamma, case.beta, case.eps);
            let want_pad =
                case.reads_outside() || (gamma != Gamma::WithZeros && rng.next() & 1 == 1);
            let mut pad = vec![f32::NAN; i_n];
            fold::into_following(
                &bn.eval(),
                layer,
                &mut folded_w,
                &mut folded_b,
                want_pad.then_some(&mut pad[..]),
            )
            .map_err(|e| e.to_string())?;
            let s_in = case.in_spatial();
            let xhat: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(n, &v)| bn.apply(n / s_in, v))
                .collect();
            let (r, r_mag) = run_layer(case, &weight, &b64, &xhat, &zeros_in);
            let fill: Vec<f64> = if want_pad {
                for (c, &p) in pad.iter().enumerate() {
                    // BN maps the pad value to 0, up to its own rounding.
                    // (plus f64 rounding of the terms BN adds up)
                    let terms = (bn.scale(c) * f64::from(bn.mean[c])).abs() + bn.beta(c).abs();
                    let tol = 2.0 * U * bn.scale(c).abs() * f64::from(p).abs() + 1e-12 * terms;
                    if bn.apply(c, f64::from(p)).abs() > tol {
                        return Err(format!("pad[{c}] = {p} is not mapped to 0"));
                    }
                }
                pad.iter().map(|&v| f64::from(v)).collect()
            } else {
                zeros_in.clone()
            };
            let fb: Vec<f64> = folded_b.iter().map(|&v| f64::from(v)).collect();
            let (y, y_mag) = run_layer(case, &folded_w, &fb, &x, &fill);
            for n in 0..r.len() {
                compare(r[n], r_mag[n], y[n], y_mag[n])?;
            }
        }
    }
    Ok(worst)
}

fn case_strategy(max_channels: usize, max_dims: usize) -> impl Strategy<Value = Case> {
    let dim = (0..=2usize, 1..=3usize, 0..=2usize, 1..=2usize, 1..=2usize);
    (
        (
            0..4usize,
            0..3usize,
            1..=max_channels,
            1..=max_channels,
            1..=4usize,
        ),
        prop::collection::vec(dim, 0..=max_dims),
        (
            any::<bool>(),
            0..3usize,
            any::<bool>(),
            0..4usize,
            any::<u64>(),
        ),
    )
        .prop_map(
            |((layout, groups, in_g, out_g, channels), raw, (bias, gamma, beta, eps, seed))| {
                let gamma = [Gamma::Absent, Gamma::Signed, Gamma::WithZeros][gamma];
                let eps = [1e-5, 1e-3, 0.0, 0.5][eps];
                Case::new(
                    LAYOUTS[layout],
                    groups,
                    in_g,
                    out_g,
                    channels,
                    &raw,
                    bias,
                    gamma,
                    beta,
                    eps,
                    seed,
                )
            },
        )
}

fn runner(seed: u64, cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `cases` random cases through `run_case` and returns the largest error.
fn prop(side: Side, seed: u64, cases: u32, strategy: impl Strategy<Value = Case>) -> f64 {
    let worst = Cell::new(0.0f64);
    runner(seed, cases)
        .run(&strategy, |case| {
            let err = run_case(&case, side).map_err(TestCaseError::fail)?;
            worst.set(worst.get().max(err));
            Ok(())
        })
        .unwrap();
    worst.get()
}

#[test]
fn bn_after_layer_proptest() {
    let worst = prop(Side::After, 0xB0A7, 400, case_strategy(3, 3));
    let wide = prop(Side::After, 0xB0A8, 60, case_strategy(40, 1));
    println!("into_preceding: largest error vs f64 reference {:.3e} (small), {:.3e} (wide) [bound {BOUND:.3e}]", worst, wide);
}

#[test]
fn bn_before_layer_proptest() {
    let worst = prop(Side::Before, 0xF011, 400, case_strategy(3, 3));
    let wide = prop(Side::Before, 0xF012, 60, case_strategy(40, 1));
    println!("into_following: largest error vs f64 reference {:.3e} (small), {:.3e} (wide) [bound {BOUND:.3e}]", worst, wide);
}

/// Every combination the issue names, not left to chance: all four layouts ×
/// groups {1, 2, C} × linear / 1-D / 2-D / 3-D × bias or not × γ absent / signed /
/// with zeros × β or not, both sides; with padding, stride 2 and dilation 2 in some dims.
#[test]
fn grid_every_layout_groups_dims_bias_affine() {
    let mut worst = [0.0f64; 2];
    let mut count = 0;
    let shapes: [&[RawDim]; 4] = [
        &[],
        &[(2, 3, 1, 2, 1)],
        &[(1, 3, 1, 1, 1), (2, 2, 0, 2, 2)],
        &[(1, 2, 1, 1, 1), (0, 3, 2, 2, 1), (1, 2, 0, 1, 2)],
    ];
    for layout in LAYOUTS {
        for groups in 0..3 {
            for (nd, raw) in shapes.iter().enumerate() {
                for bias in [false, true] {
                    for gamma in [Gamma::Absent, Gamma::Signed, Gamma::WithZeros] {
                        for beta in [false, true] {
                            let seed = count as u64;
                            let (in_g, out_g) = (2 + nd % 2, 3 - nd % 2);
                            let case = Case::new(
                                layout, groups, in_g, out_g, 3, raw, bias, gamma, beta, 1e-5, seed,
                            );
                            for (s, side) in [Side::After, Side::Before].into_iter().enumerate() {
                                let err = run_case(&case, side)
                                    .unwrap_or_else(|e| panic!("{case:?} {side:?}: {e}"));
                                worst[s] = worst[s].max(err);
                            }
                            count += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(count, 4 * 3 * 4 * 2 * 3 * 2);
    println!(
        "grid of {count} layers: largest error vs f64 reference {:.3e} (BN after), {:.3e} (BN before)",
        worst[0], worst[1]
    );
}

/// A NaN whose payload says "never written".
const SENTINEL: f32 = f32::from_bits(0x7fc0_5eed);
const GUARD: usize = 5;

/// `len` values inside `GUARD` sentinels on each side.
fn guarded(values: &[f32]) -> Vec<f32> {
    let mut buf = vec![SENTINEL; values.len() + 2 * GUARD];
    buf[GUARD..GUARD + values.len()].copy_from_slice(values);
    buf
}

fn guards_intact(buf: &[f32]) -> bool {
    let n = buf.len();
    buf[..GUARD]
        .iter()
        .chain(&buf[n - GUARD..])
        .all(|v| v.to_bits() == SENTINEL.to_bits())
}

/// Each folded weight is `(w·scale) as f32` with the f64 scale of the right channel,
/// bit for bit; each bias the f64 formula rounded once. Channel counts and kernel sizes
/// straddle the crate's 128-value tiles (and its `128/K`-channel tiles of runs of `K`,
/// and the `K > 128` runs), its 4096-output (1024 grouped) segments of HWIO rows, and its 8-lane
/// partial sums; outputs sit between guard cells.
#[test]
fn formulas_bit_exact_across_tiles() {
    let mut rng = Rng(7);
    let mut layers = 0;
    for layout in LAYOUTS {
        for (groups, in_g, out_g) in [
            (1, 1, 1),
            (1, 33, 31),
            (1, 32, 65),
            (1, 65, 33),
            (2, 31, 34),
            (3, 33, 2),
            (70, 1, 1),
            (33, 1, 3),
            (1, 129, 127),
            (1, 128, 257),
            (1, 257, 129),
            (2, 43, 130),
            (130, 1, 1),
            (1, 9, 5),
            (1, 3, 130),
            (2, 2, 129),
            (1, 2, 1030),
            (2, 2, 515),
            (1, 1, 4100),
        ] {
            for kernel in [1, 3, 43, 130] {
                if groups * in_g * out_g * kernel > 100_000 {
                    continue; // large and slow to check; the small shapes cover these K
                }
                let layer = make(layout, groups * in_g, groups * out_g, groups, &[kernel]);
                let conns = connections(&layer);
                let weight = rng.vec(conns.len(), -1.0, 1.0);
                let bias = rng.vec(layer.out_channels, -1.0, 1.0);
                // Every weight has exactly one (o, i, k).
                let mut seen = vec![false; weight.len()];
                for &(o, i, k) in &conns {
                    assert!(!std::mem::replace(&mut seen[at(&layer, o, i, k)], true));
                }
                assert!(seen.iter().all(|&s| s));

                // BN after.
                let bn = Bn::random(&mut rng, layer.out_channels, Gamma::WithZeros, true, 1e-3);
                let (mut w, mut b) = (guarded(&weight), guarded(&bias));
                let (wn, bn_len) = (weight.len(), bias.len());
                fold::into_preceding(
                    &bn.eval(),
                    layer,
                    &mut w[GUARD..GUARD + wn],
                    &mut b[GUARD..GUARD + bn_len],
                )
                .unwrap();
                assert!(guards_intact(&w) && guards_intact(&b));
                for &(o, i, k) in &conns {
                    let n = at(&layer, o, i, k);
                    let want = (f64::from(weight[n]) * bn.scale(o)) as f32;
                    assert_eq!(
                        w[GUARD + n].to_bits(),
                        want.to_bits(),
                        "{layer:?} W[{o}][{i}][{k}]"
                    );
                }
                for o in 0..layer.out_channels {
                    let want = ((f64::from(bias[o]) - f64::from(bn.mean[o])) * bn.scale(o)
                        + bn.beta(o)) as f32;
                    assert_eq!(b[GUARD + o].to_bits(), want.to_bits(), "{layer:?} b[{o}]");
                }

                // BN before.
                let bn = Bn::random(&mut rng, layer.in_channels, Gamma::Signed, true, 1e-3);
                let (mut w, mut b) = (guarded(&weight), guarded(&bias));
                let mut pad = guarded(&vec![SENTINEL; layer.in_channels]);
                let pn = layer.in_channels;
                fold::into_following(
                    &bn.eval(),
                    layer,
                    &mut w[GUARD..GUARD + wn],
                    &mut b[GUARD..GUARD + bn_len],
                    Some(&mut pad[GUARD..GUARD + pn]),
                )
                .unwrap();
                assert!(guards_intact(&w) && guards_intact(&b) && guards_intact(&pad));
                let mut sums = vec![0.0f64; layer.out_channels];
                let mut sums_abs = vec![0.0f64; layer.out_channels];
                for &(o, i, k) in &conns {
                    let n = at(&layer, o, i, k);
                    let want = (f64::from(weight[n]) * bn.scale(i)) as f32;
                    assert_eq!(
                        w[GUARD + n].to_bits(),
                        want.to_bits(),
                        "{layer:?} W[{o}][{i}][{k}]"
                    );
                    let shift = bn.beta(i) - f64::from(bn.mean[i]) * bn.scale(i);
                    sums[o] += f64::from(weight[n]) * shift;
                    sums_abs[o] += (f64::from(weight[n]) * shift).abs();
                }
                for o in 0..layer.out_channels {
                    // The crate sums in another order: equal up to f64 rounding, then once to f32.
                    let want = f64::from(bias[o]) + sums[o];
                    let got = f64::from(b[GUARD + o]);
                    let tol = U * want.abs() + 1e-12 * (sums_abs[o] + f64::from(bias[o]).abs());
                    assert!(
                        (got - want).abs() <= tol,
                        "{layer:?} b[{o}] {got} vs {want}"
                    );
                }
                for c in 0..layer.in_channels {
                    let want = f64::from(bn.mean[c]) - bn.beta(c) / bn.scale(c);
                    let got = pad[GUARD + c];
                    assert_eq!(got.to_bits(), (want as f32).to_bits(), "pad[{c}]");
                }
                layers += 1;
            }
        }
    }
    assert_eq!(layers, 4 * 60);
}

/// The documented conventions on one small grouped transposed conv, written out:
/// output channel o = g·Og + j is `W[g·Ig + q][j][k]` for all q, k.
#[test]
fn transposed_grouped_channel_mapping() {
    // ConvTranspose(in 4, out 6, groups 2, kernel 1): weight [4][3][1]
    let layer = make(WeightLayout::Iohw, 4, 6, 2, &[1]);
    let mut w: Vec<f32> = (0..12).map(|n| n as f32).collect();
    let mut b = [0.0; 6];
    let gamma = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
    let bn = EvalBn::new(
        BatchNorm {
            eps: 0.0,
            gamma: Some(&gamma),
            beta: None,
        },
        RunningStats {
            mean: &[0.0; 6],
            var: &[1.0; 6],
        },
    );
    fold::into_preceding(&bn, layer, &mut w, &mut b).unwrap();
    #[rustfmt::skip]
    let want = [
        0.0, 2.0, 8.0,     // input 0 (group 0) → outputs 0, 1, 2
        3.0, 8.0, 20.0,    // input 1 (group 0)
        6.0 * 8.0, 7.0 * 16.0, 8.0 * 32.0,    // input 2 (group 1) → outputs 3, 4, 5
        9.0 * 8.0, 10.0 * 16.0, 11.0 * 32.0,  // input 3 (group 1)
    ];
    assert_eq!(w, want);
}

// ------------------------------------------------------------------ errors

/// Buffers for one call, with snapshots to prove nothing was written.
struct Fixture {
    layer: Layer,
    weight: Vec<f32>,
    bias: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    pad: Vec<f32>,
}

impl Fixture {
    fn new(layer: Layer, side: Side) -> Fixture {
        let mut rng = Rng(layer.in_channels as u64 * 31 + layer.out_channels as u64);
        let len = layer.out_channels * (layer.in_channels / layer.groups) * layer.kernel;
        let channels = if side == Side::After {
            layer.out_channels
        } else {
            layer.in_channels
        };
        Fixture {
            layer,
            weight: rng.vec(len, -1.0, 1.0),
            bias: rng.vec(layer.out_channels, -1.0, 1.0),
            mean: rng.vec(channels, -1.0, 1.0),
            var: rng.vec(channels, 0.5, 2.0),
            gamma: rng.vec(channels, 0.5, 2.0),
            beta: rng.vec(channels, -1.0, 1.0),
            pad: vec![SENTINEL; layer.in_channels],
        }
    }

    /// Calls `side`'s fold with `eps`, `gamma`, `beta` as given, and checks that on
    /// `Err` no buffer changed.
    fn call(&mut self, side: Side, eps: f32, with_pad: bool) -> Result<(), Error> {
        let before = (self.weight.clone(), self.bias.clone(), self.pad.clone());
        let bn = EvalBn::new(
            BatchNorm {
                eps,
                gamma: Some(&self.gamma),
                beta: Some(&self.beta),
            },
            RunningStats {
                mean: &self.mean,
                var: &self.var,
            },
        );
        let result = match side {
            Side::After => fold::into_preceding(&bn, self.layer, &mut self.weight, &mut self.bias),
            Side::Before => fold::into_following(
                &bn,
                self.layer,
                &mut self.weight,
                &mut self.bias,
                with_pad.then_some(&mut self.pad[..]),
            ),
        };
        if result.is_err() {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&self.weight),
                bits(&before.0),
                "weight written on {result:?}"
            );
            assert_eq!(
                bits(&self.bias),
                bits(&before.1),
                "bias written on {result:?}"
            );
            assert_eq!(
                bits(&self.pad),
                bits(&before.2),
                "pad written on {result:?}"
            );
        }
        result
    }
}

fn error_layers() -> Vec<Layer> {
    let mut layers = vec![Layer::linear(5, 3), Layer::linear_in_out(4, 6)];
    for layout in LAYOUTS {
        layers.push(make(layout, 4, 6, 2, &[3]));
        layers.push(make(layout, 3, 6, 3, &[4]));
    }
    layers
}

#[test]
fn every_length_off_by_one() {
    let mut checked = 0;
    for layer in error_layers() {
        for side in [Side::After, Side::Before] {
            let args: &[&str] = match side {
                Side::After => &[
                    "weight",
                    "bias",
                    "running_mean",
                    "running_var",
                    "gamma",
                    "beta",
                ],
                Side::Before => &[
                    "weight",
                    "bias",
                    "running_mean",
                    "running_var",
                    "gamma",
                    "beta",
                    "pad",
                ],
            };
            for &arg in args {
                for grow in [false, true] {
                    let mut f = Fixture::new(layer, side);
                    let v = match arg {
                        "weight" => &mut f.weight,
                        "bias" => &mut f.bias,
                        "running_mean" => &mut f.mean,
                        "running_var" => &mut f.var,
                        "gamma" => &mut f.gamma,
                        "beta" => &mut f.beta,
                        _ => &mut f.pad,
                    };
                    let expected = v.len();
                    if grow {
                        v.push(0.5);
                    } else {
                        v.pop();
                    }
                    let actual = v.len();
                    let err = f.call(side, 1e-5, true).unwrap_err();
                    assert_eq!(
                        err,
                        Error::Length {
                            arg,
                            expected,
                            actual
                        },
                        "{layer:?} {side:?}"
                    );
                    checked += 1;
                }
            }
            // And the right lengths work.
            Fixture::new(layer, side).call(side, 1e-5, true).unwrap();
        }
    }
    assert_eq!(checked, error_layers().len() * (6 + 7) * 2);
}

#[test]
fn groups_must_divide_both_channel_counts() {
    for layout in LAYOUTS {
        for side in [Side::After, Side::Before] {
            for (groups, in_c, out_c, arg, channels) in [
                (0, 4, 6, "in_channels", 4),
                (0, 0, 0, "in_channels", 0),
                (3, 4, 6, "in_channels", 4),
                (4, 4, 6, "out_channels", 6),
                (2, 4, 5, "out_channels", 5),
            ] {
                let layer = make(layout, in_c, out_c, 1, &[2]);
                let mut f = Fixture::new(layer, side);
                f.layer.groups = groups;
                let err = f.call(side, 1e-5, true).unwrap_err();
                assert_eq!(
                    err,
                    Error::Groups {
                        groups,
                        arg,
                        channels
                    },
                    "{layout:?}"
                );
            }
        }
    }
}

#[test]
fn size_overflow() {
    let big = usize::MAX / 2 + 1;
    for layout in LAYOUTS {
        for side in [Side::After, Side::Before] {
            for (in_c, out_c, groups, kernel) in [
                (2, 4, 1, big),
                (big, 2, 1, 1),
                (2, big, 2, 3),
                (1 << 33, 1 << 33, 1, 1),
                (big, big, 1, 0),
                (usize::MAX, usize::MAX, usize::MAX, 2),
            ] {
                let layer = make(layout, in_c, out_c, groups, &[kernel]);
                let (mut w, mut b, mut p) = ([1.0f32; 4], [1.0f32; 4], [1.0f32; 4]);
                let bn = EvalBn::new(
                    BatchNorm {
                        eps: 1e-5,
                        gamma: None,
                        beta: None,
                    },
                    RunningStats {
                        mean: &[],
                        var: &[],
                    },
                );
                let err = match side {
                    Side::After => fold::into_preceding(&bn, layer, &mut w, &mut b),
                    Side::Before => fold::into_following(&bn, layer, &mut w, &mut b, Some(&mut p)),
                }
                .unwrap_err();
                assert_eq!(err, Error::Overflow { arg: "weight" }, "{layer:?}");
                assert_eq!((w, b, p), ([1.0; 4], [1.0; 4], [1.0; 4]));
            }
        }
    }
}

#[test]
fn eps_must_be_finite_and_non_negative() {
    for layer in error_layers() {
        for side in [Side::After, Side::Before] {
            for eps in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1e-30, -1.0] {
                let err = Fixture::new(layer, side).call(side, eps, true).unwrap_err();
                assert!(
                    matches!(err, Error::Parameter { arg: "eps", value } if value.to_bits() == eps.to_bits()),
                    "{err:?}"
                );
            }
            for eps in [0.0, f32::MIN_POSITIVE, 1e-5, 1e30] {
                Fixture::new(layer, side).call(side, eps, true).unwrap();
            }
        }
    }
}

#[test]
fn zero_scale_rejected_only_when_pad_values_are_asked_for() {
    for layer in error_layers() {
        // γ = ±0 or an infinite variance: scale 0.
        for (channel, gamma, var) in [(2, 0.0, 1.0), (1, -0.0, 1.0), (0, 1.0, f32::INFINITY)] {
            let mut f = Fixture::new(layer, Side::Before);
            f.gamma[channel] = gamma;
            f.var[channel] = var;
            assert_eq!(
                f.call(Side::Before, 1e-5, true),
                Err(Error::ZeroScale { channel }),
                "{layer:?}"
            );
            // Without pad values the fold is exact (no padding) and goes through.
            f.call(Side::Before, 1e-5, false).unwrap();
            assert!(f.pad.iter().all(|p| p.to_bits() == SENTINEL.to_bits()));
            // After the layer a zero scale is just W' = 0, b' = β.
            let mut f = Fixture::new(layer, Side::After);
            f.gamma[channel] = gamma;
            f.call(Side::After, 1e-5, true).unwrap();
        }
    }
}

/// The ordering of checks: eps, then groups, then sizes, then lengths in argument
/// order, then zero scales.
#[test]
fn first_error_wins_in_argument_order() {
    let layer = make(WeightLayout::Oihw, 4, 6, 2, &[3]);
    let mut f = Fixture::new(layer, Side::Before);
    f.bias.pop();
    f.mean.pop();
    f.gamma[0] = 0.0;
    f.pad.pop();
    assert!(matches!(
        f.call(Side::Before, f32::NAN, true),
        Err(Error::Parameter { .. })
    ));
    f.layer.groups = 3;
    assert!(matches!(
        f.call(Side::Before, 1e-5, true),
        Err(Error::Groups { .. })
    ));
    f.layer.groups = 2;
    assert!(matches!(
        f.call(Side::Before, 1e-5, true),
        Err(Error::Length { arg: "bias", .. })
    ));
    f.bias.push(0.0);
    assert!(matches!(
        f.call(Side::Before, 1e-5, true),
        Err(Error::Length {
            arg: "running_mean",
            ..
        })
    ));
    f.mean.push(0.0);
    assert!(matches!(
        f.call(Side::Before, 1e-5, true),
        Err(Error::Length { arg: "pad", .. })
    ));
    f.pad.push(0.0);
    assert_eq!(
        f.call(Side::Before, 1e-5, true),
        Err(Error::ZeroScale { channel: 0 })
    );
}

#[test]
fn empty_layers_are_fine() {
    for layout in LAYOUTS {
        for (in_c, out_c, groups, kernel) in
            [(0, 0, 1, 3), (0, 0, 5, 3), (2, 3, 1, 0), (4, 4, 2, 0)]
        {
            for side in [Side::After, Side::Before] {
                let layer = make(layout, in_c, out_c, groups, &[kernel]);
                let mut f = Fixture::new(layer, side);
                f.call(side, 1e-5, true).unwrap();
                if side == Side::After && out_c > 0 {
                    // No weights: the folded bias is BN(b).
                    assert!(f.bias.iter().all(|b| b.is_finite()));
                }
            }
        }
    }
}

/// NaN, ±inf and invalid statistics propagate as IEEE says, without a panic.
#[test]
fn non_finite_inputs_propagate() {
    let layer = make(WeightLayout::Hwio, 3, 3, 1, &[2]);
    for side in [Side::After, Side::Before] {
        let mut f = Fixture::new(layer, side);
        f.var = vec![-1.0, 0.0, f32::NAN]; // √ of a negative: NaN; var + eps = 0: inf scale
        f.weight[0] = f32::INFINITY;
        f.mean[1] = f32::NAN;
        f.call(side, 0.0, true).unwrap();
        assert!(f.weight.iter().any(|w| w.is_nan()));
        assert!(f.bias.iter().any(|b| b.is_nan()));
        if side == Side::Before {
            // scale NaN, +inf (with mean NaN), NaN: no zero scale, and every pad value NaN.
            assert!(f.pad.iter().all(|p| p.is_nan()), "{:?}", f.pad);
        }
    }
}
