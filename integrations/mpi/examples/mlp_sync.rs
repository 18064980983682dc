//! The `mlp` demo (examples/mlp), data-parallel: `mpirun -n P …/examples/mlp_sync`.
//!
//! The demo's network with BN (`Linear → BN → tanh` × 3 → `Linear`, softmax
//! cross-entropy, plain SGD), on the demo's spirals, with its initial weights and
//! batch order; every batch of 64 is split into P equal parts, one per rank. Each rank
//! runs the forward and backward of its part with `SyncBatchNorm` (the statistics of
//! the whole batch of 64), the weight gradients are summed over ranks in rank order,
//! and every rank takes the same SGD step: the replicas stay identical.
//!
//! Rank 0 also trains the demo's own one-process network (`examples/mlp/net.rs`,
//! `Mlp::train_step` on the whole batches) and compares: the eval-mode logits on the
//! test set (which every weight, γ, β and running statistic enters) must agree to 1e-4
//! of their scale, and the test accuracies exactly; the replicas must hold the same
//! bits. Prints the accuracies, the largest difference, a digest of the trained
//! network's bits and `mlp_sync: N passed, M failed`.
//!
//! The data, the layers and the loss are the demo's files, included as modules.

#[path = "../../../examples/mlp/data.rs"]
mod data;
#[path = "../../../examples/mlp/linear.rs"]
mod linear;
#[allow(dead_code)]
#[path = "../../../examples/mlp/net.rs"]
mod net;

use std::process::ExitCode;

use batchnorm::{BatchNorm, Grads, Momentum, Running, Shape};
use batchnorm_mpi::{sum_in_rank_order, SyncBatchNorm};
use data::{Points, Rng};
use linear::{Linear, Param};
use mpi::traits::*;
use net::{softmax_cross_entropy, Mlp, Mode};

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
const EPS: f32 = 1e-5;
const MOMENTUM: Momentum = Momentum::Exponential(0.1);
/// Agreement with the one-process network, relative to the largest magnitude.
const TOLERANCE: f32 = 1e-4;

/// A hidden layer `Linear → SyncBN → tanh` and what its backward needs.
struct Hidden {
    linear: Linear,
    gamma: Param,
    beta: Param,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    save_mean: Vec<f32>,
    save_invstd: Vec<f32>,
    count: u64,
    pre: Vec<f32>,
    normed: Vec<f32>,
    act: Vec<f32>,
}

/// The demo's network with every BN synchronized over `comm`.
struct DataParallel {
    hidden: Vec<Hidden>,
    out: Linear,
}

impl DataParallel {
    /// The initial weights of `Mlp::new` with the same seed: the same draws in the
    /// same order.
    fn new(rng: &mut Rng) -> Self {
        let mut fan_in = 2;
        let mut hidden = Vec::new();
        for &w in &WIDTHS {
            hidden.push(Hidden {
                linear: Linear::new(fan_in, w, rng),
                gamma: Param::new(vec![1.0; w]),
                beta: Param::new(vec![0.0; w]),
                running_mean: vec![0.0; w],
                running_var: vec![1.0; w],
                save_mean: vec![0.0; w],
                save_invstd: vec![0.0; w],
                count: 0,
                pre: Vec::new(),
                normed: Vec::new(),
                act: Vec::new(),
            });
            fan_in = w;
        }
        DataParallel {
            hidden,
            out: Linear::new(fan_in, CLASSES, rng),
        }
    }

    /// One SGD step on this rank's part of a batch; every rank calls it together.
    fn train_step<C: Communicator>(
        &mut self,
        comm: &C,
        x: &[f32],
        labels: &[usize],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let ranks = comm.size() as f32;
        // Forward.
        for i in 0..self.hidden.len() {
            let (below, rest) = self.hidden.split_at_mut(i);
            let input = below.last().map_or(x, |h| &h.act[..]);
            let h = &mut rest[0];
            h.linear.forward(input, &mut h.pre);
            h.normed.resize(h.pre.len(), 0.0);
            let shape = Shape::rows(labels.len(), h.gamma.value.len());
            let bn = bn(&h.gamma.value, &h.beta.value);
            let running = Running {
                mean: &mut h.running_mean,
                var: &mut h.running_var,
                momentum: MOMENTUM,
            };
            let sync = SyncBatchNorm { comm, bn };
            h.count = sync.train(
                &h.pre,
                &mut h.normed,
                shape,
                &mut h.save_mean,
                &mut h.save_invstd,
                Some(running),
            )?;
            h.act = h.normed.iter().map(|v| v.tanh()).collect();
        }
        let mut logits = Vec::new();
        let last = &self.hidden.last().ok_or("no hidden layer")?.act;
        self.out.forward(last, &mut logits);
        // The gradient of the mean loss over this rank's part: `ranks` times that of
        // the whole batch's (equal parts), so the summed weight gradients are divided
        // by `ranks`, as are BN's dγ, dβ (already of the whole batch).
        let mut grad = Vec::new();
        softmax_cross_entropy(&logits, labels, Some(&mut grad));
        let mut below = Vec::new();
        self.out.backward(last, &grad, Some(&mut below));
        for i in (0..self.hidden.len()).rev() {
            let (lower, rest) = self.hidden.split_at_mut(i);
            let input = lower.last().map_or(x, |h| &h.act[..]);
            let h = &mut rest[0];
            let dnormed: Vec<f32> = below
                .iter()
                .zip(&h.act)
                .map(|(d, a)| d * (1.0 - a * a))
                .collect();
            let mut dpre = vec![0.0; dnormed.len()];
            let shape = Shape::rows(labels.len(), h.gamma.value.len());
            let sync = SyncBatchNorm {
                comm,
                bn: bn(&h.gamma.value, &h.beta.value),
            };
            let grads = Grads {
                dx: &mut dpre,
                dgamma: Some(&mut h.gamma.grad),
                dbeta: Some(&mut h.beta.grad),
            };
            let (mean, invstd) = (&h.save_mean, &h.save_invstd);
            sync.backward(&dnormed, &h.pre, shape, mean, invstd, h.count, grads)?;
            let dx = (i > 0).then_some(&mut below);
            h.linear.backward(input, &dpre, dx);
        }
        // Allreduce of the weight gradients (fixed order), then the same step on all.
        let all = |p: &mut Param, reduce: bool| {
            if reduce {
                sum_in_rank_order(comm, &mut p.grad);
            }
            p.grad.iter_mut().for_each(|g| *g /= ranks);
            p.step(LR);
        };
        for h in &mut self.hidden {
            all(&mut h.linear.weight, true);
            all(&mut h.linear.bias, true);
            all(&mut h.gamma, false);
            all(&mut h.beta, false);
        }
        all(&mut self.out.weight, true);
        all(&mut self.out.bias, true);
        Ok(())
    }

    /// Eval-mode logits (BN with the running statistics), on one rank.
    fn logits(&self, x: &[f32]) -> Result<Vec<f32>, batchnorm::Error> {
        let mut input = x.to_vec();
        for h in &self.hidden {
            let mut pre = Vec::new();
            h.linear.forward(&input, &mut pre);
            let mut y = vec![0.0; pre.len()];
            let shape = Shape::rows(pre.len() / h.gamma.value.len(), h.gamma.value.len());
            bn(&h.gamma.value, &h.beta.value).eval(
                &pre,
                &mut y,
                shape,
                &h.running_mean,
                &h.running_var,
            )?;
            input = y.iter().map(|v| v.tanh()).collect();
        }
        let mut logits = Vec::new();
        self.out.forward(&input, &mut logits);
        Ok(logits)
    }

    /// Every parameter and running statistic, in a fixed order.
    fn state(&self) -> Vec<f32> {
        let mut v = Vec::new();
        for h in &self.hidden {
            for p in [
                &h.linear.weight.value,
                &h.linear.bias.value,
                &h.gamma.value,
                &h.beta.value,
                &h.running_mean,
                &h.running_var,
            ] {
                v.extend_from_slice(p);
            }
        }
        v.extend_from_slice(&self.out.weight.value);
        v.extend_from_slice(&self.out.bias.value);
        v
    }
}

fn bn<'a>(gamma: &'a [f32], beta: &'a [f32]) -> BatchNorm<'a> {
    BatchNorm {
        eps: EPS,
        gamma: Some(gamma),
        beta: Some(beta),
    }
}

fn accuracy(logits: &[f32], labels: &[usize]) -> f64 {
    softmax_cross_entropy(logits, labels, None).correct as f64 / labels.len() as f64
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

fn run<C: Communicator>(comm: &C) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    if !BATCH.is_multiple_of(size) {
        return Err(format!("{size} ranks do not divide the batch of {BATCH}").into());
    }
    let part = BATCH / size;
    let mut rng = Rng::new(SEED_DATA);
    let points = data::spirals(CLASSES, POINTS_PER_CLASS, 1.0, 0.04, &mut rng);
    let (train, test) = data::split(&points, 0.25, &mut rng);

    let mut net = DataParallel::new(&mut Rng::new(SEED_INIT));
    let mut reference =
        (rank == 0).then(|| Mlp::new(2, &WIDTHS, CLASSES, true, &mut Rng::new(SEED_INIT)));
    let mut order_rng = Rng::new(SEED_ORDER);
    let mut order: Vec<usize> = (0..train.len()).collect();
    for _ in 0..EPOCHS {
        order_rng.shuffle(&mut order);
        for indices in order.chunks_exact(BATCH) {
            let mine: Points = train.select(&indices[rank * part..][..part]);
            net.train_step(comm, &mine.x, &mine.label)?;
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

    // The replicas: the same bits on every rank.
    let state = net.state();
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
        let ours = net.logits(&test.x)?;
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
