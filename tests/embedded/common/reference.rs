// Plain scalar reference in f64 (naive loops over the same f32 inputs), computed on the
// target itself. For every output it gives the exact value and a magnitude: the sum of
// the absolute values of the terms it is made of, so `|got − want| ≤ rtol·mag` says
// "correct up to f32 rounding of the terms", whatever the cancellation.

use crate::data::{Case, Inputs, DMAX, EPS, MAX_C, RMAX};
use crate::scenario::{Outputs, What};
use batchnorm::{Layout, Shape};

/// Channel of flat index i.
pub fn channel_of(shape: Shape, i: usize) -> usize {
    match shape.layout {
        Layout::ChannelsFirst => (i / shape.spatial) % shape.channels,
        Layout::ChannelsLast => i % shape.channels,
    }
}

fn sqrt(x: f64) -> f64 {
    libm::sqrt(x)
}

/// Running-statistics update factor of the momentum.
#[derive(Clone, Copy)]
pub enum Factor {
    Exponential(f64),
    Cumulative(u64),
}

impl Factor {
    fn get(self) -> f64 {
        match self {
            Factor::Exponential(m) => m,
            Factor::Cumulative(t) => 1.0 / (t as f64 + 1.0),
        }
    }
}

/// Per-channel f64 sums of one case.
pub struct Reference {
    pub shape: Shape,
    pub m: usize,
    /// γ and β given (else 1 and 0).
    pub affine: bool,
    pub mean: [f64; MAX_C],
    pub var: [f64; MAX_C],
    // train-mode backward from the kernel's saved statistics
    save_mean: [f64; MAX_C],
    save_invstd: [f64; MAX_C],
    dbeta: [f64; MAX_C],
    dbeta_mag: [f64; MAX_C],
    dgamma: [f64; MAX_C],
    dgamma_mag: [f64; MAX_C],
    // eval-mode backward from the running statistics
    dgamma_eval: [f64; MAX_C],
    dgamma_eval_mag: [f64; MAX_C],
    // Batch Renormalization's backward: the kernel's saved r and d (else 1 and 0)
    saved_r: [f64; MAX_C],
    saved_d: [f64; MAX_C],
}

impl Reference {
    /// `save_mean`/`save_invstd`: what the kernel's train saved (the backward takes the
    /// invstd as given, and x̂ from the exact batch mean, whatever f32 rounding of it
    /// `save_mean` holds: the crate's backward normalizes with the batch mean itself).
    pub fn new(
        case: &Case,
        inp: &Inputs,
        affine: bool,
        save_mean: &[f32],
        save_invstd: &[f32],
    ) -> Reference {
        let sh = case.shape;
        let m = crate::data::m(case);
        let mut r = Reference {
            shape: sh,
            m,
            affine,
            mean: [0.0; MAX_C],
            var: [0.0; MAX_C],
            save_mean: [0.0; MAX_C],
            save_invstd: [0.0; MAX_C],
            dbeta: [0.0; MAX_C],
            dbeta_mag: [0.0; MAX_C],
            dgamma: [0.0; MAX_C],
            dgamma_mag: [0.0; MAX_C],
            dgamma_eval: [0.0; MAX_C],
            dgamma_eval_mag: [0.0; MAX_C],
            saved_r: [1.0; MAX_C],
            saved_d: [0.0; MAX_C],
        };
        for c in 0..sh.channels {
            // Two passes in f64.
            let mut sum = 0.0f64;
            for n in 0..sh.batch {
                for s in 0..sh.spatial {
                    sum += inp.x[crate::data::index(sh, n, c, s)] as f64;
                }
            }
            let mean = sum / m as f64;
            let mut ss = 0.0f64;
            for n in 0..sh.batch {
                for s in 0..sh.spatial {
                    let d = inp.x[crate::data::index(sh, n, c, s)] as f64 - mean;
                    ss += d * d;
                }
            }
            r.mean[c] = mean;
            r.var[c] = ss / m as f64;

            let sm = save_mean[c] as f64;
            let si = save_invstd[c] as f64;
            let rm = inp.running_mean[c] as f64;
            let rinv = 1.0 / sqrt(inp.running_var[c] as f64 + EPS as f64);
            r.save_mean[c] = sm;
            r.save_invstd[c] = si;
            let (mut db, mut dbm, mut dg, mut dgm, mut dge, mut dgem) =
                (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
            for n in 0..sh.batch {
                for s in 0..sh.spatial {
                    let i = crate::data::index(sh, n, c, s);
                    let (x, dy) = (inp.x[i] as f64, inp.dy[i] as f64);
                    db += dy;
                    dbm += dy.abs();
                    dg += dy * (x - mean) * si;
                    dgm += dy.abs() * (x.abs() + sm.abs()) * si;
                    dge += dy * (x - rm) * rinv;
                    dgem += dy.abs() * (x.abs() + rm.abs()) * rinv;
                }
            }
            r.dbeta[c] = db;
            r.dbeta_mag[c] = dbm;
            r.dgamma[c] = dg;
            r.dgamma_mag[c] = dgm;
            r.dgamma_eval[c] = dge;
            r.dgamma_eval_mag[c] = dgem;
        }
        r
    }

    /// Takes the `r` and `d` that `train_renorm` saved, for `backward_renorm` (which
    /// takes them as given, as the saved statistics).
    pub fn set_renorm(&mut self, r: &[f32], d: &[f32]) {
        for c in 0..self.shape.channels {
            self.saved_r[c] = r[c] as f64;
            self.saved_d[c] = d[c] as f64;
        }
    }

    /// Batch Renormalization's `(r, d, σ)` of channel `c` from the f64 batch
    /// statistics and the case's running ones (before the update), with `RMAX`, `DMAX`.
    pub fn renorm(&self, inp: &Inputs, c: usize) -> (f64, f64, f64) {
        let eps = EPS as f64;
        let sigma = sqrt(inp.running_var[c] as f64 + eps);
        let (rmax, dmax) = (RMAX as f64, DMAX as f64);
        let r = clip(sqrt(self.var[c] + eps) / sigma, 1.0 / rmax, rmax);
        let d = clip(
            (self.mean[c] - inp.running_mean[c] as f64) / sigma,
            -dmax,
            dmax,
        );
        (r, d, sigma)
    }

    /// The train backward's `dx` at element `i` of channel `c` with `g` in γ's place.
    fn dx(&self, c: usize, g: f64, x: f64, dy: f64) -> (f64, f64) {
        let m = self.m as f64;
        let (sm, si) = (self.save_mean[c], self.save_invstd[c]);
        let xhat = (x - self.mean[c]) * si;
        let want = g * si * (dy - self.dbeta[c] / m - xhat * self.dgamma[c] / m);
        let mag = g.abs()
            * si
            * (dy.abs()
                + self.dbeta_mag[c] / m
                + (x.abs() + sm.abs()) * si * self.dgamma_mag[c] / m);
        (want, mag)
    }

    fn gamma(&self, inp: &Inputs, c: usize) -> f64 {
        if self.affine {
            inp.gamma[c] as f64
        } else {
            1.0
        }
    }

    fn beta(&self, inp: &Inputs, c: usize) -> f64 {
        if self.affine {
            inp.beta[c] as f64
        } else {
            0.0
        }
    }

    /// (exact value, magnitude) of output `what` at `i` (element or channel index);
    /// running statistics after an update with `factor`. The fused backward passes'
    /// outputs are those of the plain ones on their masked `dy`: ask a reference built
    /// on [`masked`] inputs (as [`Oracle`] does).
    pub fn want(&self, inp: &Inputs, what: What, i: usize, factor: Factor) -> (f64, f64) {
        let eps = EPS as f64;
        let m = self.m as f64;
        let c = if is_element(what) {
            channel_of(self.shape, i)
        } else {
            i
        };
        let (g, b) = (self.gamma(inp, c), self.beta(inp, c));
        let (mean, var) = (self.mean[c], self.var[c]);
        let (rm, rv) = (inp.running_mean[c] as f64, inp.running_var[c] as f64);
        let x = if i < crate::data::len_of(self.shape) {
            inp.x[i] as f64
        } else {
            0.0
        };
        let dy = if i < crate::data::len_of(self.shape) {
            inp.dy[i] as f64
        } else {
            0.0
        };
        let z = if i < crate::data::len_of(self.shape) {
            inp.z[i] as f64
        } else {
            0.0
        };
        let relu = |(w, mag): (f64, f64)| (if w < 0.0 { 0.0 } else { w }, mag);
        match what {
            What::Mean | What::SaveMean => (mean, mean.abs() + sqrt(var)),
            What::Var => (var, var),
            What::SaveInvstd => {
                let v = 1.0 / sqrt(var + eps);
                (v, v)
            }
            What::TrainY => {
                let inv = 1.0 / sqrt(var + eps);
                (
                    (x - mean) * inv * g + b,
                    (x.abs() + mean.abs()) * inv * g.abs() + b.abs(),
                )
            }
            What::RunningMean => {
                let f = factor.get();
                (
                    (1.0 - f) * rm + f * mean,
                    (1.0 - f) * rm.abs() + f * (mean.abs() + sqrt(var)),
                )
            }
            What::RunningVar => {
                let f = factor.get();
                let v = (1.0 - f) * rv + f * var * m / (m - 1.0);
                (v, v)
            }
            What::EvalY => {
                let scale = g / sqrt(rv + eps);
                (
                    (x - rm) * scale + b,
                    (x.abs() + rm.abs()) * scale.abs() + b.abs(),
                )
            }
            What::Dx | What::DxFused => self.dx(c, g, x, dy),
            What::Dgamma | What::DgammaFused => (self.dgamma[c], self.dgamma_mag[c]),
            What::Dbeta
            | What::DbetaEval
            | What::DbetaFused
            | What::DbetaEvalFused
            | What::DbetaRenorm => (self.dbeta[c], self.dbeta_mag[c]),
            What::DxEval | What::DxEvalFused => {
                let scale = g / sqrt(rv + eps);
                (dy * scale, (dy * scale).abs())
            }
            What::DgammaEval | What::DgammaEvalFused => {
                (self.dgamma_eval[c], self.dgamma_eval_mag[c])
            }
            // The masked dy itself.
            What::Dz => (dy, dy.abs()),
            What::EvalReluY => relu(self.want(inp, What::EvalY, i, factor)),
            What::EvalAddReluY | What::TrainAddReluY => {
                let bn = if what == What::EvalAddReluY {
                    What::EvalY
                } else {
                    What::TrainY
                };
                let (w, mag) = self.want(inp, bn, i, factor);
                relu((w + z, mag + z.abs()))
            }
            // y = γ·(x̂·r + d) + β; d is as exact as the mean, to about the spread.
            What::RenormY => {
                let (r, d, sigma) = self.renorm(inp, c);
                let inv = 1.0 / sqrt(var + eps);
                (
                    g * ((x - mean) * inv * r + d) + b,
                    g.abs() * ((x.abs() + mean.abs()) * inv * r + d.abs() + sqrt(var) / sigma)
                        + b.abs(),
                )
            }
            What::RenormR => {
                let (r, _, _) = self.renorm(inp, c);
                (r, r)
            }
            What::RenormD => {
                let (_, d, sigma) = self.renorm(inp, c);
                (d, d.abs() + sqrt(var) / sigma)
            }
            What::DxRenorm => self.dx(c, g * self.saved_r[c], x, dy),
            What::DgammaRenorm => {
                let (r, d) = (self.saved_r[c], self.saved_d[c]);
                (
                    r * self.dgamma[c] + d * self.dbeta[c],
                    r.abs() * self.dgamma_mag[c] + d.abs() * self.dbeta_mag[c],
                )
            }
            _ => (f64::NAN, 0.0),
        }
    }
}

/// Whether output `what` holds one value per element (else one per channel).
pub fn is_element(what: What) -> bool {
    matches!(
        what,
        What::TrainY
            | What::EvalY
            | What::Dx
            | What::DxEval
            | What::EvalReluY
            | What::EvalAddReluY
            | What::TrainAddReluY
            | What::DxFused
            | What::Dz
            | What::DxEvalFused
            | What::RenormY
            | What::DxRenorm
    )
}

/// `v` within `[lo, hi]` (a one-point range gives that point, whatever `v`).
fn clip(v: f64, lo: f64, hi: f64) -> f64 {
    if lo == hi || v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// The case's inputs with `dy` replaced by the gradient behind a ReLU whose output is
/// `y`: 0 where `y ≤ 0`, else `dy` (PyTorch's `threshold_backward(dy, y, 0)`).
pub fn masked(inp: &Inputs, y: &[f32]) -> Inputs {
    let mut m = inp.clone();
    for (d, &y) in m.dy.iter_mut().zip(y) {
        if y <= 0.0 {
            *d = 0.0;
        }
    }
    m
}

/// The reference of every output of `scenario::run`: the case's (γ and β given, the
/// kernel's saved statistics and corrections taken as given), and for the fused
/// backward passes those of the plain ones on `dy` masked by their forward's output.
pub struct Oracle {
    pub plain: Reference,
    train_masked: Inputs,
    train_masked_ref: Reference,
    eval_masked: Inputs,
    eval_masked_ref: Reference,
}

impl Oracle {
    pub fn new(case: &Case, inp: &Inputs, o: &Outputs) -> Oracle {
        let n = crate::data::len(case);
        let c = case.shape.channels;
        let (sm, si) = (&o.save_mean[..c], &o.save_invstd[..c]);
        let mut plain = Reference::new(case, inp, true, sm, si);
        plain.set_renorm(&o.renorm_r[..c], &o.renorm_d[..c]);
        let train_masked = masked(inp, &o.y_train_add_relu[..n]);
        let (fm, fi) = (&o.fused_save_mean[..c], &o.fused_save_invstd[..c]);
        let train_masked_ref = Reference::new(case, &train_masked, true, fm, fi);
        let eval_masked = masked(inp, &o.y_eval_relu[..n]);
        let eval_masked_ref = Reference::new(case, &eval_masked, true, sm, si);
        Oracle {
            plain,
            train_masked,
            train_masked_ref,
            eval_masked,
            eval_masked_ref,
        }
    }

    /// (exact value, magnitude) of output `what` at `i`, as [`Reference::want`].
    pub fn want(&self, inp: &Inputs, what: What, i: usize, factor: Factor) -> (f64, f64) {
        match what {
            What::DxFused | What::Dz | What::DgammaFused | What::DbetaFused => self
                .train_masked_ref
                .want(&self.train_masked, what, i, factor),
            What::DxEvalFused | What::DgammaEvalFused | What::DbetaEvalFused => self
                .eval_masked_ref
                .want(&self.eval_masked, what, i, factor),
            _ => self.plain.want(inp, what, i, factor),
        }
    }
}

/// Worst error over a set of compared values.
pub struct Acc {
    pub rtol: f64,
    pub compared: usize,
    pub bad: usize,
    /// Largest |got − want| / mag seen (0 when every value matched exactly).
    pub worst: f64,
    pub worst_at: usize,
    pub worst_got: f64,
    pub worst_want: f64,
}

impl Acc {
    pub fn new(rtol: f64) -> Acc {
        Acc {
            rtol,
            compared: 0,
            bad: 0,
            worst: 0.0,
            worst_at: 0,
            worst_got: 0.0,
            worst_want: 0.0,
        }
    }

    pub fn add(&mut self, i: usize, got: f64, want: f64, mag: f64) {
        self.compared += 1;
        let (ok, err) = if want.is_nan() || got.is_nan() {
            (
                want.is_nan() && got.is_nan(),
                if want.is_nan() && got.is_nan() {
                    0.0
                } else {
                    f64::INFINITY
                },
            )
        } else if got == want {
            (true, 0.0)
        } else {
            let d = (got - want).abs();
            let err = if mag > 0.0 { d / mag } else { f64::INFINITY };
            (err <= self.rtol, err)
        };
        if !ok {
            self.bad += 1;
        }
        if err > self.worst || (!ok && self.bad == 1) {
            self.worst = err;
            self.worst_at = i;
            self.worst_got = got;
            self.worst_want = want;
        }
    }

    pub fn ok(&self) -> bool {
        self.bad == 0 && self.compared > 0
    }
}

// ---- folding ---------------------------------------------------------------------------

use crate::data::{weight_index, FoldCase, FoldInputs, FOLD_LEN};

/// BN channel c of a fold case as `x·scale + shift`, in f64.
pub fn fold_scale_shift(inp: &FoldInputs, c: usize) -> (f64, f64) {
    let scale = inp.gamma[c] as f64 / sqrt(inp.running_var[c] as f64 + EPS as f64);
    (
        scale,
        inp.beta[c] as f64 - inp.running_mean[c] as f64 * scale,
    )
}

/// Input channel of output channel `o`'s in-group input `q`.
pub fn input_of(case: &FoldCase, o: usize, q: usize) -> usize {
    let l = case.layer;
    let (og, ig) = (l.out_channels / l.groups, l.in_channels / l.groups);
    (o / og) * ig + q
}

/// (exact, magnitude) of the folded weight W'[o, q, k], bias b'_o or pad value of
/// input channel `o` (for `FoldPad`), by the formulas.
pub fn fold_want(
    case: &FoldCase,
    inp: &FoldInputs,
    what: What,
    o: usize,
    q: usize,
    k: usize,
) -> (f64, f64) {
    let l = case.layer;
    let ig = l.in_channels / l.groups;
    match (what, case.bn_after) {
        (What::FoldWeight, after) => {
            let c = if after { o } else { input_of(case, o, q) };
            let w = inp.weight[weight_index(l, o, q, k)] as f64 * fold_scale_shift(inp, c).0;
            (w, w.abs())
        }
        (What::FoldBias, true) => {
            let (scale, _) = fold_scale_shift(inp, o);
            let (b, m, beta) = (
                inp.bias[o] as f64,
                inp.running_mean[o] as f64,
                inp.beta[o] as f64,
            );
            (
                (b - m) * scale + beta,
                (b.abs() + m.abs()) * scale.abs() + beta.abs(),
            )
        }
        (What::FoldBias, false) => {
            let b = inp.bias[o] as f64;
            let (mut sum, mut mag) = (b, b.abs());
            for q in 0..ig {
                let (_, shift) = fold_scale_shift(inp, input_of(case, o, q));
                for k in 0..l.kernel {
                    let t = inp.weight[weight_index(l, o, q, k)] as f64 * shift;
                    sum += t;
                    mag += t.abs();
                }
            }
            (sum, mag)
        }
        _ => {
            let (scale, shift) = fold_scale_shift(inp, o);
            (-shift / scale, (shift / scale).abs())
        }
    }
}

/// Output (o, t) of the case's 1-D layer (stride 1; convolution with `padding` zeros
/// replaced by `pad[i]`, transposed convolution without padding) in f64, and its
/// magnitude. `w` is the weight, `x_at(i, j)` input channel i at position j.
#[allow(clippy::too_many_arguments)]
pub fn layer_out(
    case: &FoldCase,
    w: &[f32],
    b: &[f32],
    x_at: &dyn Fn(usize, usize) -> f64,
    pad: &dyn Fn(usize) -> f64,
    padding: usize,
    o: usize,
    t: usize,
) -> (f64, f64) {
    let l = case.layer;
    let ig = l.in_channels / l.groups;
    let (mut sum, mut mag) = (b[o] as f64, (b[o] as f64).abs());
    for q in 0..ig {
        let i = input_of(case, o, q);
        for k in 0..l.kernel {
            let wv = w[weight_index(l, o, q, k)] as f64;
            let xv = if l.layout == batchnorm::fold::WeightLayout::Iohw {
                // transposed: y[t] += W[k]·x[t − k]
                if t >= k && t - k < FOLD_LEN {
                    x_at(i, t - k)
                } else {
                    0.0
                }
            } else {
                // y[t] += W[k]·x[t + k − padding]
                let j = t + k;
                if j >= padding && j - padding < FOLD_LEN {
                    x_at(i, j - padding)
                } else {
                    pad(i)
                }
            };
            sum += wv * xv;
            mag += (wv * xv).abs();
        }
    }
    (sum, mag)
}

/// Output length of the case's layer for `padding`.
pub fn layer_out_len(case: &FoldCase, padding: usize) -> usize {
    let k = case.layer.kernel;
    if case.layer.layout == batchnorm::fold::WeightLayout::Iohw {
        FOLD_LEN + k - 1
    } else {
        FOLD_LEN + 2 * padding + 1 - k
    }
}

// ---- batch norm's neighbours: one reference over statistic units ----------------------

use crate::data::{NormCase, NormInputs, NormOp, MAX_UNITS, MOMENTUM};

/// The f64 reference of a norm case (any of the four ops: they differ only in their
/// statistic units, γ/β indexing and, for RMS norm, no centering). The backward takes
/// the kernel's saved statistics as given, as batch norm's does.
pub struct NormRef {
    case: NormCase,
    affine: bool,
    /// Per unit: two-pass mean and biased variance, and the mean square.
    mean: [f64; MAX_UNITS],
    var: [f64; MAX_UNITS],
    ms: [f64; MAX_UNITS],
    /// Per unit, from the saved statistics: Σg, Σ|g|, Σg·x̂ and its magnitude, with
    /// g = γ·dy and x̂ = (x − saved mean)·saved invstd.
    sums: [[f64; 4]; MAX_UNITS],
    save_mean: [f64; MAX_UNITS],
    save_invstd: [f64; MAX_UNITS],
}

impl NormRef {
    /// `save_mean` is empty for RMS norm (no centering).
    pub fn new(
        case: &NormCase,
        inp: &NormInputs,
        affine: bool,
        save_mean: &[f32],
        save_invstd: &[f32],
    ) -> NormRef {
        let mut r = NormRef {
            case: *case,
            affine,
            mean: [0.0; MAX_UNITS],
            var: [0.0; MAX_UNITS],
            ms: [0.0; MAX_UNITS],
            sums: [[0.0; 4]; MAX_UNITS],
            save_mean: [0.0; MAX_UNITS],
            save_invstd: [0.0; MAX_UNITS],
        };
        let x = |i: usize| inp.t.x[i] as f64;
        for (u, &si) in save_invstd.iter().enumerate().take(case.units()) {
            let (mut sum, mut sq, mut m) = (0.0f64, 0.0f64, 0usize);
            case.for_unit(u, |i| {
                sum += x(i);
                sq += x(i) * x(i);
                m += 1;
            });
            let mean = sum / m as f64;
            let mut ss = 0.0f64;
            case.for_unit(u, |i| ss += (x(i) - mean) * (x(i) - mean));
            r.mean[u] = mean;
            r.var[u] = ss / m as f64;
            r.ms[u] = sq / m as f64;
            let sm = save_mean.get(u).map_or(0.0, |&v| v as f64);
            let si = si as f64;
            r.save_mean[u] = sm;
            r.save_invstd[u] = si;
            let mut s = [0.0f64; 4];
            case.for_unit(u, |i| {
                let g = r.gamma(inp, case.param_of(i)) * inp.t.dy[i] as f64;
                s[0] += g;
                s[1] += g.abs();
                s[2] += g * (x(i) - sm) * si;
                s[3] += g.abs() * (x(i).abs() + sm.abs()) * si;
            });
            r.sums[u] = s;
        }
        r
    }

    fn gamma(&self, inp: &NormInputs, j: usize) -> f64 {
        if self.affine {
            inp.gamma[j] as f64
        } else {
            1.0
        }
    }

    fn beta(&self, inp: &NormInputs, j: usize) -> f64 {
        if self.affine && self.case.op != NormOp::Rms {
            inp.beta[j] as f64
        } else {
            0.0
        }
    }

    fn centered(&self) -> bool {
        self.case.op != NormOp::Rms
    }

    /// Elements of one unit.
    fn unit_len(&self) -> f64 {
        let sh = self.case.data.shape;
        (sh.channels / self.case.groups() * sh.spatial) as f64
    }

    /// (exact value, magnitude) of output `what` at `i`: an element for `NormY`,
    /// `NormDx`; a unit for `NormMean`, `NormInvstd`; a γ/β index for `NormDgamma`,
    /// `NormDbeta`; a channel for the running statistics (exponential `MOMENTUM`).
    pub fn want(&self, inp: &NormInputs, what: What, i: usize) -> (f64, f64) {
        let eps = EPS as f64;
        let case = &self.case;
        let x = |i: usize| inp.t.x[i] as f64;
        let dy = |i: usize| inp.t.dy[i] as f64;
        match what {
            What::NormY => {
                let (u, j) = (case.unit_of(i), case.param_of(i));
                let (g, b) = (self.gamma(inp, j), self.beta(inp, j));
                if self.centered() {
                    let inv = 1.0 / sqrt(self.var[u] + eps);
                    let mean = self.mean[u];
                    (
                        (x(i) - mean) * inv * g + b,
                        (x(i).abs() + mean.abs()) * inv * g.abs() + b.abs(),
                    )
                } else {
                    let y = x(i) / sqrt(self.ms[u] + eps) * g;
                    (y, y.abs())
                }
            }
            What::NormMean => (self.mean[i], self.mean[i].abs() + sqrt(self.var[i])),
            What::NormInvstd => {
                let spread = if self.centered() {
                    self.var[i]
                } else {
                    self.ms[i]
                };
                let v = 1.0 / sqrt(spread + eps);
                (v, v)
            }
            What::NormRunningMean | What::NormRunningVar => {
                let f = MOMENTUM as f64;
                let sh = case.data.shape;
                let m = self.unit_len();
                let (mut sum, mut mag) = (0.0, 0.0);
                for n in 0..sh.batch {
                    let u = n * sh.channels + i;
                    if what == What::NormRunningMean {
                        sum += self.mean[u];
                        mag += self.mean[u].abs() + sqrt(self.var[u]);
                    } else {
                        sum += self.var[u] * m / (m - 1.0);
                        mag += self.var[u] * m / (m - 1.0);
                    }
                }
                let old = if what == What::NormRunningMean {
                    inp.t.running_mean[i]
                } else {
                    inp.t.running_var[i]
                } as f64;
                let b = sh.batch as f64;
                (
                    (1.0 - f) * old + f * sum / b,
                    (1.0 - f) * old.abs() + f * mag / b,
                )
            }
            What::NormDx => {
                let (u, j) = (case.unit_of(i), case.param_of(i));
                let m = self.unit_len();
                let (sm, si) = (self.save_mean[u], self.save_invstd[u]);
                let [sg, sgm, sgx, sgxm] = self.sums[u];
                let g = self.gamma(inp, j) * dy(i);
                let xhat = (x(i) - sm) * si;
                let xhat_mag = (x(i).abs() + sm.abs()) * si;
                let (mean_g, mean_g_mag) = if self.centered() {
                    (sg / m, sgm / m)
                } else {
                    (0.0, 0.0)
                };
                (
                    si * (g - mean_g - xhat * sgx / m),
                    si * (g.abs() + mean_g_mag + xhat_mag * sgxm / m),
                )
            }
            What::NormDgamma | What::NormDbeta => {
                let (mut sum, mut mag) = (0.0, 0.0);
                case.for_param(i, |e| {
                    let u = case.unit_of(e);
                    let (sm, si) = (self.save_mean[u], self.save_invstd[u]);
                    if what == What::NormDbeta {
                        sum += dy(e);
                        mag += dy(e).abs();
                    } else {
                        sum += dy(e) * (x(e) - sm) * si;
                        mag += dy(e).abs() * (x(e).abs() + sm.abs()) * si;
                    }
                });
                (sum, mag)
            }
            _ => (f64::NAN, 0.0),
        }
    }
}

// ---- gradient clipping -----------------------------------------------------------------

use crate::data::{ClipCase, ClipInputs};

/// The f64 norms of a clipping case's slices: (L2, max |g|).
pub fn clip_totals(case: &ClipCase, inp: &ClipInputs) -> (f64, f64) {
    let (mut sq, mut max) = (0.0f64, 0.0f64);
    for (k, &len) in case.lens.iter().enumerate() {
        for &v in &inp.g[k][..len] {
            let v = v as f64;
            sq += v * v;
            max = if v.abs() > max { v.abs() } else { max };
        }
    }
    (sqrt(sq), max)
}

/// (exact, magnitude) of a clipping output: value `i` of the slices laid end to end
/// after `clip_grad_value(clip_value)` (`ClipValue`) or `clip_grad_norm(max_norm, L2)`
/// (`ClipNormL2`: PyTorch's factor `max_norm/(total + 1e-6)`, at most 1), or a total.
pub fn clip_want(
    case: &ClipCase,
    inp: &ClipInputs,
    what: What,
    i: usize,
    clip_value: f32,
) -> (f64, f64) {
    let (l2, max) = clip_totals(case, inp);
    let mut at = i;
    let mut g = f64::NAN;
    for (k, &len) in case.lens.iter().enumerate() {
        if at < len {
            g = inp.g[k][at] as f64;
            break;
        }
        at -= len;
    }
    match what {
        What::ClipTotalL2 => (l2, l2),
        What::ClipTotalMax => (max, max),
        What::ClipValue => {
            let c = clip_value as f64;
            let v = clip(g, -c, c);
            (v, v.abs())
        }
        _ => {
            let f = case.max_norm as f64 / (l2 + 1e-6);
            let v = if f < 1.0 { g * f } else { g };
            (v, v.abs())
        }
    }
}
