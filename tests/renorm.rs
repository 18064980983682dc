//! Property tests of Batch Renormalization (`train_renorm`, `backward_renorm`; Ioffe
//! 2017) against the f64 oracle in `common` (`ref_train_renorm` and
//! `ref_backward_renorm`, built on `ref_train` and `ref_backward`) under its tolerance
//! model (`common::tol`: r and d carry invstd's and the mean's bounds, clipping is
//! 1-Lipschitz and exact beyond its limits).
//!
//! Cases are drawn by `common/cases.rs`; half the channels get running statistics far
//! from the batch's (r and d clip), half near them. Limits: rmax ∈ {1, 1.5, 3, ∞} or
//! random in [1, 10), dmax ∈ {0, 0.5, 5, ∞} or random in [0, 10). Every output starts
//! as a sentinel NaN with guard cells; each property also runs the same input twice
//! and wants the same bits.
//!
//! Properties (cases per run; `PROPTEST_CASES=n` overrides each): train_renorm 192,
//! train_renorm with NaN/±inf 64, backward_renorm 192, rmax = 1 and dmax = 0 is
//! bit-identical to train + backward 96 — **544 in total**. Errors (wrong length of
//! saved.r and saved.d, rmax below 1 or NaN, dmax below 0 or NaN, m < 2) are fixed
//! cases at the end.

#[path = "common/cases.rs"]
mod cases;
mod common;

use batchnorm::{
    BatchNorm, Error, Grads, Momentum, Renorm, RenormSaved, RenormSavedMut, Running, Saved,
    SavedMut, Shape,
};
use cases::*;
use common::Rng;
use common::*;
use proptest::prelude::*;

fn renorm() -> impl Strategy<Value = Renorm> {
    let rmax = prop_oneof![
        Just(1.0f32),
        Just(1.5),
        Just(3.0),
        Just(f32::INFINITY),
        1.0..10.0f32
    ];
    let dmax = prop_oneof![
        Just(0.0f32),
        Just(0.5),
        Just(5.0),
        Just(f32::INFINITY),
        0.0..10.0f32
    ];
    (rmax, dmax).prop_map(|(rmax, dmax)| Renorm { rmax, dmax })
}

/// Guarded outputs of one `train_renorm` (or, with `renorm` None, `train`) call.
struct Out {
    result: Result<(), Error>,
    y: Guarded,
    mean: Guarded,
    invstd: Guarded,
    r: Guarded,
    d: Guarded,
    running_mean: Guarded,
    running_var: Guarded,
}

impl Out {
    fn new(len: usize, cs: usize, (rm0, rv0): (&[f32], &[f32])) -> Out {
        Out {
            result: Ok(()),
            y: Guarded::sentinel(len),
            mean: Guarded::sentinel(cs),
            invstd: Guarded::sentinel(cs),
            r: Guarded::sentinel(cs),
            d: Guarded::sentinel(cs),
            running_mean: Guarded::from(rm0),
            running_var: Guarded::from(rv0),
        }
    }

    fn saved(&mut self) -> RenormSavedMut<'_> {
        RenormSavedMut {
            mean: self.mean.inner_mut(),
            invstd: self.invstd.inner_mut(),
            r: self.r.inner_mut(),
            d: self.d.inner_mut(),
        }
    }

    /// Nothing written: outputs still the sentinel, running statistics as given.
    fn assert_nothing_written(&self, what: &str, rm0: &[f32], rv0: &[f32]) {
        self.y.assert_untouched(&format!("{what}: y"));
        self.mean.assert_untouched(&format!("{what}: saved.mean"));
        self.invstd
            .assert_untouched(&format!("{what}: saved.invstd"));
        self.r.assert_untouched(&format!("{what}: saved.r"));
        self.d.assert_untouched(&format!("{what}: saved.d"));
        self.running_mean
            .assert_holds(&format!("{what}: running_mean"), rm0);
        self.running_var
            .assert_holds(&format!("{what}: running_var"), rv0);
    }
}

fn run_train(
    bn: &BatchNorm,
    x: &[f32],
    shape: Shape,
    renorm: Option<Renorm>,
    stats0: (&[f32], &[f32]),
    momentum: Update,
) -> Out {
    let mut o = Out::new(x.len(), shape.channels, stats0);
    let mut y = std::mem::replace(&mut o.y, Guarded::sentinel(0));
    let mut rm = std::mem::replace(&mut o.running_mean, Guarded::sentinel(0));
    let mut rv = std::mem::replace(&mut o.running_var, Guarded::sentinel(0));
    let mut running = momentum.running(rm.inner_mut(), rv.inner_mut());
    o.result = match renorm {
        Some(rn) => bn.train_renorm(x, y.inner_mut(), shape, rn, o.saved(), &mut running),
        None => {
            let saved = SavedMut {
                mean: o.mean.inner_mut(),
                invstd: o.invstd.inner_mut(),
            };
            bn.train(x, y.inner_mut(), shape, saved, Some(&mut running))
        }
    };
    let counted = momentum.counted(o.result.is_ok());
    assert_eq!(running.batches_tracked, counted, "batches_tracked");
    o.y = y;
    o.running_mean = rm;
    o.running_var = rv;
    o
}

// ----------------------------------------------------------------------------------
// train_renorm
// ----------------------------------------------------------------------------------

fn check_train_renorm(case: &Case, rn: Renorm, momentum: Update, poison: &[(u64, usize)]) {
    let shape = case.shape;
    let (cs, m) = (shape.channels, per_channel(&shape));
    let mut x = case.x();
    let poisoned = apply_poison(&mut x, &shape, poison);
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let (rm0, rv0) = case.running_before();
    let stats0 = (&rm0[..], &rv0[..]);
    let what = format!(
        "train_renorm {rn:?} momentum={momentum:?} {}",
        case.summary()
    );

    let out = run_train(&bn, &x, shape, Some(rn), stats0, momentum);
    let needed = momentum.needed();
    if m < needed {
        assert_eq!(
            out.result,
            Err(Error::TooFewValues { needed, actual: m }),
            "{what}"
        );
        out.assert_nothing_written(&what, &rm0, &rv0);
        return;
    }
    if let Err(e) = out.result {
        panic!("{what}: failed with {e:?}");
    }
    out.y.assert_written("y");
    for (name, g) in [
        ("saved.mean", &out.mean),
        ("saved.invstd", &out.invstd),
        ("saved.r", &out.r),
        ("saved.d", &out.d),
    ] {
        g.assert_written(name);
    }
    out.running_mean.assert_guards("running_mean");
    out.running_var.assert_guards("running_var");

    // Saved statistics and the running update are train's, bit for bit.
    let plain = run_train(&bn, &x, shape, None, stats0, momentum);
    plain.result.unwrap();
    for (name, a, b) in [
        ("saved.mean", &out.mean, &plain.mean),
        ("saved.invstd", &out.invstd, &plain.invstd),
        ("running_mean", &out.running_mean, &plain.running_mean),
        ("running_var", &out.running_var, &plain.running_var),
    ] {
        assert_same_bits(&format!("{what}: {name} vs train"), a.inner(), b.inner());
    }

    let rf = ref_train_renorm(
        &x,
        &shape,
        gamma.as_deref(),
        beta.as_deref(),
        case.eps,
        momentum.oracle(&rm0, &rv0),
        rn.rmax,
        rn.dmax,
    );
    let (y, sm, si) = (out.y.inner(), out.mean.inner(), out.invstd.inner());
    let (r, d) = (out.r.inner(), out.d.inner());
    let (rm, rv) = (out.running_mean.inner(), out.running_var.inner());
    let (rmax, dmax) = (rn.rmax as f64, rn.dmax as f64);
    let mut ck = Checker::new(what.clone());
    for c in 0..cs {
        if poisoned[c] {
            // r is clipped to [1/rmax, rmax]: with rmax = 1 that is 1 whatever the
            // statistics, else NaN statistics give a NaN r.
            let r_ok = if rmax == 1.0 {
                r[c] == 1.0
            } else {
                r[c].is_nan()
            };
            ck.ensure(!sm[c].is_finite() && si[c].is_nan() && r_ok, || {
                format!(
                    "poisoned channel {c}: mean {}, invstd {}, r {} (want non-finite, NaN, {})",
                    sm[c],
                    si[c],
                    r[c],
                    if rmax == 1.0 { "1" } else { "NaN" }
                )
            });
            ck.ensure(!rm[c].is_finite() && !rv[c].is_finite(), || {
                format!("poisoned channel {c}: running stats {} {}", rm[c], rv[c])
            });
            for i in channel_indices(&shape, c) {
                ck.ensure(y[i].is_nan(), || {
                    format!("poisoned channel {c}: y[{i}] = {:e} is not NaN", y[i])
                });
            }
            continue;
        }
        let s = &rf.train.stats[c];
        let invstd = rf.train.invstd[c];
        ck.close("saved.mean", c, sm[c] as f64, s.mean, tol::mean(s));
        ck.close(
            "saved.invstd",
            c,
            si[c] as f64,
            invstd,
            tol::invstd(s, case.eps),
        );

        let t_ratio = tol::renorm_ratio(s, case.eps, rf.ratio[c]);
        let t_r = tol::clipped(rf.ratio[c], t_ratio, 1.0 / rmax, rmax);
        let t_dev = tol::renorm_dev(s, rf.sigma[c], rf.dev[c]);
        let t_d = tol::clipped(rf.dev[c], t_dev, -dmax, dmax);
        let f32_rounding = |v: f64| tol::EPS32 * v.abs();
        ck.close(
            "saved.r",
            c,
            r[c] as f64,
            rf.r[c],
            t_r + f32_rounding(rf.r[c]),
        );
        ck.close(
            "saved.d",
            c,
            d[c] as f64,
            rf.d[c],
            t_d + f32_rounding(rf.d[c]),
        );
        // Within the limits (1/rmax up to its f32 rounding; rmax and dmax are f32).
        let rc = r[c] as f64;
        ck.ensure(rc >= (1.0 - tol::EPS32) / rmax && rc <= rmax, || {
            format!("saved.r[{c}] = {rc} outside [1/rmax, rmax]")
        });
        ck.ensure((d[c] as f64).abs() <= dmax, || {
            format!("saved.d[{c}] = {} outside ±dmax", d[c])
        });

        let (g, b) = (gamma_of(gamma.as_deref(), c), beta_of(beta.as_deref(), c));
        for i in channel_indices(&shape, c) {
            let dev = x[i] as f64 - s.mean;
            let t = tol::renorm_y(
                dev,
                s,
                case.eps,
                g,
                invstd,
                (rf.r[c], t_r),
                (rf.d[c], t_d),
                b,
                rf.y[i],
            );
            ck.close("y", i, y[i] as f64, rf.y[i], t);
        }

        let (nrm, nrv) = rf.train.running.as_ref().unwrap();
        let (f, k) = (momentum.factor(), momentum.correction);
        ck.close(
            "running_mean",
            c,
            rm[c] as f64,
            nrm[c],
            tol::running(rm0[c] as f64, s.mean, f, tol::mean(s)),
        );
        ck.close(
            "running_var",
            c,
            rv[c] as f64,
            nrv[c],
            tol::running(rv0[c] as f64, s.batch_var(k), f, tol::batch_var(s, k)),
        );
    }
    ck.finish();

    let again = run_train(&bn, &x, shape, Some(rn), stats0, momentum);
    for (name, a, b) in [
        ("y", &again.y, &out.y),
        ("saved.r", &again.r, &out.r),
        ("saved.d", &again.d, &out.d),
    ] {
        assert_same_bits(&format!("{what}: {name} run twice"), a.inner(), b.inner());
    }
}

#[test]
fn train_renorm_matches_oracle() {
    run(
        "train_renorm",
        192,
        (case(), renorm(), momentum()),
        |(case, rn, momentum)| check_train_renorm(&case, rn, momentum, &[]),
    );
}

#[test]
fn train_renorm_non_finite_input_poisons_only_its_channel() {
    run(
        "train_renorm non-finite",
        64,
        (case(), renorm(), momentum(), poison()),
        |(case, rn, momentum, poison)| check_train_renorm(&case, rn, momentum, &poison),
    );
}

// ----------------------------------------------------------------------------------
// backward_renorm
// ----------------------------------------------------------------------------------

struct GradsOut {
    dx: Guarded,
    dgamma: Option<Guarded>,
    dbeta: Option<Guarded>,
}

/// `backward_renorm` from `saved` (or, with `saved` None, plain `backward` from
/// `plain_stats`) on guarded buffers.
fn call_backward(
    bn: &BatchNorm,
    dy: &[f32],
    x: &[f32],
    shape: Shape,
    saved: Option<&mut Out>,
    plain_stats: (&[f32], &[f32]),
    want: (bool, bool),
) -> Result<GradsOut, Error> {
    let cs = shape.channels;
    let mut dx = Guarded::sentinel(x.len());
    let mut dgamma = want.0.then(|| Guarded::sentinel(cs));
    let mut dbeta = want.1.then(|| Guarded::sentinel(cs));
    let grads = Grads {
        dx: dx.inner_mut(),
        dgamma: dgamma.as_mut().map(|g| g.inner_mut()),
        dbeta: dbeta.as_mut().map(|g| g.inner_mut()),
    };
    match saved {
        Some(o) => bn.backward_renorm(x, dy, shape, o.saved().as_saved(), grads)?,
        None => {
            let saved = Saved {
                mean: plain_stats.0,
                invstd: plain_stats.1,
            };
            bn.backward(x, dy, shape, saved, grads)?
        }
    }
    dx.assert_written("dx");
    for (name, g) in [("dgamma", &dgamma), ("dbeta", &dbeta)] {
        if let Some(g) = g {
            g.assert_written(name);
        }
    }
    Ok(GradsOut { dx, dgamma, dbeta })
}

/// The forward with eps > 0 (a finite invstd in constant channels).
fn forward_for_backward(case: &Case, rn: Renorm) -> (Case, Out) {
    let case = Case {
        eps: if case.eps > 0.0 { case.eps } else { 1e-5 },
        ..case.clone()
    };
    let (gamma, beta) = case.affine();
    let (rm0, rv0) = case.running_before();
    let x = case.x();
    let out = run_train(
        &case.bn(&gamma, &beta),
        &x,
        case.shape,
        Some(rn),
        (&rm0, &rv0),
        Update::PYTORCH,
    );
    (case, out)
}

fn check_backward_renorm(case: &Case, rn: Renorm, want: (bool, bool)) {
    if per_channel(&case.shape) < 2 {
        return; // no train_renorm to take the saved values from (m < 2 is an error)
    }
    let (case, mut saved) = forward_for_backward(case, rn);
    saved.result.unwrap();
    let shape = case.shape;
    let (x, dy) = (case.x(), case.dy());
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let what = format!("backward_renorm {rn:?} want={want:?} {}", case.summary());
    let none: (&[f32], &[f32]) = (&[], &[]);
    let out = call_backward(&bn, &dy, &x, shape, Some(&mut saved), none, want)
        .unwrap_or_else(|e| panic!("{what}: failed with {e:?}"));

    let (sm, si) = (saved.mean.inner(), saved.invstd.inner());
    let (r, d) = (saved.r.inner(), saved.d.inner());
    let rf = ref_backward_renorm(&dy, &x, &shape, gamma.as_deref(), sm, si, r, d);
    let t = tol::backward(&rf.bn, &dy, &shape);
    let mut ck = Checker::new(what.clone());
    for c in 0..shape.channels {
        let (rc, dc) = (r[c] as f64, d[c] as f64);
        let t_dgamma = rc.abs() * t.dgamma[c]
            + dc.abs() * t.dbeta[c]
            + tol::elementwise(&[rc * rf.bn.dgamma[c], dc * rf.bn.dbeta[c]]);
        if let Some(dg) = &out.dgamma {
            ck.close("dgamma", c, dg.inner()[c] as f64, rf.dgamma[c], t_dgamma);
        }
        if let Some(db) = &out.dbeta {
            ck.close("dbeta", c, db.inner()[c] as f64, rf.dbeta[c], t.dbeta[c]);
        }
        for i in channel_indices(&shape, c) {
            ck.close(
                "dx",
                i,
                out.dx.inner()[i] as f64,
                rf.dx[i],
                rc.abs() * t.dx[i],
            );
        }
    }
    ck.finish();

    let again = call_backward(&bn, &dy, &x, shape, Some(&mut saved), none, want).unwrap();
    assert_same_bits(
        &format!("{what}: dx run twice"),
        again.dx.inner(),
        out.dx.inner(),
    );
    for (name, a, b) in [
        ("dgamma", &again.dgamma, &out.dgamma),
        ("dbeta", &again.dbeta, &out.dbeta),
    ] {
        if let (Some(a), Some(b)) = (a, b) {
            assert_same_bits(&format!("{what}: {name} run twice"), a.inner(), b.inner());
        }
    }
    let other = call_backward(
        &bn,
        &dy,
        &x,
        shape,
        Some(&mut saved),
        none,
        (!want.0, !want.1),
    )
    .unwrap();
    assert_same_bits(
        &format!("{what}: dx with and without dgamma/dbeta"),
        other.dx.inner(),
        out.dx.inner(),
    );
}

#[test]
fn backward_renorm_matches_oracle() {
    run(
        "backward_renorm",
        192,
        (case(), renorm(), (any::<bool>(), any::<bool>())),
        |(case, rn, want)| check_backward_renorm(&case, rn, want),
    );
}

// ----------------------------------------------------------------------------------
// rmax = 1, dmax = 0: plain batch norm
// ----------------------------------------------------------------------------------

/// With rmax = 1 and dmax = 0, r = 1 and d = 0, and train_renorm + backward_renorm must
/// be train + backward bit for bit (y, saved statistics, running statistics, dx, dγ, dβ).
fn check_plain(case: &Case, momentum: Update, want: (bool, bool)) {
    let shape = case.shape;
    if per_channel(&shape) < momentum.needed() {
        return;
    }
    let x = case.x();
    let dy = case.dy();
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let (rm0, rv0) = case.running_before();
    let stats0 = (&rm0[..], &rv0[..]);
    let rn = Renorm {
        rmax: 1.0,
        dmax: 0.0,
    };
    let what = format!("rmax = 1, dmax = 0 vs train {}", case.summary());
    let mut renorm = run_train(&bn, &x, shape, Some(rn), stats0, momentum);
    let plain = run_train(&bn, &x, shape, None, stats0, momentum);
    renorm.result.unwrap();
    plain.result.unwrap();
    for (name, a, b) in [
        ("y", &renorm.y, &plain.y),
        ("mean", &renorm.mean, &plain.mean),
        ("invstd", &renorm.invstd, &plain.invstd),
        ("running_mean", &renorm.running_mean, &plain.running_mean),
        ("running_var", &renorm.running_var, &plain.running_var),
    ] {
        assert_same_bits(&format!("{what}: {name}"), a.inner(), b.inner());
    }
    assert!(
        renorm.r.inner().iter().all(|&v| v == 1.0),
        "{what}: r = {:?}",
        renorm.r.inner()
    );
    assert!(
        renorm.d.inner().iter().all(|&v| v == 0.0),
        "{what}: d = {:?}",
        renorm.d.inner()
    );

    let (sm, si) = (plain.mean.inner().to_vec(), plain.invstd.inner().to_vec());
    let a = call_backward(&bn, &dy, &x, shape, Some(&mut renorm), (&[], &[]), want).unwrap();
    let b = call_backward(&bn, &dy, &x, shape, None, (&sm, &si), want).unwrap();
    assert_same_bits(&format!("{what}: dx"), a.dx.inner(), b.dx.inner());
    for (name, p, q) in [
        ("dgamma", &a.dgamma, &b.dgamma),
        ("dbeta", &a.dbeta, &b.dbeta),
    ] {
        if let (Some(p), Some(q)) = (p, q) {
            assert_same_bits(&format!("{what}: {name}"), p.inner(), q.inner());
        }
    }
}

#[test]
fn rmax_one_dmax_zero_is_train_and_backward_bit_for_bit() {
    run(
        "rmax = 1, dmax = 0 = batch norm",
        96,
        (case(), momentum(), (any::<bool>(), any::<bool>())),
        |(case, momentum, want)| check_plain(&case, momentum, want),
    );
}

// ----------------------------------------------------------------------------------
// Errors: the right `Error`, and nothing written
// ----------------------------------------------------------------------------------

const SHAPES: [Shape; 3] = [
    Shape::channels_first(2, 3, 7),
    Shape::channels_last(3, 17, 1),
    Shape::channels_last(2, 1, 49),
];

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.gauss() as f32).collect()
}

/// `train_renorm` on guarded buffers of the right lengths except `saved.<off.0>`,
/// whose length is `off.1`.
fn train_renorm_with(
    shape: Shape,
    rn: Renorm,
    off: Option<(&str, usize)>,
) -> (Result<(), Error>, Out, Vec<f32>, Vec<f32>) {
    let (n, cs) = (numel(&shape), shape.channels);
    let gamma = vec![1.5f32; cs];
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: Some(&gamma),
        beta: None,
    };
    let x = data(n, 7);
    let (rm0, rv0) = (vec![0.5f32; cs], vec![2.0f32; cs]);
    let mut o = Out::new(n, cs, (&rm0, &rv0));
    let len = |name: &str| match off {
        Some((o, l)) if o == name => l,
        _ => cs,
    };
    o.mean = Guarded::sentinel(len("mean"));
    o.invstd = Guarded::sentinel(len("invstd"));
    o.r = Guarded::sentinel(len("r"));
    o.d = Guarded::sentinel(len("d"));
    let mut y = std::mem::replace(&mut o.y, Guarded::sentinel(0));
    let mut rm = std::mem::replace(&mut o.running_mean, Guarded::sentinel(0));
    let mut rv = std::mem::replace(&mut o.running_var, Guarded::sentinel(0));
    let mut running = Running::new(rm.inner_mut(), rv.inner_mut(), Momentum::Exponential(0.1));
    let result = bn.train_renorm(&x, y.inner_mut(), shape, rn, o.saved(), &mut running);
    o.y = y;
    o.running_mean = rm;
    o.running_var = rv;
    (result, o, rm0, rv0)
}

const RELAXED: Renorm = Renorm {
    rmax: 3.0,
    dmax: 5.0,
};

#[test]
fn train_renorm_with_wrong_length_of_saved_r_or_d_is_a_length_error_and_writes_nothing() {
    for shape in SHAPES {
        let cs = shape.channels;
        for (name, arg) in [("r", "saved.r"), ("d", "saved.d")] {
            for len in [cs - 1, cs + 1, 0].into_iter().filter(|&l| l != cs) {
                let (result, o, rm0, rv0) = train_renorm_with(shape, RELAXED, Some((name, len)));
                let what = format!("{shape:?}: {arg} of length {len}");
                assert_eq!(
                    result,
                    Err(Error::Length {
                        arg,
                        expected: cs,
                        actual: len
                    }),
                    "{what}"
                );
                o.assert_nothing_written(&what, &rm0, &rv0);
            }
        }
    }
}

/// src/renorm.rs documents the saved statistics of `train_renorm` as `"saved.mean"` and
/// `"saved.invstd"` (as `backward_renorm` names them); `train_renorm` reports
/// `"save_mean"` and `"save_invstd"`, the names of `train`'s arguments.
#[test]
fn train_renorm_with_wrong_length_of_saved_mean_or_invstd_names_it_as_documented() {
    let shape = Shape::channels_first(2, 3, 7);
    for (name, arg) in [("mean", "saved.mean"), ("invstd", "saved.invstd")] {
        let (result, o, rm0, rv0) = train_renorm_with(shape, RELAXED, Some((name, 2)));
        assert_eq!(
            result,
            Err(Error::Length {
                arg,
                expected: 3,
                actual: 2
            })
        );
        o.assert_nothing_written(arg, &rm0, &rv0);
    }
}

#[test]
fn rmax_below_one_or_nan_and_dmax_below_zero_or_nan_are_parameter_errors() {
    let shape = SHAPES[0];
    let bad_rmax = [0.999_999_94f32, 0.5, 0.0, -1.0, f32::NEG_INFINITY, f32::NAN];
    let bad_dmax = [-1e-30f32, -0.5, f32::NEG_INFINITY, f32::NAN];
    let cases = bad_rmax
        .iter()
        .map(|&v| ("rmax", v, Renorm { rmax: v, dmax: 1.0 }))
        .chain(
            bad_dmax
                .iter()
                .map(|&v| ("dmax", v, Renorm { rmax: 2.0, dmax: v })),
        );
    for (arg, v, rn) in cases {
        let (result, o, rm0, rv0) = train_renorm_with(shape, rn, None);
        let what = format!("{rn:?}");
        match result {
            Err(Error::Parameter { arg: a, value }) => {
                assert_eq!(a, arg, "{what}");
                assert_eq!(value.to_bits(), v.to_bits(), "{what}");
            }
            other => panic!("{what}: {other:?}, expected Parameter for {arg}"),
        }
        o.assert_nothing_written(&what, &rm0, &rv0);
    }
    // The limits themselves, no limit at all, and −0 are fine.
    for (rmax, dmax) in [
        (1.0, 0.0),
        (1.0, -0.0),
        (f32::INFINITY, f32::INFINITY),
        (1.0, f32::INFINITY),
    ] {
        let (result, o, _, _) = train_renorm_with(shape, Renorm { rmax, dmax }, None);
        assert_eq!(result, Ok(()), "rmax {rmax}, dmax {dmax}");
        o.y.assert_written("y");
    }
}

#[test]
fn train_renorm_with_fewer_than_two_values_per_channel_is_an_error() {
    for shape in [
        Shape::rows(1, 5),
        Shape::channels_last(1, 3, 1),
        Shape::channels_first(0, 2, 4),
    ] {
        let (result, o, rm0, rv0) = train_renorm_with(shape, RELAXED, None);
        assert_eq!(
            result,
            Err(Error::TooFewValues {
                needed: 2,
                actual: per_channel(&shape)
            }),
            "{shape:?}"
        );
        o.assert_nothing_written(&format!("{shape:?}"), &rm0, &rv0);
    }
}

#[test]
fn backward_renorm_with_wrong_length_of_saved_values_is_a_length_error_and_writes_nothing() {
    for shape in SHAPES {
        let (n, cs) = (numel(&shape), shape.channels);
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: None,
            beta: None,
        };
        let (x, dy) = (data(n, 8), data(n, 9));
        for arg in ["saved.mean", "saved.invstd", "saved.r", "saved.d"] {
            for len in [cs - 1, cs + 1].into_iter().filter(|&l| l != cs) {
                let l = |a: &str| if a == arg { len } else { cs };
                let (mean, invstd) = (vec![0.5f32; l("saved.mean")], vec![1.0; l("saved.invstd")]);
                let (r, d) = (vec![1.5f32; l("saved.r")], vec![0.25; l("saved.d")]);
                let saved = RenormSaved {
                    mean: &mean,
                    invstd: &invstd,
                    r: &r,
                    d: &d,
                };
                let mut dx = Guarded::sentinel(n);
                let (mut dg, mut db) = (Guarded::sentinel(cs), Guarded::sentinel(cs));
                let grads = Grads {
                    dx: dx.inner_mut(),
                    dgamma: Some(dg.inner_mut()),
                    dbeta: Some(db.inner_mut()),
                };
                let result = bn.backward_renorm(&x, &dy, shape, saved, grads);
                assert_eq!(
                    result,
                    Err(Error::Length {
                        arg,
                        expected: cs,
                        actual: len
                    }),
                    "{shape:?}: {arg} of length {len}"
                );
                dx.assert_untouched("dx");
                dg.assert_untouched("dgamma");
                db.assert_untouched("dbeta");
            }
        }
    }
}

/// src/renorm.rs: "With rmax = 1 and dmax = 0, r = 1 and d = 0: plain batch norm". Not
/// when σ = √(running_var + eps) is 0 and the batch mean equals the running mean: then
/// (μ_B − μ)/σ = 0/0 and the clip keeps the NaN, so d and all of y are NaN, while train
/// gives [−1, 1]. (σ = 0 needs eps = 0 and a running variance of 0, which the crate
/// accepts.)
#[test]
fn rmax_one_dmax_zero_is_batch_norm_also_with_zero_running_variance() {
    let bn = BatchNorm {
        eps: 0.0,
        gamma: None,
        beta: None,
    };
    let x = [1.0f32, 3.0];
    let (mut y, mut mean, mut invstd, mut r, mut d) = ([0.0; 2], [0.0], [0.0], [0.0], [0.0]);
    let (mut rm, mut rv) = ([2.0], [0.0]);
    let saved = RenormSavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
        r: &mut r,
        d: &mut d,
    };
    let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(0.1));
    let rn = Renorm {
        rmax: 1.0,
        dmax: 0.0,
    };
    bn.train_renorm(&x, &mut y, Shape::rows(2, 1), rn, saved, &mut running)
        .unwrap();
    assert_eq!((r, d), ([1.0], [0.0]));
    assert_eq!(y, [-1.0, 1.0]);
}
