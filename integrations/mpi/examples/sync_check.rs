//! The checked example: `mpirun -n P target/.../examples/sync_check` for P = 1, 2, 3, 4.
//!
//! Every rank builds the same global batch (13 samples, so that 2, 3 and 4 ranks get
//! unequal parts) of three tensors — NCHW, NHWC and `[N, C]` rows, with channel means
//! up to 1e4 against spreads down to 1e-3 — takes its part in rank order, and runs
//! `SyncBatchNorm`'s train forward (running statistics updated) and backward. Then:
//! - every rank holds the same saved and running statistics and `dγ`, `dβ`, bit for bit;
//! - on rank 0, `y` and `dx` put together, the statistics and the gradients match the
//!   f64 oracle of the whole batch in one process (`tests/common`, its tolerance model);
//! - rank 0 prints a digest of every output's bits (`digest NAME HEX`), which the same
//!   P gives on every run (`tests/distributed/run.sh` runs each P twice);
//! - bad input on one rank (another channel count, an empty part, a wrong length, a
//!   disagreeing count) or a global batch of one value with running statistics gives
//!   an error on every rank, and the ranks go on to the next case (no hang).
//!
//! Prints `ok …` per check on rank 0 and ends with `sync_check: N passed, M failed`;
//! exits non-zero on any failure.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/split.rs"]
mod split;

use std::process::ExitCode;

use batchnorm::{BatchNorm, Correction, Error, Grads, Momentum, Running, Saved, SavedMut, Shape};
use batchnorm_mpi::{sum_in_rank_order, SyncBatchNorm, SyncError};
use common::{tensor, Profile, Rng};
use mpi::datatype::PartitionMut;
use mpi::traits::*;
use split::{check_backward, check_train, part_of, TrainOut};

const BATCH: usize = 13;
const MOMENTUM: Momentum = Momentum::Exponential(0.1);

/// Samples of rank `r` of `p`: `(first, n)`, the first `BATCH % p` ranks one more.
fn my_part(batch: usize, r: usize, p: usize) -> (usize, usize) {
    let (q, extra) = (batch / p, batch % p);
    let n = q + usize::from(r < extra);
    (r * q + r.min(extra), n)
}

/// FNV-1a over the bits of `values`.
fn digest(hash: &mut u64, values: &[f32]) {
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            *hash = (*hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

struct Tally<'a, C: Communicator> {
    comm: &'a C,
    passed: usize,
    failed: usize,
}

impl<C: Communicator> Tally<'_, C> {
    /// Records `ok` of this rank and reports the check on rank 0 as failed if any
    /// rank's failed.
    fn check(&mut self, what: &str, ok: bool) {
        let mut bad = [f32::from(u8::from(!ok))];
        sum_in_rank_order(self.comm, &mut bad);
        let all_ok = bad[0] == 0.0;
        if all_ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        if self.comm.rank() == 0 {
            println!("{} {what}", if all_ok { "ok  " } else { "FAIL" });
        }
        if !ok {
            eprintln!("rank {}: FAIL {what}", self.comm.rank());
        }
    }
}

/// Every rank's `values` (of any length), concatenated in rank order.
fn gather_parts<C: Communicator>(comm: &C, values: &[f32]) -> Vec<f32> {
    let size = comm.size() as usize;
    let mut counts = vec![0i32; size];
    comm.all_gather_into(&(values.len() as i32), &mut counts[..]);
    let displs: Vec<i32> = counts
        .iter()
        .scan(0, |at, &c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect();
    let total = counts.iter().sum::<i32>() as usize;
    let mut all = vec![0.0f32; total];
    let mut partition = PartitionMut::new(&mut all[..], counts, displs);
    comm.all_gather_varcount_into(values, &mut partition);
    all
}

/// Whether `values` has the same bits on every rank as on rank 0.
fn same_everywhere<C: Communicator>(comm: &C, values: &[f32]) -> bool {
    let all = gather_parts(comm, values);
    all.chunks(values.len().max(1)).all(|p| {
        p.iter()
            .zip(values)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    })
}

fn profiles(c: usize, rng: &mut Rng) -> Vec<Profile> {
    (0..c)
        .map(|_| Profile {
            offset: [0.0, 1.0, -3.0, 1e4][rng.below(4)],
            spread: [1.0, 1e-3, 20.0][rng.below(3)],
        })
        .collect()
}

/// One synchronized train step of `name` and its checks.
fn step<C: Communicator>(t: &mut Tally<C>, name: &str, shape: Shape, seed: u64) {
    let comm = t.comm;
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let cs = shape.channels;
    let mut rng = Rng::new(seed);
    let x = tensor(&shape, &profiles(cs, &mut rng), rng.next_u64());
    let dy = tensor(&shape, &profiles(cs, &mut rng), rng.next_u64());
    let gamma: Vec<f32> = (0..cs).map(|_| rng.range(-2.0, 2.0) as f32).collect();
    let beta: Vec<f32> = (0..cs).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    let rm0: Vec<f32> = (0..cs).map(|_| rng.range(-5.0, 5.0) as f32).collect();
    let rv0: Vec<f32> = (0..cs).map(|_| rng.range(0.5, 2.0) as f32).collect();
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: Some(&gamma),
        beta: Some(&beta),
    };
    let sync = SyncBatchNorm { comm, bn };

    let part = my_part(shape.batch, rank, size);
    let (xp, sp) = part_of(&x, shape, part);
    let (dyp, _) = part_of(&dy, shape, part);
    let (mut y, mut mean, mut invstd) = (vec![0.0; xp.len()], vec![0.0; cs], vec![0.0; cs]);
    let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
    let mut running = Running::new(&mut rm, &mut rv, MOMENTUM);
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    let count = sync.train(xp, &mut y, sp, saved, Some(&mut running));
    t.check(&format!("{name}: train on {size} ranks"), count.is_ok());
    let count = count.unwrap_or(0);
    let (mut dx, mut dg, mut db) = (vec![0.0; xp.len()], vec![0.0; cs], vec![0.0; cs]);
    let grads = Grads {
        dx: &mut dx,
        dgamma: Some(&mut dg),
        dbeta: Some(&mut db),
    };
    let saved = Saved {
        mean: &mean,
        invstd: &invstd,
    };
    let r = sync.backward(xp, dyp, sp, saved, count, grads);
    t.check(&format!("{name}: backward on {size} ranks"), r.is_ok());

    let agree = [&mean, &invstd, &rm, &rv, &dg, &db]
        .iter()
        .all(|v| same_everywhere(comm, v));
    t.check(
        &format!("{name}: saved and running statistics, dγ and dβ the same bits on every rank"),
        agree,
    );
    let (y_all, dx_all) = (gather_parts(comm, &y), gather_parts(comm, &dx));
    // The oracle's checker panics with every mismatch: caught, printed, counted.
    let mut matches = true;
    if rank == 0 {
        let out = TrainOut {
            y: &y_all,
            save_mean: &mean,
            save_invstd: &invstd,
            running: Some((
                (&rm0, &rv0),
                (&rm, &rv),
                common::momentum_factor(MOMENTUM, 0),
                Correction::Unbiased,
            )),
        };
        let saved = (&mean[..], &invstd[..]);
        matches = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_train(name, &bn, &x, &shape, &out);
            check_backward(name, &bn, &dy, &x, &shape, saved, &dx_all, &dg, &db);
        }))
        .is_ok();
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for v in [&y_all, &mean, &invstd, &rm, &rv, &dx_all, &dg, &db] {
            digest(&mut hash, v);
        }
        println!("digest {name} {hash:016x}");
    }
    t.check(
        &format!("{name}: y, statistics and gradients match the one-process oracle"),
        matches,
    );
}

/// The error cases: each must fail on every rank, with the expected error.
fn errors<C: Communicator>(t: &mut Tally<C>) {
    let comm = t.comm;
    let (rank, size) = (comm.rank(), comm.size());
    let last = size - 1;
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    let sync = SyncBatchNorm { comm, bn };
    let run = |shape: Shape, y_len: Option<usize>, running: bool| {
        let len = shape.batch * shape.channels * shape.spatial;
        let x: Vec<f32> = (0..len).map(|i| (i % 5) as f32).collect();
        let mut y = vec![0.0; y_len.unwrap_or(len)];
        let (mut mean, mut invstd) = (vec![0.0; shape.channels], vec![0.0; shape.channels]);
        let (mut rm, mut rv) = (vec![0.0; shape.channels], vec![1.0; shape.channels]);
        let mut r = running.then(|| Running::new(&mut rm, &mut rv, MOMENTUM));
        let saved = SavedMut {
            mean: &mut mean,
            invstd: &mut invstd,
        };
        sync.train(&x, &mut y, shape, saved, r.as_mut())
    };
    let good = Shape::channels_first(2, 3, 4);

    if size > 1 {
        let channels = if rank == last { 4 } else { 3 };
        let r = run(Shape { channels, ..good }, None, true);
        let want = SyncError::Channels {
            rank: last,
            channels: 4,
            expected: 3,
        };
        t.check(
            "ranks disagreeing on C: an error on every rank",
            r == Err(want),
        );

        let batch = if rank == last { 0 } else { 2 };
        let r = run(Shape { batch, ..good }, None, true);
        let want = if rank == last {
            SyncError::Local(Error::TooFewValues {
                needed: 1,
                actual: 0,
            })
        } else {
            SyncError::Remote { rank: last }
        };
        t.check(
            "a rank with an empty batch: an error on every rank",
            r == Err(want),
        );

        let r = run(good, None, rank != last);
        t.check(
            "ranks disagreeing on running statistics: an error on every rank",
            r == Err(SyncError::Running { rank: last }),
        );
    }

    let r = run(good, (rank == 0).then_some(5), true);
    let want = if rank == 0 {
        SyncError::Local(Error::Length {
            arg: "y",
            expected: 24,
            actual: 5,
        })
    } else {
        SyncError::Remote { rank: 0 }
    };
    t.check(
        "a wrong length on rank 0: an error on every rank",
        r == Err(want),
    );

    // One value per channel on each rank: a global count of `size`.
    let r = run(Shape::rows(1, 3), None, true);
    let ok = if size == 1 {
        r == Err(SyncError::Local(Error::TooFewValues {
            needed: 2,
            actual: 1,
        }))
    } else {
        r == Ok(size as u64)
    };
    t.check(
        "one value per rank: with running statistics an error on 1 rank, fine on more",
        ok,
    );

    if size > 1 {
        let shape = Shape::rows(2, 3);
        let (dy, x) = ([1.0f32; 6], [2.0f32; 6]);
        let mut dx = [0.0; 6];
        let grads = Grads {
            dx: &mut dx,
            dgamma: None,
            dbeta: None,
        };
        let count = 2 * size as u64 + u64::from(rank == last);
        let saved = Saved {
            mean: &[2.0; 3],
            invstd: &[1.0; 3],
        };
        let r = sync.backward(&x, &dy, shape, saved, count, grads);
        let want = SyncError::Count {
            rank: last,
            count: 2 * size as u64 + 1,
            expected: 2 * size as u64,
        };
        t.check(
            "ranks disagreeing on the backward's count: an error on every rank",
            r == Err(want),
        );
    }
}

fn main() -> ExitCode {
    let Some(universe) = mpi::initialize() else {
        eprintln!("sync_check: MPI could not be initialized");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let mut t = Tally {
        comm: &world,
        passed: 0,
        failed: 0,
    };
    step(&mut t, "nchw", Shape::channels_first(BATCH, 5, 37), 1);
    step(&mut t, "nhwc", Shape::channels_last(BATCH, 6, 23), 2);
    step(&mut t, "rows", Shape::rows(BATCH, 19), 3);
    errors(&mut t);
    // The good path again after the errors: the ranks are still in step.
    step(&mut t, "nchw again", Shape::channels_first(BATCH, 5, 37), 1);
    if world.rank() == 0 {
        println!("sync_check: {} passed, {} failed", t.passed, t.failed);
    }
    if t.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
