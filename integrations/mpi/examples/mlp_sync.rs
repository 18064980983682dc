//! The `mlp` demo (examples/mlp), data-parallel: `mpirun -n P …/examples/mlp_sync`.
//!
//! The demo's own network (`examples/mlp/net.rs`: `Linear → norm → tanh` × 3 →
//! `Linear`, softmax cross-entropy, plain SGD) with its norm slot filled by
//! [`SyncNorm`], batch norm synchronized over the ranks; the demo's spirals, initial
//! weights and batch order. Every batch of 64 is split into P equal parts, one per
//! rank; each rank computes the gradients of its part (`Mlp::gradients`), every
//! gradient is summed over ranks in rank order, and every rank takes the same SGD step:
//! the replicas stay identical.
//!
//! Rank 0 also trains the demo's one-process network (`Mlp::new` with BN,
//! `Mlp::train_step` on the whole batches) and compares: the eval-mode logits on the
//! test set (which every weight, γ, β and running statistic enters) must agree to 1e-4
//! of their scale, and the test accuracies exactly; the replicas must hold the same
//! bits. Prints the accuracies, the largest difference, a digest of the trained
//! network's bits and `mlp_sync: N passed, M failed`.
//!
//! The data, the layers, the network and the loss are the demo's files, included as
//! modules; only the norm is new.

#[path = "../../../examples/mlp/data.rs"]
mod data;
#[path = "../../../examples/mlp/linear.rs"]
mod linear;
#[allow(dead_code)]
#[path = "../../../examples/mlp/net.rs"]
mod net;

use std::process::ExitCode;

use batchnorm::{BatchNorm, Error, Grads, Momentum, Running, RunningStats, Saved, SavedMut, Shape};
use batchnorm_mpi::{sum_in_rank_order, SyncBatchNorm, SyncError};
use data::{Points, Rng};
use linear::Param;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use net::{Mlp, Mode, Normalize};

// The demo's quick configuration (examples/mlp/main.rs: 2 epochs), constant learning
// rate. Rounding differences grow with the steps: 2.3e-5 after these 2 epochs, 3.3e-4
// after 10.
const CLASSES: usize = 5;
const POINTS_PER_CLASS: usize = 200;
const WIDTHS: [usize; 3] = [128, 128, 128];
const BATCH: usize = 64;
const EPOCHS: usize = 2;
const LR: f32 = 0.3;
const SEED_DATA: u64 = 5;
const SEED_INIT: u64 = 42;
const SEED_ORDER: u64 = 7;
// net.rs's BN: PyTorch's defaults.
const EPS: f32 = 1e-5;
const MOMENTUM: Momentum = Momentum::Exponential(0.1);
/// Agreement with the one-process network, relative to the largest magnitude.
const TOLERANCE: f32 = 1e-4;

/// Batch norm over `[batch][features]` synchronized over `comm`: the statistics and
/// the backward sums of the whole batch, which the ranks hold in parts.
#[derive(Clone)]
struct SyncNorm<'a> {
    comm: &'a SimpleCommunicator,
    gamma: Param,
    beta: Param,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    save_mean: Vec<f32>,
    save_invstd: Vec<f32>,
    /// Values per channel of the whole batch, from the last train forward.
    count: u64,
}

impl<'a> SyncNorm<'a> {
    /// As net.rs's `Norm::new`: γ = 1, β = 0, running mean 0 and variance 1.
    fn new(features: usize, comm: &'a SimpleCommunicator) -> Self {
        SyncNorm {
            comm,
            gamma: Param::new(vec![1.0; features]),
            beta: Param::new(vec![0.0; features]),
            running_mean: vec![0.0; features],
            running_var: vec![1.0; features],
            save_mean: vec![0.0; features],
            save_invstd: vec![0.0; features],
            count: 0,
        }
    }
}

/// The crate's error of a synchronized call: a collective that failed on another rank
/// has none, so the process reports it and exits (as MPI_Abort would), which ends the
/// run on every rank.
fn local(e: SyncError) -> Error {
    match e {
        SyncError::Local(e) => e,
        other => {
            eprintln!("mlp_sync: {other}");
            std::process::exit(1)
        }
    }
}

impl Normalize for SyncNorm<'_> {
    fn forward(&mut self, x: &[f32], y: &mut Vec<f32>, mode: Mode) -> Result<(), Error> {
        let features = self.gamma.value.len();
        let shape = Shape::rows(x.len() / features, features);
        y.resize(x.len(), 0.0);
        let bn = bn(&self.gamma.value, &self.beta.value);
        match mode {
            Mode::Train => {
                let mut running =
                    Running::new(&mut self.running_mean, &mut self.running_var, MOMENTUM);
                let sync = SyncBatchNorm {
                    comm: self.comm,
                    bn,
                };
                let saved = SavedMut {
                    mean: &mut self.save_mean,
                    invstd: &mut self.save_invstd,
                };
                self.count = sync
                    .train(x, y, shape, saved, Some(&mut running))
                    .map_err(local)?;
                Ok(())
            }
            // The running statistics are the same on every rank: eval is local.
            Mode::Eval => {
                let stats = RunningStats {
                    mean: &self.running_mean,
                    var: &self.running_var,
                };
                bn.eval(x, y, shape, stats)
            }
        }
    }

    /// `dx` of this rank's part; dγ and dβ of the whole batch come out the same on
    /// every rank, and are kept divided by the rank count, so that the gradient sum
    /// over ranks every parameter goes through gives them back.
    fn backward(&mut self, dy: &[f32], x: &[f32], dx: &mut Vec<f32>) -> Result<(), Error> {
        let features = self.gamma.value.len();
        let shape = Shape::rows(x.len() / features, features);
        dx.resize(x.len(), 0.0);
        let sync = SyncBatchNorm {
            comm: self.comm,
            bn: bn(&self.gamma.value, &self.beta.value),
        };
        let grads = Grads {
            dx,
            dgamma: Some(&mut self.gamma.grad),
            dbeta: Some(&mut self.beta.grad),
        };
        let saved = Saved {
            mean: &self.save_mean,
            invstd: &self.save_invstd,
        };
        sync.backward(x, dy, shape, saved, self.count, grads)
            .map_err(local)?;
        let ranks = self.comm.size() as f32;
        for g in self.gamma.grad.iter_mut().chain(&mut self.beta.grad) {
            *g /= ranks;
        }
        Ok(())
    }

    fn params(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }
}

fn bn<'a>(gamma: &'a [f32], beta: &'a [f32]) -> BatchNorm<'a> {
    BatchNorm {
        eps: EPS,
        gamma: Some(gamma),
        beta: Some(beta),
    }
}

/// The share of rows whose largest logit is the label's (the first, on ties).
fn accuracy(logits: &[f32], labels: &[usize]) -> f64 {
    let rows = logits.chunks_exact(logits.len() / labels.len());
    let correct = rows
        .zip(labels)
        .filter(|(row, &label)| {
            let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            best == label
        })
        .count();
    correct as f64 / labels.len() as f64
}

/// The largest |a − b| over the largest |b|.
fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn run(comm: &SimpleCommunicator) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    if !BATCH.is_multiple_of(size) {
        return Err(format!("{size} ranks do not divide the batch of {BATCH}").into());
    }
    let part = BATCH / size;
    let mut rng = Rng::new(SEED_DATA);
    let points = data::spirals(CLASSES, POINTS_PER_CLASS, 1.0, 0.04, &mut rng);
    let (train, test) = data::split(&points, 0.25, &mut rng);

    let sync_norm = |w| Some(SyncNorm::new(w, comm));
    let mut net = Mlp::with_norm(2, &WIDTHS, CLASSES, sync_norm, &mut Rng::new(SEED_INIT));
    let mut reference =
        (rank == 0).then(|| Mlp::new(2, &WIDTHS, CLASSES, true, &mut Rng::new(SEED_INIT)));
    let mut order_rng = Rng::new(SEED_ORDER);
    let mut order: Vec<usize> = (0..train.len()).collect();
    for _ in 0..EPOCHS {
        order_rng.shuffle(&mut order);
        for indices in order.chunks_exact(BATCH) {
            let mine: Points = train.select(&indices[rank * part..][..part]);
            // The gradient of the mean loss over this rank's part is `size` times that
            // of the whole batch's (equal parts): summed over ranks, divided by `size`.
            net.gradients(&mine.x, &mine.label)?;
            for p in net.params() {
                sum_in_rank_order(comm, &mut p.grad);
                p.grad.iter_mut().for_each(|g| *g /= size as f32);
                p.step(LR);
            }
            if let Some(reference) = &mut reference {
                let batch = train.select(indices);
                reference.train_step(&batch.x, &batch.label, LR)?;
            }
        }
    }

    let mut passed_failed = (0, 0);
    let mut check = |what: &str, ok: bool| {
        let mut bad = [f32::from(u8::from(!ok))];
        sum_in_rank_order(comm, &mut bad);
        let ok = bad[0] == 0.0;
        if ok {
            passed_failed.0 += 1;
        } else {
            passed_failed.1 += 1;
        }
        if rank == 0 {
            println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        }
    };

    // The replicas: the same parameters and eval logits (the running statistics enter
    // those), bit for bit, on every rank.
    let ours = net.forward(&test.x, Mode::Eval)?.to_vec();
    let mut state: Vec<f32> = net.params().iter().flat_map(|p| p.value.clone()).collect();
    state.extend_from_slice(&ours);
    let mut all = vec![0.0f32; state.len() * size];
    comm.all_gather_into(&state[..], &mut all[..]);
    let same = all.chunks(state.len()).all(|p| {
        p.iter()
            .zip(&state)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    });
    check(
        &format!("{size} ranks hold the same network, bit for bit"),
        same,
    );

    let mut agree = true;
    if let Some(reference) = &mut reference {
        let theirs = reference.forward(&test.x, Mode::Eval)?.to_vec();
        let d_logits = relative_diff(&ours, &theirs);
        let (a, b) = (accuracy(&ours, &test.label), accuracy(&theirs, &test.label));
        println!(
            "{size} ranks: test accuracy {:.1} % (one process: {:.1} %); largest difference \
             of the eval-mode test logits from the one-process network's: {d_logits:.1e} of \
             their largest magnitude",
            100.0 * a,
            100.0 * b,
        );
        println!("digest {:016x}", digest(&state));
        agree = d_logits <= TOLERANCE && a == b;
    }
    check(
        &format!("{size} ranks train the network of one process (to {TOLERANCE:.0e})"),
        agree,
    );
    Ok(passed_failed)
}

fn digest(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        x.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    })
}

fn main() -> ExitCode {
    let Some(universe) = mpi::initialize() else {
        eprintln!("mlp_sync: MPI could not be initialized");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    match run(&world) {
        Ok((passed, failed)) => {
            if world.rank() == 0 {
                println!("mlp_sync: {passed} passed, {failed} failed");
            }
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("mlp_sync rank {}: {e}", world.rank());
            ExitCode::FAILURE
        }
    }
}
