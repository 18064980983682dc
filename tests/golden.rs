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
    BatchNorm, Fusion, FusionGrad, Grads, Layout, Momentum, Renorm, RenormSaved, Running, Shape,
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

struct Case {
    file: String,
    fields: BTreeMap<String, String>,
    n: usize,
    c: usize,
    s: usize,
    layout: Layout,
    eps: f32,
    momentum: Momentum,
}

impl Case {
    fn parse(path: &Path, required: &[&[&str]]) -> Case {
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
        assert_eq!(
            fields.contains_key("gamma"),
            fields.contains_key("beta"),
            "{file}: gamma and beta come together"
        );
        let dims: Vec<usize> = fields["shape"]
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(dims.len(), 3, "{file}: shape is `N C S`");
        let torch_shape: Vec<usize> = fields["torch_shape"]
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(torch_shape[..2], dims[..2], "{file}: torch_shape vs shape");
        assert_eq!(
            torch_shape[2..].iter().product::<usize>(),
            dims[2],
            "{file}: S"
        );
        let layout = match fields["layout"].as_str() {
            "channels_first" => Layout::ChannelsFirst,
            "channels_last" => Layout::ChannelsLast,
            other => panic!("{file}: layout {other}"),
        };
        let eps: f32 = fields["eps"].parse().unwrap();
        let momentum = match fields["momentum"].as_str() {
            "cumulative" => Momentum::Cumulative {
                batches_tracked: fields
                    .get("batches_tracked")
                    .unwrap_or_else(|| panic!("{file}: cumulative needs batches_tracked"))
                    .parse()
                    .unwrap(),
            },
            v => Momentum::Exponential(v.parse().unwrap()),
        };
        Case {
            file,
            fields,
            n: dims[0],
            c: dims[1],
            s: dims[2],
            layout,
            eps,
            momentum,
        }
    }

    fn f32s(&self, key: &str) -> Vec<f32> {
        let v: Vec<f32> = self.fields[key]
            .split_whitespace()
            .map(|t| {
                t.parse()
                    .unwrap_or_else(|e| panic!("{}: {key}: {t:?}: {e}", self.file))
            })
            .collect();
        let want = if is_tensor_key(key) {
            self.n * self.c * self.s
        } else {
            self.c
        };
        assert_eq!(v.len(), want, "{}: length of {key}", self.file);
        v
    }

    fn opt(&self, key: &str) -> Option<Vec<f32>> {
        self.fields.contains_key(key).then(|| self.f32s(key))
    }

    fn m(&self) -> usize {
        self.n * self.s
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

/// Keys that hold one value per element (the others hold one per channel): x, dy, z,
/// and every y, dx and dz.
fn is_tensor_key(key: &str) -> bool {
    matches!(key, "x" | "dy" | "z")
        || key.ends_with("_y")
        || key.ends_with("_dx")
        || key.ends_with("_dz")
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
    let dy = f64s(case, "dy");
    let dgamma = f64s(case, "backward_train_dgamma");
    let dbeta = f64s(case, "backward_train_dbeta");
    bounds_with(case, "train", &dy, &dgamma, &dbeta)
}

fn f64s(case: &Case, key: &str) -> Vec<f64> {
    case.f32s(key).into_iter().map(f64::from).collect()
}

/// [`bounds`] for the upstream gradient `dy` of a backward pass (the masked one behind
/// a ReLU) whose train-mode dγ and dβ are `dgamma` and `dbeta`, with the forward's
/// saved and running statistics from the keys `{forward}_save_mean`,
/// `{forward}_save_invstd`, `{forward}_running_mean` and `{forward}_running_var`.
fn bounds_with(case: &Case, forward: &str, dy: &[f64], dgamma: &[f64], dbeta: &[f64]) -> Bounds {
    let d = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    let key = |k: &str| format!("{forward}_{k}");
    let (c, m) = (case.c, case.m() as f64);
    let x = d(case.f32s("x"));
    let eps = f64::from(case.eps);
    let gbar: Vec<f64> = case.opt("gamma").map_or(vec![1.0; c], |g| {
        g.iter().map(|v| f64::from(v.abs())).collect()
    });
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

    let mut a = vec![0.0f64; c];
    let mut sum_dy = vec![0.0f64; c];
    let mut sum_dy_xhat = vec![0.0f64; c];
    let mut sum_dy_xhat_e = vec![0.0f64; c];
    for i in 0..x.len() {
        let ch = case.channel_of(i);
        a[ch] = a[ch].max(x[i].abs());
        sum_dy[ch] += dy[i].abs();
        sum_dy_xhat[ch] += (dy[i] * (x[i] - mean[ch]) * invstd[ch]).abs();
        sum_dy_xhat_e[ch] += (dy[i] * (x[i] - rm0[ch]) * rinv[ch]).abs();
    }
    let e: Vec<f64> = (0..c).map(|ch| K * U * (a[ch] + mean[ch].abs())).collect();
    let e_eval: Vec<f64> = (0..c).map(|ch| K * U * (a[ch] + rm0[ch].abs())).collect();
    let dbeta_tol: Vec<f64> = sum_dy.iter().map(|s| R * s).collect();
    let train_dgamma: Vec<f64> = (0..c)
        .map(|ch| R * sum_dy_xhat[ch] + invstd[ch] * e[ch] * sum_dy[ch])
        .collect();
    let eval_dgamma: Vec<f64> = (0..c)
        .map(|ch| R * sum_dy_xhat_e[ch] + rinv[ch] * e_eval[ch] * sum_dy[ch])
        .collect();
    let mut train_y = vec![0.0; x.len()];
    let mut eval_y = vec![0.0; x.len()];
    let mut train_dx = vec![0.0; x.len()];
    let mut eval_dx = vec![0.0; x.len()];
    for i in 0..x.len() {
        let ch = case.channel_of(i);
        let xhat = ((x[i] - mean[ch]) * invstd[ch]).abs();
        let xhat_e = ((x[i] - rm0[ch]) * rinv[ch]).abs();
        train_y[i] = R * (gbar[ch] * xhat + bbar[ch]) + gbar[ch] * invstd[ch] * e[ch];
        eval_y[i] = R * (gbar[ch] * xhat_e + bbar[ch]) + gbar[ch] * rinv[ch] * e_eval[ch];
        let k = gbar[ch] * invstd[ch];
        train_dx[i] = k
            * (R * (dy[i].abs() + dbeta[ch].abs() / m + xhat * dgamma[ch].abs() / m)
                + (xhat * train_dgamma[ch]
                    + dgamma[ch].abs() * invstd[ch] * e[ch]
                    + dbeta_tol[ch])
                    / m);
        eval_dx[i] = R * gbar[ch] * rinv[ch] * dy[i].abs();
    }
    Bounds {
        save_mean: e,
        save_invstd: invstd.iter().map(|v| R * v).collect(),
        running_mean: (0..c)
            .map(|ch| K * U * (rm0[ch].abs() + a[ch] + rm1[ch].abs()))
            .collect(),
        running_var: (0..c)
            .map(|ch| R * (rv0[ch].abs() + rv1[ch].abs()))
            .collect(),
        train_y,
        eval_y,
        dbeta: dbeta_tol,
        train_dgamma,
        eval_dgamma,
        train_dx,
        eval_dx,
    }
}

/// Collects every mismatch of one file instead of stopping at the first.
struct Report<'c> {
    case: &'c Case,
    failures: String,
    compared: usize,
    /// Largest |ours − torch|/bound seen per golden key (printed with --nocapture).
    worst: BTreeMap<String, f64>,
}

impl Report<'_> {
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
        let torch = self.case.f32s(key);
        assert_eq!(ours.len(), torch.len());
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
        let w = self.worst.entry(key.to_string()).or_insert(0.0);
        *w = w.max(if bad > 0 { worst.0 } else { max_ratio });
        if bad > 0 {
            let i = worst.1;
            let ch = if torch.len() == self.case.c {
                i
            } else {
                self.case.channel_of(i)
            };
            let _ = writeln!(
                self.failures,
                "  {what} vs torch `{key}`: {bad}/{} outside the bound; worst [{i}] (channel {ch}): \
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
        let running = Running {
            mean: &mut rm,
            var: &mut rv,
            momentum: case.momentum,
        };
        let what = format!("{tag} train(running)");
        if report.call(
            &what,
            bn.train(&x, &mut y, shape, &mut sm, &mut si, Some(running)),
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
        if report.call(&what, bn.train(&x, &mut y, shape, &mut sm, &mut si, None)) {
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
        let running = Running {
            mean: &mut rm,
            var: &mut rv,
            momentum: case.momentum,
        };
        let what = format!("{tag} train_in_place(running)");
        if report.call(
            &what,
            bn.train_in_place(&mut y, shape, &mut sm, &mut si, Some(running)),
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
        if report.call(&what, bn.eval(&x, &mut y, shape, &rm0, &rv0)) {
            report.check(&format!("{what} y"), &y, "eval_y", &b.eval_y);
        }
        let mut y = x.clone();
        let what = format!("{tag} eval_in_place");
        if report.call(&what, bn.eval_in_place(&mut y, shape, &rm0, &rv0)) {
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
        if report.call(
            &what,
            bn.backward(&dy, &x, shape, &save_mean_t, &save_invstd_t, grads),
        ) {
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
        if report.call(
            &what,
            bn.backward(&dy, &x, shape, &save_mean_t, &save_invstd_t, grads),
        ) {
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
        if report.call(&what, bn.backward_eval(&dy, &x, shape, &rm0, &rv0, grads)) {
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
        if report.call(&what, bn.backward_eval(&dy, &x, shape, &rm0, &rv0, grads)) {
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

#[test]
fn kernels_match_pytorch() {
    let files = golden_files_in("");
    assert!(
        !files.is_empty(),
        "no golden files in tests/golden/: run tests/golden/make_golden.py (see its header)"
    );
    let mut failures = String::new();
    let mut compared = 0;
    let mut worst: BTreeMap<String, (f64, String)> = BTreeMap::new();
    let mut seen = (false, false, false, false); // channels_last, S = 1, cumulative, no affine
    for path in &files {
        let case = Case::parse(path, &[REQUIRED]);
        let mut report = Report {
            case: &case,
            failures: String::new(),
            compared: 0,
            worst: BTreeMap::new(),
        };
        run_case(&case, case.layout, &mut report);
        if case.s == 1 {
            // Same memory in both layouts.
            let other = match case.layout {
                Layout::ChannelsFirst => Layout::ChannelsLast,
                Layout::ChannelsLast => Layout::ChannelsFirst,
            };
            run_case(&case, other, &mut report);
        }
        seen.0 |= case.layout == Layout::ChannelsLast && case.s > 1;
        seen.1 |= case.s == 1;
        seen.2 |= matches!(case.momentum, Momentum::Cumulative { .. });
        seen.3 |= !case.fields.contains_key("gamma");
        println!(
            "{}: {} arrays compared ({} N={} C={} S={}, torch {})",
            case.file,
            report.compared,
            case.fields["layout"],
            case.n,
            case.c,
            case.s,
            case.fields["torch_version"]
        );
        compared += report.compared;
        for (key, r) in &report.worst {
            let w = worst.entry(key.clone()).or_insert((0.0, String::new()));
            if *r >= w.0 {
                *w = (*r, case.file.clone());
            }
        }
        if !report.failures.is_empty() {
            let _ = write!(failures, "{}:\n{}", case.file, report.failures);
        }
    }
    println!("largest |ours - torch| / bound per value:");
    for (key, (r, file)) in &worst {
        println!("  {key:24} {r:.3} ({file})");
    }
    assert!(
        failures.is_empty(),
        "disagreements with PyTorch:\n{failures}"
    );
    assert_eq!(
        seen,
        (true, true, true, true),
        "golden set lacks a kind of case"
    );
    println!("{} golden files, {compared} arrays compared", files.len());
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
            let running = with_running.then(|| Running {
                mean: &mut rm,
                var: &mut rv,
                momentum: case.momentum,
            });
            let what = format!("{tag} train_fused({f}, running: {with_running})");
            if report.call(
                &what,
                bn.train_fused(&x, &mut y, shape, fusion, &mut sm, &mut si, running),
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
            if report.call(&what, bn.eval_fused(&x, &mut y, shape, fusion, &rm0, &rv0)) {
                report.check(&format!("{what} y"), &y, &eval_key, &eval_y);
            }
        }
        // ---- backward_fused / backward_eval_fused, from torch's y (and saved stats)
        for eval_mode in [false, true] {
            let mode = if eval_mode { "eval" } else { "train" };
            let y_t = case.f32s(if eval_mode { &eval_key } else { &train_key });
            let g = masked(&dy, &y_t);
            let key = |k: &str| format!("{f}_backward_{mode}_{k}");
            let bg = bounds_with(
                case,
                "train",
                &g,
                &f64s(case, &key("dgamma")),
                &f64s(case, &key("dbeta")),
            );
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
                    bn.backward_eval_fused(&dy, &x, &y_t, shape, through, stats[0], stats[1], grads)
                } else {
                    bn.backward_fused(&dy, &x, &y_t, shape, through, stats[0], stats[1], grads)
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

/// Runs `run` on every file of `tests/golden/<sub>` (and on the other layout when
/// S = 1), prints the largest |ours − torch|/bound per key, and fails on any
/// disagreement. Returns the number of arrays compared and the largest ratio.
fn check_golden_dir(
    sub: &str,
    required: &[&[&str]],
    run: impl Fn(&Case, Layout, &mut Report<'_>),
) -> (usize, f64) {
    let files = golden_files_in(sub);
    assert!(
        !files.is_empty(),
        "no golden files in tests/golden/{sub}: run tests/golden/make_golden.py {sub}"
    );
    let mut failures = String::new();
    let mut compared = 0;
    let mut worst: BTreeMap<String, (f64, String)> = BTreeMap::new();
    let mut seen = (false, false, false); // channels_last with S > 1, S = 1, no affine
    for path in &files {
        let case = Case::parse(path, required);
        let mut report = Report {
            case: &case,
            failures: String::new(),
            compared: 0,
            worst: BTreeMap::new(),
        };
        run(&case, case.layout, &mut report);
        if case.s == 1 {
            let other = match case.layout {
                Layout::ChannelsFirst => Layout::ChannelsLast,
                Layout::ChannelsLast => Layout::ChannelsFirst,
            };
            run(&case, other, &mut report);
        }
        seen.0 |= case.layout == Layout::ChannelsLast && case.s > 1;
        seen.1 |= case.s == 1;
        seen.2 |= !case.fields.contains_key("gamma");
        println!(
            "{sub}/{}: {} arrays compared ({} N={} C={} S={}, torch {})",
            case.file,
            report.compared,
            case.fields["layout"],
            case.n,
            case.c,
            case.s,
            case.fields["torch_version"]
        );
        compared += report.compared;
        for (key, r) in &report.worst {
            let w = worst.entry(key.clone()).or_insert((0.0, String::new()));
            if *r >= w.0 {
                *w = (*r, case.file.clone());
            }
        }
        if !report.failures.is_empty() {
            let _ = write!(failures, "{sub}/{}:\n{}", case.file, report.failures);
        }
    }
    println!("{sub}: largest |ours - torch| / bound per value:");
    for (key, (r, file)) in &worst {
        println!("  {key:32} {r:.3} ({file})");
    }
    assert!(
        failures.is_empty(),
        "disagreements with PyTorch:\n{failures}"
    );
    assert_eq!(
        seen,
        (true, true, true),
        "{sub}: golden set lacks a kind of case"
    );
    let max = worst.values().map(|w| w.0).fold(0.0, f64::max);
    println!(
        "{sub}: {} golden files, {compared} arrays compared, largest ratio {max:.3}",
        files.len()
    );
    (compared, max)
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
    let base = bounds_with(case, "renorm", &dy, &sum_dy_xhat, &sum_dy);
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
        let saved = RenormSaved {
            mean: &mut mean,
            invstd: &mut invstd,
            r: &mut r,
            d: &mut d,
        };
        let running = Running {
            mean: &mut rm,
            var: &mut rv,
            momentum: case.momentum,
        };
        let what = format!("{tag} train_renorm({renorm:?})");
        if report.call(
            &what,
            bn.train_renorm(&x, &mut y, shape, renorm, saved, running),
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
        let (mut mean, mut invstd) = (
            case.f32s("renorm_save_mean"),
            case.f32s("renorm_save_invstd"),
        );
        let (mut r, mut d) = (case.f32s("renorm_r"), case.f32s("renorm_d"));
        let saved = RenormSaved {
            mean: &mut mean,
            invstd: &mut invstd,
            r: &mut r,
            d: &mut d,
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
        if report.call(&what, bn.backward_renorm(&dy, &x, shape, &saved, grads)) {
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
