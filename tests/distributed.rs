//! The distributed building blocks (`batchnorm::distributed`): the train forward and
//! backward split around a reduction.
//!
//! Properties (cases drawn by `common/cases.rs`, both layouts, odd sizes):
//! - over one part, `moments` + `train_with_moments` is `train` bit for bit, and
//!   `backward_sums` + `backward_with_sums` is `backward` (y, saved statistics,
//!   running statistics, dx, dγ, dβ);
//! - over the batch cut into parts at random samples, with the parts' moments and sums
//!   merged in part order, every part gets the same saved and running statistics and
//!   the same dγ, dβ (bit for bit), and the pieces put together match the f64 oracle
//!   of the whole batch within its tolerance model (`common/split.rs`).
//!
//! Errors (fixed cases at the end): the wrong number of merged moments or sums, an
//! empty part, a global count below the part's, 0, or 1 with running statistics;
//! nothing is written.

#[path = "common/cases.rs"]
mod cases;
mod common;
#[path = "common/split.rs"]
mod split;

use batchnorm::distributed::{backward_sums, BackwardSums};
use batchnorm::{
    moments, BatchNorm, Correction, Error, Grads, Moments, Momentum, Running, Saved, SavedMut,
    Shape,
};
use cases::*;
use common::*;
use proptest::prelude::*;
use split::*;

fn optional_momentum() -> impl Strategy<Value = Option<Update>> {
    prop_oneof![Just(None), momentum().prop_map(Some)]
}

/// Outputs of one train step of a part.
struct Step {
    y: Vec<f32>,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    rm: Vec<f32>,
    rv: Vec<f32>,
}

fn step_with(
    bn: &BatchNorm,
    x: &[f32],
    shape: Shape,
    global: Option<&[Moments]>,
    (rm0, rv0): (&[f32], &[f32]),
    momentum: Option<Update>,
) -> Step {
    let cs = shape.channels;
    let mut s = Step {
        y: vec![sentinel(); x.len()],
        mean: vec![sentinel(); cs],
        invstd: vec![sentinel(); cs],
        rm: rm0.to_vec(),
        rv: rv0.to_vec(),
    };
    let mut running = momentum.map(|u| u.running(&mut s.rm, &mut s.rv));
    let saved = SavedMut {
        mean: &mut s.mean,
        invstd: &mut s.invstd,
    };
    match global {
        None => bn.train(x, &mut s.y, shape, saved, running.as_mut()),
        Some(g) => bn.train_with_moments(x, &mut s.y, shape, g, saved, running.as_mut()),
    }
    .unwrap();
    let tracked = running.map(|r| r.batches_tracked);
    assert_eq!(tracked, momentum.map(|u| u.counted(true)));
    s
}

/// dx, dγ, dβ of one backward.
fn grads_with(
    bn: &BatchNorm,
    dy: &[f32],
    x: &[f32],
    shape: Shape,
    saved: (&[f32], &[f32]),
    global: Option<(&[BackwardSums], u64)>,
) -> [Vec<f32>; 3] {
    let cs = shape.channels;
    let (mut dx, mut dg, mut db) = (
        vec![sentinel(); x.len()],
        vec![sentinel(); cs],
        vec![sentinel(); cs],
    );
    let grads = Grads {
        dx: &mut dx,
        dgamma: Some(&mut dg),
        dbeta: Some(&mut db),
    };
    let saved = Saved {
        mean: saved.0,
        invstd: saved.1,
    };
    match global {
        None => bn.backward(x, dy, shape, saved, grads),
        Some((g, m)) => bn.backward_with_sums(x, dy, shape, saved, g, m, grads),
    }
    .unwrap();
    [dx, dg, db]
}

#[test]
fn one_part_is_train_and_backward_bit_for_bit() {
    run(
        "one part",
        256,
        (case(), optional_momentum()),
        |(case, momentum)| {
            let (shape, x) = (case.shape, case.x());
            let (gamma, beta) = case.affine();
            let bn = case.bn(&gamma, &beta);
            let (rm0, rv0) = case.running_before();
            let what = case.summary();
            let cs = shape.channels;
            let momentum = momentum.filter(|u| shape.batch * shape.spatial >= u.needed());

            let plain = step_with(&bn, &x, shape, None, (&rm0, &rv0), momentum);
            let mut local = vec![Moments::EMPTY; cs];
            moments(&x, shape, &mut local).unwrap();
            let split = step_with(&bn, &x, shape, Some(&local), (&rm0, &rv0), momentum);
            for (name, a, b) in [
                ("y", &split.y, &plain.y),
                ("save_mean", &split.mean, &plain.mean),
                ("save_invstd", &split.invstd, &plain.invstd),
                ("running_mean", &split.rm, &plain.rm),
                ("running_var", &split.rv, &plain.rv),
            ] {
                assert_same_bits(&format!("{what}: {name}"), a, b);
            }

            let dy = case.dy();
            let saved = (&plain.mean[..], &plain.invstd[..]);
            let want = grads_with(&bn, &dy, &x, shape, saved, None);
            let mut sums = vec![BackwardSums::ZERO; cs];
            backward_sums(&x, &dy, shape, &plain.mean, &mut sums).unwrap();
            let m = (shape.batch * shape.spatial) as u64;
            let got = grads_with(&bn, &dy, &x, shape, saved, Some((&sums, m)));
            for (name, a, b) in [("dx", 0, 0), ("dgamma", 1, 1), ("dbeta", 2, 2)] {
                assert_same_bits(&format!("{what}: {name}"), &got[a], &want[b]);
            }
        },
    );
}

#[test]
fn parts_agree_and_match_the_oracle_of_the_whole_batch() {
    run(
        "parts",
        192,
        (case(), momentum(), prop::collection::vec(0..8usize, 0..4)),
        |(case, momentum, cuts)| {
            let (shape, x) = (case.shape, case.x());
            let (gamma, beta) = case.affine();
            let bn = case.bn(&gamma, &beta);
            let (rm0, rv0) = case.running_before();
            let cs = shape.channels;
            let parts = parts(shape.batch, &cuts);
            let what = format!("{} parts {parts:?}", case.summary());
            // Plain BN needs two values per channel for the unbiased running variance.
            let momentum = (shape.batch * shape.spatial >= momentum.needed()).then_some(momentum);

            // Forward (a) and the "allreduce", in part order.
            let mut global = vec![Moments::EMPTY; cs];
            for &p in &parts {
                let (xp, sp) = part_of(&x, shape, p);
                let mut local = vec![Moments::EMPTY; cs];
                moments(xp, sp, &mut local).unwrap();
                for (g, l) in global.iter_mut().zip(local) {
                    *g = g.merge(l);
                }
            }
            // Forward (b) on every part.
            let mut y = Vec::new();
            let steps: Vec<Step> = parts
                .iter()
                .map(|&p| {
                    let (xp, sp) = part_of(&x, shape, p);
                    let s = step_with(&bn, xp, sp, Some(&global), (&rm0, &rv0), momentum);
                    y.extend_from_slice(&s.y);
                    s
                })
                .collect();
            let first = &steps[0];
            for s in &steps[1..] {
                assert_same_bits(&format!("{what}: save_mean"), &s.mean, &first.mean);
                assert_same_bits(&format!("{what}: save_invstd"), &s.invstd, &first.invstd);
                assert_same_bits(&format!("{what}: running_mean"), &s.rm, &first.rm);
                assert_same_bits(&format!("{what}: running_var"), &s.rv, &first.rv);
            }
            let out = TrainOut {
                y: &y,
                save_mean: &first.mean,
                save_invstd: &first.invstd,
                running: momentum.map(|u| {
                    let after = (&first.rm[..], &first.rv[..]);
                    ((&rm0[..], &rv0[..]), after, u.factor(), u.correction)
                }),
            };
            check_train(&what, &bn, &x, &shape, &out);

            // Backward (a), the sum in part order, (b).
            let dy = case.dy();
            let mut sums = vec![BackwardSums::ZERO; cs];
            for &p in &parts {
                let (xp, sp) = part_of(&x, shape, p);
                let (dyp, _) = part_of(&dy, shape, p);
                let mut local = vec![BackwardSums::ZERO; cs];
                backward_sums(xp, dyp, sp, &first.mean, &mut local).unwrap();
                for (s, l) in sums.iter_mut().zip(local) {
                    *s = s.merge(l);
                }
            }
            let m = (shape.batch * shape.spatial) as u64;
            let saved = (&first.mean[..], &first.invstd[..]);
            let mut dx = Vec::new();
            let mut dgdb: Option<(Vec<f32>, Vec<f32>)> = None;
            for &p in &parts {
                let (xp, sp) = part_of(&x, shape, p);
                let (dyp, _) = part_of(&dy, shape, p);
                let [dxp, dg, db] = grads_with(&bn, dyp, xp, sp, saved, Some((&sums, m)));
                dx.extend_from_slice(&dxp);
                match &dgdb {
                    None => dgdb = Some((dg, db)),
                    Some((g0, b0)) => {
                        assert_same_bits(&format!("{what}: dgamma"), &dg, g0);
                        assert_same_bits(&format!("{what}: dbeta"), &db, b0);
                    }
                }
            }
            let (dg, db) = dgdb.unwrap();
            check_backward(&what, &bn, &dy, &x, &shape, saved, &dx, &dg, &db);
        },
    );
}

/// A layer, a part of 2 samples × 2 channels and its moments for the error cases.
fn error_setup() -> (BatchNorm<'static>, Vec<f32>, Shape, Vec<Moments>) {
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    let x = vec![1.0, 2.0, 3.0, 5.0];
    let shape = Shape::rows(2, 2);
    let mut global = vec![Moments::EMPTY; 2];
    moments(&x, shape, &mut global).unwrap();
    (bn, x, shape, global)
}

/// train_with_moments with guarded outputs; asserts nothing was written on error.
fn train_err(global: &[Moments], shape: Shape, x: &[f32], momentum: Option<Update>) -> Error {
    let (bn, ..) = error_setup();
    let cs = shape.channels;
    let (mut y, mut mean, mut invstd) = (
        Guarded::sentinel(x.len()),
        Guarded::sentinel(cs),
        Guarded::sentinel(cs),
    );
    let (mut rm, mut rv) = (Guarded::sentinel(cs), Guarded::sentinel(cs));
    let mut running = momentum.map(|u| u.running(rm.inner_mut(), rv.inner_mut()));
    let saved = SavedMut {
        mean: mean.inner_mut(),
        invstd: invstd.inner_mut(),
    };
    let err = bn
        .train_with_moments(x, y.inner_mut(), shape, global, saved, running.as_mut())
        .unwrap_err();
    let tracked = running.map(|r| r.batches_tracked);
    assert_eq!(
        tracked,
        momentum.map(|u| u.batches_tracked),
        "counted a failed update"
    );
    for (name, g) in [
        ("y", &y),
        ("mean", &mean),
        ("invstd", &invstd),
        ("rm", &rm),
        ("rv", &rv),
    ] {
        g.assert_untouched(name);
    }
    err
}

#[test]
fn forward_errors() {
    let (_, x, shape, global) = error_setup();
    let exp = Some(Update::PYTORCH);
    assert_eq!(
        train_err(&global[..1], shape, &x, None),
        Error::Length {
            arg: "global",
            expected: 2,
            actual: 1
        }
    );
    let empty = Shape { batch: 0, ..shape };
    assert_eq!(
        train_err(&global, empty, &[], None),
        Error::TooFewValues {
            needed: 1,
            actual: 0
        }
    );
    let one = [Moments::of(&[1.0]), Moments::of(&[2.0])];
    let row = Shape { batch: 1, ..shape };
    assert_eq!(
        train_err(&one, row, &x[..2], exp),
        Error::TooFewValues {
            needed: 2,
            actual: 1
        }
    );
    let none = [Moments::EMPTY; 2];
    assert_eq!(
        train_err(&none, row, &x[..2], None),
        Error::TooFewValues {
            needed: 1,
            actual: 0
        }
    );
    // Merged moments of fewer values than this part holds are not of its batch.
    assert_eq!(
        train_err(&one, shape, &x, None),
        Error::TooFewValues {
            needed: 2,
            actual: 1
        }
    );
    // One value on this rank, two in the merged batch: fine with running statistics.
    let (bn, ..) = error_setup();
    let (mut y, mut mean, mut invstd, mut rm, mut rv) =
        ([0.0; 2], [0.0; 2], [0.0; 2], [0.0; 2], [1.0; 2]);
    let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(1.0));
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    bn.train_with_moments(&x[..2], &mut y, row, &global, saved, Some(&mut running))
        .unwrap();
    assert_eq!((rm, rv), ([2.0, 3.5], [2.0, 4.5]));
    // A global batch of one value: fine with the biased running variance (ONNX).
    let biased = Update {
        correction: Correction::Biased,
        ..Update::PYTORCH
    };
    let one_of_one = [Moments::of(&[1.0]), Moments::of(&[2.0])];
    let (mut rm, mut rv) = ([0.0; 2], [1.0; 2]);
    let mut running = biased.running(&mut rm, &mut rv);
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    bn.train_with_moments(&x[..2], &mut y, row, &one_of_one, saved, Some(&mut running))
        .unwrap();
    assert_eq!(running.batches_tracked, 1);
    assert_eq!((rm, rv), ([0.1, 0.2], [0.9, 0.9]));
}

#[test]
fn backward_errors() {
    let (bn, x, shape, _) = error_setup();
    let dy = [1.0, -1.0, 0.5, 2.0];
    let sums = [BackwardSums::ZERO; 2];
    let saved = [[2.0, 3.5], [1.0, 0.6]];
    let call = |dy: &[f32], x: &[f32], shape: Shape, sums: &[BackwardSums], count: u64| {
        let mut dx = Guarded::sentinel(x.len());
        let (mut dg, mut db) = (Guarded::sentinel(2), Guarded::sentinel(2));
        let grads = Grads {
            dx: dx.inner_mut(),
            dgamma: Some(dg.inner_mut()),
            dbeta: Some(db.inner_mut()),
        };
        let saved = Saved {
            mean: &saved[0],
            invstd: &saved[1],
        };
        let err = bn
            .backward_with_sums(x, dy, shape, saved, sums, count, grads)
            .unwrap_err();
        for (name, g) in [("dx", &dx), ("dgamma", &dg), ("dbeta", &db)] {
            g.assert_untouched(name);
        }
        err
    };
    assert_eq!(
        call(&dy, &x, shape, &sums[..1], 2),
        Error::Length {
            arg: "global",
            expected: 2,
            actual: 1
        }
    );
    let empty = Shape { batch: 0, ..shape };
    assert_eq!(
        call(&[], &[], empty, &sums, 2),
        Error::TooFewValues {
            needed: 1,
            actual: 0
        }
    );
    assert_eq!(
        call(&dy, &x, shape, &sums, 1),
        Error::TooFewValues {
            needed: 2,
            actual: 1
        }
    );
    assert_eq!(
        call(&dy, &x, shape, &sums, 0),
        Error::TooFewValues {
            needed: 2,
            actual: 0
        }
    );

    let mut out = [BackwardSums::ZERO; 2];
    assert_eq!(
        backward_sums(&x, &dy, shape, &saved[0][..1], &mut out),
        Err(Error::Length {
            arg: "save_mean",
            expected: 2,
            actual: 1
        })
    );
    assert_eq!(
        backward_sums(&[], &[], empty, &saved[0], &mut out),
        Err(Error::TooFewValues {
            needed: 1,
            actual: 0
        })
    );
    assert_eq!(out, [BackwardSums::ZERO; 2]);
}
