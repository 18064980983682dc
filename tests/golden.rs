//! The kernels against PyTorch's own results (golden vectors).
//!
//! `tests/golden/*.txt` were written by `tests/golden/make_golden.py` from
//! `torch.native_batch_norm` (train and eval) and
//! `torch.ops.aten.native_batch_norm_backward` (train and eval), float32 on the CPU;
//! see that script for the file format and for how to regenerate them (CI does not).
//! Every file is one configuration (layout, shape, affine or not, eps, momentum) with
//! all operations on the same input, and every operation is run through every entry
//! point that computes it (`train` with and without running statistics,
//! `train_in_place`, `eval`, `eval_in_place`, `backward`/`backward_eval` with and
//! without dγ/dβ); when S = 1 also with the other layout (the same memory).
//!
//! # Tolerances
//!
//! u = 2⁻²⁴ (f32 unit roundoff), R = 1e-5 (≈ 170 u), K = 8. Per channel c:
//! a = max|x|, γ̄ = |γ| (1 if absent), β̄ = |β| (0 if absent), invstd / mean from the
//! golden file, x̂ = (x − mean)·invstd, m = N·S, and the *centering scale*
//! E = K·u·(a + |mean|) (for eval E' = K·u·(a + |running_mean|)): what rounding the
//! inputs and the mean to f32 costs in `x − mean` (≈ 16 ulp of the data). Each
//! bound is R relative to the magnitude of the terms that are combined, plus the
//! centering error carried through:
//!
//! | value | |ours − torch| ≤ |
//! |---|---|
//! | save_mean | E |
//! | save_invstd | R·invstd |
//! | running_mean after | K·u·(|rm_before| + a + |rm_after|) |
//! | running_var after | R·(|rv_before| + |rv_after|) |
//! | train y | R·(γ̄·|x̂| + β̄) + γ̄·invstd·E |
//! | eval y | R·(γ̄·|x̂ₑ| + β̄) + γ̄·rinv·E' (rinv = 1/√(rv + eps), x̂ₑ = (x − rm)·rinv) |
//! | dβ (both) | R·Σ|dy| |
//! | dγ train | R·Σ|dy·x̂| + invstd·E·Σ|dy| |
//! | dγ eval | R·Σ|dy·x̂ₑ| + rinv·E'·Σ|dy| |
//! | dx train | γ̄·invstd·(R·(|dy| + |dβ|/m + |x̂|·|dγ|/m) + (|x̂|·tol(dγ) + |dγ|·invstd·E + tol(dβ))/m) |
//! | dx eval | R·γ̄·rinv·|dy| |
//!
//! The train backward normalizes with the exact batch mean (`saved mean + Σ(x − saved
//! mean)/m`), torch's with its f32 saved mean, so on dγ and dx the distance measured
//! here is torch's own centering error, `(save_mean − mean)·invstd·Σdy` on dγ, which
//! the E terms bound (the oracle tests, tests/accuracy.rs, hold the crate to the f64
//! exact-mean values): largest ratio 0.12 (dx of `nhwc_offset1000`), 0.012 when both
//! took the f32 mean.
//!
//! **Fused** (`tests/golden/fused/*.txt`, from autograd through `F.relu(F.batch_norm(…))`
//! and `F.relu(F.batch_norm(…) + z)`; each file also holds, and is checked for, the
//! plain batch norm of its input): y = relu(bn) gets bn's train / eval y bound (relu is
//! 1-Lipschitz), relu(bn + z) that plus R·|z|. The backward is given torch's own y, so
//! both sides mask the same elements: with g = dy·[y > 0], dx, dγ, dβ get the bounds
//! above with g for dy and the fused dγ, dβ, and dz = g must equal torch's exactly.
//!
//! **Batch Renormalization** (`tests/golden/renorm/*.txt`, the paper's formulas in
//! PyTorch with r and d detached): invstd, mean, r, d from the file, σ = √(rv + eps),
//! E as above. r: R·r; d: R·|d| + E/σ (torch's d is made from its f32 mean); y:
//! R·(γ̄·(|x̂|·r + |d|) + β̄) + γ̄·invstd·r·E + γ̄·(|x̂|·tol(r) + tol(d)); saved mean,
//! invstd and running statistics as train; dβ as above; dx: r × the train dx bound
//! (with Σdy·x̂ for dγ); dγ = r·Σdy·x̂ + d·Σdy: r·tol(Σdy·x̂) + |d|·tol(Σdy) +
//! R·(|r·Σdy·x̂| + |d·Σdy|). Largest ratio measured when written: 0.13 (fused, eval y of
//! `nhwc_offset1000`) and 0.07 (renorm, saved mean of `nc_offset1000_clip`).
//!
//! **The neighbours** (`tests/golden/norms/*.txt`: `F.layer_norm`, `F.rms_norm`,
//! `F.group_norm`, `F.instance_norm` forward and autograd backward, `clip_grad_norm_`,
//! `clip_grad_value_`): the same bounds over the *units* each op normalizes (a row, a
//! (sample, group), a (sample, channel)) in the channel's place, with γ, β indexed per
//! element by its position in the row or its channel (see [`train_bounds`]): E per
//! unit; with `g = dy·γ` per element, dx's bound takes |g| for γ̄·|dy| and the unit sums
//! Σg, Σg·x̂ for dβ, dγ; dγ's centering term is Σ invstd·E·|dy| over the parameter's
//! elements. RMS norm has no centering: E = 0 and no mean(g) terms. The backward runs
//! from torch's saved mean/rstd. Our saved mean and invstd are compared with the
//! float64 statistics of the same inputs (`mean_f64`, `rstd_f64`, rounded once to f32),
//! not with torch's, which torch computes in f32 and misses by up to 30× the bound
//! (rstd of a constant group in channels-last group norm, and at |mean|/std = 1e4);
//! torch's distance is printed for the record. Instance norm's running statistics get
//! batch norm's running bounds. Clipping: the L2 total within R, the max norm exactly,
//! the scaled gradients within (R + K·u)·|g|; where torch's f32 squares overflow or
//! underflow (`torch_known_wrong: 1`) the file holds the float64 answer and torch's
//! wrong one for the record; `clip_grad_value` must equal torch's clamp bit for bit.
//! Largest ratio measured when written: 0.148 (layer norm dx, `layer_constant_rows`).
//!
//! **ONNX** (`tests/golden/onnx/*.txt`, ONNX Runtime's `BatchNormalization`, opset 15,
//! in training and inference mode): ONNX's momentum `m` is the weight of the running
//! value, so the crate runs with `Momentum::Exponential(1 − m)` and
//! `Correction::Biased`; train y, eval y and the running statistics get the bounds
//! above, with the float64 batch statistics of the file (`mean_f64`, `var_f64`) for
//! the saved ones, which ONNX does not output. Largest ratio measured when written:
//! 0.087 (eval y of `ncl_offset`); PyTorch's unbiased update misses ONNX's running
//! variance by 2e-3 to 7e-2 on these files, over 100 times the bound.
//!
//! Why these: measured against a float64 evaluation from the same f32 inputs,
//! PyTorch itself stays below 0.16 of every bound on every file (the largest
//! ratios are in `nhwc_offset1000`, where PyTorch's channels-last kernels cancel
//! `x·scale` against a shift at |x| ≈ 1000), so an accurate implementation passes
//! with margin ≥ 6 whichever side is closer to the truth. And they are tight
//! enough to catch the real mistakes (error/bound, smallest over the files that
//! can show it): running var from the biased variance ≥ 47; momentum as Keras'
//! `1 − m` ≥ 26; cumulative momentum 1/t instead of 1/(t + 1) ≥ 13000; unbiased
//! variance in invstd ≥ 500; eps outside the sqrt or forgotten ≥ 10⁵
//! (`nc_eps_big_tinyvar`, `nchw_tinyvar`); naive f32 `E[x²] − E[x]²` ≥ 20000
//! (`nchw_offset1000`); dx without the mean terms ≥ 970.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use batchnorm::{
    clip_grad_norm, clip_grad_value, total_norm, BatchNorm, Correction, Fusion, FusionGrad,
    GradNorm, Grads, GroupNorm, InstanceNorm, LayerNorm, Layout, Momentum, NonFinite, Renorm,
    RenormSaved, RenormSavedMut, RmsNorm, Rows, Running, RunningStats, Saved, SavedMut, Shape,
};

const U: f64 = 1.0 / 16_777_216.0; // 2^-24
const R: f64 = 1e-5;
const K: f64 = 8.0;

/// Every key a golden file must have (gamma and beta are optional: absent = affine=False).
const REQUIRED: &[&str] = &[
    "torch_version",
    "name",
    "layout",
    "torch_shape",
    "shape",
    "eps",
    "momentum",
    "x",
    "running_mean",
    "running_var",
    "train_y",
    "train_save_mean",
    "train_save_invstd",
    "train_running_mean",
    "train_running_var",
    "eval_y",
    "dy",
    "backward_train_dx",
    "backward_train_dgamma",
    "backward_train_dbeta",
    "backward_eval_dx",
    "backward_eval_dgamma",
    "backward_eval_dbeta",
];

/// One golden file: its `key: value` lines (see make_golden.py for the format).
struct Golden {
    file: String,
    fields: BTreeMap<String, String>,
}

impl Golden {
    /// Parses `path`; every key of `required` must be there.
    fn parse(path: &Path, required: &[&[&str]]) -> Golden {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut fields = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{file}:{}: no `key:`", i + 1));
            let old = fields.insert(k.trim().to_string(), v.trim().to_string());
            assert!(old.is_none(), "{file}:{}: duplicate key {k}", i + 1);
        }
        for key in required.iter().flat_map(|keys| keys.iter()) {
            assert!(fields.contains_key(*key), "{file}: missing key `{key}`");
        }
        Golden { file, fields }
    }

    fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    fn str(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("{}: no `{key}`", self.file))
    }

    fn usizes(&self, key: &str) -> Vec<usize> {
        self.str(key)
            .split_whitespace()
            .map(|t| {
                t.parse()
                    .unwrap_or_else(|e| panic!("{}: {key}: {t:?}: {e}", self.file))
            })
            .collect()
    }

    /// The one value of `key`.
    fn scalar(&self, key: &str) -> f32 {
        let v = self.floats(key, 1);
        v[0]
    }

    /// The values of `key`, which must be `len` of them.
    fn floats(&self, key: &str, len: usize) -> Vec<f32> {
        let v: Vec<f32> = self
            .str(key)
            .split_whitespace()
            .map(|t| {
                t.parse()
                    .unwrap_or_else(|e| panic!("{}: {key}: {t:?}: {e}", self.file))
            })
            .collect();
        assert_eq!(v.len(), len, "{}: length of {key}", self.file);
        v
    }

    fn opt_floats(&self, key: &str, len: usize) -> Option<Vec<f32>> {
        self.has(key).then(|| self.floats(key, len))
    }
}

/// A batch-norm golden file (tests/golden/*.txt, fused/, renorm/): its shape and
/// parameters.
struct Case<'g> {
    golden: &'g Golden,
    n: usize,
    c: usize,
    s: usize,
    layout: Layout,
    eps: f32,
    momentum: Momentum,
    /// `Running::batches_tracked` before the step (PyTorch's `num_batches_tracked`).
    batches_tracked: u64,
}

impl std::ops::Deref for Case<'_> {
    type Target = Golden;
    fn deref(&self) -> &Golden {
        self.golden
    }
}

impl<'g> Case<'g> {
    fn new(golden: &'g Golden) -> Case<'g> {
        let file = &golden.file;
        assert_eq!(
            golden.has("gamma"),
            golden.has("beta"),
            "{file}: gamma and beta come together"
        );
        let dims = golden.usizes("shape");
        assert_eq!(dims.len(), 3, "{file}: shape is `N C S`");
        let torch_shape = golden.usizes("torch_shape");
        assert_eq!(torch_shape[..2], dims[..2], "{file}: torch_shape vs shape");
        assert_eq!(
            torch_shape[2..].iter().product::<usize>(),
            dims[2],
            "{file}: S"
        );
        let layout = layout_of(golden);
        let eps: f32 = golden.str("eps").parse().unwrap();
        let (momentum, batches_tracked) = match golden.str("momentum") {
            "cumulative" => (
                Momentum::Cumulative,
                golden
                    .fields
                    .get("batches_tracked")
                    .unwrap_or_else(|| panic!("{file}: cumulative needs batches_tracked"))
                    .parse()
                    .unwrap(),
            ),
            v => (Momentum::Exponential(v.parse().unwrap()), 0),
        };
        Case {
            golden,
            n: dims[0],
            c: dims[1],
            s: dims[2],
            layout,
            eps,
            momentum,
            batches_tracked,
        }
    }

    /// Running statistics over `mean`, `var` with the case's momentum, before its step.
    fn running<'a>(&self, mean: &'a mut [f32], var: &'a mut [f32]) -> Running<'a> {
        Running {
            batches_tracked: self.batches_tracked,
            ..Running::new(mean, var, self.momentum)
        }
    }

    /// The values of `key`: one per element or one per channel.
    fn f32s(&self, key: &str) -> Vec<f32> {
        let want = if is_tensor_key(key) {
            self.n * self.c * self.s
        } else {
            self.c
        };
        self.floats(key, want)
    }

    fn opt(&self, key: &str) -> Option<Vec<f32>> {
        self.has(key).then(|| self.f32s(key))
    }

    fn shape(&self, layout: Layout) -> Shape {
        match layout {
            Layout::ChannelsFirst => Shape::channels_first(self.n, self.c, self.s),
            Layout::ChannelsLast => Shape::channels_last(self.n, self.c, self.s),
        }
    }

    /// Channel of flat index `i` (in the file's layout; the same for both when S = 1).
    fn channel_of(&self, i: usize) -> usize {
        match self.layout {
            Layout::ChannelsFirst => (i / self.s) % self.c,
            Layout::ChannelsLast => i % self.c,
        }
    }
}

fn layout_of(golden: &Golden) -> Layout {
    match golden.str("layout") {
        "channels_first" => Layout::ChannelsFirst,
        "channels_last" => Layout::ChannelsLast,
        other => panic!("{}: layout {other}", golden.file),
    }
}

/// Keys that hold one value per element (the others hold one per channel): x, dy, z,
/// and every y, dx and dz.
fn is_tensor_key(key: &str) -> bool {
    matches!(key, "x" | "dy" | "z")
        || key.ends_with("_y")
        || key.ends_with("_dx")
        || key.ends_with("_dz")
}

/// A normalization as the bounds see it: per element its unit (the statistics it is
/// normalized with: a channel for batch norm, a row, a (sample, group)) and its
/// parameter (the index of its γ and β), with the saved statistics per unit.
struct Norm<'a> {
    x: &'a [f64],
    unit: &'a [usize],
    param: &'a [usize],
    /// γ per parameter (1 when absent) and |β| (0 when absent).
    gamma: &'a [f64],
    bbar: &'a [f64],
    /// Per unit; for RMS norm (`centered` false) the mean is 0.
    mean: &'a [f64],
    invstd: &'a [f64],
    centered: bool,
}

/// The train-mode bounds of the module comment for one normalization, per unit
/// (`mean`, `invstd`, `amax` = max|x|), per element (`y`, `dx`) and per parameter
/// (`dgamma`, `dbeta`). With per-element γ, `g = dy·γ` takes `γ̄·dy`'s place in dx's
/// bound, and the unit sums Σg, Σg·x̂ (from the golden inputs, in f64) take dβ's and
/// dγ's; without centering (RMS norm) E = 0 and the mean(g) terms go.
struct TrainBounds {
    amax: Vec<f64>,
    mean: Vec<f64>,
    invstd: Vec<f64>,
    y: Vec<f64>,
    dbeta: Vec<f64>,
    dgamma: Vec<f64>,
    dx: Vec<f64>,
}

fn train_bounds(nm: &Norm<'_>, dy: &[f64]) -> TrainBounds {
    let (units, params) = (nm.mean.len(), nm.gamma.len());
    let (x, u, p) = (nm.x, nm.unit, nm.param);
    let mut amax = vec![0.0f64; units];
    let mut count = vec![0.0f64; units];
    for i in 0..x.len() {
        amax[u[i]] = amax[u[i]].max(x[i].abs());
        count[u[i]] += 1.0;
    }
    let e: Vec<f64> = (0..units)
        .map(|k| {
            if nm.centered {
                K * U * (amax[k] + nm.mean[k].abs())
            } else {
                0.0
            }
        })
        .collect();
    let xhat = |i: usize| (x[i] - nm.mean[u[i]]) * nm.invstd[u[i]];
    let mut sum_dy = vec![0.0f64; params];
    let mut sum_dy_xhat = vec![0.0f64; params];
    let mut sum_dy_e = vec![0.0f64; params];
    // Per unit: Σg, Σg·x̂, Σ|g|, Σ|g·x̂|.
    let mut sums = vec![[0.0f64; 4]; units];
    for i in 0..x.len() {
        let (k, j) = (u[i], p[i]);
        sum_dy[j] += dy[i].abs();
        sum_dy_xhat[j] += (dy[i] * xhat(i)).abs();
        sum_dy_e[j] += nm.invstd[k] * e[k] * dy[i].abs();
        let g = dy[i] * nm.gamma[j];
        let s = &mut sums[k];
        s[0] += g;
        s[1] += g * xhat(i);
        s[2] += g.abs();
        s[3] += (g * xhat(i)).abs();
    }
    let c = if nm.centered { 1.0 } else { 0.0 };
    let mut y = vec![0.0; x.len()];
    let mut dx = vec![0.0; x.len()];
    for i in 0..x.len() {
        let (k, j) = (u[i], p[i]);
        let (inv, m, gbar) = (nm.invstd[k], count[k], nm.gamma[j].abs());
        let xh = xhat(i).abs();
        y[i] = R * (gbar * xh + nm.bbar[j]) + gbar * inv * e[k];
        let [sg, sgx, abs_g, abs_gx] = sums[k];
        let (tol_sg, tol_sgx) = (R * abs_g, R * abs_gx + inv * e[k] * abs_g);
        dx[i] = inv
            * (R * ((dy[i] * nm.gamma[j]).abs() + c * sg.abs() / m + xh * sgx.abs() / m)
                + (xh * tol_sgx + sgx.abs() * inv * e[k] + c * tol_sg) / m);
    }
    TrainBounds {
        mean: e,
        invstd: nm.invstd.iter().map(|v| R * v).collect(),
        amax,
        y,
        dbeta: sum_dy.iter().map(|s| R * s).collect(),
        dgamma: (0..params)
            .map(|j| R * sum_dy_xhat[j] + sum_dy_e[j])
            .collect(),
        dx,
    }
}

/// Running statistics after an update from `before`, per channel with `a` = max|x|
/// over the channel: `(mean, var)` bounds.
fn running_bounds(a: &[f64], before: [&[f64]; 2], after: [&[f64]; 2]) -> (Vec<f64>, Vec<f64>) {
    let ([rm0, rv0], [rm1, rv1]) = (before, after);
    (
        (0..a.len())
            .map(|ch| K * U * (rm0[ch].abs() + a[ch] + rm1[ch].abs()))
            .collect(),
        (0..a.len())
            .map(|ch| R * (rv0[ch].abs() + rv1[ch].abs()))
            .collect(),
    )
}

/// The f64 per-element and per-channel bounds of the module comment, from the golden values.
struct Bounds {
    save_mean: Vec<f64>,
    save_invstd: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
    train_y: Vec<f64>,
    eval_y: Vec<f64>,
    dbeta: Vec<f64>,
    train_dgamma: Vec<f64>,
    eval_dgamma: Vec<f64>,
    train_dx: Vec<f64>,
    eval_dx: Vec<f64>,
}

fn bounds(case: &Case) -> Bounds {
    bounds_with(case, "train", &f64s(case, "dy"))
}

fn f64s(case: &Case, key: &str) -> Vec<f64> {
    case.f32s(key).into_iter().map(f64::from).collect()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().copied().map(f64::from).collect()
}

/// [`bounds`] for the upstream gradient `dy` of a backward pass (the masked one behind
/// a ReLU), with the forward's saved and running statistics from the keys
/// `{forward}_save_mean`, `{forward}_save_invstd`, `{forward}_running_mean` and
/// `{forward}_running_var`.
fn bounds_with(case: &Case, forward: &str, dy: &[f64]) -> Bounds {
    let d = |v: Vec<f32>| to_f64(&v);
    let key = |k: &str| format!("{forward}_{k}");
    let c = case.c;
    let x = d(case.f32s("x"));
    let eps = f64::from(case.eps);
    let gamma: Vec<f64> = case.opt("gamma").map_or(vec![1.0; c], d);
    let gbar: Vec<f64> = gamma.iter().map(|g| g.abs()).collect();
    let bbar: Vec<f64> = case.opt("beta").map_or(vec![0.0; c], |b| {
        b.iter().map(|v| f64::from(v.abs())).collect()
    });
    let rm0 = d(case.f32s("running_mean"));
    let rv0 = d(case.f32s("running_var"));
    let mean = d(case.f32s(&key("save_mean")));
    let invstd = d(case.f32s(&key("save_invstd")));
    let rm1 = d(case.f32s(&key("running_mean")));
    let rv1 = d(case.f32s(&key("running_var")));
    let rinv: Vec<f64> = rv0.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let channel: Vec<usize> = (0..x.len()).map(|i| case.channel_of(i)).collect();
    let train = train_bounds(
        &Norm {
            x: &x,
            unit: &channel,
            param: &channel,
            gamma: &gamma,
            bbar: &bbar,
            mean: &mean,
            invstd: &invstd,
            centered: true,
        },
        dy,
    );
    let a = &train.amax;

    let mut sum_dy = vec![0.0f64; c];
    let mut sum_dy_xhat_e = vec![0.0f64; c];
    for i in 0..x.len() {
        let ch = channel[i];
        sum_dy[ch] += dy[i].abs();
        sum_dy_xhat_e[ch] += (dy[i] * (x[i] - rm0[ch]) * rinv[ch]).abs();
    }
    let e_eval: Vec<f64> = (0..c).map(|ch| K * U * (a[ch] + rm0[ch].abs())).collect();
    let eval_dgamma: Vec<f64> = (0..c)
        .map(|ch| R * sum_dy_xhat_e[ch] + rinv[ch] * e_eval[ch] * sum_dy[ch])
        .collect();
    let mut eval_y = vec![0.0; x.len()];
    let mut eval_dx = vec![0.0; x.len()];
    for i in 0..x.len() {
        let ch = channel[i];
        let xhat_e = ((x[i] - rm0[ch]) * rinv[ch]).abs();
        eval_y[i] = R * (gbar[ch] * xhat_e + bbar[ch]) + gbar[ch] * rinv[ch] * e_eval[ch];
        eval_dx[i] = R * gbar[ch] * rinv[ch] * dy[i].abs();
    }
    let (running_mean, running_var) = running_bounds(a, [&rm0, &rv0], [&rm1, &rv1]);
    Bounds {
        save_mean: train.mean,
        save_invstd: train.invstd,
        running_mean,
        running_var,
        train_y: train.y,
        eval_y,
        dbeta: train.dbeta,
        train_dgamma: train.dgamma,
        eval_dgamma,
        train_dx: train.dx,
        eval_dx,
    }
}

/// Collects every mismatch of one file instead of stopping at the first.
struct Report<'g> {
    golden: &'g Golden,
    failures: String,
    compared: usize,
    /// Largest |ours − torch|/bound seen per golden key (printed with --nocapture).
    worst: BTreeMap<String, f64>,
    /// The unit (channel) of every element, named in failures; may be empty.
    unit_of: Vec<usize>,
    /// Put before every key in `worst` (the op, when one directory holds several).
    prefix: String,
    /// Torch's own distance from the float64 reference, per value ([`Report::measure`]).
    measured: BTreeMap<String, f64>,
}

impl<'g> Report<'g> {
    fn new(golden: &'g Golden) -> Report<'g> {
        Report {
            golden,
            failures: String::new(),
            compared: 0,
            worst: BTreeMap::new(),
            unit_of: Vec::new(),
            prefix: String::new(),
            measured: BTreeMap::new(),
        }
    }

    fn call<E: std::fmt::Debug>(&mut self, what: &str, r: Result<(), E>) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                let _ = writeln!(self.failures, "  {what}: returned Err({e:?})");
                false
            }
        }
    }

    /// |ours − torch| ≤ tol elementwise (NaN never passes).
    fn check(&mut self, what: &str, ours: &[f32], key: &str, tol: &[f64]) {
        let torch = self.golden.floats(key, ours.len());
        assert_eq!(tol.len(), torch.len());
        self.compared += 1;
        let mut bad = 0;
        let mut worst = (0.0f64, 0usize);
        let mut max_ratio = 0.0f64;
        for i in 0..torch.len() {
            let diff = (f64::from(ours[i]) - f64::from(torch[i])).abs();
            let ok = diff <= tol[i];
            if ok && diff > 0.0 {
                max_ratio = max_ratio.max(diff / tol[i]);
            }
            if !ok {
                bad += 1;
                let ratio = if diff.is_nan() {
                    f64::INFINITY
                } else {
                    diff / tol[i]
                };
                if ratio > worst.0 || bad == 1 {
                    worst = (ratio, i);
                }
            }
        }
        let w = self
            .worst
            .entry(format!("{}{key}", self.prefix))
            .or_insert(0.0);
        *w = w.max(if bad > 0 { worst.0 } else { max_ratio });
        if bad > 0 {
            let i = worst.1;
            let unit = match self.unit_of.get(i) {
                Some(u) if torch.len() == self.unit_of.len() => format!(" (unit {u})"),
                _ => String::new(),
            };
            let _ = writeln!(
                self.failures,
                "  {what} vs torch `{key}`: {bad}/{} outside the bound; worst [{i}]{unit}: \
                 ours {:.9e}, torch {:.9e}, |diff| {:.3e} = {:.3e} x bound {:.3e}",
                torch.len(),
                ours[i],
                torch[i],
                (f64::from(ours[i]) - f64::from(torch[i])).abs(),
                worst.0,
                tol[i],
            );
        }
    }

    /// Records the largest |v − `key`|/bound under `label` in `worst`, for the record
    /// only: how far torch's own values are from the float64 reference.
    fn measure(&mut self, label: &str, v: &[f32], key: &str, tol: &[f64]) {
        let reference = self.golden.floats(key, v.len());
        let r = (0..v.len())
            .map(|i| (f64::from(v[i]) - f64::from(reference[i])).abs() / tol[i])
            .fold(0.0, f64::max);
        let w = self
            .measured
            .entry(format!("{}{label}", self.prefix))
            .or_insert(0.0);
        *w = w.max(r);
    }

    /// `ours` must equal torch's `key` exactly (NaN matching NaN).
    fn exact(&mut self, what: &str, ours: &[f32], key: &str) {
        let torch = self.golden.floats(key, ours.len());
        self.compared += 1;
        self.worst
            .entry(format!("{}{key}", self.prefix))
            .or_insert(0.0);
        let bad: Vec<usize> = (0..torch.len())
            .filter(|&i| {
                ours[i].to_bits() != torch[i].to_bits() && !(ours[i].is_nan() && torch[i].is_nan())
            })
            .collect();
        if let Some(&i) = bad.first() {
            let _ = writeln!(
                self.failures,
                "  {what} vs torch `{key}`: {}/{} differ; first [{i}]: ours {:.9e}, torch {:.9e}",
                bad.len(),
                torch.len(),
                ours[i],
                torch[i]
            );
        }
    }
}

fn run_case(case: &Case, layout: Layout, report: &mut Report<'_>) {
    let b = bounds(case);
    let shape = case.shape(layout);
    let tag = match layout {
        Layout::ChannelsFirst => "[channels_first]",
        Layout::ChannelsLast => "[channels_last]",
    };
    let (c, len) = (case.c, case.n * case.c * case.s);
    let x = case.f32s("x");
    let dy = case.f32s("dy");
    let gamma = case.opt("gamma");
    let beta = case.opt("beta");
    let rm0 = case.f32s("running_mean");
    let rv0 = case.f32s("running_var");
    let save_mean_t = case.f32s("train_save_mean");
    let save_invstd_t = case.f32s("train_save_invstd");
    let saved_t = Saved {
        mean: &save_mean_t,
        invstd: &save_invstd_t,
    };
    let stats0 = RunningStats {
        mean: &rm0,
        var: &rv0,
    };
    let bn = BatchNorm {
        eps: case.eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };

    // ---- train forward, with running statistics
    {
        let mut y = vec![f32::NAN; len];
        let (mut sm, mut si) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let mut running = case.running(&mut rm, &mut rv);
        let saved = SavedMut {
            mean: &mut sm,
            invstd: &mut si,
        };
        let what = format!("{tag} train(running)");
        if report.call(
            &what,
            bn.train(&x, &mut y, shape, saved, Some(&mut running)),
        ) {
            report.check(&format!("{what} y"), &y, "train_y", &b.train_y);
            report.check(
                &format!("{what} save_mean"),
                &sm,
                "train_save_mean",
                &b.save_mean,
            );
            report.check(
                &format!("{what} save_invstd"),
                &si,
                "train_save_invstd",
                &b.save_invstd,
            );
            report.check(
                &format!("{what} running_mean"),
                &rm,
                "train_running_mean",
                &b.running_mean,
            );
            report.check(
                &format!("{what} running_var"),
                &rv,
                "train_running_var",
                &b.running_var,
            );
        }
    }
    // ---- train forward, no running statistics
    {
        let mut y = vec![f32::NAN; len];
        let (mut sm, mut si) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let what = format!("{tag} train(None)");
        let saved = SavedMut {
            mean: &mut sm,
            invstd: &mut si,
        };
        if report.call(&what, bn.train(&x, &mut y, shape, saved, None)) {
            report.check(&format!("{what} y"), &y, "train_y", &b.train_y);
            report.check(
                &format!("{what} save_mean"),
                &sm,
                "train_save_mean",
                &b.save_mean,
            );
            report.check(
                &format!("{what} save_invstd"),
                &si,
                "train_save_invstd",
                &b.save_invstd,
            );
        }
    }
    // ---- train forward in place, with running statistics
    {
        let mut y = x.clone();
        let (mut sm, mut si) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let mut running = case.running(&mut rm, &mut rv);
        let saved = SavedMut {
            mean: &mut sm,
            invstd: &mut si,
        };
        let what = format!("{tag} train_in_place(running)");
        if report.call(
            &what,
            bn.train_in_place(&mut y, shape, saved, Some(&mut running)),
        ) {
            report.check(&format!("{what} y"), &y, "train_y", &b.train_y);
            report.check(
                &format!("{what} save_mean"),
                &sm,
                "train_save_mean",
                &b.save_mean,
            );
            report.check(
                &format!("{what} save_invstd"),
                &si,
                "train_save_invstd",
                &b.save_invstd,
            );
            report.check(
                &format!("{what} running_mean"),
                &rm,
                "train_running_mean",
                &b.running_mean,
            );
            report.check(
                &format!("{what} running_var"),
                &rv,
                "train_running_var",
                &b.running_var,
            );
        }
    }
    // ---- eval forward
    {
        let mut y = vec![f32::NAN; len];
        let what = format!("{tag} eval");
        if report.call(&what, bn.eval(&x, &mut y, shape, stats0)) {
            report.check(&format!("{what} y"), &y, "eval_y", &b.eval_y);
        }
        let mut y = x.clone();
        let what = format!("{tag} eval_in_place");
        if report.call(&what, bn.eval_in_place(&mut y, shape, stats0)) {
            report.check(&format!("{what} y"), &y, "eval_y", &b.eval_y);
        }
    }
    // ---- backward (train), from torch's saved statistics
    {
        let mut dx = vec![f32::NAN; len];
        let (mut dg, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let grads = Grads {
            dx: &mut dx,
            dgamma: Some(&mut dg),
            dbeta: Some(&mut db),
        };
        let what = format!("{tag} backward");
        if report.call(&what, bn.backward(&x, &dy, shape, saved_t, grads)) {
            report.check(&format!("{what} dx"), &dx, "backward_train_dx", &b.train_dx);
            report.check(
                &format!("{what} dgamma"),
                &dg,
                "backward_train_dgamma",
                &b.train_dgamma,
            );
            report.check(
                &format!("{what} dbeta"),
                &db,
                "backward_train_dbeta",
                &b.dbeta,
            );
        }
        let mut dx = vec![f32::NAN; len];
        let grads = Grads {
            dx: &mut dx,
            dgamma: None,
            dbeta: None,
        };
        let what = format!("{tag} backward(dx only)");
        if report.call(&what, bn.backward(&x, &dy, shape, saved_t, grads)) {
            report.check(&format!("{what} dx"), &dx, "backward_train_dx", &b.train_dx);
        }
    }
    // ---- backward (eval), statistics frozen
    {
        let mut dx = vec![f32::NAN; len];
        let (mut dg, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let grads = Grads {
            dx: &mut dx,
            dgamma: Some(&mut dg),
            dbeta: Some(&mut db),
        };
        let what = format!("{tag} backward_eval");
        if report.call(&what, bn.backward_eval(&x, &dy, shape, stats0, grads)) {
            report.check(&format!("{what} dx"), &dx, "backward_eval_dx", &b.eval_dx);
            report.check(
                &format!("{what} dgamma"),
                &dg,
                "backward_eval_dgamma",
                &b.eval_dgamma,
            );
            report.check(
                &format!("{what} dbeta"),
                &db,
                "backward_eval_dbeta",
                &b.dbeta,
            );
        }
        let mut dx = vec![f32::NAN; len];
        let grads = Grads {
            dx: &mut dx,
            dgamma: None,
            dbeta: None,
        };
        let what = format!("{tag} backward_eval(dx only)");
        if report.call(&what, bn.backward_eval(&x, &dy, shape, stats0, grads)) {
            report.check(&format!("{what} dx"), &dx, "backward_eval_dx", &b.eval_dx);
        }
    }
}

/// The golden files of `tests/golden/<sub>` (`sub` = "" for tests/golden itself).
fn golden_files_in(sub: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

/// Runs `run` on every file of `tests/golden/<sub>` (parsed with the keys of
/// `required`): it checks the file into its report and returns a description of the
/// case. Prints every file's count of arrays compared and the largest
/// |ours − torch|/bound per key, and fails on any disagreement. Returns the number of
/// arrays compared and the largest ratio.
fn golden_dir(
    sub: &str,
    required: &[&[&str]],
    mut run: impl FnMut(&Golden, &mut Report<'_>) -> String,
) -> (usize, f64) {
    let files = golden_files_in(sub);
    assert!(
        !files.is_empty(),
        "no golden files in tests/golden/{sub}: run tests/golden/make_golden.py (see its header)"
    );
    let prefix = if sub.is_empty() {
        String::new()
    } else {
        format!("{sub}/")
    };
    let mut failures = String::new();
    let mut compared = 0;
    let mut worst: BTreeMap<String, (f64, String)> = BTreeMap::new();
    let mut measured = worst.clone();
    for path in &files {
        let golden = Golden::parse(path, required);
        let mut report = Report::new(&golden);
        let desc = run(&golden, &mut report);
        let version = match golden.fields.get("ort_version") {
            Some(v) => format!("onnxruntime {v}"),
            None => format!("torch {}", golden.str("torch_version")),
        };
        println!(
            "{prefix}{}: {} arrays compared ({desc}, {version})",
            golden.file, report.compared
        );
        compared += report.compared;
        for (map, all) in [
            (&report.worst, &mut worst),
            (&report.measured, &mut measured),
        ] {
            for (key, r) in map {
                let w = all.entry(key.clone()).or_insert((0.0, String::new()));
                if *r >= w.0 {
                    *w = (*r, golden.file.clone());
                }
            }
        }
        if !report.failures.is_empty() {
            let _ = write!(failures, "{prefix}{}:\n{}", golden.file, report.failures);
        }
    }
    println!("{prefix}largest |ours - torch| / bound per value:");
    for (key, (r, file)) in &worst {
        println!("  {key:32} {r:.3} ({file})");
    }
    if !measured.is_empty() {
        println!("{prefix}torch's own |torch - f64| / bound, for the record:");
        for (key, (r, file)) in &measured {
            println!("  {key:32} {r:.3} ({file})");
        }
    }
    assert!(
        failures.is_empty(),
        "disagreements with the golden values:\n{failures}"
    );
    let max = worst.values().map(|w| w.0).fold(0.0, f64::max);
    println!(
        "{prefix}{} golden files, {compared} arrays compared, largest ratio {max:.3}",
        files.len()
    );
    (compared, max)
}

/// What a set of batch-norm files covers: channels_last with S > 1, S = 1, cumulative
/// momentum, no affine.
#[derive(Default, Debug, PartialEq)]
struct Seen {
    channels_last: bool,
    rows: bool,
    cumulative: bool,
    no_affine: bool,
}

/// [`golden_dir`] over batch-norm files: `run` on every file in its layout, and when
/// S = 1 also in the other (the same memory). Returns what the files covered.
fn bn_golden_dir(
    sub: &str,
    required: &[&[&str]],
    run: impl Fn(&Case, Layout, &mut Report<'_>),
) -> Seen {
    let mut seen = Seen::default();
    golden_dir(sub, required, |golden, report| {
        let case = Case::new(golden);
        report.unit_of = (0..case.n * case.c * case.s)
            .map(|i| case.channel_of(i))
            .collect();
        run(&case, case.layout, report);
        if case.s == 1 {
            let other = match case.layout {
                Layout::ChannelsFirst => Layout::ChannelsLast,
                Layout::ChannelsLast => Layout::ChannelsFirst,
            };
            run(&case, other, report);
        }
        seen.channels_last |= case.layout == Layout::ChannelsLast && case.s > 1;
        seen.rows |= case.s == 1;
        seen.cumulative |= case.momentum == Momentum::Cumulative;
        seen.no_affine |= !case.has("gamma");
        format!(
            "{} N={} C={} S={}",
            case.str("layout"),
            case.n,
            case.c,
            case.s
        )
    });
    seen
}

#[test]
fn kernels_match_pytorch() {
    let seen = bn_golden_dir("", &[REQUIRED], run_case);
    let all = Seen {
        channels_last: true,
        rows: true,
        cumulative: true,
        no_affine: true,
    };
    assert_eq!(seen, all, "golden set lacks a kind of case");
}

// ----------------------------------------------------------------------------------
// BN + ReLU and BN + Add + ReLU (tests/golden/fused)
// ----------------------------------------------------------------------------------

/// The keys a fused golden file has on top of [`REQUIRED`] (see make_golden.py).
const FUSED_REQUIRED: &[&str] = &[
    "z",
    "relu_train_y",
    "relu_eval_y",
    "relu_backward_train_dx",
    "relu_backward_train_dgamma",
    "relu_backward_train_dbeta",
    "relu_backward_eval_dx",
    "relu_backward_eval_dgamma",
    "relu_backward_eval_dbeta",
    "add_relu_train_y",
    "add_relu_eval_y",
    "add_relu_backward_train_dx",
    "add_relu_backward_train_dz",
    "add_relu_backward_train_dgamma",
    "add_relu_backward_train_dbeta",
    "add_relu_backward_eval_dx",
    "add_relu_backward_eval_dz",
    "add_relu_backward_eval_dgamma",
    "add_relu_backward_eval_dbeta",
];

/// `dy` where torch's `y` is positive, else 0 (`threshold_backward(dy, y, 0)`): the
/// gradient batch norm's backward gets behind the ReLU, with the mask of torch's own
/// output, which our backward takes as its `y`.
fn masked(dy: &[f32], y: &[f32]) -> Vec<f64> {
    dy.iter()
        .zip(y)
        .map(|(&d, &y)| if y > 0.0 { f64::from(d) } else { 0.0 })
        .collect()
}

fn run_fused_case(case: &Case, layout: Layout, report: &mut Report<'_>) {
    let b = bounds(case);
    let shape = case.shape(layout);
    let tag = match layout {
        Layout::ChannelsFirst => "[channels_first]",
        Layout::ChannelsLast => "[channels_last]",
    };
    let (c, len) = (case.c, case.n * case.c * case.s);
    let x = case.f32s("x");
    let z = case.f32s("z");
    let dy = case.f32s("dy");
    let gamma = case.opt("gamma");
    let beta = case.opt("beta");
    let rm0 = case.f32s("running_mean");
    let rv0 = case.f32s("running_var");
    let save_mean_t = case.f32s("train_save_mean");
    let save_invstd_t = case.f32s("train_save_invstd");
    let bn = BatchNorm {
        eps: case.eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let exact = vec![0.0; len];
    for f in ["relu", "add_relu"] {
        let add = f == "add_relu";
        let fusion = if add {
            Fusion::AddRelu { z: &z }
        } else {
            Fusion::Relu
        };
        // y = relu(bn (+ z)): bn's bound (relu is 1-Lipschitz), plus R·|z| for the add.
        let plus_z = |bound: &[f64]| -> Vec<f64> {
            bound
                .iter()
                .zip(&z)
                .map(|(t, &z)| t + if add { R * f64::from(z).abs() } else { 0.0 })
                .collect()
        };
        let (train_y, eval_y) = (plus_z(&b.train_y), plus_z(&b.eval_y));
        let (train_key, eval_key) = (format!("{f}_train_y"), format!("{f}_eval_y"));

        // ---- train_fused, with and without running statistics
        for with_running in [true, false] {
            let mut y = vec![f32::NAN; len];
            let (mut sm, mut si) = (vec![f32::NAN; c], vec![f32::NAN; c]);
            let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
            let mut running = with_running.then(|| case.running(&mut rm, &mut rv));
            let saved = SavedMut {
                mean: &mut sm,
                invstd: &mut si,
            };
            let what = format!("{tag} train_fused({f}, running: {with_running})");
            if report.call(
                &what,
                bn.train_fused(&x, &mut y, shape, fusion, saved, running.as_mut()),
            ) {
                report.check(&format!("{what} y"), &y, &train_key, &train_y);
                report.check(
                    &format!("{what} save_mean"),
                    &sm,
                    "train_save_mean",
                    &b.save_mean,
                );
                report.check(
                    &format!("{what} save_invstd"),
                    &si,
                    "train_save_invstd",
                    &b.save_invstd,
                );
                if with_running {
                    report.check(
                        &format!("{what} running_mean"),
                        &rm,
                        "train_running_mean",
                        &b.running_mean,
                    );
                    report.check(
                        &format!("{what} running_var"),
                        &rv,
                        "train_running_var",
                        &b.running_var,
                    );
                }
            }
        }
        // ---- eval_fused
        {
            let mut y = vec![f32::NAN; len];
            let what = format!("{tag} eval_fused({f})");
            let stats = RunningStats {
                mean: &rm0,
                var: &rv0,
            };
            if report.call(&what, bn.eval_fused(&x, &mut y, shape, fusion, stats)) {
                report.check(&format!("{what} y"), &y, &eval_key, &eval_y);
            }
        }
        // ---- backward_fused / backward_eval_fused, from torch's y (and saved stats)
        for eval_mode in [false, true] {
            let mode = if eval_mode { "eval" } else { "train" };
            let y_t = case.f32s(if eval_mode { &eval_key } else { &train_key });
            let g = masked(&dy, &y_t);
            let key = |k: &str| format!("{f}_backward_{mode}_{k}");
            let bg = bounds_with(case, "train", &g);
            let (dx_bound, dgamma_bound) = if eval_mode {
                (&bg.eval_dx, &bg.eval_dgamma)
            } else {
                (&bg.train_dx, &bg.train_dgamma)
            };
            let stats = if eval_mode {
                [&rm0[..], &rv0[..]]
            } else {
                [&save_mean_t[..], &save_invstd_t[..]]
            };
            for full in [true, false] {
                let mut dx = vec![f32::NAN; len];
                let (mut dg, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
                let mut dz = vec![f32::NAN; len];
                let grads = Grads {
                    dx: &mut dx,
                    dgamma: full.then_some(&mut dg[..]),
                    dbeta: full.then_some(&mut db[..]),
                };
                let through = if add {
                    FusionGrad::AddRelu { dz: &mut dz }
                } else {
                    FusionGrad::Relu
                };
                let what = format!(
                    "{tag} backward_{}fused({f}{})",
                    if eval_mode { "eval_" } else { "" },
                    if full { "" } else { ", dx only" }
                );
                let result = if eval_mode {
                    let stats = RunningStats {
                        mean: stats[0],
                        var: stats[1],
                    };
                    bn.backward_eval_fused(&x, &dy, &y_t, shape, through, stats, grads)
                } else {
                    let saved = Saved {
                        mean: stats[0],
                        invstd: stats[1],
                    };
                    bn.backward_fused(&x, &dy, &y_t, shape, through, saved, grads)
                };
                if report.call(&what, result) {
                    report.check(&format!("{what} dx"), &dx, &key("dx"), dx_bound);
                    if full {
                        report.check(&format!("{what} dgamma"), &dg, &key("dgamma"), dgamma_bound);
                        report.check(&format!("{what} dbeta"), &db, &key("dbeta"), &bg.dbeta);
                    }
                    if add {
                        // dz = dy·[y > 0] is a selection: exactly torch's.
                        report.check(&format!("{what} dz"), &dz, &key("dz"), &exact);
                    }
                }
            }
        }
    }
}

/// [`bn_golden_dir`] for the fused and renorm files, which need not hold a cumulative
/// momentum but must cover the rest.
fn check_golden_dir(sub: &str, required: &[&[&str]], run: impl Fn(&Case, Layout, &mut Report<'_>)) {
    let seen = bn_golden_dir(sub, required, run);
    assert!(
        seen.channels_last && seen.rows && seen.no_affine,
        "{sub}: golden set lacks a kind of case: {seen:?}"
    );
}

#[test]
fn fused_kernels_match_pytorch() {
    // The plain batch norm of each file too: the fused files hold its keys.
    check_golden_dir(
        "fused",
        &[REQUIRED, FUSED_REQUIRED],
        |case, layout, report| {
            run_case(case, layout, report);
            run_fused_case(case, layout, report);
        },
    );
}

// ----------------------------------------------------------------------------------
// Batch Renormalization (tests/golden/renorm)
// ----------------------------------------------------------------------------------

const RENORM_REQUIRED: &[&str] = &[
    "torch_version",
    "name",
    "layout",
    "torch_shape",
    "shape",
    "eps",
    "momentum",
    "rmax",
    "dmax",
    "x",
    "running_mean",
    "running_var",
    "dy",
    "renorm_y",
    "renorm_save_mean",
    "renorm_save_invstd",
    "renorm_r",
    "renorm_d",
    "renorm_running_mean",
    "renorm_running_var",
    "renorm_backward_dx",
    "renorm_backward_dgamma",
    "renorm_backward_dbeta",
];

/// The bounds of Batch Renormalization, on top of batch norm's [`bounds_with`] for the
/// same statistics (see the module comment).
struct RenormBounds {
    base: Bounds,
    r: Vec<f64>,
    d: Vec<f64>,
    y: Vec<f64>,
    dgamma: Vec<f64>,
    dx: Vec<f64>,
}

fn renorm_bounds(case: &Case) -> RenormBounds {
    let c = case.c;
    let x = f64s(case, "x");
    let dy = f64s(case, "dy");
    let mean = f64s(case, "renorm_save_mean");
    let invstd = f64s(case, "renorm_save_invstd");
    let r = f64s(case, "renorm_r");
    let d = f64s(case, "renorm_d");
    let rv0 = f64s(case, "running_var");
    let eps = f64::from(case.eps);
    let gbar: Vec<f64> = case.opt("gamma").map_or(vec![1.0; c], |g| {
        g.iter().map(|v| f64::from(v.abs())).collect()
    });
    let bbar: Vec<f64> = case.opt("beta").map_or(vec![0.0; c], |b| {
        b.iter().map(|v| f64::from(v.abs())).collect()
    });
    // Batch norm's sums of the same dy: Σdy·x̂ (which dx is built from) and Σdy.
    let (mut sum_dy_xhat, mut sum_dy) = (vec![0.0; c], vec![0.0; c]);
    for i in 0..x.len() {
        let ch = case.channel_of(i);
        sum_dy_xhat[ch] += dy[i] * (x[i] - mean[ch]) * invstd[ch];
        sum_dy[ch] += dy[i];
    }
    let base = bounds_with(case, "renorm", &dy);
    let mut a = vec![0.0f64; c];
    for (i, xi) in x.iter().enumerate() {
        let ch = case.channel_of(i);
        a[ch] = a[ch].max(xi.abs());
    }
    let e: Vec<f64> = (0..c).map(|ch| K * U * (a[ch] + mean[ch].abs())).collect();
    let sigma: Vec<f64> = rv0.iter().map(|v| (v + eps).sqrt()).collect();
    let r_b: Vec<f64> = r.iter().map(|r| R * r.abs()).collect();
    let d_b: Vec<f64> = (0..c)
        .map(|ch| R * d[ch].abs() + e[ch] / sigma[ch])
        .collect();
    let mut y = vec![0.0; x.len()];
    let mut dx = vec![0.0; x.len()];
    for i in 0..x.len() {
        let ch = case.channel_of(i);
        let xhat = ((x[i] - mean[ch]) * invstd[ch]).abs();
        y[i] = R * (gbar[ch] * (xhat * r[ch] + d[ch].abs()) + bbar[ch])
            + gbar[ch] * invstd[ch] * r[ch] * e[ch]
            + gbar[ch] * (xhat * r_b[ch] + d_b[ch]);
        dx[i] = r[ch] * base.train_dx[i];
    }
    let dgamma = (0..c)
        .map(|ch| {
            r[ch] * base.train_dgamma[ch]
                + d[ch].abs() * base.dbeta[ch]
                + R * ((r[ch] * sum_dy_xhat[ch]).abs() + (d[ch] * sum_dy[ch]).abs())
        })
        .collect();
    RenormBounds {
        base,
        r: r_b,
        d: d_b,
        y,
        dgamma,
        dx,
    }
}

fn run_renorm_case(case: &Case, layout: Layout, report: &mut Report<'_>) {
    let b = renorm_bounds(case);
    let shape = case.shape(layout);
    let tag = match layout {
        Layout::ChannelsFirst => "[channels_first]",
        Layout::ChannelsLast => "[channels_last]",
    };
    let (c, len) = (case.c, case.n * case.c * case.s);
    let x = case.f32s("x");
    let dy = case.f32s("dy");
    let gamma = case.opt("gamma");
    let beta = case.opt("beta");
    let rm0 = case.f32s("running_mean");
    let rv0 = case.f32s("running_var");
    let limit = |k: &str| -> f32 {
        case.fields[k]
            .parse()
            .unwrap_or_else(|e| panic!("{}: {k}: {e}", case.file))
    };
    let renorm = Renorm {
        rmax: limit("rmax"),
        dmax: limit("dmax"),
    };
    let bn = BatchNorm {
        eps: case.eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    // ---- train_renorm
    {
        let mut y = vec![f32::NAN; len];
        let (mut mean, mut invstd) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let (mut r, mut d) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let saved = RenormSavedMut {
            mean: &mut mean,
            invstd: &mut invstd,
            r: &mut r,
            d: &mut d,
        };
        let mut running = case.running(&mut rm, &mut rv);
        let what = format!("{tag} train_renorm({renorm:?})");
        if report.call(
            &what,
            bn.train_renorm(&x, &mut y, shape, renorm, saved, &mut running),
        ) {
            report.check(&format!("{what} y"), &y, "renorm_y", &b.y);
            report.check(
                &format!("{what} saved.mean"),
                &mean,
                "renorm_save_mean",
                &b.base.save_mean,
            );
            report.check(
                &format!("{what} saved.invstd"),
                &invstd,
                "renorm_save_invstd",
                &b.base.save_invstd,
            );
            report.check(&format!("{what} saved.r"), &r, "renorm_r", &b.r);
            report.check(&format!("{what} saved.d"), &d, "renorm_d", &b.d);
            report.check(
                &format!("{what} running_mean"),
                &rm,
                "renorm_running_mean",
                &b.base.running_mean,
            );
            report.check(
                &format!("{what} running_var"),
                &rv,
                "renorm_running_var",
                &b.base.running_var,
            );
        }
    }
    // ---- backward_renorm, from torch's saved values
    for full in [true, false] {
        let (mean, invstd) = (
            case.f32s("renorm_save_mean"),
            case.f32s("renorm_save_invstd"),
        );
        let (r, d) = (case.f32s("renorm_r"), case.f32s("renorm_d"));
        let saved = RenormSaved {
            mean: &mean,
            invstd: &invstd,
            r: &r,
            d: &d,
        };
        let mut dx = vec![f32::NAN; len];
        let (mut dg, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let grads = Grads {
            dx: &mut dx,
            dgamma: full.then_some(&mut dg[..]),
            dbeta: full.then_some(&mut db[..]),
        };
        let what = format!(
            "{tag} backward_renorm{}",
            if full { "" } else { "(dx only)" }
        );
        if report.call(&what, bn.backward_renorm(&x, &dy, shape, saved, grads)) {
            report.check(&format!("{what} dx"), &dx, "renorm_backward_dx", &b.dx);
            if full {
                report.check(
                    &format!("{what} dgamma"),
                    &dg,
                    "renorm_backward_dgamma",
                    &b.dgamma,
                );
                report.check(
                    &format!("{what} dbeta"),
                    &db,
                    "renorm_backward_dbeta",
                    &b.base.dbeta,
                );
            }
        }
    }
}

#[test]
fn renorm_kernels_match_pytorch() {
    check_golden_dir("renorm", &[RENORM_REQUIRED], run_renorm_case);
}

// ----------------------------------------------------------------------------------
// The neighbours: layer, RMS, group and instance norm, gradient clipping
// (tests/golden/norms)
// ----------------------------------------------------------------------------------

/// Keys every norms file has; the rest depend on its `op` (see make_golden.py).
const NORMS_REQUIRED: &[&str] = &["torch_version", "name", "op", "torch_shape"];
const NORM_REQUIRED: &[&str] = &[
    "eps", "x", "dy", "y", "rstd", "rstd_f64", "dx", "dweight", "dbias",
];

/// A file's `weight` and `bias` (`params` of each, optional), and γ per parameter (1
/// when absent) and |β| (0 when absent) for the bounds.
struct Affine {
    gamma: Option<Vec<f32>>,
    beta: Option<Vec<f32>>,
    gam: Vec<f64>,
    bbar: Vec<f64>,
}

fn affine_of(g: &Golden, params: usize) -> Affine {
    let gamma = g.opt_floats("weight", params);
    let beta = g.opt_floats("bias", params);
    let gam = gamma.as_deref().map_or(vec![1.0; params], to_f64);
    let bbar = beta.as_deref().map_or(vec![0.0; params], |b| {
        b.iter().map(|v| f64::from(v.abs())).collect()
    });
    Affine {
        gamma,
        beta,
        gam,
        bbar,
    }
}

/// Layer norm and RMS norm over rows: forward, in place and backward from torch's
/// saved statistics, with and without dγ and dβ.
fn run_row_norm(g: &Golden, report: &mut Report<'_>, rms: bool) -> String {
    let (rows, len) = (g.usizes("rows")[0], g.usizes("len")[0]);
    let n = rows * len;
    let shape = Rows::new(rows, len);
    let eps = g.scalar("eps");
    let x = g.floats("x", n);
    let dy = g.floats("dy", n);
    let Affine {
        gamma,
        beta,
        gam,
        bbar,
    } = affine_of(g, len);
    let mean_t = if rms {
        vec![0.0; rows]
    } else {
        g.floats("mean", rows)
    };
    let rstd_t = g.floats("rstd", rows);
    let (xd, dyd) = (to_f64(&x), to_f64(&dy));
    let unit: Vec<usize> = (0..n).map(|i| i / len).collect();
    let param: Vec<usize> = (0..n).map(|i| i % len).collect();
    let b = train_bounds(
        &Norm {
            x: &xd,
            unit: &unit,
            param: &param,
            gamma: &gam,
            bbar: &bbar,
            mean: &to_f64(&mean_t),
            invstd: &to_f64(&rstd_t),
            centered: !rms,
        },
        &dyd,
    );
    report.unit_of = unit.clone();
    let ln = LayerNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let rn = RmsNorm {
        eps,
        gamma: gamma.as_deref(),
    };
    for in_place in [false, true] {
        let mut y = if in_place {
            x.clone()
        } else {
            vec![f32::NAN; n]
        };
        let (mut mean, mut invstd) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
        let what = if in_place {
            "forward_in_place"
        } else {
            "forward"
        };
        let r = match (rms, in_place) {
            (false, false) => ln.forward(
                &x,
                &mut y,
                shape,
                SavedMut {
                    mean: &mut mean,
                    invstd: &mut invstd,
                },
            ),
            (false, true) => ln.forward_in_place(
                &mut y,
                shape,
                SavedMut {
                    mean: &mut mean,
                    invstd: &mut invstd,
                },
            ),
            (true, false) => rn.forward(&x, &mut y, shape, &mut invstd),
            (true, true) => rn.forward_in_place(&mut y, shape, &mut invstd),
        };
        if report.call(what, r) {
            report.check(&format!("{what} y"), &y, "y", &b.y);
            if !rms {
                report.check(&format!("{what} mean"), &mean, "mean_f64", &b.mean);
            }
            report.check(&format!("{what} invstd"), &invstd, "rstd_f64", &b.invstd);
        }
    }
    if !rms {
        report.measure("torch mean", &mean_t, "mean_f64", &b.mean);
    }
    report.measure("torch rstd", &rstd_t, "rstd_f64", &b.invstd);
    for full in [true, false] {
        let mut dx = vec![f32::NAN; n];
        let (mut dg, mut db) = (vec![f32::NAN; len], vec![f32::NAN; len]);
        let grads = Grads {
            dx: &mut dx,
            dgamma: full.then_some(&mut dg[..]),
            dbeta: full.then_some(&mut db[..]),
        };
        let what = if full {
            "backward"
        } else {
            "backward(dx only)"
        };
        let r = if rms {
            rn.backward(&x, &dy, shape, &rstd_t, grads)
        } else {
            let saved = Saved {
                mean: &mean_t,
                invstd: &rstd_t,
            };
            ln.backward(&x, &dy, shape, saved, grads)
        };
        if report.call(what, r) {
            report.check(&format!("{what} dx"), &dx, "dx", &b.dx);
            if full {
                report.check(&format!("{what} dgamma"), &dg, "dweight", &b.dgamma);
                report.check(&format!("{what} dbeta"), &db, "dbias", &b.dbeta);
            }
        }
    }
    format!(
        "rows {rows} len {len}, weight {}, bias {}",
        gamma.is_some(),
        beta.is_some()
    )
}

/// Group norm and instance norm: forward (instance norm with and without running
/// statistics), in place, and backward from torch's saved statistics.
fn run_group_norm(g: &Golden, report: &mut Report<'_>, instance: bool) -> String {
    let dims = g.usizes("shape");
    let (nb, c, s) = (dims[0], dims[1], dims[2]);
    let groups = g.usizes("groups")[0];
    let layout = layout_of(g);
    let shape = match layout {
        Layout::ChannelsFirst => Shape::channels_first(nb, c, s),
        Layout::ChannelsLast => Shape::channels_last(nb, c, s),
    };
    let (len, units, per) = (nb * c * s, nb * groups, c / groups);
    let eps = g.scalar("eps");
    let x = g.floats("x", len);
    let dy = g.floats("dy", len);
    let Affine {
        gamma,
        beta,
        gam,
        bbar,
    } = affine_of(g, c);
    let mean_t = g.floats("mean", units);
    let rstd_t = g.floats("rstd", units);
    let at = |i: usize| match layout {
        Layout::ChannelsFirst => (i / (c * s), (i / s) % c),
        Layout::ChannelsLast => (i / (c * s), i % c),
    };
    let unit: Vec<usize> = (0..len)
        .map(|i| {
            let (n, ch) = at(i);
            n * groups + ch / per
        })
        .collect();
    let param: Vec<usize> = (0..len).map(|i| at(i).1).collect();
    let (xd, dyd) = (to_f64(&x), to_f64(&dy));
    let b = train_bounds(
        &Norm {
            x: &xd,
            unit: &unit,
            param: &param,
            gamma: &gam,
            bbar: &bbar,
            mean: &to_f64(&mean_t),
            invstd: &to_f64(&rstd_t),
            centered: true,
        },
        &dyd,
    );
    report.unit_of = unit.clone();
    let gn = GroupNorm {
        groups,
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let inorm = InstanceNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    // Instance norm's running statistics: before, torch's after, and their bounds.
    let running = instance && g.has("running_mean");
    let (rm0, rv0, rm1_key, rv1_key, rb) = if running {
        let (rm0, rv0) = (g.floats("running_mean", c), g.floats("running_var", c));
        let (rm1, rv1) = (
            to_f64(&g.floats("running_mean_after", c)),
            to_f64(&g.floats("running_var_after", c)),
        );
        let mut a = vec![0.0f64; c];
        for (i, v) in xd.iter().enumerate() {
            a[param[i]] = a[param[i]].max(v.abs());
        }
        let rb = running_bounds(&a, [&to_f64(&rm0), &to_f64(&rv0)], [&rm1, &rv1]);
        (
            rm0,
            rv0,
            "running_mean_after",
            "running_var_after",
            Some(rb),
        )
    } else {
        (vec![], vec![], "", "", None)
    };
    let momentum: f32 = if running { g.scalar("momentum") } else { 0.0 };
    for in_place in [false, true] {
        for with_running in [false, running] {
            let mut y = if in_place {
                x.clone()
            } else {
                vec![f32::NAN; len]
            };
            let (mut mean, mut invstd) = (vec![f32::NAN; units], vec![f32::NAN; units]);
            let saved = SavedMut {
                mean: &mut mean,
                invstd: &mut invstd,
            };
            let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
            let mut run = with_running
                .then(|| Running::new(&mut rm, &mut rv, Momentum::Exponential(momentum)));
            let what = format!(
                "{}{}",
                if in_place {
                    "forward_in_place"
                } else {
                    "forward"
                },
                if with_running { "(running)" } else { "" }
            );
            let r = match (instance, in_place) {
                (false, false) => gn.forward(&x, &mut y, shape, saved),
                (false, true) => gn.forward_in_place(&mut y, shape, saved),
                (true, false) => inorm.forward(&x, &mut y, shape, saved, run.as_mut()),
                (true, true) => inorm.forward_in_place(&mut y, shape, saved, run.as_mut()),
            };
            if report.call(&what, r) {
                report.check(&format!("{what} y"), &y, "y", &b.y);
                report.check(&format!("{what} mean"), &mean, "mean_f64", &b.mean);
                report.check(&format!("{what} invstd"), &invstd, "rstd_f64", &b.invstd);
                if let (true, Some((rmb, rvb))) = (with_running, &rb) {
                    report.check(&format!("{what} running_mean"), &rm, rm1_key, rmb);
                    report.check(&format!("{what} running_var"), &rv, rv1_key, rvb);
                }
            }
            if with_running == running {
                break;
            }
        }
    }
    report.measure("torch mean", &mean_t, "mean_f64", &b.mean);
    report.measure("torch rstd", &rstd_t, "rstd_f64", &b.invstd);
    for full in [true, false] {
        let mut dx = vec![f32::NAN; len];
        let (mut dg, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let grads = Grads {
            dx: &mut dx,
            dgamma: full.then_some(&mut dg[..]),
            dbeta: full.then_some(&mut db[..]),
        };
        let saved = Saved {
            mean: &mean_t,
            invstd: &rstd_t,
        };
        let what = if full {
            "backward"
        } else {
            "backward(dx only)"
        };
        let r = if instance {
            inorm.backward(&x, &dy, shape, saved, grads)
        } else {
            gn.backward(&x, &dy, shape, saved, grads)
        };
        if report.call(what, r) {
            report.check(&format!("{what} dx"), &dx, "dx", &b.dx);
            if full {
                report.check(&format!("{what} dgamma"), &dg, "dweight", &b.dgamma);
                report.check(&format!("{what} dbeta"), &db, "dbias", &b.dbeta);
            }
        }
    }
    format!(
        "{} N={nb} C={c} S={s} G={groups}, affine {}, running {running}",
        g.str("layout"),
        gamma.is_some()
    )
}

/// The gradients of a clipping file, split into its slices.
fn grad_slices(g: &Golden, key: &str) -> Vec<Vec<f32>> {
    let lengths = g.usizes("lengths");
    let all = g.floats(key, lengths.iter().sum());
    let mut at = 0;
    lengths
        .iter()
        .map(|&n| {
            at += n;
            all[at - n..at].to_vec()
        })
        .collect()
}

/// `clip_grad_norm` (with both `NonFinite` choices: the norms here are finite) and
/// `total_norm`; where torch's f32 sum of squares overflows or underflows
/// (`torch_known_wrong: 1`), the file holds the float64 answer and torch's own for the
/// record, which must be off by more than the bound.
fn run_clip_norm(g: &Golden, report: &mut Report<'_>) -> String {
    let max_norm = g.scalar("max_norm");
    let norm = match g.str("norm_type") {
        "2" => GradNorm::L2,
        "inf" => GradNorm::Max,
        other => panic!("{}: norm_type {other}", g.file),
    };
    let grads = grad_slices(g, "grads");
    let after_t: Vec<f64> = to_f64(&g.floats("grads_after", grads.iter().map(Vec::len).sum()));
    let total_t = f64::from(g.scalar("total_norm"));
    // L2: a sum within R; max: exact. The scaled gradients: that relative error of the
    // factor, and a few roundings.
    let rel = if norm == GradNorm::L2 { R } else { 0.0 };
    let total_b = [rel * total_t];
    let after_b: Vec<f64> = after_t.iter().map(|a| (rel + K * U) * a.abs()).collect();
    let refs: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    report.check(
        "total_norm",
        &[total_norm(&refs, norm)],
        "total_norm",
        &total_b,
    );
    let mut results = Vec::new();
    for nonfinite in [NonFinite::Scale, NonFinite::Error] {
        let mut gs = grads.clone();
        let mut slices: Vec<&mut [f32]> = gs.iter_mut().map(Vec::as_mut_slice).collect();
        let what = format!("clip_grad_norm({norm:?}, {nonfinite:?})");
        let mut total = f32::NAN;
        let r = clip_grad_norm(&mut slices, max_norm, norm, nonfinite).map(|t| total = t);
        if report.call(&what, r) {
            report.check(&format!("{what} total"), &[total], "total_norm", &total_b);
            let flat: Vec<f32> = gs.concat();
            report.check(&format!("{what} grads"), &flat, "grads_after", &after_b);
            results.push(flat);
        }
    }
    if let [a, b] = &results[..] {
        assert!(
            a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{}: NonFinite::Error and NonFinite::Scale differ on a finite norm",
            g.file
        );
    }
    let wrong = g.str("torch_known_wrong") == "1";
    if wrong {
        let torch: f64 = g.str("torch_total_norm").parse().unwrap();
        assert!(
            (torch - total_t).abs() > total_b[0] || torch.is_nan(),
            "{}: torch_known_wrong, but torch's total {torch:e} is within the bound of {total_t:e}",
            g.file
        );
    }
    format!(
        "{} slices, {norm:?}, max_norm {max_norm:e}, torch_known_wrong {wrong}",
        grads.len()
    )
}

/// `clip_grad_value`: a clamp, so exactly torch's values (NaN where torch has NaN).
fn run_clip_value(g: &Golden, report: &mut Report<'_>) -> String {
    let clip = g.scalar("clip_value");
    let mut gs = grad_slices(g, "grads");
    let mut slices: Vec<&mut [f32]> = gs.iter_mut().map(Vec::as_mut_slice).collect();
    if report.call("clip_grad_value", clip_grad_value(&mut slices, clip)) {
        report.exact("clip_grad_value grads", &gs.concat(), "grads_after");
    }
    format!("{} slices, clip_value {clip:e}", gs.len())
}

#[test]
fn norms_match_pytorch() {
    let mut seen = BTreeMap::<String, usize>::new();
    golden_dir("norms", &[NORMS_REQUIRED], |g, report| {
        let op = g.str("op").to_string();
        // The largest ratio per op and value.
        report.prefix = format!("{op} ");
        let mut kinds = vec![op.clone()];
        if matches!(
            op.as_str(),
            "layer_norm" | "rms_norm" | "group_norm" | "instance_norm"
        ) {
            for key in NORM_REQUIRED {
                assert!(g.has(key), "{}: missing key `{key}`", g.file);
            }
            if !g.has("weight") {
                kinds.push(format!("{op} without weight"));
            }
        }
        if g.has("layout") {
            kinds.push(format!("{op} {}", g.str("layout")));
        }
        if g.has("running_mean") {
            kinds.push(format!("{op} running"));
        }
        if g.has("torch_known_wrong") && g.str("torch_known_wrong") == "1" {
            kinds.push(format!("{op} torch wrong"));
        }
        for k in kinds {
            *seen.entry(k).or_default() += 1;
        }
        match op.as_str() {
            "layer_norm" => run_row_norm(g, report, false),
            "rms_norm" => run_row_norm(g, report, true),
            "group_norm" => run_group_norm(g, report, false),
            "instance_norm" => run_group_norm(g, report, true),
            "clip_grad_norm" => run_clip_norm(g, report),
            "clip_grad_value" => run_clip_value(g, report),
            other => panic!("{}: op {other}", g.file),
        }
    });
    for kind in [
        "layer_norm",
        "layer_norm without weight",
        "rms_norm",
        "rms_norm without weight",
        "group_norm channels_first",
        "group_norm channels_last",
        "group_norm without weight",
        "instance_norm channels_first",
        "instance_norm channels_last",
        "instance_norm without weight",
        "instance_norm running",
        "clip_grad_norm",
        "clip_grad_norm torch wrong",
        "clip_grad_value",
    ] {
        assert!(
            seen.contains_key(kind),
            "norms: no golden file of kind `{kind}`"
        );
    }
}

/// Every key of an ONNX golden file (tests/golden/onnx, see make_golden.py).
const ONNX_REQUIRED: &[&str] = &[
    "ort_version",
    "name",
    "onnx_shape",
    "shape",
    "eps",
    "onnx_momentum",
    "x",
    "scale",
    "B",
    "input_mean",
    "input_var",
    "train_y",
    "train_running_mean",
    "train_running_var",
    "eval_y",
    "mean_f64",
    "var_f64",
];

/// ONNX's `BatchNormalization` as ONNX Runtime computes it, in training mode
/// (`training_mode=1`: the running statistics updated with ONNX's `momentum`, the
/// weight of the running value, and the *biased* batch variance) and inference mode:
/// `Running::new(.., Momentum::Exponential(1 − momentum)).with_correction(Correction::Biased)`
/// must give ONNX's outputs within the bounds of the module comment (with the float64
/// batch statistics of the file for the saved ones, which ONNX does not output).
#[test]
fn onnx_batch_normalization_matches_onnxruntime() {
    let mut one_value = false;
    golden_dir("onnx", &[ONNX_REQUIRED], |g, report| {
        let dims = g.usizes("shape");
        let (n, c, s) = (dims[0], dims[1], dims[2]);
        let len = n * c * s;
        let eps = g.scalar("eps");
        let momentum = g.scalar("onnx_momentum");
        let x = g.floats("x", len);
        let (gamma, beta) = (g.floats("scale", c), g.floats("B", c));
        let (rm0, rv0) = (g.floats("input_mean", c), g.floats("input_var", c));
        let bn = BatchNorm {
            eps,
            gamma: Some(&gamma),
            beta: Some(&beta),
        };
        one_value |= n * s == 1;

        // Bounds: the train ones of the module comment from the float64 statistics.
        let d = to_f64;
        let (x64, g64, rm64, rv64) = (d(&x), d(&gamma), d(&rm0), d(&rv0));
        let mean = d(&g.floats("mean_f64", c));
        let invstd: Vec<f64> = d(&g.floats("var_f64", c))
            .iter()
            .map(|v| 1.0 / (v + f64::from(eps)).sqrt())
            .collect();
        let channel: Vec<usize> = (0..len).map(|i| (i / s) % c).collect();
        let bbar: Vec<f64> = beta.iter().map(|b| f64::from(b.abs())).collect();
        let nm = Norm {
            x: &x64,
            unit: &channel,
            param: &channel,
            gamma: &g64,
            bbar: &bbar,
            mean: &mean,
            invstd: &invstd,
            centered: true,
        };
        let train = train_bounds(&nm, &vec![0.0; len]);
        let after = [
            d(&g.floats("train_running_mean", c)),
            d(&g.floats("train_running_var", c)),
        ];
        let (rm_bound, rv_bound) =
            running_bounds(&train.amax, [&rm64, &rv64], [&after[0], &after[1]]);
        let eval_y: Vec<f64> = (0..len)
            .map(|i| {
                let ch = channel[i];
                let rinv = 1.0 / (rv64[ch] + f64::from(eps)).sqrt();
                let e = K * U * (train.amax[ch] + rm64[ch].abs());
                let xhat = ((x64[i] - rm64[ch]) * rinv).abs();
                R * (g64[ch].abs() * xhat + bbar[ch]) + g64[ch].abs() * rinv * e
            })
            .collect();

        let layouts: &[Layout] = if s == 1 {
            &[Layout::ChannelsFirst, Layout::ChannelsLast]
        } else {
            &[Layout::ChannelsFirst]
        };
        for &layout in layouts {
            let shape = match layout {
                Layout::ChannelsFirst => Shape::channels_first(n, c, s),
                Layout::ChannelsLast => Shape::channels_last(n, c, s),
            };
            let (mut y, mut sm, mut si) =
                (vec![f32::NAN; len], vec![f32::NAN; c], vec![f32::NAN; c]);
            let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
            // ONNX's momentum is the weight of the running value: ours is 1 − it.
            let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(1.0 - momentum))
                .with_correction(Correction::Biased);
            let saved = SavedMut {
                mean: &mut sm,
                invstd: &mut si,
            };
            let what = format!("{layout:?} train (ONNX training_mode=1)");
            if report.call(
                &what,
                bn.train(&x, &mut y, shape, saved, Some(&mut running)),
            ) {
                assert_eq!(running.batches_tracked, 1);
                report.check(&format!("{what} Y"), &y, "train_y", &train.y);
                report.check(
                    &format!("{what} running_mean"),
                    &rm,
                    "train_running_mean",
                    &rm_bound,
                );
                report.check(
                    &format!("{what} running_var"),
                    &rv,
                    "train_running_var",
                    &rv_bound,
                );
                report.check(&format!("{what} saved mean"), &sm, "mean_f64", &train.mean);
            }
            let stats = RunningStats {
                mean: &rm0,
                var: &rv0,
            };
            let what = format!("{layout:?} eval (ONNX training_mode=0)");
            if report.call(&what, bn.eval(&x, &mut y, shape, stats)) {
                report.check(&format!("{what} Y"), &y, "eval_y", &eval_y);
            }
        }
        format!("N={n} C={c} S={s}, momentum {momentum}")
    });
    assert!(one_value, "onnx: no file with one value per channel");
}
