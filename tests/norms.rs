//! Property tests of batch norm's neighbours (`LayerNorm`, `RmsNorm`, `GroupNorm`,
//! `InstanceNorm`: forward, in place and backward) against the f64 oracle in `common`
//! (`ref_norm`, `ref_norm_backward` over the ops' statistic units: rows, (sample,
//! group), (sample, channel)) under its tolerance model (`common::tol`, the same
//! bounds as batch norm's train forward and backward), and of gradient clipping
//! against f64 norms.
//!
//! Cases are drawn by `common/cases.rs` (odd shapes, both layouts, offsets up to 1e4,
//! constant channels, γ/β present or absent); layer and RMS norm normalize each
//! sample's `C·S` values (`F.layer_norm` over `[C, H, W]`), group norm uses a random
//! divisor of C as its group count. Some cases get NaN/±inf in x. Every output starts
//! as a sentinel NaN with guard cells; in place must give the forward's bits, and
//! each call is run twice for the same bits.
//!
//! Properties (cases per run; `PROPTEST_CASES=n` overrides each): layer norm 160,
//! RMS norm 160, group norm 160, instance norm (with running statistics) 160,
//! gradient clipping 192 — **832 in total**. Fixed cases: rows of 4097 values,
//! accuracy at |mean|/std = 1e4, groups wider than a band, every error.

#[path = "common/cases.rs"]
mod cases;
mod common;

use batchnorm::{
    clip_grad_norm, clip_grad_value, total_norm, Error, GradNorm, Grads, GroupNorm, InstanceNorm,
    LayerNorm, Momentum, NonFinite, RmsNorm, Rows, Running, Saved, SavedMut, Shape,
};
use cases::*;
use common::Rng;
use common::*;
use proptest::prelude::*;

/// One of the four unit norms, as a case calls it.
#[derive(Clone, Copy, Debug)]
enum Op {
    Layer,
    Rms,
    Group(usize),
    Instance(Option<Update>),
}

impl Op {
    /// The statistic units of `shape` and how many γ/β values there are.
    fn units(self, shape: &Shape) -> (Units, usize) {
        let (n, cs) = (shape.batch, shape.channels * shape.spatial);
        match self {
            Op::Layer | Op::Rms => (layer_units(n, cs), cs),
            Op::Group(g) => (group_units(shape, g), shape.channels),
            Op::Instance(_) => (group_units(shape, shape.channels), shape.channels),
        }
    }

    fn rows(shape: &Shape) -> Rows {
        Rows::new(shape.batch, shape.channels * shape.spatial)
    }
}

/// γ and β of `params` values each, from the case's seed, when the case has them.
fn params(case: &Case, params: usize) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let mut rng = Rng::new(case.seed ^ 0x9a9a);
    let g: Vec<f32> = (0..params)
        .map(|_| match rng.below(6) {
            0 => 1.0,
            1 => 0.0,
            _ => rng.range(-2.0, 2.0) as f32,
        })
        .collect();
    let b: Vec<f32> = (0..params).map(|_| rng.range(-3.0, 3.0) as f32).collect();
    (case.gamma.then_some(g), case.beta.then_some(b))
}

/// Guarded outputs of one forward call.
struct Forward {
    result: Result<(), Error>,
    y: Guarded,
    mean: Guarded,
    invstd: Guarded,
    running: Option<(Guarded, Guarded)>,
}

/// Runs `op`'s forward on `x` (in place when `in_place`).
#[allow(clippy::too_many_arguments)]
fn forward(
    op: Op,
    case: &Case,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    units: usize,
    running0: Option<(&[f32], &[f32])>,
    in_place: bool,
) -> Forward {
    let shape = case.shape;
    let eps = case.eps;
    let mut y = if in_place {
        Guarded::from(x)
    } else {
        Guarded::sentinel(x.len())
    };
    let (mut mean, mut invstd) = (Guarded::sentinel(units), Guarded::sentinel(units));
    let mut running = running0.map(|(m, v)| (Guarded::from(m), Guarded::from(v)));
    let saved = SavedMut {
        mean: mean.inner_mut(),
        invstd: invstd.inner_mut(),
    };
    let result = match op {
        Op::Layer => {
            let ln = LayerNorm { eps, gamma, beta };
            match in_place {
                false => ln.forward(x, y.inner_mut(), Op::rows(&shape), saved),
                true => ln.forward_in_place(y.inner_mut(), Op::rows(&shape), saved),
            }
        }
        Op::Rms => {
            let rms = RmsNorm { eps, gamma };
            let rows = Op::rows(&shape);
            match in_place {
                false => rms.forward(x, y.inner_mut(), rows, saved.invstd),
                true => rms.forward_in_place(y.inner_mut(), rows, saved.invstd),
            }
        }
        Op::Group(groups) => {
            let gn = GroupNorm {
                groups,
                eps,
                gamma,
                beta,
            };
            match in_place {
                false => gn.forward(x, y.inner_mut(), shape, saved),
                true => gn.forward_in_place(y.inner_mut(), shape, saved),
            }
        }
        Op::Instance(momentum) => {
            let inorm = InstanceNorm { eps, gamma, beta };
            let mut r = match (&mut running, momentum) {
                (Some((m, v)), Some(u)) => Some(u.running(m.inner_mut(), v.inner_mut())),
                _ => None,
            };
            let result = match in_place {
                false => inorm.forward(x, y.inner_mut(), shape, saved, r.as_mut()),
                true => inorm.forward_in_place(y.inner_mut(), shape, saved, r.as_mut()),
            };
            let counted = momentum.map(|u| u.counted(result.is_ok()));
            assert_eq!(r.map(|r| r.batches_tracked), counted, "batches_tracked");
            result
        }
    };
    Forward {
        result,
        y,
        mean,
        invstd,
        running,
    }
}

fn check_norm(op: Op, case: &Case, poison: &[(u64, usize)], want: (bool, bool)) {
    let shape = case.shape;
    let mut x = case.x();
    if !poison.is_empty() {
        apply_poison(&mut x, &shape, poison);
    }
    let (u, np) = op.units(&shape);
    let (gamma, beta) = params(case, np);
    let beta = if matches!(op, Op::Rms) { None } else { beta };
    let (g, b) = (gamma.as_deref(), beta.as_deref());
    let what = format!("{op:?} {} poison={poison:?}", case.summary());
    let running0 = match op {
        Op::Instance(Some(_)) => Some(case.running_before()),
        _ => None,
    };
    let r0 = running0.as_ref().map(|(m, v)| (&m[..], &v[..]));
    let units = u.units.len();
    let out = forward(op, case, &x, g, b, units, r0, false);
    let needed = match op {
        Op::Instance(Some(u)) => u.needed(),
        _ => 0,
    };
    if shape.spatial < needed {
        let e = Error::TooFewValues {
            needed,
            actual: shape.spatial,
        };
        assert_eq!(out.result, Err(e), "{what}");
        out.y.assert_untouched(&what);
        return;
    }
    out.result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
    out.y.assert_written(&format!("{what}: y"));
    out.invstd.assert_written(&format!("{what}: invstd"));
    let again = forward(op, case, &x, g, b, units, r0, false);
    assert_same_bits(&format!("{what}: y twice"), out.y.inner(), again.y.inner());
    let in_place = forward(op, case, &x, g, b, units, r0, true);
    in_place.result.unwrap();
    assert_same_bits(
        &format!("{what}: in place"),
        out.y.inner(),
        in_place.y.inner(),
    );

    let rms = matches!(op, Op::Rms);
    let rf = ref_norm(&x, &u, g, b, case.eps, rms);
    let mut ck = Checker::new(&what);
    let (y, inv) = (out.y.inner(), out.invstd.inner());
    for (k, idx) in u.units.iter().enumerate() {
        let st = &rf.stats[k];
        let mean = out.mean.inner()[k];
        if !rms && st.mean.is_finite() {
            ck.close("mean", k, mean as f64, st.mean, tol::mean(st));
        } else if !rms {
            // A unit with an infinity: its mean is ±inf or NaN (the oracle's
            // compensated sum makes it NaN).
            ck.ensure(!mean.is_finite(), || {
                format!("mean[{k}] = {mean} is finite")
            });
        }
        ck.close(
            "invstd",
            k,
            inv[k] as f64,
            rf.invstd[k],
            tol::invstd(st, case.eps),
        );
        for &i in idx {
            let j = u.param[i];
            let dev = x[i] as f64 - st.mean;
            let t = tol::train_y(
                dev,
                st,
                case.eps,
                gamma_of(g, j),
                rf.invstd[k],
                beta_of(b, j),
                rf.y[i],
            );
            ck.close("y", i, y[i] as f64, rf.y[i], t);
        }
    }
    if let (Some((rm, rv)), Some((rm0, rv0)), Op::Instance(Some(u))) = (&out.running, &running0, op)
    {
        let (f, k) = (u.factor(), u.correction);
        let (n, cs) = (shape.batch as f64, shape.channels);
        for c in 0..cs {
            let inst: Vec<&RefMoments> = (0..shape.batch).map(|n| &rf.stats[n * cs + c]).collect();
            let bm = inst.iter().map(|s| s.mean).sum::<f64>() / n;
            let bv = inst.iter().map(|s| s.batch_var(k)).sum::<f64>() / n;
            let tm = inst.iter().map(|s| tol::mean(s)).fold(0.0, f64::max);
            let tv = inst.iter().map(|s| 2.0 * tol::var(s)).fold(0.0, f64::max);
            let (om, ov) = (rm0[c] as f64, rv0[c] as f64);
            let em = (1.0 - f) * om + f * bm;
            let ev = (1.0 - f) * ov + f * bv;
            let got = rm.inner()[c];
            if em.is_finite() {
                let t = tol::running(om, bm, f, tm);
                ck.close("running_mean", c, got as f64, em, t);
            } else {
                ck.ensure(!got.is_finite(), || format!("running_mean[{c}] = {got}"));
            }
            let t = tol::running(ov, bv, f, tv);
            ck.close("running_var", c, rv.inner()[c] as f64, ev, t);
        }
    }
    ck.finish();
    if !poison.is_empty() {
        return;
    }

    // The backward, from the statistics the forward saved.
    let dy = case.dy();
    let run_backward = || {
        let mut dx = Guarded::sentinel(x.len());
        let mut dg = Guarded::sentinel(np);
        let mut db = Guarded::sentinel(np);
        let grads = Grads {
            dx: dx.inner_mut(),
            dgamma: want.0.then(|| dg.inner_mut()),
            dbeta: want.1.then(|| db.inner_mut()),
        };
        let saved = Saved {
            mean: out.mean.inner(),
            invstd: inv,
        };
        let eps = case.eps;
        let result = match op {
            Op::Layer => LayerNorm {
                eps,
                gamma: g,
                beta: b,
            }
            .backward(&x, &dy, Op::rows(&shape), saved, grads),
            Op::Rms => RmsNorm { eps, gamma: g }.backward(&x, &dy, Op::rows(&shape), inv, grads),
            Op::Group(groups) => GroupNorm {
                groups,
                eps,
                gamma: g,
                beta: b,
            }
            .backward(&x, &dy, shape, saved, grads),
            Op::Instance(_) => InstanceNorm {
                eps,
                gamma: g,
                beta: b,
            }
            .backward(&x, &dy, shape, saved, grads),
        };
        result.unwrap_or_else(|e| panic!("{what}: backward: {e:?}"));
        (dx, dg, db)
    };
    let (dx, dg, db) = run_backward();
    let (dx2, dg2, db2) = run_backward();
    assert_same_bits(&format!("{what}: dx twice"), dx.inner(), dx2.inner());
    assert_same_bits(&format!("{what}: dgamma twice"), dg.inner(), dg2.inner());
    assert_same_bits(&format!("{what}: dbeta twice"), db.inner(), db2.inner());
    dx.assert_written(&format!("{what}: dx"));
    let mean = (!rms).then(|| out.mean.inner());
    let rb = ref_norm_backward(&x, &dy, &u, g, mean, inv, np);
    let mut ck = Checker::new(format!("{what} backward want={want:?}"));
    for i in 0..x.len() {
        ck.close("dx", i, dx.inner()[i] as f64, rb.dx[i], rb.tol_dx[i]);
    }
    for (on, out, exp, tol) in [
        (want.0, &dg, &rb.dgamma, &rb.tol_dgamma),
        (want.1, &db, &rb.dbeta, &rb.tol_dbeta),
    ] {
        if on {
            out.assert_written(&what);
            for j in 0..np {
                ck.close("dgamma/dbeta", j, out.inner()[j] as f64, exp[j], tol[j]);
            }
        } else {
            out.assert_untouched(&what);
        }
    }
    ck.finish();
}

fn want() -> impl Strategy<Value = (bool, bool)> {
    (any::<bool>(), any::<bool>())
}

fn maybe_poison() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop_oneof![3 => Just(Vec::new()), 1 => poison()]
}

#[test]
fn layer_norm_matches_oracle() {
    let s = (case(), maybe_poison(), want());
    run("layer_norm", 160, s, |(case, p, w)| {
        check_norm(Op::Layer, &case, &p, w)
    });
}

#[test]
fn rms_norm_matches_oracle() {
    let s = (case(), maybe_poison(), want());
    run("rms_norm", 160, s, |(case, p, w)| {
        check_norm(Op::Rms, &case, &p, w)
    });
}

#[test]
fn group_norm_matches_oracle() {
    let s = (case(), any::<u64>(), maybe_poison(), want());
    run("group_norm", 160, s, |(case, r, p, w)| {
        let c = case.shape.channels;
        let divisors: Vec<usize> = (1..=c).filter(|g| c % g == 0).collect();
        let groups = divisors[(r % divisors.len() as u64) as usize];
        check_norm(Op::Group(groups), &case, &p, w)
    });
}

#[test]
fn instance_norm_matches_oracle() {
    let s = (case(), prop::option::of(momentum()), maybe_poison(), want());
    run("instance_norm", 160, s, |(case, m, p, w)| {
        check_norm(Op::Instance(m), &case, &p, w)
    });
}

/// A case of fixed shape and profiles.
fn fixed(shape: Shape, offset: f64, spread: f64, seed: u64) -> Case {
    Case {
        shape,
        profiles: vec![Profile { offset, spread }; shape.channels],
        seed,
        eps: 1e-5,
        gamma: true,
        beta: true,
    }
}

#[test]
fn long_rows_and_wide_groups_match_oracle() {
    // Rows of 4097 values (a tail in every row; longer than the row norms' backward
    // sums per position take at once), more rows than one block of their dγ and dβ,
    // groups wider than a band (64 channels-first, 1024 channels-last), one group,
    // many samples.
    for (i, shape) in [
        Shape::channels_first(3, 1, 4097),
        Shape::rows(70, 4100),
        Shape::channels_last(2, 97, 43),
        Shape::channels_first(2, 300, 3),
        Shape::channels_last(2, 600, 2),
        Shape::channels_last(2, 1100, 2),
        Shape::channels_first(70, 4, 5),
        Shape::rows(9, 513),
    ]
    .into_iter()
    .enumerate()
    {
        let case = fixed(shape, 3.0, 2.0, i as u64);
        for op in [
            Op::Layer,
            Op::Rms,
            Op::Group(1),
            Op::Group(shape.channels),
            Op::Instance(Some(Update::PYTORCH)),
        ] {
            check_norm(op, &case, &[], (true, true));
        }
    }
}

#[test]
fn variance_is_exact_at_mean_over_std_1e4() {
    // DESIGN.md's accuracy: var relative error ≤ 1e-6 against f64 at |mean|/std = 1e4,
    // read back from invstd (eps = 0): one read of x, as batch norm's.
    let shape = Shape::channels_first(2, 8, 4096);
    let mut case = fixed(shape, 1e4, 1.0, 7);
    case.eps = 0.0;
    let x = case.x();
    for op in [Op::Layer, Op::Group(2), Op::Instance(None)] {
        let (u, _) = op.units(&shape);
        let out = forward(op, &case, &x, None, None, u.units.len(), None, false);
        out.result.unwrap();
        for (k, idx) in u.units.iter().enumerate() {
            let st = ref_moments_at(&x, idx);
            let var = 1.0 / (out.invstd.inner()[k] as f64).powi(2);
            let rel = (var - st.var).abs() / st.var;
            assert!(
                rel <= 1e-6,
                "{op:?} unit {k}: var {var} vs {} ({rel:e})",
                st.var
            );
        }
    }
}

// ----------------------------------------------------------------------------------
// Gradient clipping
// ----------------------------------------------------------------------------------

/// Slices of gradients: 1–5 slices of 0–300 values, each of one magnitude (1e-30,
/// 1e-3, 1, 1e30) with some exact zeros, maybe NaN/±inf.
fn grads() -> impl Strategy<Value = (Vec<Vec<f32>>, bool)> {
    let slice = (0..=300usize, any::<u64>(), 0..4usize).prop_map(|(n, seed, mag)| {
        let mut rng = Rng::new(seed);
        let scale = [1e-30, 1e-3, 1.0, 1e30][mag];
        (0..n)
            .map(|_| match rng.below(10) {
                0 => 0.0,
                _ => (scale * rng.gauss()) as f32,
            })
            .collect::<Vec<f32>>()
    });
    (
        prop::collection::vec(slice, 1..=5),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(mut gs, r, specials)| {
            if specials && gs.iter().any(|g| !g.is_empty()) {
                let k = (r % gs.len() as u64) as usize;
                if let Some(v) = gs[k].first_mut() {
                    *v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][(r >> 8) as usize % 3];
                }
            }
            (gs, specials)
        })
}

fn ref_total(gs: &[Vec<f32>], norm: GradNorm) -> f64 {
    let vals = gs.iter().flatten().map(|&v| v as f64);
    if gs.iter().flatten().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    match norm {
        GradNorm::Max => vals.map(f64::abs).fold(0.0, f64::max),
        GradNorm::L2 => {
            // Scaled, so that 1e30² does not overflow f64 sums of many.
            let m = gs
                .iter()
                .flatten()
                .map(|v| v.abs() as f64)
                .fold(0.0, f64::max);
            if m == 0.0 || !m.is_finite() {
                return m;
            }
            m * vals.map(|v| (v / m).powi(2)).sum::<f64>().sqrt()
        }
    }
}

#[test]
fn gradient_clipping_matches_oracle() {
    let norm = prop_oneof![Just(GradNorm::L2), Just(GradNorm::Max)];
    let max_norm = prop_oneof![Just(1.0f32), Just(0.0), Just(1e30), 0.0..10.0f32];
    let s = (grads(), norm, max_norm, 0.0..3.0f32);
    run("clip", 192, s, |((gs, _), norm, max_norm, clip)| {
        let what = format!(
            "{norm:?} max_norm={max_norm} sizes={:?}",
            gs.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let expect = ref_total(&gs, norm);
        let views: Vec<&[f32]> = gs.iter().map(|g| &g[..]).collect();
        let total = total_norm(&views, norm) as f64;
        let tol = 4.0 * tol::EPS32 * expect.abs();
        assert!(
            close(total, expect, tol),
            "{what}: total {total:e} vs {expect:e}"
        );

        // clip_grad_norm: refused (nothing written) or scaled by PyTorch's factor.
        for nonfinite in [NonFinite::Error, NonFinite::Scale] {
            let mut out = gs.clone();
            let mut views: Vec<&mut [f32]> = out.iter_mut().map(|g| &mut g[..]).collect();
            let r = clip_grad_norm(&mut views, max_norm, norm, nonfinite);
            if !(expect as f32).is_finite() && nonfinite == NonFinite::Error {
                assert!(
                    matches!(r, Err(Error::NonFiniteNorm { .. })),
                    "{what}: {r:?}"
                );
                let same = out.iter().zip(&gs).all(|(a, b)| same_bits(a, b));
                assert!(same, "{what}: written on error");
                continue;
            }
            let t = r.unwrap_or_else(|e| panic!("{what}: {e:?}")) as f64;
            assert!(
                close(t, expect, tol),
                "{what}: returned {t:e} vs {expect:e}"
            );
            let factor = (max_norm as f64 / (expect + 1e-6)).min(1.0);
            let factor = if expect.is_nan() { f64::NAN } else { factor };
            let mut ck = Checker::new(format!("{what} {nonfinite:?}"));
            for (a, b) in out.iter().flatten().zip(gs.iter().flatten()) {
                let e = *b as f64 * factor;
                // and f32's underflow
                let t = tol::elementwise(&[e]) + f32::from_bits(1) as f64;
                ck.close("scaled", 0, *a as f64, e, t);
            }
            ck.finish();
        }

        // clip_grad_value: exact.
        let mut out = gs.clone();
        let mut views: Vec<&mut [f32]> = out.iter_mut().map(|g| &mut g[..]).collect();
        clip_grad_value(&mut views, clip).unwrap();
        for (a, b) in out.iter().flatten().zip(gs.iter().flatten()) {
            let e = if b.is_nan() { *b } else { b.clamp(-clip, clip) };
            assert!(
                a.to_bits() == e.to_bits() || a == &e,
                "{what}: clamp {b} → {a}, not {e}"
            );
        }
    });
}

#[test]
fn clip_norm_of_many_huge_values_does_not_overflow() {
    let big = vec![3e38f32; 10_000];
    let small = vec![1e-40f32; 10_000];
    let n = total_norm(&[&big], GradNorm::L2);
    assert!(((n as f64) / (3e38 * 100.0) - 1.0).abs() < 1e-6 || n.is_infinite());
    let n = total_norm(&[&small], GradNorm::L2) as f64;
    let expect = (1e-40f32 as f64) * 100.0;
    assert!((n / expect - 1.0).abs() < 1e-5, "{n:e} vs {expect:e}");
}

// ----------------------------------------------------------------------------------
// Errors: typed, and nothing written
// ----------------------------------------------------------------------------------

#[test]
fn bad_arguments_are_refused_and_write_nothing() {
    let x = [1.0f32; 12];
    let mut y = [sentinel(); 12];
    let (mut m, mut v) = ([sentinel(); 4], [sentinel(); 4]);
    let rows = Rows::new(3, 4);
    let ln = LayerNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    // Layer norm: wrong saved length, wrong γ, negative eps, zero-length rows.
    let e = ln.forward(
        &x,
        &mut y,
        rows,
        SavedMut {
            mean: &mut m,
            invstd: &mut v,
        },
    );
    assert_eq!(
        e,
        Err(Error::Length {
            arg: "save_mean",
            expected: 3,
            actual: 4
        })
    );
    let bad = LayerNorm {
        gamma: Some(&[1.0; 3]),
        ..ln
    };
    let e = bad.forward(
        &x,
        &mut y,
        rows,
        SavedMut {
            mean: &mut m[..3],
            invstd: &mut v[..3],
        },
    );
    assert_eq!(
        e,
        Err(Error::Length {
            arg: "gamma",
            expected: 4,
            actual: 3
        })
    );
    let bad = LayerNorm { eps: -1.0, ..ln };
    let e = bad.forward(
        &x,
        &mut y,
        rows,
        SavedMut {
            mean: &mut m[..3],
            invstd: &mut v[..3],
        },
    );
    assert_eq!(
        e,
        Err(Error::Parameter {
            arg: "eps",
            value: -1.0
        })
    );
    let e = ln.forward(
        &[],
        &mut [],
        Rows::new(3, 0),
        SavedMut {
            mean: &mut m[..3],
            invstd: &mut v[..3],
        },
    );
    assert_eq!(
        e,
        Err(Error::TooFewValues {
            needed: 1,
            actual: 0
        })
    );
    let e = ln.forward(
        &x,
        &mut y,
        Rows::new(usize::MAX, 2),
        SavedMut {
            mean: &mut m,
            invstd: &mut v,
        },
    );
    assert_eq!(e, Err(Error::Overflow { arg: "x" }));
    // RMS norm: wrong y, wrong invstd.
    let rms = RmsNorm {
        eps: 0.0,
        gamma: None,
    };
    let e = rms.forward(&x, &mut y[..11], rows, &mut v[..3]);
    assert_eq!(
        e,
        Err(Error::Length {
            arg: "y",
            expected: 12,
            actual: 11
        })
    );
    let e = rms.forward(&x, &mut y, rows, &mut v);
    assert_eq!(
        e,
        Err(Error::Length {
            arg: "save_invstd",
            expected: 3,
            actual: 4
        })
    );
    // Group norm: groups 0 or not dividing C, wrong saved length.
    let shape = Shape::channels_first(1, 6, 2);
    for groups in [0, 4] {
        let gn = GroupNorm {
            groups,
            eps: 1e-5,
            gamma: None,
            beta: None,
        };
        let e = gn.forward(
            &x,
            &mut y,
            shape,
            SavedMut {
                mean: &mut m,
                invstd: &mut v,
            },
        );
        assert_eq!(
            e,
            Err(Error::Groups {
                groups,
                arg: "channels",
                channels: 6
            })
        );
    }
    let gn = GroupNorm {
        groups: 3,
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    let e = gn.forward(
        &x,
        &mut y,
        shape,
        SavedMut {
            mean: &mut m,
            invstd: &mut v,
        },
    );
    assert_eq!(
        e,
        Err(Error::Length {
            arg: "save_mean",
            expected: 3,
            actual: 4
        })
    );
    // Group norm backward: wrong dgamma.
    let (mut dx, mut dg) = ([sentinel(); 12], [sentinel(); 5]);
    let grads = Grads {
        dx: &mut dx,
        dgamma: Some(&mut dg),
        dbeta: None,
    };
    let e = gn.backward(
        &x,
        &x,
        shape,
        Saved {
            mean: &m[..3],
            invstd: &v[..3],
        },
        grads,
    );
    assert_eq!(
        e,
        Err(Error::Length {
            arg: "dgamma",
            expected: 6,
            actual: 5
        })
    );
    // Instance norm: running statistics with one position, or a bad momentum.
    let inorm = InstanceNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    let (mut rm, mut rv) = ([0.0f32; 4], [1.0f32; 4]);
    let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(0.1));
    let e = inorm.forward(
        &x[..4],
        &mut y[..4],
        Shape::rows(1, 4),
        SavedMut {
            mean: &mut m,
            invstd: &mut v,
        },
        Some(&mut running),
    );
    assert_eq!(
        e,
        Err(Error::TooFewValues {
            needed: 2,
            actual: 1
        })
    );
    let mut running = Running::new(&mut rm[..2], &mut rv[..2], Momentum::Exponential(2.0));
    let e = inorm.forward(
        &x[..4],
        &mut y[..4],
        Shape::channels_first(2, 1, 2),
        SavedMut {
            mean: &mut m[..2],
            invstd: &mut v[..2],
        },
        Some(&mut running),
    );
    assert_eq!(
        e,
        Err(Error::Parameter {
            arg: "momentum",
            value: 2.0
        })
    );
    // Clipping: NaN or negative limits.
    let mut g = [1.0f32, 2.0];
    assert!(matches!(
        clip_grad_value(&mut [&mut g], f32::NAN),
        Err(Error::Parameter {
            arg: "clip_value",
            ..
        })
    ));
    assert!(matches!(
        clip_grad_norm(&mut [&mut g], -1.0, GradNorm::L2, NonFinite::Scale),
        Err(Error::Parameter {
            arg: "max_norm",
            ..
        })
    ));
    assert_eq!(g, [1.0, 2.0]);
    for (name, buf) in [
        ("y", &y[..]),
        ("mean", &m[..]),
        ("invstd", &v[..]),
        ("dx", &dx[..]),
        ("dgamma", &dg[..]),
    ] {
        assert!(
            buf.iter().all(|v| v.to_bits() == SENTINEL_BITS),
            "{name} written"
        );
    }
    assert_eq!((rm, rv), ([0.0; 4], [1.0; 4]));
}
