//! `BatchNorm::eval`, `eval_in_place`, `train`, `train_in_place`, with and without
//! γ, β and running statistics, exponential and cumulative momentum; their fused
//! forms `eval_fused` and `train_fused` (`Fusion::Relu`, `Fusion::AddRelu`); and Batch
//! Renormalization's `train_renorm`.
//!
//! The in-place variants run beside the out-of-place ones on copies of the same
//! arguments and must give the same result bits (NaNs compared as NaN). A fused call
//! runs beside the unfused one and must give the bits of PyTorch's unfused
//! composition, `relu(bn)` or `relu(bn + z)` in f32, and the same saved and running
//! statistics; `train_renorm` must save and update what `train` does. All
//! out-of-place results are checked against the f64 reference.
//!
//! Byte layout: `op` (bit 0 in place, bit 1 train, bits 2–3 the variant: plain, ReLU,
//! Add + ReLU, renorm for train / plain for eval), then the plain call's fields as
//! before, then the variant's: the generator and length of `z`, or `(rmax, dmax)` and
//! the lengths of `saved.r` and `saved.d`.
#![no_main]

use batchnorm::{
    BatchNorm, Correction, Error, Fusion, Momentum, Renorm, RenormSavedMut, RunningStats, SavedMut,
    Shape,
};
use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Plain,
    Relu,
    AddRelu,
    Renorm,
}

impl Variant {
    fn of(op: u8, train: bool) -> Variant {
        match (op >> 2) & 3 {
            1 => Variant::Relu,
            2 => Variant::AddRelu,
            3 if train => Variant::Renorm,
            _ => Variant::Plain,
        }
    }
}

/// `z` of an Add + ReLU (empty otherwise), with its length's expected error.
fn residual(d: &mut Dec, variant: Variant, len: Option<usize>, expect: &mut Expect) -> Vec<f32> {
    if variant != Variant::AddRelu {
        return Vec::new();
    }
    let zgen = d.values();
    let zlen = d.len(len);
    expect.len("z", len, zlen);
    zgen.fill(zlen)
}

/// The fused call's `Fusion` and the reference's `Post`.
fn fusion(variant: Variant, z: &[f32]) -> (Option<Fusion<'_>>, Post<'_>) {
    match variant {
        Variant::Relu => (Some(Fusion::Relu), Post::Relu),
        Variant::AddRelu => (Some(Fusion::AddRelu { z }), Post::AddRelu(z)),
        _ => (None, Post::None),
    }
}

/// Panics unless `fused` holds the bits of `post` applied to the unfused `bn`.
fn assert_composed(post: Post, fused: &[f32], bn: &[f32], call: &str) {
    for (i, (f, b)) in fused.iter().zip(bn).enumerate() {
        let want = post.compose(i, *b);
        assert!(
            same_f32(*f, want),
            "{call}: y[{i}] = {f:e}, the unfused composition gives {want:e} (bn {b:e})"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = Dec::new(data);
    let op = d.u8();
    let train = op & 2 == 2;
    let variant = Variant::of(op, train);
    let in_place = op & 1 == 1 && variant == Variant::Plain;
    let shape = d.shape();
    let eps = d.eps();
    let xgen = d.values();
    let pgen = d.values(); // per-channel parameters
    let c = Some(shape.channels);

    let mut expect = Expect::default();
    let len = expect.shape(shape);
    expect.eps(eps);
    let gamma_len = (d.u8() & 3 != 0).then(|| d.len(c));
    let beta_len = (d.u8() & 3 != 0).then(|| d.len(c));
    if let Some(n) = gamma_len {
        expect.len("gamma", c, n);
    }
    if let Some(n) = beta_len {
        expect.len("beta", c, n);
    }
    let xlen = d.len(len);
    let ylen = if in_place { xlen } else { d.len(len) };
    expect.len("x", len, xlen);
    expect.len("y", len, ylen);

    let x = xgen.fill(xlen);
    let mut stream = 0;
    let mut params = |n: usize| -> Vec<f32> {
        stream += 1;
        pgen.fill_stream(n, stream)
    };
    let gamma = gamma_len.map(&mut params);
    let beta = beta_len.map(&mut params);
    let bn = BatchNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };

    if !train {
        let rm_len = d.len(c);
        let rv_len = d.len(c);
        expect.len("running_mean", c, rm_len);
        expect.len("running_var", c, rv_len);
        let rm = params(rm_len);
        let mut rv = params(rv_len);
        if d.u8() < 200 {
            rv.iter_mut().for_each(|v| *v = v.abs());
        }
        let z = residual(&mut d, variant, len, &mut expect);
        let (fusion, post) = fusion(variant, &z);

        let mut y = Buf::sentinel(ylen);
        let before = y.bits();
        let (r, call) = match fusion {
            None => (
                bn.eval(
                    &x,
                    y.body_mut(),
                    shape,
                    RunningStats {
                        mean: &rm,
                        var: &rv,
                    },
                ),
                "eval",
            ),
            Some(f) => (
                bn.eval_fused(
                    &x,
                    y.body_mut(),
                    shape,
                    f,
                    RunningStats {
                        mean: &rm,
                        var: &rv,
                    },
                ),
                "eval_fused",
            ),
        };
        let ok = expect.check(r, call);
        if in_place {
            let mut xi = Buf::from(&x);
            let r = bn.eval_in_place(
                xi.body_mut(),
                shape,
                RunningStats {
                    mean: &rm,
                    var: &rv,
                },
            );
            assert_eq!(
                expect.check(r, "eval_in_place"),
                ok,
                "eval vs eval_in_place"
            );
            xi.assert_guards("eval_in_place x");
            if ok {
                for (i, (a, b)) in xi.body().iter().zip(y.body()).enumerate() {
                    assert!(
                        same_f32(*a, *b),
                        "eval_in_place[{i}] = {a:e}, eval gave {b:e}"
                    );
                }
            } else {
                xi.assert_unchanged(&Buf::from(&x).bits(), "eval_in_place x");
            }
        }
        if !ok {
            y.assert_unchanged(&before, call);
            return;
        }
        y.assert_guards(call);
        y.assert_written(call);
        if fusion.is_some() {
            post.assert_range(y.body(), "eval_fused y");
            let mut y0 = vec![0.0f32; ylen];
            let r = bn.eval(
                &x,
                &mut y0,
                shape,
                RunningStats {
                    mean: &rm,
                    var: &rv,
                },
            );
            assert!(r.is_ok(), "eval returned {r:?} where eval_fused succeeded");
            assert_composed(post, y.body(), &y0, "eval_fused");
        }
        check_eval(&bn, shape, &x, y.body(), &rm, &rv, post);
        return;
    }

    // Train.
    let renorm = variant == Variant::Renorm;
    let (mean_name, invstd_name) = if renorm {
        ("saved.mean", "saved.invstd")
    } else {
        ("save_mean", "save_invstd")
    };
    let sm_len = d.len(c);
    let si_len = d.len(c);
    expect.len(mean_name, c, sm_len);
    expect.len(invstd_name, c, si_len);
    // Batch Renormalization always updates running statistics.
    let running = (d.u8() & 1 == 1) | renorm;
    let mut rm = Vec::new();
    let mut rv = Vec::new();
    let mut update: Update = (Momentum::Exponential(0.1), Correction::Unbiased, 0);
    if running {
        // Bit 0: cumulative; bit 1: the biased running variance (ONNX, Keras, Flax).
        let kind = d.u8();
        update.1 = if kind & 2 == 2 {
            Correction::Biased
        } else {
            Correction::Unbiased
        };
        (update.0, update.2) = if kind & 1 == 0 {
            (Momentum::Exponential(d.momentum_factor()), 0)
        } else {
            let t = d.u8();
            let tracked = match t {
                0..=199 => u64::from(t % 10),
                200..=249 => d.u64(),
                _ => u64::MAX,
            };
            (Momentum::Cumulative, tracked)
        };
        let momentum = update.0;
        if let Momentum::Exponential(f) = momentum {
            if !(f.is_finite() && (0.0..=1.0).contains(&f)) {
                expect.push(Error::Parameter {
                    arg: "momentum",
                    value: f,
                });
            }
        }
        let rm_len = d.len(c);
        let rv_len = d.len(c);
        expect.len("running_mean", c, rm_len);
        expect.len("running_var", c, rv_len);
        rm = params(rm_len);
        rv = params(rv_len);
        if d.u8() < 200 {
            rv.iter_mut().for_each(|v| *v = v.abs());
        }
    }
    if let Some(m) = shape.batch.checked_mul(shape.spatial) {
        let needed = if running { needed(update.1) } else { 1 };
        if m < needed {
            expect.push(Error::TooFewValues { needed, actual: m });
        }
    }
    let z = residual(&mut d, variant, len, &mut expect);
    let (fusion, post) = fusion(variant, &z);
    let (limits, r_len, d_len) = if renorm {
        let (rmax, dmax) = d.renorm_limits();
        if rmax.is_nan() || rmax < 1.0 {
            expect.push(Error::Parameter {
                arg: "rmax",
                value: rmax,
            });
        }
        if dmax.is_nan() || dmax < 0.0 {
            expect.push(Error::Parameter {
                arg: "dmax",
                value: dmax,
            });
        }
        let (r_len, d_len) = (d.len(c), d.len(c));
        expect.len("saved.r", c, r_len);
        expect.len("saved.d", c, d_len);
        (Renorm { rmax, dmax }, r_len, d_len)
    } else {
        (
            Renorm {
                rmax: 1.0,
                dmax: 0.0,
            },
            0,
            0,
        )
    };

    let mut y = Buf::sentinel(ylen);
    let mut sm = Buf::sentinel(sm_len);
    let mut si = Buf::sentinel(si_len);
    let (mut rmb, mut rvb) = (Buf::from(&rm), Buf::from(&rv));
    let (mut rb, mut db) = (Buf::sentinel(r_len), Buf::sentinel(d_len));
    let before = [
        y.bits(),
        sm.bits(),
        si.bits(),
        rmb.bits(),
        rvb.bits(),
        rb.bits(),
        db.bits(),
    ];
    let mut run = running.then(|| running_of(rmb.body_mut(), rvb.body_mut(), update));
    let (r, call) = match (variant, fusion, run.as_mut()) {
        (Variant::Renorm, _, Some(run)) => {
            let saved = RenormSavedMut {
                mean: sm.body_mut(),
                invstd: si.body_mut(),
                r: rb.body_mut(),
                d: db.body_mut(),
            };
            (
                bn.train_renorm(&x, y.body_mut(), shape, limits, saved, run),
                "train_renorm",
            )
        }
        (_, Some(f), run) => (
            bn.train_fused(
                &x,
                y.body_mut(),
                shape,
                f,
                SavedMut {
                    mean: sm.body_mut(),
                    invstd: si.body_mut(),
                },
                run,
            ),
            "train_fused",
        ),
        (_, _, run) => (
            bn.train(
                &x,
                y.body_mut(),
                shape,
                SavedMut {
                    mean: sm.body_mut(),
                    invstd: si.body_mut(),
                },
                run,
            ),
            "train",
        ),
    };
    let ok = expect.check(r, call);
    check_counted(run.map(|r| r.batches_tracked), update, ok);

    if in_place {
        let mut xi = Buf::from(&x);
        let mut smi = Buf::sentinel(sm_len);
        let mut sii = Buf::sentinel(si_len);
        let (mut rmi, mut rvi) = (Buf::from(&rm), Buf::from(&rv));
        let mut run = running.then(|| running_of(rmi.body_mut(), rvi.body_mut(), update));
        let saved = SavedMut {
            mean: smi.body_mut(),
            invstd: sii.body_mut(),
        };
        let r = bn.train_in_place(xi.body_mut(), shape, saved, run.as_mut());
        assert_eq!(
            expect.check(r, "train_in_place"),
            ok,
            "train vs train_in_place"
        );
        let pairs = [
            (&xi, &y, "x/y"),
            (&smi, &sm, "save_mean"),
            (&sii, &si, "save_invstd"),
            (&rmi, &rmb, "running_mean"),
            (&rvi, &rvb, "running_var"),
        ];
        for (a, b, name) in pairs {
            a.assert_guards(name);
            if ok {
                for (i, (p, q)) in a.body().iter().zip(b.body()).enumerate() {
                    assert!(
                        same_f32(*p, *q),
                        "train_in_place {name}[{i}] = {p:e}, train gave {q:e}"
                    );
                }
            }
        }
        if !ok {
            xi.assert_unchanged(&Buf::from(&x).bits(), "train_in_place x");
            smi.assert_unchanged(&Buf::sentinel(sm_len).bits(), "train_in_place save_mean");
            sii.assert_unchanged(&Buf::sentinel(si_len).bits(), "train_in_place save_invstd");
            rmi.assert_unchanged(&Buf::from(&rm).bits(), "train_in_place running_mean");
            rvi.assert_unchanged(&Buf::from(&rv).bits(), "train_in_place running_var");
        }
    }

    let bufs = [
        (&y, "y"),
        (&sm, mean_name),
        (&si, invstd_name),
        (&rmb, "running_mean"),
        (&rvb, "running_var"),
        (&rb, "saved.r"),
        (&db, "saved.d"),
    ];
    if !ok {
        for ((b, name), before) in bufs.iter().zip(&before) {
            b.assert_unchanged(before, &format!("{call} {name}"));
        }
        return;
    }
    for (b, name) in &bufs {
        b.assert_guards(&format!("{call} {name}"));
    }
    y.assert_written(&format!("{call} y"));
    sm.assert_written(&format!("{call} {mean_name}"));
    si.assert_written(&format!("{call} {invstd_name}"));
    rb.assert_written(&format!("{call} saved.r"));
    db.assert_written(&format!("{call} saved.d"));
    post.assert_range(y.body(), &format!("{call} y"));

    if variant != Variant::Plain {
        // The plain train on the same arguments: the same statistics, and for a fused
        // call the bits of the unfused composition.
        let mut y0 = vec![0.0f32; ylen];
        let (mut sm0, mut si0) = (vec![0.0f32; sm_len], vec![0.0f32; si_len]);
        let (mut rm0, mut rv0) = (rm.clone(), rv.clone());
        let mut run = running.then(|| running_of(&mut rm0, &mut rv0, update));
        let saved = SavedMut {
            mean: &mut sm0,
            invstd: &mut si0,
        };
        let r = bn.train(&x, &mut y0, shape, saved, run.as_mut());
        assert!(r.is_ok(), "train returned {r:?} where {call} succeeded");
        let pairs = [
            (sm.body(), &sm0, mean_name),
            (si.body(), &si0, invstd_name),
            (rmb.body(), &rm0, "running_mean"),
            (rvb.body(), &rv0, "running_var"),
        ];
        for (a, b, name) in pairs {
            for (i, (p, q)) in a.iter().zip(b.iter()).enumerate() {
                assert!(
                    same_f32(*p, *q),
                    "{call} {name}[{i}] = {p:e}, train gave {q:e}"
                );
            }
        }
        if fusion.is_some() {
            assert_composed(post, y.body(), &y0, call);
        }
        if renorm {
            check_renorm_plain(&bn, shape, limits, [rb.body(), db.body()], y.body(), &y0);
        }
    }
    let factor = running.then(|| factor(update));
    check_train(
        &bn,
        shape,
        &x,
        [y.body(), sm.body(), si.body()],
        running.then(|| {
            (
                &rm[..],
                &rv[..],
                rmb.body(),
                rvb.body(),
                factor.unwrap_or(0.0),
                update.1,
            )
        }),
        post,
        renorm.then(|| (limits, rb.body(), db.body())),
    );
});

fn gamma_beta(bn: &BatchNorm, c: usize) -> (f64, f64) {
    (
        bn.gamma.map_or(1.0, |g| f64::from(g[c])),
        bn.beta.map_or(0.0, |b| f64::from(b[c])),
    )
}

/// Eval: `y = x·s + (β − rm·s)` with `s = γ/√(rv + eps)`, one FMA in f32 from f32
/// `scale` and `shift`: error ≤ 4·U·(|x·s| + |rm·s| + |β|) (plus the absolute
/// rounding of subnormal `scale` and `shift`), then `post`. A non-finite `x` only
/// affects its own element (a NaN stays NaN through every `post`), so every finite
/// element is checked.
fn check_eval(
    bn: &BatchNorm,
    shape: Shape,
    x: &[f32],
    y: &[f32],
    rm: &[f32],
    rv: &[f32],
    post: Post,
) {
    for (i, (xv, yv)) in x.iter().zip(y).enumerate() {
        assert!(
            !xv.is_nan() || yv.is_nan(),
            "eval ({post:?}): y[{i}] = {yv:e} for x = NaN"
        );
    }
    for c in 0..shape.channels {
        let (g, b) = gamma_beta(bn, c);
        let (m, v) = (f64::from(rm[c]), f64::from(rv[c]));
        let s = g / (v + f64::from(bn.eps)).sqrt();
        let shift = b - m * s;
        if !(in_range(s) && in_range(shift) && in_range(m * s) && in_range(b)) {
            continue;
        }
        for i in channel_indices(shape, c) {
            let xv = f64::from(x[i]);
            if !x[i].is_finite() || !in_range(xv * s) {
                continue;
            }
            let want = xv * s + shift;
            let tol = 4.0 * U * ((xv * s).abs() + (m * s).abs() + b.abs())
                + SUB * (xv.abs() + 2.0)
                + TINY;
            let Some((want, tol)) = post.apply(i, want, tol) else {
                continue;
            };
            close(f64::from(y[i]), want, tol, || {
                format!(
                    "eval ({post:?}): y[{i}] (channel {c}, x = {:e}, {shape:?})",
                    x[i]
                )
            });
        }
    }
}

/// With `rmax = 1` and `dmax = 0`, Batch Renormalization is plain batch norm whatever
/// the statistics: `r = 1`, `d = 0` on every channel, and the output of `train` (up to
/// the sign of zero) on every channel whose γ and β are finite (`γ·d` is NaN else).
fn check_renorm_plain(
    bn: &BatchNorm,
    shape: Shape,
    limits: Renorm,
    [r, d]: [&[f32]; 2],
    y: &[f32],
    y_train: &[f32],
) {
    if limits
        != (Renorm {
            rmax: 1.0,
            dmax: 0.0,
        })
    {
        return;
    }
    for c in 0..shape.channels {
        assert!(
            r[c] == 1.0 && d[c] == 0.0,
            "train_renorm with rmax 1, dmax 0: channel {c} has r = {:e}, d = {:e}",
            r[c],
            d[c]
        );
        let (g, b) = gamma_beta(bn, c);
        if !(g.is_finite() && b.is_finite()) {
            continue;
        }
        for i in channel_indices(shape, c) {
            assert!(
                y[i] == y_train[i] || (y[i].is_nan() && y_train[i].is_nan()),
                "train_renorm with rmax 1, dmax 0: y[{i}] = {:e}, train gave {:e}",
                y[i],
                y_train[i]
            );
        }
    }
}

type RunningRef<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32], f64, Correction);
type RenormRef<'a> = (Renorm, &'a [f32], &'a [f32]);

/// Train: see the tolerance model in `batchnorm_fuzz`. With `renorm` (which needs
/// `running`), Batch Renormalization's `r` and `d` from the reference statistics and
/// the running ones before the update: `r` carries the relative uncertainty of
/// `√(var + eps)`, `d` the mean's over `σ`, and `y = (x − mean)·γ·invstd·r + β + γ·d`
/// both (`invstd·r` twice the relative uncertainty). Then `post`.
fn check_train(
    bn: &BatchNorm,
    shape: Shape,
    x: &[f32],
    [y, sm, si]: [&[f32]; 3],
    running: Option<RunningRef>,
    post: Post,
    renorm: Option<RenormRef>,
) {
    let eps = f64::from(bn.eps);
    for c in 0..shape.channels {
        let r = ChanRef::of(channel_indices(shape, c).map(|i| x[i]));
        let what = |s: &str| {
            format!("train ({post:?}, renorm {:?}): {s}, channel {c} of {shape:?}, eps {eps:e}, ref {r:?}", renorm.map(|r| r.0))
        };
        let n = r.n as f64;
        if !r.finite {
            // A NaN or infinity makes the channel's statistics and output NaN.
            assert!(
                si[c].is_nan(),
                "{}: save_invstd {:e}",
                what("non-finite x"),
                si[c]
            );
            assert!(
                !sm[c].is_finite(),
                "{}: save_mean {:e}",
                what("non-finite x"),
                sm[c]
            );
            for i in channel_indices(shape, c) {
                assert!(
                    y[i].is_nan(),
                    "{}: y[{i}] = {:e}",
                    what("non-finite x"),
                    y[i]
                );
            }
            if let Some((_, _, rm1, rv1, _, _)) = running {
                assert!(
                    !rm1[c].is_finite(),
                    "{}: running_mean",
                    what("non-finite x")
                );
                assert!(rv1[c].is_nan(), "{}: running_var", what("non-finite x"));
            }
            continue;
        }
        if !r.moderate {
            continue;
        }
        let (tm, tv) = (tol_mean(&r), tol_m2(&r) / n);
        let var = r.var();
        close(f64::from(sm[c]), r.mean, tm + U * r.mean.abs(), || {
            what("save_mean")
        });
        if let Some((rm0, rv0, rm1, rv1, f, k)) = running {
            let (a, b) = (f64::from(rm0[c]), f64::from(rv0[c]));
            let want = (1.0 - f) * a + f * r.mean;
            if in_range(want) && a.is_finite() {
                let tol = f * tm + 2.0 * U * ((1.0 - f) * a.abs() + f * r.mean.abs()) + TINY;
                close(f64::from(rm1[c]), want, tol, || what("running_mean"));
            }
            // m/(m − 1) for the unbiased variance, 1 for the biased one.
            let bessel = match k {
                Correction::Unbiased => n / (n - 1.0),
                Correction::Biased => 1.0,
            };
            let batch = var * bessel;
            let want = (1.0 - f) * b + f * batch;
            if in_range(want) && b.is_finite() {
                let tol = f * tv * bessel + 2.0 * U * ((1.0 - f) * b.abs() + f * batch) + TINY;
                close(f64::from(rv1[c]), want, tol, || what("running_var"));
            }
        }
        let (g, b) = gamma_beta(bn, c);
        if var + eps == 0.0 {
            // Constant channel and eps = 0: invstd is infinite, y NaN.
            assert_eq!(
                si[c],
                f32::INFINITY,
                "{}",
                what("save_invstd of var + eps = 0")
            );
            for i in channel_indices(shape, c) {
                assert!(
                    y[i].is_nan(),
                    "{}: y[{i}] = {:e}",
                    what("var + eps = 0"),
                    y[i]
                );
            }
            continue;
        }
        let invstd = 1.0 / (var + eps).sqrt();
        // Relative uncertainty of invstd from that of var.
        let rv = 0.5 * tv / (var + eps);
        if rv > 1e-3 || !in_range(invstd) {
            continue;
        }
        close(f64::from(si[c]), invstd, invstd * (rv + 2.0 * U), || {
            what("save_invstd")
        });
        // y = (x − mean)·s + b: s and b of batch norm, or of batch renorm (where b
        // carries γ·d, whose uncertainty is `gd_tol`, and s twice that of invstd).
        let (mut s, mut bb, mut rs, mut gd, mut gd_tol) = (g * invstd, b, rv, 0.0, 0.0);
        if let (Some((limits, r_out, d_out)), Some((rm0, rv0, ..))) = (renorm, running) {
            let (rr, dd, sigma) =
                renorm_correction(&r, [rm0[c], rv0[c], bn.eps], limits.rmax, limits.dmax);
            if !(in_range(rr) && in_range(dd) && in_range(1.0 / sigma)) {
                continue;
            }
            // Clipping moves no value further from the reference.
            close(
                f64::from(r_out[c]),
                rr,
                rr * (1.01 * rv + 3.0 * U) + TINY,
                || what(&format!("saved.r (σ {sigma:e})")),
            );
            let td = tm / sigma;
            close(
                f64::from(d_out[c]),
                dd,
                td + 2.0 * U * dd.abs() + TINY,
                || what(&format!("saved.d (σ {sigma:e})")),
            );
            s *= rr;
            gd = g * dd;
            bb = b + gd;
            rs = 2.02 * rv + 2.0 * U;
            gd_tol = g.abs() * td;
        }
        if !(in_range(s)
            && in_range(bb)
            && in_range(gd)
            && in_range(gd_tol)
            && in_range(s * r.dev)
            && in_range(s * tm))
        {
            continue;
        }
        for i in channel_indices(shape, c) {
            let dx = f64::from(x[i]) - r.mean;
            let want = dx * s + bb;
            let tol = s.abs() * tm
                + (dx * s).abs() * (rs + 4.0 * U)
                + 4.0 * U * (b.abs() + gd.abs() + want.abs())
                + gd_tol
                + SUB * (dx.abs() + 2.0)
                + TINY;
            let Some((want, tol)) = post.apply(i, want, tol) else {
                continue;
            };
            close(f64::from(y[i]), want, tol, || {
                format!("{} x = {:e}", what(&format!("y[{i}]")), x[i])
            });
        }
    }
}
