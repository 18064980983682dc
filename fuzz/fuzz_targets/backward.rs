//! `BatchNorm::backward` and `backward_eval`, with and without γ, β, dγ, dβ.
//!
//! Tolerances: the per-channel sums `Σdy` and `Σdy·(x − μ)` accumulate at most 64
//! terms per f32 lane before an f64 merge, so their error is `≤ 64·U·Σ|term|`; we
//! allow `128·U·Σ|term|`. `dx` is then one f32 FMA chain of terms whose magnitudes
//! bound its rounding (`4·U` each) plus the propagated error of the sums.
#![no_main]

use batchnorm::{BatchNorm, Grads, Shape};
use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Dec::new(data);
    let op = d.u8();
    let eval = op & 1 == 1;
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
    let (s0, s1) = if eval {
        ("running_mean", "running_var")
    } else {
        ("save_mean", "save_invstd")
    };
    let (m_len, v_len) = (d.len(c), d.len(c));
    expect.len(s0, c, m_len);
    expect.len(s1, c, v_len);
    // Statistics: those of x (as a train forward would save them), or arbitrary.
    let stats_of_x = d.u8() < 160;

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

    let bn = BatchNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let mut dx = Buf::sentinel(dxlen);
    let mut dg = dg_len.map(Buf::sentinel);
    let mut db = db_len.map(Buf::sentinel);
    let before = [
        dx.bits(),
        dg.as_ref().map_or(vec![], Buf::bits),
        db.as_ref().map_or(vec![], Buf::bits),
    ];
    let grads = Grads {
        dx: dx.body_mut(),
        dgamma: opt_body(&mut dg),
        dbeta: opt_body(&mut db),
    };
    let (r, name) = if eval {
        (
            bn.backward_eval(&dy, &x, shape, &mean, &var, grads),
            "backward_eval",
        )
    } else {
        (bn.backward(&dy, &x, shape, &mean, &var, grads), "backward")
    };
    let ok = expect.check(r, name);
    let outs = [
        (Some(&dx), "dx"),
        (dg.as_ref(), "dgamma"),
        (db.as_ref(), "dbeta"),
    ];
    if !ok {
        for ((b, n), before) in outs.iter().zip(&before) {
            if let Some(b) = b {
                b.assert_unchanged(before, n);
            }
        }
        return;
    }
    for (b, n) in outs {
        if let Some(b) = b {
            b.assert_guards(n);
            b.assert_written(n);
        }
    }
    check(
        &bn,
        eval,
        shape,
        [&dy, &x, &mean, &var],
        [
            dx.body(),
            dg.as_ref().map_or(&[][..], Buf::body),
            db.as_ref().map_or(&[][..], Buf::body),
        ],
    );
});

fn check(
    bn: &BatchNorm,
    eval: bool,
    shape: Shape,
    [dy, x, mean, var]: [&[f32]; 4],
    [dx, dg, db]: [&[f32]; 3],
) {
    let m = shape.batch.saturating_mul(shape.spatial) as f64;
    for c in 0..shape.channels {
        let g = bn.gamma.map_or(1.0, |g| f64::from(g[c]));
        let mu = f64::from(mean[c]);
        let invstd = if eval {
            1.0 / (f64::from(var[c]) + f64::from(bn.eps)).sqrt()
        } else {
            f64::from(var[c])
        };
        let what = |s: &str| {
            format!(
                "{}: {s}, channel {c} of {shape:?}, γ {g:e}, mean {mu:e}, invstd {invstd:e}",
                if eval { "backward_eval" } else { "backward" }
            )
        };
        // Reference sums and the magnitudes that bound their rounding.
        let (mut sdy, mut sdyx, mut adyx, mut ady) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let mut moderate = mu.is_finite() && mu.abs() <= MODERATE;
        for i in channel_indices(shape, c) {
            let (d, xc) = (f64::from(dy[i]), f64::from(x[i]) - mu);
            moderate &= dy[i].is_finite() && x[i].is_finite();
            moderate &= d.abs() <= MODERATE && f64::from(x[i]).abs() <= MODERATE;
            sdy += d;
            ady += d.abs();
            sdyx += d * xc;
            adyx += (d * xc).abs();
        }
        if !(moderate && in_range(invstd) && in_range(g) && in_range(ady) && in_range(adyx)) {
            continue;
        }
        let (tdb, ts) = (128.0 * U * ady + TINY, 130.0 * U * adyx + TINY);
        let dgam = sdyx * invstd;
        if !db.is_empty() {
            close(f64::from(db[c]), sdy, tdb + U * sdy.abs(), || what("dbeta"));
        }
        if !dg.is_empty() && in_range(dgam) && in_range(ts * invstd) {
            // f64 sums, one f64 multiply, one rounding to f32.
            close(
                f64::from(dg[c]),
                dgam,
                ts * invstd.abs() + 2.0 * U * dgam.abs(),
                || what("dgamma"),
            );
        }
        let k = g * invstd;
        if !(in_range(k) && in_range(k * invstd * adyx)) {
            continue;
        }
        for i in channel_indices(shape, c) {
            let (d, xc) = (f64::from(dy[i]), f64::from(x[i]) - mu);
            let (want, tol) = if eval {
                (d * k, 2.0 * U * (d * k).abs() + SUB * d.abs() + TINY)
            } else {
                let t1 = k * d;
                let t2 = -xc * k * invstd * dgam / m;
                let t3 = -k * sdy / m;
                let tol = 4.0 * U * (t1.abs() + t2.abs() + t3.abs())
                    + k.abs() * tdb / m
                    + (xc * k * invstd * invstd).abs() * ts / m
                    + SUB * (d.abs() + xc.abs() + 1.0)
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
