//! The multi-core kernels (`batchnorm::parallel`, feature `rayon`):
//! `cargo test --features rayon --test parallel`.
//!
//! Shapes large enough to cut into many tiles of every kind (runs of samples, channel
//! groups within a sample, pieces of one long run; runs of rows, channel groups of one
//! long row), both layouts. Properties:
//! - moments, train (with and without running statistics), eval, backward and
//!   backward_eval give the same bits on thread pools of 1, 2 and 3 threads, and on two
//!   runs;
//! - the train forward and backward match the f64 oracle of the whole tensor
//!   (`common/split.rs`), as the one-core kernels do;
//! - a tensor of one tile gives the one-core functions' bits;
//! - the channel-parallel walk of long channels-first channels, on a fixed shape.
#![cfg(feature = "rayon")]

#[path = "common/cases.rs"]
mod cases;
mod common;
#[path = "common/split.rs"]
mod split;

use batchnorm::{
    parallel, BatchNorm, Grads, Layout, Moments, RunningStats, Saved, SavedMut, Shape,
};
use cases::*;
use common::Rng;
use common::*;
use proptest::prelude::*;
use split::*;

/// Shapes that cut into tiles of every kind, at most ~700 K values.
fn big_shape() -> impl Strategy<Value = Shape> {
    let c = prop_oneof![Just(1usize), Just(3), Just(17), Just(300), Just(70_001)];
    let s = prop_oneof![Just(1usize), Just(7), Just(3001), Just(70_003)];
    (layout(), 1..=4usize, c, s).prop_map(|(layout, batch, channels, spatial)| {
        // Cut the batch, then the spatial size, to bound the tensor.
        let per = channels * spatial;
        let batch = batch.min((700_000 / per).max(1));
        let spatial = spatial.min((700_000 / channels).max(1));
        Shape {
            batch,
            channels,
            spatial,
            layout,
        }
    })
}

fn big_case() -> impl Strategy<Value = (Case, Option<Update>)> {
    let momentum = prop_oneof![Just(None), momentum().prop_map(Some)];
    (
        big_shape(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        momentum,
    )
        .prop_map(|(shape, seed, gamma, beta, momentum)| {
            let mut rng = Rng::new(seed);
            let profiles = (0..shape.channels)
                .map(|_| Profile {
                    offset: [0.0, 1.0, -3.0, 1e4][rng.below(4)],
                    spread: [1.0, 1e-3, 50.0][rng.below(3)],
                })
                .collect();
            let case = Case {
                shape,
                profiles,
                seed,
                eps: 1e-5,
                gamma,
                beta,
            };
            let m = shape.batch * shape.spatial;
            (case, momentum.filter(|u| m >= u.needed()))
        })
}

fn on<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Every output of every parallel function on one case, as bits.
fn outputs(case: &Case, momentum: Option<Update>) -> Vec<(&'static str, Vec<u32>)> {
    let (shape, x) = (case.shape, case.x());
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let cs = shape.channels;
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let mut out = Vec::new();

    let mut mo = vec![Moments::EMPTY; cs];
    parallel::moments(&x, shape, &mut mo).unwrap();
    let mo_bits = mo
        .iter()
        .flat_map(|m| {
            [
                m.count as u32,
                m.mean.to_bits() as u32,
                m.m2.to_bits() as u32,
            ]
        })
        .collect();
    out.push(("moments", mo_bits));

    let (rm0, rv0) = case.running_before();
    let (mut y, mut mean, mut invstd) = (vec![0.0; x.len()], vec![0.0; cs], vec![0.0; cs]);
    let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
    let mut running = momentum.map(|u| u.running(&mut rm, &mut rv));
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    parallel::train(&bn, &x, &mut y, shape, saved, running.as_mut()).unwrap();
    let tracked = running.map(|r| r.batches_tracked);
    assert_eq!(
        tracked,
        momentum.map(|u| u.counted(true)),
        "one update counted"
    );
    let what = case.summary();
    let check = TrainOut {
        y: &y,
        save_mean: &mean,
        save_invstd: &invstd,
        running: momentum.map(|u| {
            let after = (&rm[..], &rv[..]);
            ((&rm0[..], &rv0[..]), after, u.factor(), u.correction)
        }),
    };
    check_train(&format!("parallel train {what}"), &bn, &x, &shape, &check);
    for (name, v) in [
        ("y", &y),
        ("mean", &mean),
        ("invstd", &invstd),
        ("rm", &rm),
        ("rv", &rv),
    ] {
        out.push((name, bits(v)));
    }

    let dy = case.dy();
    let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; cs], vec![0.0; cs]);
    let grads = Grads {
        dx: &mut dx,
        dgamma: Some(&mut dg),
        dbeta: Some(&mut db),
    };
    let saved = Saved {
        mean: &mean,
        invstd: &invstd,
    };
    parallel::backward(&bn, &x, &dy, shape, saved, grads).unwrap();
    let saved = (&mean[..], &invstd[..]);
    check_backward(
        &format!("parallel backward {what}"),
        &bn,
        &dy,
        &x,
        &shape,
        saved,
        &dx,
        &dg,
        &db,
    );
    for (name, v) in [("dx", &dx), ("dgamma", &dg), ("dbeta", &db)] {
        out.push((name, bits(v)));
    }

    let (erm, erv) = case.running_for_eval();
    let stats = RunningStats {
        mean: &erm,
        var: &erv,
    };
    parallel::eval(&bn, &x, &mut y, shape, stats).unwrap();
    out.push(("eval y", bits(&y)));
    for want in [false, true] {
        let grads = Grads {
            dx: &mut dx,
            dgamma: want.then_some(&mut dg[..]),
            dbeta: want.then_some(&mut db[..]),
        };
        parallel::backward_eval(&bn, &x, &dy, shape, stats, grads).unwrap();
        out.push(("backward_eval dx", bits(&dx)));
    }
    out.push(("backward_eval dgamma", bits(&dg)));
    out.push(("backward_eval dbeta", bits(&db)));
    out
}

#[test]
fn same_bits_on_one_two_and_three_threads() {
    run("parallel", 24, big_case(), |(case, momentum)| {
        let one = on(1, || outputs(&case, momentum));
        for threads in [2, 3, 2] {
            let other = on(threads, || outputs(&case, momentum));
            for ((name, a), (_, b)) in one.iter().zip(&other) {
                assert!(
                    a == b,
                    "{}: {name} differs on {threads} threads",
                    case.summary()
                );
            }
        }
    });
}

/// Channels-first with long channels: the channel-parallel walk (22 groups of 14
/// channels), which a drawn case meets only sometimes.
#[test]
fn channel_groups_same_bits_and_oracle() {
    let shape = Shape::channels_first(3, 300, 3001);
    let mut rng = Rng::new(99);
    let profiles = (0..300)
        .map(|_| Profile {
            offset: [0.0, 1e4][rng.below(2)],
            spread: [1.0, 1e-3][rng.below(2)],
        })
        .collect();
    let case = Case {
        shape,
        profiles,
        seed: 7,
        eps: 1e-5,
        gamma: true,
        beta: true,
    };
    let momentum = Some(Update::PYTORCH);
    let one = on(1, || outputs(&case, momentum));
    let two = on(2, || outputs(&case, momentum));
    for ((name, a), (_, b)) in one.iter().zip(&two) {
        assert!(a == b, "{name} differs on 2 threads");
    }
}

/// The tensors of the small cases are one tile: the one-core functions' bits.
#[test]
fn one_tile_is_the_one_core_path() {
    run("parallel one tile", 64, case(), |case| {
        let (shape, x) = (case.shape, case.x());
        let (gamma, beta) = case.affine();
        let bn = case.bn(&gamma, &beta);
        let cs = shape.channels;
        let what = case.summary();
        let (mut y, mut mean, mut invstd) = (vec![0.0; x.len()], vec![0.0; cs], vec![0.0; cs]);
        let saved = SavedMut {
            mean: &mut mean,
            invstd: &mut invstd,
        };
        bn.train(&x, &mut y, shape, saved, None).unwrap();
        let (mut py, mut pmean, mut pinvstd) = (vec![0.0; x.len()], vec![0.0; cs], vec![0.0; cs]);
        on(2, || {
            let saved = SavedMut {
                mean: &mut pmean,
                invstd: &mut pinvstd,
            };
            parallel::train(&bn, &x, &mut py, shape, saved, None)
        })
        .unwrap();
        assert_same_bits(&format!("{what}: y"), &py, &y);
        assert_same_bits(&format!("{what}: invstd"), &pinvstd, &invstd);
        let (erm, erv) = case.running_for_eval();
        let stats = RunningStats {
            mean: &erm,
            var: &erv,
        };
        bn.eval(&x, &mut y, shape, stats).unwrap();
        on(2, || parallel::eval(&bn, &x, &mut py, shape, stats)).unwrap();
        assert_same_bits(&format!("{what}: eval y"), &py, &y);
    });
}

#[test]
fn errors_are_those_of_the_one_core_functions() {
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    let shape = Shape {
        batch: 2,
        channels: 3,
        spatial: 100_000,
        layout: Layout::ChannelsFirst,
    };
    let x = vec![1.0; 600_000];
    let mut y = vec![7.0; 600_000];
    let (mut mean, mut invstd) = ([7.0; 3], [7.0; 2]);
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    let e = parallel::train(&bn, &x, &mut y, shape, saved, None);
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    assert_eq!(e, bn.train(&x, &mut y, shape, saved, None));
    assert!(e.is_err() && y.iter().all(|&v| v == 7.0) && mean == [7.0; 3]);
    let mut mo = [Moments::EMPTY; 3];
    assert!(parallel::moments(&x[1..], shape, &mut mo).is_err());
    let stats = RunningStats {
        mean: &[0.0; 3],
        var: &[1.0; 4],
    };
    assert!(parallel::eval(&bn, &x, &mut y, shape, stats).is_err());
    let grads = Grads {
        dx: &mut y,
        dgamma: None,
        dbeta: Some(&mut [0.0; 2]),
    };
    let saved = Saved {
        mean: &[0.0; 3],
        invstd: &[1.0; 3],
    };
    assert!(parallel::backward(&bn, &x, &x, shape, saved, grads).is_err());
    let grads = Grads {
        dx: &mut y[1..],
        dgamma: None,
        dbeta: None,
    };
    let stats = RunningStats {
        mean: &[0.0; 3],
        var: &[1.0; 3],
    };
    assert!(parallel::backward_eval(&bn, &x, &x, shape, stats, grads).is_err());
    assert!(y.iter().all(|&v| v == 7.0));
}
