//! Test support shared by the integration tests:
//!
//! - the one naive **f64 oracle** (straight loops over `(n, c, s)` with the index
//!   formulas of both layouts), for moments, eval forward, train forward with the
//!   running-statistics update, and both backward passes; and, built on those, for
//!   batch norm fused with ReLU / Add + ReLU (forward and backward) and for Batch
//!   Renormalization (forward and backward);
//! - the **tolerance model** every comparison uses (see [`tol`]);
//! - a deterministic **tensor generator** (SplitMix64 + Box–Muller);
//! - **guarded output buffers**: outputs start as a sentinel NaN with guard cells on
//!   both sides, so an element that is never written, or a write out of range, fails.
// Each test crate uses a different part of this module.
#![allow(dead_code)]
// The oracle is deliberately written as straight index loops over (n, c, s).
#![allow(clippy::needless_range_loop)]

use batchnorm::{Correction, Layout, Moments, Momentum, Shape};

// ----------------------------------------------------------------------------------
// Layout
// ----------------------------------------------------------------------------------

/// Where element `(n, c, s)` lives in the flat slice (DESIGN.md, "Tensors").
pub fn index(shape: &Shape, n: usize, c: usize, s: usize) -> usize {
    let (cs, ss) = (shape.channels, shape.spatial);
    match shape.layout {
        Layout::ChannelsFirst => (n * cs + c) * ss + s,
        Layout::ChannelsLast => (n * ss + s) * cs + c,
    }
}

/// Number of elements `N·C·S` (unchecked: test shapes are small).
pub fn numel(shape: &Shape) -> usize {
    shape.batch * shape.channels * shape.spatial
}

/// Values per channel, `m = N·S`.
pub fn per_channel(shape: &Shape) -> usize {
    shape.batch * shape.spatial
}

/// The flat indices of channel `c`, `n` outer and `s` inner.
pub fn channel_indices(shape: &Shape, c: usize) -> impl Iterator<Item = usize> + '_ {
    (0..shape.batch).flat_map(move |n| (0..shape.spatial).map(move |s| index(shape, n, c, s)))
}

/// The channel of flat index `i`.
pub fn channel_of(shape: &Shape, i: usize) -> usize {
    match shape.layout {
        Layout::ChannelsFirst => (i / shape.spatial) % shape.channels,
        Layout::ChannelsLast => i % shape.channels,
    }
}

// ----------------------------------------------------------------------------------
// The oracle (f64, naive)
// ----------------------------------------------------------------------------------

/// Exact-as-f64-allows statistics of one channel.
#[derive(Clone, Copy, Debug)]
pub struct RefMoments {
    /// m = N·S.
    pub count: usize,
    pub mean: f64,
    /// Σ(x − mean)².
    pub m2: f64,
    /// Biased variance m2/m (NaN when m = 0).
    pub var: f64,
    /// max |x − mean|: the scale of the deviations, used by the tolerance model.
    pub max_dev: f64,
}

impl RefMoments {
    /// var·m/(m−1), what the running variance is fed with by default (PyTorch).
    pub fn unbiased_var(&self) -> f64 {
        self.m2 / (self.count as f64 - 1.0)
    }

    /// What the running variance is fed with under `correction`: m2/(m−1), or the
    /// biased m2/m (ONNX, Keras, Flax).
    pub fn batch_var(&self, correction: Correction) -> f64 {
        match correction {
            Correction::Unbiased => self.unbiased_var(),
            Correction::Biased => self.var,
        }
    }
}

/// Per-channel moments in f64: Neumaier-compensated sum for the mean, then the
/// corrected two-pass `m2 = Σd² − (Σd)²/m` (Chan, Golub, LeVeque), so the reference
/// itself is accurate to ~1e-15 relative even at m = 10⁷ and |mean|/std = 10⁴.
/// Non-finite inputs propagate as IEEE says (the mean becomes ±inf/NaN, var NaN).
pub fn ref_moments(x: &[f32], shape: &Shape) -> Vec<RefMoments> {
    (0..shape.channels)
        .map(|c| ref_moments_at(x, &channel_indices(shape, c).collect::<Vec<_>>()))
        .collect()
}

/// [`ref_moments`] of the values of `x` at the flat indices `idx` (a row, a group, an
/// instance).
pub fn ref_moments_at(x: &[f32], idx: &[usize]) -> RefMoments {
    let m = idx.len();
    if m == 0 {
        return RefMoments {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            var: f64::NAN,
            max_dev: 0.0,
        };
    }
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for &i in idx {
        let v = x[i] as f64;
        let t = sum + v;
        comp += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    let mean = (sum + comp) / m as f64;
    let (mut sd, mut sd2, mut max_dev) = (0.0f64, 0.0f64, 0.0f64);
    for &i in idx {
        let d = x[i] as f64 - mean;
        sd += d;
        sd2 += d * d;
        max_dev = max_dev.max(d.abs());
    }
    let m2 = sd2 - sd * sd / m as f64;
    RefMoments {
        count: m,
        mean,
        m2,
        var: m2 / m as f64,
        max_dev,
    }
}

/// γ_c (1 when absent).
pub fn gamma_of(gamma: Option<&[f32]>, c: usize) -> f64 {
    gamma.map_or(1.0, |g| g[c] as f64)
}

/// β_c (0 when absent).
pub fn beta_of(beta: Option<&[f32]>, c: usize) -> f64 {
    beta.map_or(0.0, |b| b[c] as f64)
}

/// `y = (x − mean_c)·invstd_c·γ_c + β_c` for every element, in f64.
pub fn ref_normalize(
    x: &[f32],
    shape: &Shape,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    mean: &[f64],
    invstd: &[f64],
) -> Vec<f64> {
    let mut y = vec![f64::NAN; x.len()];
    for c in 0..shape.channels {
        let (g, b) = (gamma_of(gamma, c), beta_of(beta, c));
        for i in channel_indices(shape, c) {
            y[i] = (x[i] as f64 - mean[c]) * invstd[c] * g + b;
        }
    }
    y
}

/// Eval forward: `y = (x − rm_c)/√(rv_c + eps)·γ_c + β_c`.
pub fn ref_eval(
    x: &[f32],
    shape: &Shape,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Vec<f64> {
    let mean: Vec<f64> = running_mean.iter().map(|&v| v as f64).collect();
    let invstd: Vec<f64> = running_var
        .iter()
        .map(|&v| 1.0 / (v as f64 + eps as f64).sqrt())
        .collect();
    ref_normalize(x, shape, gamma, beta, &mean, &invstd)
}

/// The factor the batch statistic gets in the running-statistics update after
/// `batches_tracked` updates. `Exponential(p)`: p (PyTorch's momentum).
/// `Cumulative`: 1/(t+1).
pub fn momentum_factor(momentum: Momentum, batches_tracked: u64) -> f64 {
    match momentum {
        Momentum::Exponential(p) => p as f64,
        Momentum::Cumulative => 1.0 / (batches_tracked as f64 + 1.0),
    }
}

/// Running statistics before an update, as the oracle takes them: mean, var, the
/// factor `f` of the update ([`momentum_factor`]) and the variance correction.
pub type RefRunning<'a> = (&'a [f32], &'a [f32], f64, Correction);

/// Everything train forward produces, in f64.
#[derive(Clone, Debug)]
pub struct RefTrain {
    pub stats: Vec<RefMoments>,
    /// 1/√(var_c + eps) with the biased var.
    pub invstd: Vec<f64>,
    /// y from the f64 statistics.
    pub y: Vec<f64>,
    /// Updated running mean and var, when running statistics were given.
    pub running: Option<(Vec<f64>, Vec<f64>)>,
}

/// Train forward: batch statistics, y, and the running update
/// `rm ← (1−f)·rm + f·mean`, `rv ← (1−f)·rv + f·batch_var` (var·m/(m−1) unbiased, var
/// biased), f from [`momentum_factor`].
pub fn ref_train(
    x: &[f32],
    shape: &Shape,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    running: Option<RefRunning>,
) -> RefTrain {
    let stats = ref_moments(x, shape);
    let mean: Vec<f64> = stats.iter().map(|s| s.mean).collect();
    let invstd: Vec<f64> = stats
        .iter()
        .map(|s| 1.0 / (s.var + eps as f64).sqrt())
        .collect();
    let y = ref_normalize(x, shape, gamma, beta, &mean, &invstd);
    let running = running.map(|(rm, rv, f, correction)| {
        let new_rm = (0..shape.channels)
            .map(|c| (1.0 - f) * rm[c] as f64 + f * stats[c].mean)
            .collect();
        let new_rv = (0..shape.channels)
            .map(|c| (1.0 - f) * rv[c] as f64 + f * stats[c].batch_var(correction))
            .collect();
        (new_rm, new_rv)
    });
    RefTrain {
        stats,
        invstd,
        y,
        running,
    }
}

/// Gradients in f64, plus the magnitudes the tolerance model needs.
#[derive(Clone, Debug)]
pub struct RefGrads {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
    /// Σ|dy| per channel.
    pub sum_abs_dy: Vec<f64>,
    /// Σ|dy·x̂| per channel.
    pub sum_abs_dy_xhat: Vec<f64>,
    /// x̂ per element.
    pub xhat: Vec<f64>,
    /// The per-channel factor of dx: γ·invstd.
    pub a: Vec<f64>,
    /// Train mode: the invstd given (eval mode: 1/√(rv + eps)).
    pub invstd: Vec<f64>,
    /// Train mode: δ = mean − save_mean, the exact batch mean's offset from the
    /// save_mean given, per channel (eval mode: 0).
    pub shift: Vec<f64>,
    /// Train mode: Σ|x − save_mean| per channel (eval mode: 0).
    pub sum_abs_xs: Vec<f64>,
    /// Train mode: Σ|dy·(x − save_mean)| per channel (eval mode: 0).
    pub sum_abs_dy_xs: Vec<f64>,
}

fn ref_grad_sums(
    dy: &[f32],
    shape: &Shape,
    xhat: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let cs = shape.channels;
    let (mut db, mut dg, mut sdy, mut sdyx) =
        (vec![0.0; cs], vec![0.0; cs], vec![0.0; cs], vec![0.0; cs]);
    for c in 0..cs {
        for i in channel_indices(shape, c) {
            let d = dy[i] as f64;
            db[c] += d;
            dg[c] += d * xhat[i];
            sdy[c] += d.abs();
            sdyx[c] += (d * xhat[i]).abs();
        }
    }
    (db, dg, sdy, sdyx)
}

/// Train-mode backward with x̂ = (x − mean)·save_invstd, `mean` the exact (f64) batch
/// mean of x, whatever f32 rounding of it (or other value) `save_mean` holds: the
/// crate's backward normalizes with the batch mean itself, as an f64 backward from
/// the exact mean would (PyTorch's uses the f32 save_mean and errs by
/// (save_mean − mean)·invstd·Σdy on dγ). save_mean only enters the magnitudes the
/// tolerance model needs for a save_mean far from the mean ([`tol::backward_shifted`]),
/// and channels whose x, dy, save_mean, save_invstd or γ are not all finite, where the
/// backward is PyTorch's (x̂ from save_mean).
/// dβ = Σdy, dγ = Σdy·x̂, dx = γ·invstd·(dy − dβ/m − x̂·dγ/m).
pub fn ref_backward(
    dy: &[f32],
    x: &[f32],
    shape: &Shape,
    gamma: Option<&[f32]>,
    save_mean: &[f32],
    save_invstd: &[f32],
) -> RefGrads {
    let m = per_channel(shape) as f64;
    let cs = shape.channels;
    let mut xhat = vec![f64::NAN; x.len()];
    let (mut shift, mut sum_abs_xs, mut sum_abs_dy_xs) =
        (vec![0.0; cs], vec![0.0; cs], vec![0.0; cs]);
    for c in 0..cs {
        let idx: Vec<usize> = channel_indices(shape, c).collect();
        let (s, invstd) = (save_mean[c] as f64, save_invstd[c] as f64);
        // Where x, dy or the statistics are not finite, the backward is PyTorch's
        // (src/backward.rs: the correction would be ∞ − ∞), x̂ from save_mean.
        let finite = idx.iter().all(|&i| x[i].is_finite() && dy[i].is_finite())
            && (s * invstd * gamma_of(gamma, c)).is_finite();
        let mean = if finite {
            ref_moments_at(x, &idx).mean
        } else {
            s
        };
        shift[c] = mean - s;
        for &i in &idx {
            xhat[i] = (x[i] as f64 - mean) * invstd;
            sum_abs_xs[c] += (x[i] as f64 - s).abs();
            sum_abs_dy_xs[c] += (dy[i] as f64 * (x[i] as f64 - s) * invstd).abs();
        }
    }
    let (dbeta, dgamma, sum_abs_dy, sum_abs_dy_xhat) = ref_grad_sums(dy, shape, &xhat);
    let a: Vec<f64> = (0..shape.channels)
        .map(|c| gamma_of(gamma, c) * save_invstd[c] as f64)
        .collect();
    let mut dx = vec![f64::NAN; x.len()];
    for c in 0..shape.channels {
        for i in channel_indices(shape, c) {
            dx[i] = a[c] * (dy[i] as f64 - dbeta[c] / m - xhat[i] * dgamma[c] / m);
        }
    }
    RefGrads {
        dx,
        dgamma,
        dbeta,
        sum_abs_dy,
        sum_abs_dy_xhat,
        xhat,
        a,
        invstd: save_invstd.iter().map(|&v| v as f64).collect(),
        shift,
        sum_abs_xs,
        sum_abs_dy_xs,
    }
}

/// Eval-mode backward (statistics are constants): with s = 1/√(rv + eps),
/// dx = dy·γ·s, dγ = Σdy·x̂ with x̂ = (x − rm)·s, dβ = Σdy.
pub fn ref_backward_eval(
    dy: &[f32],
    x: &[f32],
    shape: &Shape,
    gamma: Option<&[f32]>,
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> RefGrads {
    let s: Vec<f64> = running_var
        .iter()
        .map(|&v| 1.0 / (v as f64 + eps as f64).sqrt())
        .collect();
    let mut xhat = vec![f64::NAN; x.len()];
    for c in 0..shape.channels {
        for i in channel_indices(shape, c) {
            xhat[i] = (x[i] as f64 - running_mean[c] as f64) * s[c];
        }
    }
    let (dbeta, dgamma, sum_abs_dy, sum_abs_dy_xhat) = ref_grad_sums(dy, shape, &xhat);
    let a: Vec<f64> = (0..shape.channels)
        .map(|c| gamma_of(gamma, c) * s[c])
        .collect();
    let mut dx = vec![f64::NAN; x.len()];
    for c in 0..shape.channels {
        for i in channel_indices(shape, c) {
            dx[i] = dy[i] as f64 * a[c];
        }
    }
    let zeros = vec![0.0; shape.channels];
    RefGrads {
        dx,
        dgamma,
        dbeta,
        sum_abs_dy,
        sum_abs_dy_xhat,
        xhat,
        a,
        invstd: s,
        shift: zeros.clone(),
        sum_abs_xs: zeros.clone(),
        sum_abs_dy_xs: zeros,
    }
}

// ----------------------------------------------------------------------------------
// The oracle for the fused and Batch Renormalization entry points
// ----------------------------------------------------------------------------------
//
// Built on the batch-norm oracle above, not beside it: a fused forward is relu applied
// to `ref_train`'s or `ref_eval`'s y (plus z), a fused backward is `ref_backward` or
// `ref_backward_eval` on the masked gradient, and Batch Renormalization is `ref_train`
// (statistics, invstd, running update) with r and d folded in, and `ref_backward` with
// γ·r for γ.

/// ReLU as `torch.relu`: negative values become +0; NaN and −0 stay as they are.
pub fn ref_relu(v: f64) -> f64 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// A fused forward in f64: `pre` = batch norm's output (+ z), `y = relu(pre)`.
#[derive(Clone, Debug)]
pub struct RefFused {
    /// The pre-activation: bn, or bn + z.
    pub pre: Vec<f64>,
    pub y: Vec<f64>,
}

/// `relu(bn)` (z = None) or `relu(bn + z)`, from a batch-norm output `bn` of the oracle
/// ([`ref_eval`]'s result, or [`RefTrain::y`]).
pub fn ref_fuse(bn: &[f64], z: Option<&[f32]>) -> RefFused {
    let pre: Vec<f64> = match z {
        None => bn.to_vec(),
        Some(z) => bn.iter().zip(z).map(|(&b, &z)| b + z as f64).collect(),
    };
    let y = pre.iter().map(|&v| ref_relu(v)).collect();
    RefFused { pre, y }
}

/// The gradient behind a ReLU whose output is `y` (PyTorch's
/// `threshold_backward(dy, y, 0)`): +0 where `y ≤ 0`, else `dy` (also where `y` is NaN).
/// A selection, so the result is exact in f32 (and is what `dz` of BN + Add + ReLU must
/// hold bit for bit); a NaN or ±inf `dy` where `y ≤ 0` gives 0, not NaN.
pub fn ref_relu_grad(dy: &[f32], y: &[f32]) -> Vec<f32> {
    dy.iter()
        .zip(y)
        .map(|(&d, &y)| if y <= 0.0 { 0.0 } else { d })
        .collect()
}

/// `v` within `[lo, hi]`, NaN kept (`torch.clamp`) but in a one-point range.
pub fn ref_clip(v: f64, lo: f64, hi: f64) -> f64 {
    // A one-point range (rmax = 1, dmax = 0) is that point, NaN included: plain BN.
    if lo == hi || v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// Everything Batch Renormalization's train forward produces, in f64.
#[derive(Clone, Debug)]
pub struct RefRenorm {
    /// Plain train forward on the same input, with β = 0: stats, invstd and the
    /// running update (Batch Renormalization updates them exactly as batch norm does);
    /// its `y` is `(x − μ_B)·invstd·γ`, not Batch Renormalization's output.
    pub train: RefTrain,
    /// σ = √(running_var + eps), from the running variance *before* the update.
    pub sigma: Vec<f64>,
    /// σ_B/σ before clipping, σ_B = √(var_B + eps).
    pub ratio: Vec<f64>,
    /// (μ_B − μ)/σ before clipping.
    pub dev: Vec<f64>,
    /// clip(ratio, 1/rmax, rmax).
    pub r: Vec<f64>,
    /// clip(dev, −dmax, dmax).
    pub d: Vec<f64>,
    /// y = (x − μ_B)·invstd·r·γ + d·γ + β.
    pub y: Vec<f64>,
}

/// Batch Renormalization (Ioffe 2017), train forward, with the running statistics
/// `(rm, rv)` before the step.
#[allow(clippy::too_many_arguments)]
pub fn ref_train_renorm(
    x: &[f32],
    shape: &Shape,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    (rm, rv, f, correction): RefRunning,
    rmax: f32,
    dmax: f32,
) -> RefRenorm {
    let train = ref_train(x, shape, gamma, None, eps, Some((rm, rv, f, correction)));
    let cs = shape.channels;
    let eps = eps as f64;
    let (rmax, dmax) = (rmax as f64, dmax as f64);
    let sigma: Vec<f64> = (0..cs).map(|c| (rv[c] as f64 + eps).sqrt()).collect();
    let ratio: Vec<f64> = (0..cs)
        .map(|c| (train.stats[c].var + eps).sqrt() / sigma[c])
        .collect();
    let dev: Vec<f64> = (0..cs)
        .map(|c| (train.stats[c].mean - rm[c] as f64) / sigma[c])
        .collect();
    let r: Vec<f64> = ratio
        .iter()
        .map(|&v| ref_clip(v, 1.0 / rmax, rmax))
        .collect();
    let d: Vec<f64> = dev.iter().map(|&v| ref_clip(v, -dmax, dmax)).collect();
    // (x − μ_B)·invstd·γ from the train oracle (β = None), times r, plus γ·d + β.
    let mut y = train.y.clone();
    for c in 0..cs {
        let (g, b) = (gamma_of(gamma, c), beta_of(beta, c));
        for i in channel_indices(shape, c) {
            y[i] = y[i] * r[c] + g * d[c] + b;
        }
    }
    RefRenorm {
        train,
        sigma,
        ratio,
        dev,
        r,
        d,
        y,
    }
}

/// Batch Renormalization's backward in f64, with r and d constants.
#[derive(Clone, Debug)]
pub struct RefRenormGrads {
    /// Batch norm's backward on the same inputs (with γ, not γ·r): its `dgamma` is
    /// Σdy·x̂ and its `dx` lacks the factor r; the tolerance model is built on it.
    pub bn: RefGrads,
    /// r·bn.dx = γ·r·invstd·(dy − Σdy/m − x̂·Σdy·x̂/m).
    pub dx: Vec<f64>,
    /// r·Σdy·x̂ + d·Σdy.
    pub dgamma: Vec<f64>,
    /// Σdy.
    pub dbeta: Vec<f64>,
}

/// Batch Renormalization's backward from the saved f32 `mean`, `invstd`, `r`, `d`.
#[allow(clippy::too_many_arguments)]
pub fn ref_backward_renorm(
    dy: &[f32],
    x: &[f32],
    shape: &Shape,
    gamma: Option<&[f32]>,
    mean: &[f32],
    invstd: &[f32],
    r: &[f32],
    d: &[f32],
) -> RefRenormGrads {
    let bn = ref_backward(dy, x, shape, gamma, mean, invstd);
    let mut dx = bn.dx.clone();
    for c in 0..shape.channels {
        for i in channel_indices(shape, c) {
            dx[i] *= r[c] as f64;
        }
    }
    let dgamma = (0..shape.channels)
        .map(|c| r[c] as f64 * bn.dgamma[c] + d[c] as f64 * bn.dbeta[c])
        .collect();
    let dbeta = bn.dbeta.clone();
    RefRenormGrads {
        bn,
        dx,
        dgamma,
        dbeta,
    }
}

// ----------------------------------------------------------------------------------
// Tolerance model
// ----------------------------------------------------------------------------------

/// The tolerance model. Every bound is an absolute error allowed for one output,
/// built from the magnitudes of the terms that produce it, never from the output
/// alone (an output can be small because large terms cancel).
///
/// Notation: `u = 2⁻²⁴` is the f32 unit roundoff, `EPS32 = 2u = f32::EPSILON`.
/// One f32 rounding of a value v costs at most u·|v|.
///
/// **Reductions** (means, variances, Σdy, Σdy·x̂). The kernels sum in f32 with several
/// accumulators and blocks merged in f64. A sequential f32 sum of k terms errs by at
/// most (k−1)·u·Σ|t| and typically by √k·u·Σ|t|; DESIGN.md's accuracy contract is
/// relative error ≲ 1e-5 for the variance, and we hold every reduction to the same
/// [`REDUCTION_REL`] = 1e-5 relative to the condition-free scale of its terms:
/// - sums: |Δ Σt| ≤ 1e-5·Σ|t|;
/// - mean: |Δmean| ≤ 2·EPS32·|mean| + 1e-5·max|x − mean|. The first term is the f32
///   rounding of the mean itself (≤ 1 ulp, plus the rounding of K + Σ(x−K)/m when the
///   kernel shifts by a sample K); the second is the summation error of the
///   deviations, which are at most max|x − mean| (+ |mean − K| ≤ the same) each;
/// - variance: |Δvar| ≤ 1e-5·var. No absolute floor: x − K is exact (Sterbenz) for
///   the data these tests draw, so a careful single pass (or a corrected two-pass)
///   loses nothing to cancellation, and a constant channel must give var = 0 exactly
///   (DESIGN.md: "a channel whose values are all equal has var 0").
///
/// What that still catches: a skipped or doubled element changes a mean by
/// (x_i − mean)/m and a sum by one term, ≥ 1/m of the scale (m ≤ ~1200 in the
/// property tests, so ≥ 8e-4 ≫ 1e-5); biased instead of unbiased variance is off by
/// var/(m−1); a wrong momentum convention by |1 − 2f|·|rm − mean|; an off-by-one
/// channel by a whole other channel's statistics.
///
/// **Derived per-channel values**: invstd = 1/√(var + eps): relative error
/// ½·Δvar/(var + eps) plus the roundings of +, √, 1/ (≤ 4·EPS32 relative).
/// Running statistics `(1−f)·r + f·b`: the batch statistic's error times f, plus
/// 4·EPS32·(|r| + |b|): eight roundings' worth of either term, whichever formulation
/// (two products and a sum, an FMA, or the lerp r + f·(b − r)) the kernel uses.
///
/// **Elementwise outputs**: each rounding costs u of the magnitude it rounds, and
/// 4·EPS32 = 8u per term covers the ≤ 4 roundings of any of the formulations; on top
/// come the errors of the per-channel values the output is built from:
/// - train: y = (x − mean)·γ·invstd + β, against the f64 oracle (f64 mean, f64 invstd):
///   |Δy| ≤ |(x−mean)·γ|·Δinvstd + |γ·invstd|·1e-5·max|x − mean| +
///   4·EPS32·(|(x−mean)·γ·invstd| + |β| + |y|).
///   The mean enters with the *reduction* error only, not with its f32 rounding: the
///   kernel subtracts the f32 mean and folds the part of the f64 mean that f32 cannot
///   hold into the shift (src/forward.rs), so y is as exact as its f32 rounding. A y
///   computed from the f32 save_mean alone (PyTorch's way) errs by up to
///   ½ulp(mean)·|γ·invstd| (≈ 5e-4·|γ| at |mean|/std = 10⁴) and fails this; so does
///   fma(x, scale, β − mean·scale), which errs by u·|mean·scale|.
/// - eval: y = fma(x, scale, shift) with f32 scale = γ/√(rv+eps) (≤ 3.5u relative) and
///   shift = β − rm·scale: |Δy| ≤ 4·EPS32·(|x·scale| + |rm·scale| + |β| + |y|).
/// - backward dx = γ·invstd·(dy − dβ/m − x̂·dγ/m): the error of dβ/m and dγ/m (from the
///   sum bounds) times |γ·invstd| (and |x̂|), plus 4·EPS32 of each term's magnitude.
///   x̂ is taken from the exact f64 batch mean, not from the f32 save_mean, and as with
///   y the mean enters with the reduction error only: the kernel sums Σ(x − save_mean)
///   beside its other sums and normalizes with save_mean + Σ(x − save_mean)/m
///   (src/backward.rs). A backward from the f32 save_mean alone (PyTorch's way) errs
///   by (save_mean − mean)·invstd·Σdy on dγ (≈ 5e-4·invstd·|Σdy| at |mean|/std = 10⁴)
///   and fails this (tests/accuracy.rs). A save_mean far from the batch mean (tests
///   that pass arbitrary statistics) costs the shift's reduction error
///   REDUCTION_REL·(Σ|x − save_mean|/m)·invstd in units of x̂: [`tol::backward_shifted`].
/// - backward eval dx = dy·γ·s: 4·EPS32·|dx|; its dγ takes x̂ with the eval-forward
///   bound (x̂ *is* eval forward with γ = 1, β = 0) on top of the sum bound.
///
/// **Fused ReLU / Add + ReLU** ([`tol::relu`], [`tol::add`]): the add `bn + z` is one more
/// rounding of the pre-activation (8u·|bn + z| on top of bn's bound), and relu is
/// 1-Lipschitz, |relu(a) − relu(b)| ≤ |a − b|, so y = relu(pre) gets pre's bound against
/// relu(pre_ref). That is the honest treatment of the boundary: where the reference
/// pre-activation lies within its bound of 0, the kernel's y may be 0 or that small
/// positive value, and both pass; anywhere else the sign must agree. (y is also held
/// to be NaN, ±0 or positive, never negative, exactly.) A non-finite
/// pre-activation must give relu of it exactly (−inf → 0). The backward's mask is not
/// a tolerance question: it is taken from the `y` the backward is given, as PyTorch
/// does, so kernel and oracle mask the same elements, and the masked gradient is exact.
///
/// **Batch Renormalization** ([`tol::renorm_ratio`], [`tol::renorm_dev`],
/// [`tol::clipped`], [`tol::renorm_y`]): the kernel computes r and d in f64 from its
/// batch statistics, so σ_B/σ carries invstd's relative bound (½·Δvar/(var + eps) +
/// 4·EPS32) and (μ_B − μ)/σ the mean's bound over σ (+ 4·EPS32·|dev|). Clipping is
/// 1-Lipschitz too, and where the whole interval `v ± bound` lies beyond a limit both
/// sides give the limit itself: then the bound is 0 (plus the f32 rounding of the
/// saved value, EPS32·|v|). y = (x − μ_B)·(γ·invstd·r) + (β + γ·d) adds to the train
/// bound |x − μ_B|·|γ|·invstd·Δr and |γ|·Δd, and 8u per term of the shift (|γ·d|).
/// Its backward is batch norm's backward with γ·r for γ, so dx gets r times the train
/// bound, and dγ = r·Σdy·x̂ + d·Σdy gets |r|·tol(Σdy·x̂) + |d|·tol(Σdy) + 8u per term.
///
/// **Non-finite** expected values must be matched exactly in kind: NaN by NaN, +inf by
/// +inf, −inf by −inf.
pub mod tol {
    use super::{channel_indices, per_channel, Correction, RefGrads, RefMoments, Shape};

    /// f32 machine epsilon, 2⁻²³.
    pub const EPS32: f64 = f32::EPSILON as f64;
    /// Relative accuracy of every reduction (DESIGN.md: var rel. error ≲ 1e-5).
    pub const REDUCTION_REL: f64 = 1e-5;

    pub fn mean(s: &RefMoments) -> f64 {
        2.0 * EPS32 * s.mean.abs() + REDUCTION_REL * s.max_dev
    }

    pub fn var(s: &RefMoments) -> f64 {
        REDUCTION_REL * s.var
    }

    /// For the batch variance the running variance is fed with.
    pub fn batch_var(s: &RefMoments, correction: Correction) -> f64 {
        REDUCTION_REL * s.batch_var(correction)
    }

    pub fn m2(s: &RefMoments) -> f64 {
        REDUCTION_REL * s.m2
    }

    /// For invstd = 1/√(var + eps).
    pub fn invstd(s: &RefMoments, eps: f32) -> f64 {
        let d = s.var + eps as f64;
        let invstd = 1.0 / d.sqrt();
        invstd * (0.5 * var(s) / d + 4.0 * EPS32)
    }

    /// For a sum whose terms have Σ|t| = `sum_abs`.
    pub fn sum(sum_abs: f64) -> f64 {
        REDUCTION_REL * sum_abs
    }

    /// For `(1−f)·old + f·batch`, where `batch` is known to within `batch_tol`.
    pub fn running(old: f64, batch: f64, f: f64, batch_tol: f64) -> f64 {
        4.0 * EPS32 * (old.abs() + batch.abs()) + f * batch_tol
    }

    /// Elementwise output: 4·EPS32 times the sum of the magnitudes of its terms.
    pub fn elementwise(terms: &[f64]) -> f64 {
        4.0 * EPS32 * terms.iter().map(|t| t.abs()).sum::<f64>()
    }

    /// Train forward `y = (x − mean)·γ·invstd + β` at an element with `dev = x − mean`
    /// (f64 mean), against the oracle's `y`.
    pub fn train_y(dev: f64, s: &RefMoments, eps: f32, g: f64, invstd: f64, b: f64, y: f64) -> f64 {
        let scale = g * invstd;
        (dev * g).abs() * self::invstd(s, eps)
            + scale.abs() * REDUCTION_REL * s.max_dev
            + elementwise(&[dev * scale, b, y])
    }

    /// Eval forward `y = x·scale + shift` with `scale = γ/√(rv + eps)`.
    pub fn eval_y(x: f64, scale: f64, rm: f64, b: f64, y: f64) -> f64 {
        elementwise(&[x * scale, rm * scale, b, y])
    }

    /// What the add of BN + Add + ReLU costs on top of bn's bound: one rounding of
    /// `pre = bn + z`.
    pub fn add(pre: f64) -> f64 {
        elementwise(&[pre])
    }

    /// `y = relu(pre)`, compared with `relu(pre_ref)`: pre's bound (relu is
    /// 1-Lipschitz), or 0 when `pre_ref` is not finite (relu of ±inf or NaN is exact).
    pub fn relu(pre: f64, pre_tol: f64) -> f64 {
        if pre.is_finite() {
            pre_tol
        } else {
            0.0
        }
    }

    /// `clip(v, lo, hi)` where `v` is known to within `t`: `t`, or 0 when every value
    /// within `t` of `v` clips to the same limit.
    pub fn clipped(v: f64, t: f64, lo: f64, hi: f64) -> f64 {
        if v + t < lo || v - t > hi {
            0.0
        } else {
            t
        }
    }

    /// σ_B/σ (= `ratio`) before clipping: invstd's relative bound.
    pub fn renorm_ratio(s: &RefMoments, eps: f32, ratio: f64) -> f64 {
        ratio.abs() * (0.5 * var(s) / (s.var + eps as f64) + 4.0 * EPS32)
    }

    /// (μ_B − μ)/σ (= `dev`) before clipping.
    pub fn renorm_dev(s: &RefMoments, sigma: f64, dev: f64) -> f64 {
        mean(s) / sigma + 4.0 * EPS32 * dev.abs()
    }

    /// Batch Renormalization's `y = (x − mean)·γ·invstd·r + γ·d + β` at an element with
    /// `dev = x − mean`, with r and d known to within `tol_r` and `tol_d`.
    #[allow(clippy::too_many_arguments)]
    pub fn renorm_y(
        dev: f64,
        s: &RefMoments,
        eps: f32,
        g: f64,
        invstd: f64,
        (r, tol_r): (f64, f64),
        (d, tol_d): (f64, f64),
        b: f64,
        y: f64,
    ) -> f64 {
        let scale = g * invstd * r;
        (dev * g).abs() * (self::invstd(s, eps) * r.abs() + invstd * tol_r)
            + scale.abs() * REDUCTION_REL * s.max_dev
            + g.abs() * tol_d
            + elementwise(&[dev * scale, b, g * d, y])
    }

    /// Bounds of one backward pass: per channel for dβ and dγ, per element for dx.
    #[derive(Clone, Debug)]
    pub struct Grads {
        pub dbeta: Vec<f64>,
        pub dgamma: Vec<f64>,
        pub dx: Vec<f64>,
    }

    /// Train-mode backward from the oracle's `r` on the gradient `dy` it was given:
    /// sums within [`sum`], and dx = a·(dy − dβ/m − x̂·dγ/m) with those sums' errors
    /// (over m, times |a| and |x̂|) and 8u of each term.
    pub fn backward(r: &RefGrads, dy: &[f32], shape: &Shape) -> Grads {
        let m = per_channel(shape) as f64;
        let dbeta: Vec<f64> = r.sum_abs_dy.iter().map(|&s| sum(s)).collect();
        let dgamma: Vec<f64> = r.sum_abs_dy_xhat.iter().map(|&s| sum(s)).collect();
        let mut dx = vec![f64::NAN; dy.len()];
        for c in 0..shape.channels {
            let a = r.a[c];
            let (k1, k2) = (r.dbeta[c] / m, r.dgamma[c] / m);
            for i in channel_indices(shape, c) {
                dx[i] = a.abs() * (dbeta[c] / m + r.xhat[i].abs() * dgamma[c] / m)
                    + elementwise(&[a * dy[i] as f64, a * k1, a * r.xhat[i] * k2, r.dx[i]]);
            }
        }
        Grads { dbeta, dgamma, dx }
    }

    /// [`backward`] for a save_mean that may lie far from the batch mean (arbitrary
    /// statistics): the kernel's sums are taken around save_mean, so Σdy·(x − save_mean)
    /// is within [`sum`] of Σ|dy·(x − save_mean)|·invstd (not of Σ|dy·x̂|), and the shift
    /// δ = Σ(x − save_mean)/m of the mean within REDUCTION_REL·Σ|x − save_mean|/m, which
    /// enters dγ = invstd·(Σdy·(x − save_mean) − δ·Σdy) times |Σdy|·invstd (and Σdy's
    /// error enters it times |δ|·invstd), and dx = k·dy + (x − save_mean)·a + (b − a·δ)
    /// times |a| (a within dγ's bound), with 8u of each of those terms. With save_mean
    /// the f32 rounding of the batch mean these add nothing that [`backward`] does not
    /// already allow (its tests, e.g. tests/accuracy.rs, use [`backward`]).
    pub fn backward_shifted(r: &RefGrads, dy: &[f32], shape: &Shape) -> Grads {
        let m = per_channel(shape) as f64;
        let dbeta: Vec<f64> = r.sum_abs_dy.iter().map(|&s| sum(s)).collect();
        let mut dgamma = vec![0.0; shape.channels];
        let mut dx = vec![f64::NAN; dy.len()];
        for c in 0..shape.channels {
            let invstd = r.invstd[c];
            // On δ·invstd, the shift in units of x̂.
            let t_shift = REDUCTION_REL * r.sum_abs_xs[c] / m * invstd.abs();
            // Σdy·(x − save_mean) − δ·Σdy: the first sum's error (at least backward's),
            // δ's times |Σdy| and Σdy's times |δ|.
            dgamma[c] = sum(r.sum_abs_dy_xhat[c].max(r.sum_abs_dy_xs[c]))
                + r.dbeta[c].abs() * t_shift
                + (r.shift[c] * invstd).abs() * dbeta[c]
                + elementwise(&[r.dbeta[c] * r.shift[c] * invstd]);
            let a = r.a[c];
            let (k1, k2) = (r.dbeta[c] / m, r.dgamma[c] / m);
            let s = r.shift[c] * invstd;
            // dγ/m as the kernel has it, within its bound: the rounding of x − save_mean
            // and δ's error are carried by the kernel's constant a = −k·invstd·dγ/m.
            let k2_hi = k2.abs() + dgamma[c] / m;
            for i in channel_indices(shape, c) {
                let xs = r.xhat[i] + s;
                dx[i] = a.abs() * (dbeta[c] / m + r.xhat[i].abs() * dgamma[c] / m)
                    + a.abs() * k2_hi * t_shift
                    + elementwise(&[
                        a * dy[i] as f64,
                        a * k1,
                        a * xs * k2_hi,
                        a * s * k2_hi,
                        r.dx[i],
                    ]);
            }
        }
        Grads { dbeta, dgamma, dx }
    }

    /// Eval-mode backward: dx = dy·γ·s within 8u, the sums within [`sum`], and dγ's x̂
    /// within the eval forward's bound (x̂ is eval forward with γ = 1, β = 0).
    pub fn backward_eval(
        r: &RefGrads,
        dy: &[f32],
        x: &[f32],
        shape: &Shape,
        running_mean: &[f32],
        running_var: &[f32],
        eps: f32,
    ) -> Grads {
        let dbeta: Vec<f64> = r.sum_abs_dy.iter().map(|&s| sum(s)).collect();
        let dgamma: Vec<f64> = (0..shape.channels)
            .map(|c| {
                let s = 1.0 / (running_var[c] as f64 + eps as f64).sqrt();
                let rm = running_mean[c] as f64;
                sum(r.sum_abs_dy_xhat[c])
                    + channel_indices(shape, c)
                        .map(|i| (dy[i] as f64).abs() * eval_y(x[i] as f64, s, rm, 0.0, r.xhat[i]))
                        .sum::<f64>()
            })
            .collect();
        let dx = r.dx.iter().map(|&v| elementwise(&[v])).collect();
        Grads { dbeta, dgamma, dx }
    }
}

// ----------------------------------------------------------------------------------
// The neighbours: layer, RMS, group and instance norm (f64, naive)
// ----------------------------------------------------------------------------------

/// How a normalization splits a tensor: its statistics' units (each the flat indices
/// of one row, (sample, group) or (sample, channel)) and the γ/β index of every
/// element.
#[derive(Clone, Debug)]
pub struct Units {
    pub units: Vec<Vec<usize>>,
    pub param: Vec<usize>,
}

/// Layer and RMS norm: `rows` rows of `len` values; γ, β per position of a row.
pub fn layer_units(rows: usize, len: usize) -> Units {
    Units {
        units: (0..rows)
            .map(|r| (r * len..(r + 1) * len).collect())
            .collect(),
        param: (0..rows * len).map(|i| i % len).collect(),
    }
}

/// Group norm (instance norm: `groups = C`): units in `[batch][groups]` order; γ, β
/// per channel.
pub fn group_units(shape: &Shape, groups: usize) -> Units {
    let per = shape.channels / groups;
    let mut units = Vec::new();
    for n in 0..shape.batch {
        for g in 0..groups {
            let mut u = Vec::new();
            for c in g * per..(g + 1) * per {
                u.extend((0..shape.spatial).map(|s| index(shape, n, c, s)));
            }
            units.push(u);
        }
    }
    let param = (0..numel(shape)).map(|i| channel_of(shape, i)).collect();
    Units { units, param }
}

/// The oracle's forward of a unit normalization.
#[derive(Clone, Debug)]
pub struct RefNorm {
    /// Per unit: its moments (for RMS norm: mean 0, `var` the mean square, `max_dev`
    /// the largest |x|), and `invstd = 1/√(var + eps)`.
    pub stats: Vec<RefMoments>,
    pub invstd: Vec<f64>,
    pub xhat: Vec<f64>,
    pub y: Vec<f64>,
}

/// Forward of layer norm (`rms` false) or RMS norm (`rms` true) over `units`:
/// `y = x̂·γ + β`, with `x̂ = (x − mean)/√(var + eps)`, or `x/√(mean(x²) + eps)`. A
/// non-finite value makes its whole unit NaN (for RMS norm too, where PyTorch leaves
/// the finite values of a row with an infinity at 0: see `RmsNorm`).
pub fn ref_norm(
    x: &[f32],
    u: &Units,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    rms: bool,
) -> RefNorm {
    let mut out = RefNorm {
        stats: Vec::new(),
        invstd: Vec::new(),
        xhat: vec![f64::NAN; x.len()],
        y: vec![f64::NAN; x.len()],
    };
    for idx in &u.units {
        let mut st = ref_moments_at(x, idx);
        if rms {
            let sq: f64 = idx.iter().map(|&i| (x[i] as f64).powi(2)).sum();
            let finite = idx.iter().all(|&i| x[i].is_finite());
            st = RefMoments {
                mean: 0.0,
                var: if finite {
                    sq / idx.len() as f64
                } else {
                    f64::NAN
                },
                max_dev: idx.iter().map(|&i| (x[i] as f64).abs()).fold(0.0, f64::max),
                ..st
            };
        }
        let invstd = 1.0 / (st.var + eps as f64).sqrt();
        for &i in idx {
            let xh = (x[i] as f64 - st.mean) * invstd;
            let j = u.param[i];
            out.xhat[i] = xh;
            out.y[i] = xh * gamma_of(gamma, j) + beta_of(beta, j);
        }
        out.stats.push(st);
        out.invstd.push(invstd);
    }
    out
}

/// The oracle's backward of a unit normalization, from the saved f32 statistics the
/// kernel was given, with each value's bound under the tolerance model.
#[derive(Clone, Debug)]
pub struct RefNormGrads {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
    pub tol_dx: Vec<f64>,
    pub tol_dgamma: Vec<f64>,
    pub tol_dbeta: Vec<f64>,
}

/// Backward of [`ref_norm`]: with `x̂ = (x − mean)·invstd` (mean 0 for RMS norm, when
/// `mean` is `None`), `g = dy·γ`, means over the unit:
/// `dx = invstd·(g − mean(g) − x̂·mean(g·x̂))` (no `mean(g)` for RMS norm),
/// `dγ = Σdy·x̂`, `dβ = Σdy` per parameter, `params` of them.
pub fn ref_norm_backward(
    x: &[f32],
    dy: &[f32],
    u: &Units,
    gamma: Option<&[f32]>,
    mean: Option<&[f32]>,
    invstd: &[f32],
    params: usize,
) -> RefNormGrads {
    let mut r = RefNormGrads {
        dx: vec![f64::NAN; x.len()],
        dgamma: vec![0.0; params],
        dbeta: vec![0.0; params],
        tol_dx: vec![f64::NAN; x.len()],
        tol_dgamma: vec![0.0; params],
        tol_dbeta: vec![0.0; params],
    };
    let mut abs_dgamma = vec![0.0; params];
    let mut abs_dbeta = vec![0.0; params];
    for (k, idx) in u.units.iter().enumerate() {
        let mu = mean.map_or(0.0, |m| m[k] as f64);
        let inv = invstd[k] as f64;
        let m = idx.len() as f64;
        let xhat = |i: usize| (x[i] as f64 - mu) * inv;
        let g = |i: usize| dy[i] as f64 * gamma_of(gamma, u.param[i]);
        let (mut sg, mut sgx, mut abs_g, mut abs_gx) = (0.0, 0.0, 0.0, 0.0);
        for &i in idx {
            sg += g(i);
            sgx += g(i) * xhat(i);
            abs_g += g(i).abs();
            abs_gx += (g(i) * xhat(i)).abs();
            let j = u.param[i];
            r.dgamma[j] += dy[i] as f64 * xhat(i);
            r.dbeta[j] += dy[i] as f64;
            abs_dgamma[j] += (dy[i] as f64 * xhat(i)).abs();
            abs_dbeta[j] += (dy[i] as f64).abs();
        }
        let centered = if mean.is_some() { 1.0 } else { 0.0 };
        for &i in idx {
            let (a, b) = (inv * centered * sg / m, inv * xhat(i) * sgx / m);
            r.dx[i] = inv * g(i) - a - b;
            r.tol_dx[i] = inv.abs() * (tol::sum(abs_g) / m + xhat(i).abs() * tol::sum(abs_gx) / m)
                + tol::elementwise(&[inv * g(i), a, b, r.dx[i]]);
        }
    }
    for j in 0..params {
        r.tol_dgamma[j] = tol::sum(abs_dgamma[j]);
        r.tol_dbeta[j] = tol::sum(abs_dbeta[j]);
    }
    r
}

/// Does `actual` match `expected` within `tol`? Non-finite expectations must be met
/// exactly in kind (NaN by NaN, ±inf by the same inf).
pub fn close(actual: f64, expected: f64, tol: f64) -> bool {
    if expected.is_nan() {
        actual.is_nan()
    } else if expected.is_infinite() {
        actual == expected
    } else {
        actual.is_finite() && (actual - expected).abs() <= tol
    }
}

/// Collects mismatches and panics with the first few, with their context.
pub struct Checker {
    context: String,
    failures: Vec<String>,
    count: usize,
}

impl Checker {
    pub fn new(context: impl Into<String>) -> Checker {
        Checker {
            context: context.into(),
            failures: Vec::new(),
            count: 0,
        }
    }

    /// Record a failure unless `actual` is [`close`] to `expected`.
    pub fn close(&mut self, what: &str, i: usize, actual: f64, expected: f64, tol: f64) {
        self.count += 1;
        if !close(actual, expected, tol) {
            self.failures.push(format!(
                "{what}[{i}]: got {actual:e}, expected {expected:e} ± {tol:e} (off by {:e}, {:.3}× tol)",
                actual - expected,
                (actual - expected).abs() / tol
            ));
        }
    }

    /// Record a failure unless `ok`.
    pub fn ensure(&mut self, ok: bool, message: impl FnOnce() -> String) {
        self.count += 1;
        if !ok {
            self.failures.push(message());
        }
    }

    /// Panic if anything failed.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(12).map(|s| s.as_str()).collect();
            panic!(
                "{}: {} of {} checks failed:\n  {}",
                self.context,
                self.failures.len(),
                self.count,
                shown.join("\n  ")
            );
        }
    }
}

/// Bit patterns of two f32 slices are identical.
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
}

/// Assert two f32 slices are identical bit for bit, naming the first difference.
pub fn assert_same_bits(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!(
            "{what}: element {i} differs: {:e} ({:#010x}) vs {:e} ({:#010x})",
            a[i],
            a[i].to_bits(),
            b[i],
            b[i].to_bits()
        );
    }
}

// ----------------------------------------------------------------------------------
// Guarded buffers
// ----------------------------------------------------------------------------------

/// Guard cells on each side of every output (odd, not a multiple of any lane count).
pub const GUARD: usize = 11;

/// A quiet NaN with a payload no arithmetic produces: outputs are pre-filled with it,
/// so an element still holding exactly these bits was never written.
pub const SENTINEL_BITS: u32 = 0x7fe5_a5a5;

pub fn sentinel() -> f32 {
    f32::from_bits(SENTINEL_BITS)
}

/// An f32 buffer of `len` values with [`GUARD`] sentinel cells before and after.
#[derive(Clone, Debug)]
pub struct Guarded {
    buf: Vec<f32>,
    len: usize,
}

impl Guarded {
    /// `len` sentinel values.
    pub fn sentinel(len: usize) -> Guarded {
        Guarded {
            buf: vec![sentinel(); len + 2 * GUARD],
            len,
        }
    }

    /// A copy of `data` (for in/out arguments such as the running statistics).
    pub fn from(data: &[f32]) -> Guarded {
        let mut g = Guarded::sentinel(data.len());
        g.inner_mut().copy_from_slice(data);
        g
    }

    pub fn inner(&self) -> &[f32] {
        &self.buf[GUARD..GUARD + self.len]
    }

    pub fn inner_mut(&mut self) -> &mut [f32] {
        &mut self.buf[GUARD..GUARD + self.len]
    }

    /// The guard cells still hold the sentinel.
    pub fn assert_guards(&self, what: &str) {
        let (head, rest) = self.buf.split_at(GUARD);
        let tail = &rest[self.len..];
        for (k, v) in head.iter().chain(tail).enumerate() {
            assert_eq!(
                v.to_bits(),
                SENTINEL_BITS,
                "{what}: guard cell {k} was written ({v:e})"
            );
        }
    }

    /// Guards intact and every element written.
    pub fn assert_written(&self, what: &str) {
        self.assert_guards(what);
        if let Some(i) = self
            .inner()
            .iter()
            .position(|v| v.to_bits() == SENTINEL_BITS)
        {
            panic!("{what}: element {i} of {} was never written", self.len);
        }
    }

    /// Guards intact and no element written (still the sentinel).
    pub fn assert_untouched(&self, what: &str) {
        self.assert_guards(what);
        if let Some(i) = self
            .inner()
            .iter()
            .position(|v| v.to_bits() != SENTINEL_BITS)
        {
            panic!(
                "{what}: element {i} was written ({:e}) although nothing should be",
                self.inner()[i]
            );
        }
    }

    /// Guards intact and the contents bit-identical to `data`.
    pub fn assert_holds(&self, what: &str, data: &[f32]) {
        self.assert_guards(what);
        assert_same_bits(what, self.inner(), data);
    }

    /// Bit patterns of the whole buffer, guards included.
    pub fn snapshot(&self) -> Vec<u32> {
        self.buf.iter().map(|v| v.to_bits()).collect()
    }
}

/// A sentinel [`Moments`] value no kernel produces.
pub fn sentinel_moments() -> Moments {
    Moments {
        count: 0xdead_beef_dead_beef,
        mean: f64::from_bits(0x7ff8_dead_beef_0001),
        m2: f64::from_bits(0x7ff8_dead_beef_0002),
    }
}

pub fn is_sentinel_moments(m: &Moments) -> bool {
    let s = sentinel_moments();
    m.count == s.count && m.mean.to_bits() == s.mean.to_bits() && m.m2.to_bits() == s.m2.to_bits()
}

/// `len` [`Moments`] with [`GUARD`] sentinel cells on each side.
#[derive(Clone, Debug)]
pub struct GuardedMoments {
    buf: Vec<Moments>,
    len: usize,
}

impl GuardedMoments {
    pub fn sentinel(len: usize) -> GuardedMoments {
        GuardedMoments {
            buf: vec![sentinel_moments(); len + 2 * GUARD],
            len,
        }
    }

    pub fn inner(&self) -> &[Moments] {
        &self.buf[GUARD..GUARD + self.len]
    }

    pub fn inner_mut(&mut self) -> &mut [Moments] {
        &mut self.buf[GUARD..GUARD + self.len]
    }

    pub fn assert_guards(&self, what: &str) {
        let (head, rest) = self.buf.split_at(GUARD);
        for (k, v) in head.iter().chain(&rest[self.len..]).enumerate() {
            assert!(
                is_sentinel_moments(v),
                "{what}: guard cell {k} was written ({v:?})"
            );
        }
    }

    pub fn assert_written(&self, what: &str) {
        self.assert_guards(what);
        if let Some(i) = self.inner().iter().position(is_sentinel_moments) {
            panic!("{what}: element {i} was never written");
        }
    }

    pub fn assert_untouched(&self, what: &str) {
        self.assert_guards(what);
        if let Some(i) = self.inner().iter().position(|m| !is_sentinel_moments(m)) {
            panic!("{what}: element {i} was written ({:?})", self.inner()[i]);
        }
    }

    /// Bit patterns of the whole buffer, guards included.
    pub fn snapshot(&self) -> Vec<(u64, u64, u64)> {
        self.buf
            .iter()
            .map(|m| (m.count, m.mean.to_bits(), m.m2.to_bits()))
            .collect()
    }
}

// ----------------------------------------------------------------------------------
// Generator
// ----------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, fixed-seed, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A pair of independent N(0, 1) values (Box–Muller).
    pub fn gauss_pair(&mut self) -> (f64, f64) {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = core::f64::consts::TAU * u2;
        (r * t.cos(), r * t.sin())
    }

    pub fn gauss(&mut self) -> f64 {
        self.gauss_pair().0
    }
}

/// How one channel's values are drawn: `offset + spread·N(0, 1)`, rounded to f32;
/// spread 0 makes the channel constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    pub offset: f64,
    pub spread: f64,
}

impl Profile {
    pub fn is_constant(&self) -> bool {
        self.spread == 0.0
    }
}

/// A tensor of `shape` whose channel c follows `profiles[c]`, from a fixed seed.
pub fn tensor(shape: &Shape, profiles: &[Profile], seed: u64) -> Vec<f32> {
    assert_eq!(profiles.len(), shape.channels);
    let mut rng = Rng::new(seed);
    let mut x = vec![0.0f32; numel(shape)];
    for (c, p) in profiles.iter().enumerate() {
        for i in channel_indices(shape, c) {
            x[i] = if p.is_constant() {
                p.offset as f32
            } else {
                (p.offset + p.spread * rng.gauss()) as f32
            };
        }
    }
    x
}

/// The number of proptest cases for a property: `default`, or `PROPTEST_CASES` when
/// set (for a longer local run).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
