//! Property tests of batch norm fused with ReLU and with Add + ReLU (`eval_fused`,
//! `train_fused`, `backward_fused`, `backward_eval_fused`) against the f64 oracle in
//! `common` (`ref_fuse`, `ref_relu_grad` on top of `ref_eval`, `ref_train`,
//! `ref_backward`, `ref_backward_eval`) under its tolerance model (`common::tol`: relu
//! is 1-Lipschitz, so y gets the pre-activation's bound; the backward's mask comes
//! from the `y` it is given, as in PyTorch, so it is exact).
//!
//! Cases are drawn by `common/cases.rs` (odd shapes, both layouts, offsets up to 1e4,
//! constant channels, γ/β present or absent). Every output starts as a sentinel NaN
//! with guard cells (`common::Guarded`): an element never written, or written out of
//! range, fails; every y must be NaN, ±0 or positive. Each property also
//! runs the same input twice and wants the same bits.
//!
//! Properties (cases per run; `PROPTEST_CASES=n` overrides each; `--nocapture` prints
//! them): eval_fused 160, eval_fused with NaN/±inf in x and z 64, train_fused 160,
//! train_fused with NaN/±inf 64, AddRelu with z = 0 64, backward_fused 160,
//! backward_eval_fused 160, backward through an all-positive y = plain backward
//! 64 — **896 in total**. Errors (wrong length of z, y, dz) are fixed cases at the end.

#[path = "common/cases.rs"]
mod cases;
mod common;

use batchnorm::{
    BatchNorm, Error, Fusion, FusionGrad, Grads, Momentum, Running, RunningStats, Saved, SavedMut,
    Shape,
};
use cases::*;
use common::Rng;
use common::*;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Relu,
    AddRelu,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Relu), Just(Kind::AddRelu)]
}

/// What z is for BN + Add + ReLU.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Residual {
    /// `Case::z`.
    Drawn,
    /// All +0.
    Zero,
}

fn fusion<'a>(kind: Kind, z: &'a [f32]) -> Fusion<'a> {
    match kind {
        Kind::Relu => Fusion::Relu,
        Kind::AddRelu => Fusion::AddRelu { z },
    }
}

/// Every y of a fused forward is NaN, ±0 or positive: never negative.
fn check_relu_range(ck: &mut Checker, y: &[f32]) {
    for (i, &v) in y.iter().enumerate() {
        ck.ensure(v.is_nan() || v >= 0.0, || {
            format!(
                "y[{i}] = {v:e} ({:#010x}): relu's output is NaN or ≥ 0",
                v.to_bits()
            )
        });
    }
}

/// x and z of a forward case, poisoned where asked.
fn inputs(
    case: &Case,
    residual: Residual,
    poison_x: &[(u64, usize)],
    poison_z: &[(u64, usize)],
) -> (Vec<f32>, Vec<bool>, Vec<f32>) {
    let mut x = case.x();
    let poisoned = apply_poison(&mut x, &case.shape, poison_x);
    let mut z = match residual {
        Residual::Drawn => case.z(),
        Residual::Zero => vec![0.0; x.len()],
    };
    apply_poison(&mut z, &case.shape, poison_z);
    (x, poisoned, z)
}

// ----------------------------------------------------------------------------------
// eval_fused
// ----------------------------------------------------------------------------------

fn check_eval_fused(
    case: &Case,
    kind: Kind,
    residual: Residual,
    poison_x: &[(u64, usize)],
    poison_z: &[(u64, usize)],
) {
    let shape = case.shape;
    let (x, _, z) = inputs(case, residual, poison_x, poison_z);
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let (rm, rv) = case.running_for_eval();
    let what = format!("eval_fused {kind:?} {}", case.summary());

    let mut y = Guarded::sentinel(x.len());
    let stats = RunningStats {
        mean: &rm,
        var: &rv,
    };
    if let Err(e) = bn.eval_fused(&x, y.inner_mut(), shape, fusion(kind, &z), stats) {
        panic!("{what}: failed with {e:?}");
    }
    y.assert_written("y");

    let bn_ref = ref_eval(
        &x,
        &shape,
        gamma.as_deref(),
        beta.as_deref(),
        &rm,
        &rv,
        case.eps,
    );
    let f = ref_fuse(&bn_ref, (kind == Kind::AddRelu).then_some(&z[..]));
    let mut ck = Checker::new(what.clone());
    for c in 0..shape.channels {
        let scale = gamma_of(gamma.as_deref(), c) / (rv[c] as f64 + case.eps as f64).sqrt();
        let b = beta_of(beta.as_deref(), c);
        for i in channel_indices(&shape, c) {
            let mut t = tol::eval_y(x[i] as f64, scale, rm[c] as f64, b, bn_ref[i]);
            if kind == Kind::AddRelu {
                t += tol::add(f.pre[i]);
            }
            ck.close("y", i, y.inner()[i] as f64, f.y[i], tol::relu(f.pre[i], t));
        }
    }
    check_relu_range(&mut ck, y.inner());
    ck.finish();

    let mut again = Guarded::sentinel(x.len());
    bn.eval_fused(&x, again.inner_mut(), shape, fusion(kind, &z), stats)
        .unwrap();
    assert_same_bits(&format!("{what}: run twice"), again.inner(), y.inner());
}

#[test]
fn eval_fused_matches_oracle() {
    run("eval_fused", 160, (case(), kind()), |(case, kind)| {
        check_eval_fused(&case, kind, Residual::Drawn, &[], &[])
    });
}

#[test]
fn eval_fused_non_finite_input_affects_only_its_element() {
    run(
        "eval_fused non-finite",
        64,
        (case(), kind(), poison(), poison()),
        |(case, kind, px, pz)| check_eval_fused(&case, kind, Residual::Drawn, &px, &pz),
    );
}

// ----------------------------------------------------------------------------------
// train_fused
// ----------------------------------------------------------------------------------

struct TrainOut {
    result: Result<(), Error>,
    y: Guarded,
    save_mean: Guarded,
    save_invstd: Guarded,
    running_mean: Guarded,
    running_var: Guarded,
}

/// `train_fused` with `fusion`, or plain `train` when `fusion` is None, on guarded
/// buffers.
fn run_train(
    bn: &BatchNorm,
    x: &[f32],
    shape: Shape,
    fusion: Option<Fusion<'_>>,
    (rm0, rv0): (&[f32], &[f32]),
    momentum: Option<Update>,
) -> TrainOut {
    let cs = shape.channels;
    let mut y = Guarded::sentinel(x.len());
    let mut save_mean = Guarded::sentinel(cs);
    let mut save_invstd = Guarded::sentinel(cs);
    let mut running_mean = Guarded::from(rm0);
    let mut running_var = Guarded::from(rv0);
    let mut running =
        momentum.map(|u| u.running(running_mean.inner_mut(), running_var.inner_mut()));
    let saved = SavedMut {
        mean: save_mean.inner_mut(),
        invstd: save_invstd.inner_mut(),
    };
    let result = match fusion {
        Some(f) => bn.train_fused(x, y.inner_mut(), shape, f, saved, running.as_mut()),
        None => bn.train(x, y.inner_mut(), shape, saved, running.as_mut()),
    };
    let counted = momentum.map(|u| u.counted(result.is_ok()));
    assert_eq!(
        running.map(|r| r.batches_tracked),
        counted,
        "batches_tracked"
    );
    TrainOut {
        result,
        y,
        save_mean,
        save_invstd,
        running_mean,
        running_var,
    }
}

fn check_train_fused(
    case: &Case,
    kind: Kind,
    momentum: Option<Update>,
    residual: Residual,
    poison_x: &[(u64, usize)],
    poison_z: &[(u64, usize)],
) {
    let shape = case.shape;
    let m = per_channel(&shape);
    let (x, poisoned, z) = inputs(case, residual, poison_x, poison_z);
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let (rm0, rv0) = case.running_before();
    let what = format!(
        "train_fused {kind:?} momentum={momentum:?} {}",
        case.summary()
    );
    let stats0 = (&rm0[..], &rv0[..]);

    let out = run_train(&bn, &x, shape, Some(fusion(kind, &z)), stats0, momentum);
    if let Some(needed) = momentum.map(|u| u.needed()).filter(|&n| m < n) {
        assert_eq!(
            out.result,
            Err(Error::TooFewValues { needed, actual: m }),
            "{what}"
        );
        out.y.assert_untouched("y");
        out.save_mean.assert_untouched("save_mean");
        out.save_invstd.assert_untouched("save_invstd");
        out.running_mean.assert_holds("running_mean", &rm0);
        out.running_var.assert_holds("running_var", &rv0);
        return;
    }
    if let Err(e) = out.result {
        panic!("{what}: failed with {e:?}");
    }
    out.y.assert_written("y");
    out.save_mean.assert_written("save_mean");
    out.save_invstd.assert_written("save_invstd");
    out.running_mean.assert_guards("running_mean");
    out.running_var.assert_guards("running_var");

    // The statistics are train's (tests/kernels.rs holds those to the oracle): the
    // same bits, running statistics included.
    let plain = run_train(&bn, &x, shape, None, stats0, momentum);
    plain.result.unwrap();
    for (name, a, b) in [
        ("save_mean", &out.save_mean, &plain.save_mean),
        ("save_invstd", &out.save_invstd, &plain.save_invstd),
        ("running_mean", &out.running_mean, &plain.running_mean),
        ("running_var", &out.running_var, &plain.running_var),
    ] {
        assert_same_bits(&format!("{what}: {name} vs train"), a.inner(), b.inner());
    }

    let r = ref_train(
        &x,
        &shape,
        gamma.as_deref(),
        beta.as_deref(),
        case.eps,
        None,
    );
    let f = ref_fuse(&r.y, (kind == Kind::AddRelu).then_some(&z[..]));
    let y = out.y.inner();
    let mut ck = Checker::new(what.clone());
    for (c, &hit) in poisoned.iter().enumerate() {
        if hit {
            // NaN statistics: the whole channel is NaN, whatever z holds.
            for i in channel_indices(&shape, c) {
                ck.ensure(y[i].is_nan(), || {
                    format!("poisoned channel {c}: y[{i}] = {:e} is not NaN", y[i])
                });
            }
            continue;
        }
        let s = &r.stats[c];
        let (g, b) = (gamma_of(gamma.as_deref(), c), beta_of(beta.as_deref(), c));
        for i in channel_indices(&shape, c) {
            let dev = x[i] as f64 - s.mean;
            let mut t = tol::train_y(dev, s, case.eps, g, r.invstd[c], b, r.y[i]);
            if kind == Kind::AddRelu {
                t += tol::add(f.pre[i]);
            }
            ck.close("y", i, y[i] as f64, f.y[i], tol::relu(f.pre[i], t));
        }
    }
    check_relu_range(&mut ck, y);
    ck.finish();

    let again = run_train(&bn, &x, shape, Some(fusion(kind, &z)), stats0, momentum);
    assert_same_bits(&format!("{what}: run twice"), again.y.inner(), y);
}

fn optional_momentum() -> impl Strategy<Value = Option<Update>> {
    prop_oneof![Just(None), momentum().prop_map(Some)]
}

#[test]
fn train_fused_matches_oracle() {
    run(
        "train_fused",
        160,
        (case(), kind(), optional_momentum()),
        |(case, kind, momentum)| {
            check_train_fused(&case, kind, momentum, Residual::Drawn, &[], &[])
        },
    );
}

#[test]
fn train_fused_non_finite_x_poisons_its_channel_and_z_its_element() {
    run(
        "train_fused non-finite",
        64,
        (case(), kind(), optional_momentum(), poison(), poison()),
        |(case, kind, momentum, px, pz)| {
            check_train_fused(&case, kind, momentum, Residual::Drawn, &px, &pz)
        },
    );
}

/// relu(bn + 0) against the oracle, train and eval (not required to be bit-identical
/// to `Fusion::Relu`, only as accurate).
#[test]
fn add_relu_with_zero_residual_matches_oracle() {
    run(
        "AddRelu with z = 0",
        64,
        (case(), optional_momentum()),
        |(case, momentum)| {
            check_eval_fused(&case, Kind::AddRelu, Residual::Zero, &[], &[]);
            check_train_fused(&case, Kind::AddRelu, momentum, Residual::Zero, &[], &[]);
        },
    );
}

// ----------------------------------------------------------------------------------
// backward_fused, backward_eval_fused
// ----------------------------------------------------------------------------------

struct GradsOut {
    dx: Guarded,
    dgamma: Option<Guarded>,
    dbeta: Option<Guarded>,
    dz: Option<Guarded>,
}

/// What a backward call is given besides dy and x: the fused forward's `y` (None: a
/// plain, unfused backward) and the statistics (saved, or running in eval mode).
struct BackwardInputs<'a> {
    eval_mode: bool,
    y: Option<&'a [f32]>,
    kind: Kind,
    stats: (&'a [f32], &'a [f32]),
}

fn call_backward(
    bn: &BatchNorm,
    dy: &[f32],
    x: &[f32],
    shape: Shape,
    inp: &BackwardInputs<'_>,
    want: (bool, bool),
) -> Result<GradsOut, Error> {
    let cs = shape.channels;
    let mut dx = Guarded::sentinel(x.len());
    let mut dgamma = want.0.then(|| Guarded::sentinel(cs));
    let mut dbeta = want.1.then(|| Guarded::sentinel(cs));
    let mut dz = (inp.y.is_some() && inp.kind == Kind::AddRelu).then(|| Guarded::sentinel(x.len()));
    let grads = Grads {
        dx: dx.inner_mut(),
        dgamma: dgamma.as_mut().map(|g| g.inner_mut()),
        dbeta: dbeta.as_mut().map(|g| g.inner_mut()),
    };
    let (s0, s1) = inp.stats;
    let (stats, saved) = (
        RunningStats { mean: s0, var: s1 },
        Saved {
            mean: s0,
            invstd: s1,
        },
    );
    match inp.y {
        Some(y) => {
            let through = match &mut dz {
                Some(dz) => FusionGrad::AddRelu { dz: dz.inner_mut() },
                None => FusionGrad::Relu,
            };
            if inp.eval_mode {
                bn.backward_eval_fused(x, dy, y, shape, through, stats, grads)?
            } else {
                bn.backward_fused(x, dy, y, shape, through, saved, grads)?
            }
        }
        None if inp.eval_mode => bn.backward_eval(x, dy, shape, stats, grads)?,
        None => bn.backward(x, dy, shape, saved, grads)?,
    }
    dx.assert_written("dx");
    for (name, g) in [("dgamma", &dgamma), ("dbeta", &dbeta), ("dz", &dz)] {
        if let Some(g) = g {
            g.assert_written(name);
        }
    }
    Ok(GradsOut {
        dx,
        dgamma,
        dbeta,
        dz,
    })
}

/// Values written into y before the backward (it takes y as given, any f32): both
/// zeros, the smallest subnormals of both signs, the smallest normal, ±inf. No NaN:
/// there PyTorch's mask and the crate's differ (see `common::ref_relu_grad`).
const Y_SPECIALS: [f32; 7] = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    f32::MIN_POSITIVE,
    f32::INFINITY,
    f32::NEG_INFINITY,
];

fn y_specials() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((any::<u64>(), 0..Y_SPECIALS.len()), 0..=4)
}

/// The forward whose y the backward gets: `train_fused` (its saved statistics) or
/// `eval_fused` (the running statistics), on the case's x and z.
fn forward_for_backward(
    case: &Case,
    kind: Kind,
    eval_mode: bool,
    x: &[f32],
    z: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let shape = case.shape;
    let mut y = vec![0.0; x.len()];
    if eval_mode {
        let (rm, rv) = case.running_for_eval();
        let stats = RunningStats {
            mean: &rm,
            var: &rv,
        };
        bn.eval_fused(x, &mut y, shape, fusion(kind, z), stats)
            .unwrap();
        (y, rm, rv)
    } else {
        let cs = shape.channels;
        let (mut sm, mut si) = (vec![0.0; cs], vec![0.0; cs]);
        let saved = SavedMut {
            mean: &mut sm,
            invstd: &mut si,
        };
        bn.train_fused(x, &mut y, shape, fusion(kind, z), saved, None)
            .unwrap();
        (y, sm, si)
    }
}

fn check_backward_fused(
    case: &Case,
    kind: Kind,
    eval_mode: bool,
    want: (bool, bool),
    specials: &[(u64, usize)],
    poison_dy: &[(u64, usize)],
) {
    let shape = case.shape;
    let x = case.x();
    let z = case.z();
    let mut dy = case.dy();
    apply_poison(&mut dy, &shape, poison_dy);
    let (gamma, beta) = case.affine();
    // Train mode needs a finite invstd in constant channels.
    let eps = if eval_mode || case.eps > 0.0 {
        case.eps
    } else {
        1e-5
    };
    let bn = BatchNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let case = &Case {
        eps,
        ..case.clone()
    };
    let (mut y, s0, s1) = forward_for_backward(case, kind, eval_mode, &x, &z);
    for &(r, k) in specials {
        let i = (r % y.len() as u64) as usize;
        y[i] = Y_SPECIALS[k];
    }
    let inp = BackwardInputs {
        eval_mode,
        y: Some(&y),
        kind,
        stats: (&s0, &s1),
    };
    let what = format!(
        "backward_fused {kind:?} (eval mode: {eval_mode}) want={want:?} {}",
        case.summary()
    );
    let out = call_backward(&bn, &dy, &x, shape, &inp, want)
        .unwrap_or_else(|e| panic!("{what}: failed with {e:?}"));

    // The masked gradient (exact), then the batch-norm oracle on it.
    let g = ref_relu_grad(&dy, &y);
    let gm = gamma.as_deref();
    let (r, t) = if eval_mode {
        let r = ref_backward_eval(&g, &x, &shape, gm, &s0, &s1, eps);
        let t = tol::backward_eval(&r, &g, &x, &shape, &s0, &s1, eps);
        (r, t)
    } else {
        let r = ref_backward(&g, &x, &shape, gm, &s0, &s1);
        let t = tol::backward(&r, &g, &shape);
        (r, t)
    };
    let mut ck = Checker::new(what.clone());
    for c in 0..shape.channels {
        if let Some(dg) = &out.dgamma {
            ck.close("dgamma", c, dg.inner()[c] as f64, r.dgamma[c], t.dgamma[c]);
        }
        if let Some(db) = &out.dbeta {
            ck.close("dbeta", c, db.inner()[c] as f64, r.dbeta[c], t.dbeta[c]);
        }
        for i in channel_indices(&shape, c) {
            ck.close("dx", i, out.dx.inner()[i] as f64, r.dx[i], t.dx[i]);
        }
    }
    ck.finish();
    if let Some(dz) = &out.dz {
        // dz = dy·[y > 0], a selection: bit for bit (masked: +0, even where dy is NaN).
        dz.assert_holds("dz", &g);
    }

    // Same input twice: the same bits; asking for dγ/dβ or not changes neither dx nor dz.
    let again = call_backward(&bn, &dy, &x, shape, &inp, want).unwrap();
    assert_same_bits(
        &format!("{what}: dx run twice"),
        again.dx.inner(),
        out.dx.inner(),
    );
    for (name, a, b) in [
        ("dgamma", &again.dgamma, &out.dgamma),
        ("dbeta", &again.dbeta, &out.dbeta),
        ("dz", &again.dz, &out.dz),
    ] {
        if let (Some(a), Some(b)) = (a, b) {
            assert_same_bits(&format!("{what}: {name} run twice"), a.inner(), b.inner());
        }
    }
    let other = call_backward(&bn, &dy, &x, shape, &inp, (!want.0, !want.1)).unwrap();
    assert_same_bits(
        &format!("{what}: dx with and without dgamma/dbeta"),
        other.dx.inner(),
        out.dx.inner(),
    );
    if let (Some(a), Some(b)) = (&other.dz, &out.dz) {
        assert_same_bits(
            &format!("{what}: dz with and without dgamma/dbeta"),
            a.inner(),
            b.inner(),
        );
    }
}

fn want() -> impl Strategy<Value = (bool, bool)> {
    (any::<bool>(), any::<bool>())
}

/// dy gets NaN/±inf at up to three places half of the time: masked, they must vanish
/// (threshold_backward selects, it does not multiply); unmasked, they propagate as
/// the oracle says.
fn dy_poison() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop_oneof![Just(Vec::new()), poison()]
}

#[test]
fn backward_fused_matches_oracle() {
    run(
        "backward_fused",
        160,
        (case(), kind(), want(), y_specials(), dy_poison()),
        |(case, kind, want, sp, pdy)| check_backward_fused(&case, kind, false, want, &sp, &pdy),
    );
}

#[test]
fn backward_eval_fused_matches_oracle() {
    run(
        "backward_eval_fused",
        160,
        (case(), kind(), want(), y_specials(), dy_poison()),
        |(case, kind, want, sp, pdy)| check_backward_fused(&case, kind, true, want, &sp, &pdy),
    );
}

/// With every y positive the mask passes everything: the fused backward must give
/// the plain backward's dx, dγ and dβ bit for bit, and dz = dy.
fn check_all_positive_is_plain(case: &Case, kind: Kind, eval_mode: bool, want: (bool, bool)) {
    let shape = case.shape;
    let x = case.x();
    let dy = case.dy();
    let mut rng = Rng::new(case.seed ^ 0x9051_7100);
    let y: Vec<f32> = (0..x.len())
        .map(|_| match rng.below(4) {
            0 => 1e-45,
            1 => f32::INFINITY,
            _ => rng.range(1e-3, 1e4) as f32,
        })
        .collect();
    let (gamma, beta) = case.affine();
    let eps = if eval_mode || case.eps > 0.0 {
        case.eps
    } else {
        1e-5
    };
    let bn = BatchNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let (s0, s1): (Vec<f32>, Vec<f32>) = if eval_mode {
        case.running_for_eval()
    } else {
        let st = ref_moments(&x, &shape);
        (
            st.iter().map(|s| s.mean as f32).collect(),
            st.iter()
                .map(|s| (1.0 / (s.var + eps as f64).sqrt()) as f32)
                .collect(),
        )
    };
    let stats = (&s0[..], &s1[..]);
    let what = format!(
        "all-positive y, {kind:?} (eval mode: {eval_mode}) {}",
        case.summary()
    );
    let fused = BackwardInputs {
        eval_mode,
        y: Some(&y),
        kind,
        stats,
    };
    let plain = BackwardInputs { y: None, ..fused };
    let a = call_backward(&bn, &dy, &x, shape, &fused, want).unwrap();
    let b = call_backward(&bn, &dy, &x, shape, &plain, want).unwrap();
    assert_same_bits(&format!("{what}: dx"), a.dx.inner(), b.dx.inner());
    for (name, p, q) in [
        ("dgamma", &a.dgamma, &b.dgamma),
        ("dbeta", &a.dbeta, &b.dbeta),
    ] {
        if let (Some(p), Some(q)) = (p, q) {
            assert_same_bits(&format!("{what}: {name}"), p.inner(), q.inner());
        }
    }
    if let Some(dz) = &a.dz {
        dz.assert_holds("dz = dy", &dy);
    }
}

#[test]
fn backward_through_all_positive_y_is_plain_backward() {
    run(
        "all-positive y = plain backward",
        64,
        (case(), kind(), any::<bool>(), want()),
        |(case, kind, eval_mode, want)| check_all_positive_is_plain(&case, kind, eval_mode, want),
    );
}

// ----------------------------------------------------------------------------------
// Errors: the right `Error`, and nothing written
// ----------------------------------------------------------------------------------

const SHAPES: [Shape; 3] = [
    Shape::channels_first(2, 3, 7),
    Shape::channels_last(3, 17, 1),
    Shape::channels_last(1, 1, 49),
];

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.gauss() as f32).collect()
}

fn lengths(n: usize) -> [usize; 3] {
    [n - 1, n + 1, 0]
}

#[test]
fn forward_with_wrong_length_of_z_or_y_is_a_length_error_and_writes_nothing() {
    let gamma = [1.5f32; 17];
    let beta = [0.25f32; 17];
    for shape in SHAPES {
        let (n, cs) = (numel(&shape), shape.channels);
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: Some(&gamma[..cs]),
            beta: Some(&beta[..cs]),
        };
        let x = data(n, 1);
        let (rm, rv) = (vec![0.5f32; cs], vec![2.0f32; cs]);
        let momentum = Momentum::Exponential(0.1);
        for (arg, len) in lengths(n)
            .map(|l| ("z", l))
            .into_iter()
            .chain(lengths(n).map(|l| ("y", l)))
        {
            let z = data(if arg == "z" { len } else { n }, 2);
            let (ylen, zlen) = if arg == "y" { (len, n) } else { (n, len) };
            let kinds: &[Kind] = if arg == "z" {
                &[Kind::AddRelu]
            } else {
                &[Kind::Relu, Kind::AddRelu]
            };
            for &kind in kinds {
                let expected = Err(Error::Length {
                    arg,
                    expected: n,
                    actual: len,
                });
                let what = format!("{shape:?} {kind:?} {arg} of length {len}");
                assert_eq!(z.len(), zlen);

                let mut y = Guarded::sentinel(ylen);
                let stats = RunningStats {
                    mean: &rm,
                    var: &rv,
                };
                let r = bn.eval_fused(&x, y.inner_mut(), shape, fusion(kind, &z), stats);
                assert_eq!(r, expected, "eval_fused {what}");
                y.assert_untouched("eval_fused y");

                let mut y = Guarded::sentinel(ylen);
                let (mut sm, mut si) = (Guarded::sentinel(cs), Guarded::sentinel(cs));
                let (mut grm, mut grv) = (Guarded::from(&rm), Guarded::from(&rv));
                let mut running = Running::new(grm.inner_mut(), grv.inner_mut(), momentum);
                let saved = SavedMut {
                    mean: sm.inner_mut(),
                    invstd: si.inner_mut(),
                };
                let r = bn.train_fused(
                    &x,
                    y.inner_mut(),
                    shape,
                    fusion(kind, &z),
                    saved,
                    Some(&mut running),
                );
                assert_eq!(r, expected, "train_fused {what}");
                y.assert_untouched("train_fused y");
                sm.assert_untouched("train_fused save_mean");
                si.assert_untouched("train_fused save_invstd");
                grm.assert_holds("train_fused running_mean", &rm);
                grv.assert_holds("train_fused running_var", &rv);
            }
        }
        // The checks of eval/train come first and stay as they were.
        let z = data(n, 2);
        let mut y = Guarded::sentinel(n);
        let stats = RunningStats {
            mean: &rm,
            var: &rv[1..],
        };
        let r = bn.eval_fused(
            &x[1..],
            y.inner_mut(),
            shape,
            Fusion::AddRelu { z: &z },
            stats,
        );
        assert_eq!(
            r,
            Err(Error::Length {
                arg: "running_var",
                expected: cs,
                actual: cs - 1
            })
        );
        y.assert_untouched("y");
        let (mut sm, mut si) = (Guarded::sentinel(cs), Guarded::sentinel(cs));
        let saved = SavedMut {
            mean: sm.inner_mut(),
            invstd: si.inner_mut(),
        };
        let r = bn.train_fused(&x[1..], y.inner_mut(), shape, Fusion::Relu, saved, None);
        assert_eq!(
            r,
            Err(Error::Length {
                arg: "x",
                expected: n,
                actual: n - 1
            })
        );
        y.assert_untouched("y");
        sm.assert_untouched("save_mean");
        si.assert_untouched("save_invstd");
    }
}

#[test]
fn backward_with_wrong_length_of_y_or_dz_is_a_length_error_and_writes_nothing() {
    let gamma = [1.5f32; 17];
    for shape in SHAPES {
        let (n, cs) = (numel(&shape), shape.channels);
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: Some(&gamma[..cs]),
            beta: None,
        };
        let (x, dy) = (data(n, 3), data(n, 4));
        let (s0, s1) = (vec![0.5f32; cs], vec![2.0f32; cs]);
        let cases = lengths(n)
            .map(|l| ("y", l, Kind::Relu))
            .into_iter()
            .chain(lengths(n).map(|l| ("y", l, Kind::AddRelu)))
            .chain(lengths(n).map(|l| ("dz", l, Kind::AddRelu)));
        for (arg, len, kind) in cases {
            let y = data(if arg == "y" { len } else { n }, 5);
            let dz_len = if arg == "dz" { len } else { n };
            for eval_mode in [false, true] {
                let mut dx = Guarded::sentinel(n);
                let (mut dg, mut db) = (Guarded::sentinel(cs), Guarded::sentinel(cs));
                let mut dz = Guarded::sentinel(dz_len);
                let grads = Grads {
                    dx: dx.inner_mut(),
                    dgamma: Some(dg.inner_mut()),
                    dbeta: Some(db.inner_mut()),
                };
                let through = match kind {
                    Kind::Relu => FusionGrad::Relu,
                    Kind::AddRelu => FusionGrad::AddRelu { dz: dz.inner_mut() },
                };
                let r = if eval_mode {
                    let stats = RunningStats {
                        mean: &s0,
                        var: &s1,
                    };
                    bn.backward_eval_fused(&x, &dy, &y, shape, through, stats, grads)
                } else {
                    let saved = Saved {
                        mean: &s0,
                        invstd: &s1,
                    };
                    bn.backward_fused(&x, &dy, &y, shape, through, saved, grads)
                };
                let what = format!("{shape:?} {kind:?} eval mode {eval_mode}: {arg} of {len}");
                assert_eq!(
                    r,
                    Err(Error::Length {
                        arg,
                        expected: n,
                        actual: len
                    }),
                    "{what}"
                );
                dx.assert_untouched("dx");
                dg.assert_untouched("dgamma");
                db.assert_untouched("dbeta");
                dz.assert_untouched("dz");
            }
        }
        // backward's own checks come first: a wrong dx with a wrong dz names dx.
        let mut dx = Guarded::sentinel(n + 1);
        let mut dz = Guarded::sentinel(n - 1);
        let grads = Grads {
            dx: dx.inner_mut(),
            dgamma: None,
            dbeta: None,
        };
        let through = FusionGrad::AddRelu { dz: dz.inner_mut() };
        let saved = Saved {
            mean: &s0,
            invstd: &s1,
        };
        let r = bn.backward_fused(&x, &dy, &dy, shape, through, saved, grads);
        assert_eq!(
            r,
            Err(Error::Length {
                arg: "dx",
                expected: n,
                actual: n + 1
            })
        );
        dx.assert_untouched("dx");
        dz.assert_untouched("dz");
    }
}

/// The fused forward keeps −0 where bn (+ z) is −0, as `torch.relu` does: x = −0 with
/// β = −0 and a running mean of 0 makes the eval pre-activation exactly −0.
#[test]
fn relu_keeps_negative_zero_as_torch_does() {
    let beta = [-0.0f32];
    let bn = BatchNorm {
        eps: 0.0,
        gamma: None,
        beta: Some(&beta),
    };
    for shape in [Shape::rows(37, 1), Shape::channels_first(1, 1, 37)] {
        let x = vec![-0.0f32; 37];
        let z = vec![-0.0f32; 37];
        let mut plain = Guarded::sentinel(37);
        let stats = RunningStats {
            mean: &[0.0],
            var: &[1.0],
        };
        bn.eval(&x, plain.inner_mut(), shape, stats).unwrap();
        assert!(plain.inner().iter().all(|v| v.to_bits() == 0x8000_0000));
        for kind in [Kind::Relu, Kind::AddRelu] {
            let mut y = Guarded::sentinel(37);
            bn.eval_fused(&x, y.inner_mut(), shape, fusion(kind, &z), stats)
                .unwrap();
            y.assert_holds(&format!("{kind:?} of −0"), &[-0.0; 37]);
        }
    }
}

/// PyTorch's `threshold_backward(dy, y, 0)` passes dy where y is NaN (`y <= 0` is
/// false there), so the unfused PyTorch composition gives `dz = dy`, `dx = dy·scale` at
/// a NaN output, and so does the crate.
#[test]
fn nan_output_passes_the_gradient_as_pytorch_does() {
    let bn = BatchNorm {
        eps: 0.0,
        gamma: None,
        beta: None,
    };
    let (x, y, dy) = ([1.0f32, 3.0], [f32::NAN, 1.0], [1.0f32, 1.0]);
    let (mut dx, mut dz) = ([0.0f32; 2], [0.0f32; 2]);
    let grads = Grads {
        dx: &mut dx,
        dgamma: None,
        dbeta: None,
    };
    let through = FusionGrad::AddRelu { dz: &mut dz };
    let stats = RunningStats {
        mean: &[2.0],
        var: &[1.0],
    };
    bn.backward_eval_fused(&x, &dy, &y, Shape::rows(2, 1), through, stats, grads)
        .unwrap();
    assert_eq!(
        dz,
        [1.0, 1.0],
        "torch: threshold_backward(dy, y, 0) = [1, 1]"
    );
    assert_eq!(dx, [1.0, 1.0]);
}
