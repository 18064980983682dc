//! `BatchNorm::eval`, `eval_in_place`, `train`, `train_in_place`, with and without
//! γ, β and running statistics, exponential and cumulative momentum.
//!
//! The in-place variants run beside the out-of-place ones on copies of the same
//! arguments and must give the same result bits (NaNs compared as NaN); the
//! out-of-place results are checked against the f64 reference.
#![no_main]

use batchnorm::{BatchNorm, Momentum, Running, Shape};
use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Dec::new(data);
    let op = d.u8();
    let in_place = op & 1 == 1;
    let train = op & 2 == 2;
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

        let mut y = Buf::sentinel(ylen);
        let before = y.bits();
        let r = bn.eval(&x, y.body_mut(), shape, &rm, &rv);
        let ok = expect.check(r, "eval");
        if in_place {
            let mut xi = Buf::from(&x);
            let r = bn.eval_in_place(xi.body_mut(), shape, &rm, &rv);
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
            y.assert_unchanged(&before, "eval y");
            return;
        }
        y.assert_guards("eval y");
        y.assert_written("eval y");
        check_eval(&bn, shape, &x, y.body(), &rm, &rv);
        return;
    }

    // Train.
    let sm_len = d.len(c);
    let si_len = d.len(c);
    expect.len("save_mean", c, sm_len);
    expect.len("save_invstd", c, si_len);
    let running = d.u8() & 1 == 1;
    let mut rm = Vec::new();
    let mut rv = Vec::new();
    let mut momentum = Momentum::Exponential(0.1);
    if running {
        momentum = if d.u8() & 1 == 0 {
            Momentum::Exponential(d.momentum_factor())
        } else {
            let t = d.u8();
            Momentum::Cumulative {
                batches_tracked: match t {
                    0..=199 => u64::from(t % 10),
                    200..=249 => d.u64(),
                    _ => u64::MAX,
                },
            }
        };
        if let Momentum::Exponential(f) = momentum {
            if !(f.is_finite() && (0.0..=1.0).contains(&f)) {
                expect.push(batchnorm::Error::Parameter {
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
        let needed = if running { 2 } else { 1 };
        if m < needed {
            expect.push(batchnorm::Error::TooFewValues { needed, actual: m });
        }
    }

    let mut y = Buf::sentinel(ylen);
    let mut sm = Buf::sentinel(sm_len);
    let mut si = Buf::sentinel(si_len);
    let (mut rmb, mut rvb) = (Buf::from(&rm), Buf::from(&rv));
    let before = [y.bits(), sm.bits(), si.bits(), rmb.bits(), rvb.bits()];
    let r = bn.train(
        &x,
        y.body_mut(),
        shape,
        sm.body_mut(),
        si.body_mut(),
        running.then(|| Running {
            mean: rmb.body_mut(),
            var: rvb.body_mut(),
            momentum,
        }),
    );
    let ok = expect.check(r, "train");

    if in_place {
        let mut xi = Buf::from(&x);
        let mut smi = Buf::sentinel(sm_len);
        let mut sii = Buf::sentinel(si_len);
        let (mut rmi, mut rvi) = (Buf::from(&rm), Buf::from(&rv));
        let r = bn.train_in_place(
            xi.body_mut(),
            shape,
            smi.body_mut(),
            sii.body_mut(),
            running.then(|| Running {
                mean: rmi.body_mut(),
                var: rvi.body_mut(),
                momentum,
            }),
        );
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
        (&sm, "save_mean"),
        (&si, "save_invstd"),
        (&rmb, "running_mean"),
        (&rvb, "running_var"),
    ];
    if !ok {
        for ((b, name), before) in bufs.iter().zip(&before) {
            b.assert_unchanged(before, name);
        }
        return;
    }
    for (b, name) in &bufs {
        b.assert_guards(name);
    }
    y.assert_written("train y");
    sm.assert_written("train save_mean");
    si.assert_written("train save_invstd");
    let factor = running.then(|| match momentum {
        Momentum::Exponential(f) => f64::from(f),
        Momentum::Cumulative { batches_tracked } => 1.0 / (batches_tracked as f64 + 1.0),
    });
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
            )
        }),
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
/// rounding of subnormal `scale` and `shift`). A non-finite `x` only
/// affects its own element, so every finite element is checked.
fn check_eval(bn: &BatchNorm, shape: Shape, x: &[f32], y: &[f32], rm: &[f32], rv: &[f32]) {
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
            close(f64::from(y[i]), want, tol, || {
                format!("eval: y[{i}] (channel {c}, x = {:e}, {shape:?})", x[i])
            });
        }
    }
}

type RunningRef<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32], f64);

/// Train: see the tolerance model in `batchnorm_fuzz`.
fn check_train(
    bn: &BatchNorm,
    shape: Shape,
    x: &[f32],
    [y, sm, si]: [&[f32]; 3],
    running: Option<RunningRef>,
) {
    let eps = f64::from(bn.eps);
    for c in 0..shape.channels {
        let r = ChanRef::of(channel_indices(shape, c).map(|i| x[i]));
        let what =
            |s: &str| format!("train: {s}, channel {c} of {shape:?}, eps {eps:e}, ref {r:?}");
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
            if let Some((_, _, rm1, rv1, _)) = running {
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
        if let Some((rm0, rv0, rm1, rv1, f)) = running {
            let (a, b) = (f64::from(rm0[c]), f64::from(rv0[c]));
            let want = (1.0 - f) * a + f * r.mean;
            if in_range(want) && a.is_finite() {
                let tol = f * tm + 2.0 * U * ((1.0 - f) * a.abs() + f * r.mean.abs()) + TINY;
                close(f64::from(rm1[c]), want, tol, || what("running_mean"));
            }
            let unbiased = var * n / (n - 1.0);
            let want = (1.0 - f) * b + f * unbiased;
            if in_range(want) && b.is_finite() {
                let tol =
                    f * tv * n / (n - 1.0) + 2.0 * U * ((1.0 - f) * b.abs() + f * unbiased) + TINY;
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
        let s = g * invstd;
        if !(in_range(s) && in_range(b) && in_range(s * r.dev) && in_range(s * tm)) {
            continue;
        }
        for i in channel_indices(shape, c) {
            let dx = f64::from(x[i]) - r.mean;
            let want = dx * s + b;
            let tol = s.abs() * tm
                + (dx * s).abs() * (rv + 4.0 * U)
                + 4.0 * U * (b.abs() + want.abs())
                + SUB * (dx.abs() + 2.0)
                + TINY;
            close(f64::from(y[i]), want, tol, || {
                format!("{} x = {:e}", what(&format!("y[{i}]")), x[i])
            });
        }
    }
}
