//! `BatchNorm::backward` and `backward_eval`, with and without γ, β, dγ, dβ; their
//! fused forms `backward_fused` and `backward_eval_fused` (`FusionGrad::Relu`,
//! `FusionGrad::AddRelu`); and Batch Renormalization's `backward_renorm`.
//!
//! A fused call runs beside the plain one on `g` (0 where `y ≤ 0`, else `dy`) and must
//! give its bits, and `dz = g` bit for bit. Everything is checked against the f64
//! reference on `g` (Batch Renormalization: `γ·r` in γ's place in `dx`,
//! `dγ = r·Σdy·x̂ + d·Σdy`).
//!
//! Tolerances: the per-channel sums `Σdy`, `Σdy·(x − μ)` and (train) `Σ(x − μ)`, with
//! `μ` the mean given, accumulate at most 64 terms per f32 lane before an f64 merge, so
//! their error is `≤ 64·U·Σ|term|`; we allow `128·U·Σ|term|`. The train reference takes
//! x̂ from the exact batch mean `μ + δ`, `δ = Σ(x − μ)/m`, as the kernel does: a `μ` far
//! from it (arbitrary statistics) costs `δ`'s error, `130·U·Σ|x − μ|/m`, times `|Σdy|`,
//! and `Σdy`'s times `|δ|`, in `dγ`'s sum `Σdy·(x − μ) − δ·Σdy`, and `δ`'s times `|a|`
//! in `dx`. `dx` is then one f32 FMA chain
//! `k·dy + (x − μ)·a + (b − a·δ)` of terms whose magnitudes bound its rounding (`4·U`
//! each) plus the propagated error of the sums.
//!
//! Byte layout: `op` (bit 0 eval, bits 1–2 the variant: plain, ReLU, Add + ReLU,
//! renorm for train / plain for eval), the plain call's fields as before, then the
//! variant's: the generator and length of `y` (and the length of `dz`), or the lengths
//! of `r` and `d` and whether they take typical values.
#![no_main]

use batchnorm::{BatchNorm, FusionGrad, Grads, RenormSaved, RunningStats, Saved, Shape};
use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Plain,
    Relu,
    AddRelu,
    Renorm,
}

fuzz_target!(|data: &[u8]| {
    let mut d = Dec::new(data);
    let op = d.u8();
    let eval = op & 1 == 1;
    let variant = match (op >> 1) & 3 {
        1 => Variant::Relu,
        2 => Variant::AddRelu,
        3 if !eval => Variant::Renorm,
        _ => Variant::Plain,
    };
    let fused = matches!(variant, Variant::Relu | Variant::AddRelu);
    let shape = d.shape();
    let eps = d.eps();
    let xgen = d.values();
    let dygen = d.values();
    let pgen = d.values();
    let c = Some(shape.channels);

    let mut expect = Expect::default();
    let len = expect.shape(shape);
    expect.eps(eps);
    let gamma_len = (d.u8() & 3 != 0).then(|| d.len(c));
    let beta_len = (d.u8() & 3 != 0).then(|| d.len(c));
    let dg_len = (d.u8() & 3 != 0).then(|| d.len(c));
    let db_len = (d.u8() & 3 != 0).then(|| d.len(c));
    for (name, l) in [
        ("gamma", gamma_len),
        ("beta", beta_len),
        ("dgamma", dg_len),
        ("dbeta", db_len),
    ] {
        if let Some(n) = l {
            expect.len(name, c, n);
        }
    }
    let (xlen, dylen, dxlen) = (d.len(len), d.len(len), d.len(len));
    expect.len("x", len, xlen);
    expect.len("dy", len, dylen);
    expect.len("dx", len, dxlen);
    let (s0, s1) = match (eval, variant) {
        (true, _) => ("running_mean", "running_var"),
        (false, Variant::Renorm) => ("saved.mean", "saved.invstd"),
        (false, _) => ("save_mean", "save_invstd"),
    };
    let (m_len, v_len) = (d.len(c), d.len(c));
    expect.len(s0, c, m_len);
    expect.len(s1, c, v_len);
    // Statistics: those of x (as a train forward would save them), or arbitrary.
    let stats_of_x = d.u8() < 160;
    // The fused forward's output y (only its sign matters) and the residual's dz.
    let (ygen, ylen, dz_len) = if fused {
        let ygen = d.values();
        let ylen = d.len(len);
        expect.len("y", len, ylen);
        let dz_len = (variant == Variant::AddRelu).then(|| d.len(len));
        if let Some(n) = dz_len {
            expect.len("dz", len, n);
        }
        (Some(ygen), ylen, dz_len)
    } else {
        (None, 0, None)
    };
    let (r_len, d_len, typical) = if variant == Variant::Renorm {
        let (r_len, d_len) = (d.len(c), d.len(c));
        expect.len("saved.r", c, r_len);
        expect.len("saved.d", c, d_len);
        (r_len, d_len, d.u8() < 160)
    } else {
        (0, 0, false)
    };

    let x = xgen.fill(xlen);
    let dy = dygen.fill(dylen);
    let mut stream = 0;
    let mut params = |n: usize| -> Vec<f32> {
        stream += 1;
        pgen.fill_stream(n, stream)
    };
    let gamma = gamma_len.map(&mut params);
    let beta = beta_len.map(&mut params);
    let mut mean = params(m_len);
    let mut var = params(v_len);
    if stats_of_x && xlen == len.unwrap_or(usize::MAX) {
        for ch in 0..shape.channels.min(m_len).min(v_len) {
            let r = ChanRef::of(channel_indices(shape, ch).map(|i| x[i]));
            mean[ch] = r.mean as f32;
            let v = r.var() + f64::from(eps);
            var[ch] = if eval {
                v as f32
            } else {
                (1.0 / v.sqrt()) as f32
            };
        }
    } else if eval {
        var.iter_mut().for_each(|v| *v = v.abs());
    }
    let y = ygen.map_or(Vec::new(), |g| g.fill(ylen));
    let (mut rr, mut dd) = (params(r_len), params(d_len));
    if typical {
        // The paper's range: r in [1/3, 3), d in (−5, 5).
        rr.iter_mut()
            .for_each(|r| *r = 1.0 / 3.0 + (r.abs() % (8.0 / 3.0)));
        dd.iter_mut().for_each(|d| *d %= 5.0);
    }

    let bn = BatchNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let mut dx = Buf::sentinel(dxlen);
    let mut dg = dg_len.map(Buf::sentinel);
    let mut db = db_len.map(Buf::sentinel);
    let mut dz = dz_len.map(Buf::sentinel);
    let before = [
        dx.bits(),
        dg.as_ref().map_or(vec![], Buf::bits),
        db.as_ref().map_or(vec![], Buf::bits),
        dz.as_ref().map_or(vec![], Buf::bits),
    ];
    let grads = Grads {
        dx: dx.body_mut(),
        dgamma: opt_body(&mut dg),
        dbeta: opt_body(&mut db),
    };
    let through = match &mut dz {
        Some(dz) => FusionGrad::AddRelu { dz: dz.body_mut() },
        None => FusionGrad::Relu,
    };
    let (r, name) = match (eval, variant) {
        (true, Variant::Plain) => (
            bn.backward_eval(
                &x,
                &dy,
                shape,
                RunningStats {
                    mean: &mean,
                    var: &var,
                },
                grads,
            ),
            "backward_eval",
        ),
        (true, _) => (
            bn.backward_eval_fused(
                &x,
                &dy,
                &y,
                shape,
                through,
                RunningStats {
                    mean: &mean,
                    var: &var,
                },
                grads,
            ),
            "backward_eval_fused",
        ),
        (false, Variant::Plain) => (
            bn.backward(
                &x,
                &dy,
                shape,
                Saved {
                    mean: &mean,
                    invstd: &var,
                },
                grads,
            ),
            "backward",
        ),
        (false, Variant::Renorm) => {
            let saved = RenormSaved {
                mean: &mean,
                invstd: &var,
                r: &rr,
                d: &dd,
            };
            (
                bn.backward_renorm(&x, &dy, shape, saved, grads),
                "backward_renorm",
            )
        }
        (false, _) => (
            bn.backward_fused(
                &x,
                &dy,
                &y,
                shape,
                through,
                Saved {
                    mean: &mean,
                    invstd: &var,
                },
                grads,
            ),
            "backward_fused",
        ),
    };
    let ok = expect.check(r, name);
    let outs = [
        (Some(&dx), "dx"),
        (dg.as_ref(), "dgamma"),
        (db.as_ref(), "dbeta"),
        (dz.as_ref(), "dz"),
    ];
    if !ok {
        for ((b, n), before) in outs.iter().zip(&before) {
            if let Some(b) = b {
                b.assert_unchanged(before, &format!("{name} {n}"));
            }
        }
        return;
    }
    for (b, n) in outs {
        if let Some(b) = b {
            b.assert_guards(&format!("{name} {n}"));
            b.assert_written(&format!("{name} {n}"));
        }
    }
    // The gradient the batch norm part sees.
    let g = if fused { relu_grad(&dy, &y) } else { dy };
    if fused {
        // The plain backward on g: the same bits (the engine keeps one accumulation
        // order for every kernel, src/engine/runs.rs), and dz = g.
        let mut dx0 = vec![0.0f32; dxlen];
        let mut dg0 = dg_len.map(|n| vec![0.0f32; n]);
        let mut db0 = db_len.map(|n| vec![0.0f32; n]);
        let grads = Grads {
            dx: &mut dx0,
            dgamma: dg0.as_deref_mut(),
            dbeta: db0.as_deref_mut(),
        };
        let r = if eval {
            bn.backward_eval(
                &x,
                &g,
                shape,
                RunningStats {
                    mean: &mean,
                    var: &var,
                },
                grads,
            )
        } else {
            bn.backward(
                &x,
                &g,
                shape,
                Saved {
                    mean: &mean,
                    invstd: &var,
                },
                grads,
            )
        };
        assert!(
            r.is_ok(),
            "the plain backward returned {r:?} where {name} succeeded"
        );
        let pairs = [
            (dx.body(), &dx0[..], "dx"),
            (body(&dg), dg0.as_deref().unwrap_or(&[]), "dgamma"),
            (body(&db), db0.as_deref().unwrap_or(&[]), "dbeta"),
            (body(&dz), &g[..], "dz"),
        ];
        for (a, b, n) in pairs {
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    same_f32(*p, *q),
                    "{name}: {n}[{i}] = {p:e}, the plain backward on the masked dy gives {q:e}"
                );
            }
        }
    }
    check(
        &bn,
        (name, eval),
        shape,
        [&g, &x, &mean, &var],
        [dx.body(), body(&dg), body(&db)],
        (variant == Variant::Renorm).then_some([&rr[..], &dd[..]]),
    );
});

/// An optional output's body (empty when absent).
fn body(b: &Option<Buf>) -> &[f32] {
    b.as_ref().map_or(&[], Buf::body)
}

/// The reference on `dy` (already masked for a fused call); `renorm = [r, d]`.
fn check(
    bn: &BatchNorm,
    (name, eval): (&str, bool),
    shape: Shape,
    [dy, x, mean, var]: [&[f32]; 4],
    [dx, dg, db]: [&[f32]; 3],
    renorm: Option<[&[f32]; 2]>,
) {
    let m = shape.batch.saturating_mul(shape.spatial) as f64;
    for c in 0..shape.channels {
        let (rr, dd) = renorm.map_or((1.0, 0.0), |[r, d]| (f64::from(r[c]), f64::from(d[c])));
        // γ·r takes γ's place in dx.
        let g = bn.gamma.map_or(1.0, |g| f64::from(g[c])) * rr;
        let mu = f64::from(mean[c]);
        let invstd = if eval {
            1.0 / (f64::from(var[c]) + f64::from(bn.eps)).sqrt()
        } else {
            f64::from(var[c])
        };
        let what = |s: &str| {
            format!(
                "{name}: {s}, channel {c} of {shape:?}, γ(·r) {g:e}, mean {mu:e}, invstd {invstd:e}, r {rr:e}, d {dd:e}"
            )
        };
        // Train: x̂ from the exact batch mean of x, whatever `mean` holds (the kernel
        // sums Σ(x − mean) beside the others and corrects by δ = Σ(x − mean)/m); eval:
        // from the running mean given.
        let mu_x = if eval {
            mu
        } else {
            ChanRef::of(channel_indices(shape, c).map(|i| x[i])).mean
        };
        let delta = mu_x - mu;
        // Reference sums and the magnitudes that bound their rounding: the kernel's
        // sums are taken around `mean` (x − mean, not x − mu_x).
        let (mut sdy, mut sdyx, mut adyx, mut ady) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let mut axs = 0.0f64;
        let mut moderate = mu.is_finite() && mu.abs() <= MODERATE;
        for i in channel_indices(shape, c) {
            let (d, xc) = (f64::from(dy[i]), f64::from(x[i]) - mu_x);
            let xs = f64::from(x[i]) - mu;
            moderate &= dy[i].is_finite() && x[i].is_finite();
            moderate &= d.abs() <= MODERATE && f64::from(x[i]).abs() <= MODERATE;
            sdy += d;
            ady += d.abs();
            sdyx += d * xc;
            adyx += (d * xs).abs();
            axs += xs.abs();
        }
        if !(moderate
            && in_range(invstd)
            && in_range(g)
            && in_range(rr)
            && in_range(dd)
            && in_range(ady)
            && in_range(adyx))
        {
            continue;
        }
        let (tdb, ts) = (128.0 * U * ady + TINY, 130.0 * U * adyx + TINY);
        // δ's error (train), and with it and Σdy's that of
        // Σdy·(x − mu_x) = Σdy·(x − mean) − δ·Σdy.
        let tdelta = if eval {
            0.0
        } else {
            130.0 * U * axs / m + TINY
        };
        let ts = ts + sdy.abs() * tdelta + delta.abs() * tdb;
        let dgam = sdyx * invstd;
        if !db.is_empty() {
            close(f64::from(db[c]), sdy, tdb + U * sdy.abs(), || what("dbeta"));
        }
        // dγ = r·Σdy·x̂ + d·Σdy (plain: r = 1, d = 0).
        let dgw = rr * dgam + dd * sdy;
        if !dg.is_empty() && in_range(dgw) && in_range(ts * invstd * rr) && in_range(dd * tdb) {
            // f64 sums, f64 products, one rounding to f32.
            close(
                f64::from(dg[c]),
                dgw,
                (rr * ts * invstd).abs()
                    + (dd * tdb).abs()
                    + 2.0 * U * ((rr * dgam).abs() + (dd * sdy).abs()),
                || what("dgamma"),
            );
        }
        let k = g * invstd;
        if !(in_range(k) && in_range(k * invstd * adyx)) {
            continue;
        }
        for i in channel_indices(shape, c) {
            let (d, xc) = (f64::from(dy[i]), f64::from(x[i]) - mu_x);
            let (want, tol) = if eval {
                (d * k, 2.0 * U * (d * k).abs() + SUB * d.abs() + TINY)
            } else {
                // The kernel's dx = k·dy + (x − mean)·a + (b − a·δ), with its a within
                // `ta` of the reference's (from dγ's error): the rounding of x − mean
                // and δ's error are carried by a and that error both.
                let xs = f64::from(x[i]) - mu;
                let a = -k * invstd * dgam / m;
                let ta = (k * invstd * invstd).abs() * ts / m;
                let a_hi = a.abs() + ta;
                let t1 = k * d;
                let t2 = xc * a;
                let t3 = -k * sdy / m;
                let tol =
                    4.0 * U * (t1.abs() + (xs * a_hi).abs() + t3.abs() + (a_hi * delta).abs())
                        + k.abs() * tdb / m
                        + xc.abs() * ta
                        + a_hi * tdelta
                        + SUB * (d.abs() + xs.abs() + 1.0)
                        + TINY;
                (t1 + t2 + t3, tol)
            };
            if !in_range(want) || !in_range(tol) {
                continue;
            }
            close(f64::from(dx[i]), want, tol, || {
                format!(
                    "{} (dy {:e}, x {:e})",
                    what(&format!("dx[{i}]")),
                    dy[i],
                    x[i]
                )
            });
        }
    }
}
