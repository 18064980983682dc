//! Why batch norm helps, part two of the demonstration: `cargo run --release --example why_bn`.
//!
//! The `mlp` demo's network and data (the same tanh MLP on five noisy spirals, the
//! same seeds), three experiments from the literature on why BN works:
//!
//! 1. Internal covariate shift (Santurkar et al. 2018, §2.1, Fig. 2): no BN, BN, and
//!    BN followed by noise that shifts every unit's distribution at every step
//!    ([`noisy`]): accuracy, and how far each layer's activations move during training.
//! 2. The loss landscape (same paper, §3, Fig. 4): at checkpoints, along the gradient,
//!    the range of the loss over step sizes, the change of the gradient, and the
//!    effective β-smoothness, with and without BN.
//! 3. The learning-rate range (Bjorck et al. 2018): a log-spaced sweep with and
//!    without BN; a run diverges when a mini-batch loss exceeds 10³.
//!
//! Each part prints its figures and writes an SVG to `target/` (and, in the full run
//! under cargo, a copy to `docs/`). `WHY_BN_QUICK=1` (or `--quick`) runs every part on
//! fewer points and epochs: the CI smoke test.

#[path = "../mlp/data.rs"]
mod data;
#[path = "../mlp/linear.rs"]
mod linear;
// Shared with the mlp demo, which uses parts of these that this one does not.
#[allow(dead_code)]
#[path = "../mlp/plot.rs"]
mod mlp_plot;
#[allow(dead_code)]
#[path = "../mlp/net.rs"]
mod net;
mod noisy;
mod output;
mod plot;
mod training;

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use data::{Points, Rng};
use mlp_plot::Axis;
use net::{Mlp, Normalize};
use noisy::{Noise, NoisyNorm};
use output::Output;
use plot::{Chart, Key, Mark};
use training::{cosine, Batches};

/// Everything that sets the size of the experiments. The data and the network are
/// the `mlp` demo's.
struct Config {
    classes: usize,
    points_per_class: usize,
    turns: f64,
    noise: f64,
    widths: [usize; 3],
    batch: usize,
    /// Part 1: epochs and peak learning rate (cosine decay, as in the mlp demo).
    ics_epochs: usize,
    ics_lr: f32,
    /// Part 2: epochs at a constant learning rate, a checkpoint every that many steps.
    landscape_epochs: usize,
    landscape_lr: f32,
    landscape_every: usize,
    /// Part 3: epochs per run; the peak learning rates are [`SWEEP_LRS`].
    sweep_epochs: usize,
}

const FULL: Config = Config {
    classes: 5,
    points_per_class: 800,
    turns: 1.0,
    noise: 0.04,
    widths: [128, 128, 128],
    batch: 64,
    ics_epochs: 40,
    ics_lr: 0.3,
    landscape_epochs: 40,
    landscape_lr: 0.3,
    landscape_every: 20,
    sweep_epochs: 15,
};

const QUICK: Config = Config {
    points_per_class: 200,
    ics_epochs: 2,
    landscape_epochs: 1,
    landscape_every: 4,
    sweep_epochs: 1,
    ..FULL
};

/// The mlp demo's seeds: data, initial weights (the same in every run); the batch
/// order's is [`training::SEED_ORDER`].
const SEED_DATA: u64 = 5;
const SEED_INIT: u64 = 42;
/// Seeds of the noise of noisy BN, one per layer.
const SEED_NOISE: u64 = 1_000_003;
/// Part 1's two levels of noise after BN. The paper's magnitudes are not quoted
/// here (see docs/demonstration.md); the larger moves a unit's mean by up to ±1, the scale of
/// the standardized signal itself, the smaller by half that.
const NOISE: [Noise; 2] = [
    Noise {
        mean: 1.0,
        scale: 2.0,
    },
    Noise {
        mean: 0.5,
        scale: 1.5,
    },
];
const TEST_FRACTION: f64 = 0.25;

/// Part 2: the step sizes probed along the gradient, as multiples of the learning rate.
const PROBES: [f32; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// Part 3: peak learning rates 10^(k/2), k = −4 … 5.
const SWEEP_LRS: [f32; 10] = [
    0.01, 0.0316, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0, 316.0,
];
/// Bjorck et al.'s criterion: a run has diverged once a mini-batch loss exceeds this.
const DIVERGED: f64 = 1e3;

const RED: &str = "#d6452a";
const BLUE: &str = "#1f6fb4";
const GREEN: &str = "#2a9d4a";
const PURPLE: &str = "#8e44ad";
/// The labels of the two noisy runs, from [`NOISE`].
const NOISY: [&str; 2] = ["noisy BN (m 1, s_max 2)", "noisy BN (m 0.5, s_max 1.5)"];

fn main() -> ExitCode {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("WHY_BN_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    match run(if quick { &QUICK } else { &FULL }, quick) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: &Config, quick: bool) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let mut rng = Rng::new(SEED_DATA);
    let points = data::spirals(
        cfg.classes,
        cfg.points_per_class,
        cfg.turns,
        cfg.noise,
        &mut rng,
    );
    let (train, test) = data::split(&points, TEST_FRACTION, &mut rng);
    println!(
        "{} interleaved spirals, {} training and {} test points{}; MLP 2 → {} → {} (tanh), \
         plain SGD, batch {}.",
        cfg.classes,
        train.len(),
        test.len(),
        if quick { " (quick mode)" } else { "" },
        cfg.widths.map(|w| w.to_string()).join(" → "),
        cfg.classes,
        cfg.batch,
    );
    let out = Output { quick };
    covariate_shift(cfg, &train, &test, &out)?;
    landscape(cfg, &train, &out)?;
    lr_sweep(cfg, &train, &test, &out)?;
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A fresh network: the same initial weights whatever the norm.
fn network<N: Normalize>(cfg: &Config, norm: impl FnMut(usize) -> Option<N>) -> Mlp<N> {
    Mlp::with_norm(2, &cfg.widths, cfg.classes, norm, &mut Rng::new(SEED_INIT))
}

fn plain(cfg: &Config) -> Mlp {
    Mlp::new(2, &cfg.widths, cfg.classes, false, &mut Rng::new(SEED_INIT))
}

fn with_bn(cfg: &Config) -> Mlp {
    Mlp::new(2, &cfg.widths, cfg.classes, true, &mut Rng::new(SEED_INIT))
}

fn with_noisy_bn(cfg: &Config, noise: Noise) -> Mlp<NoisyNorm> {
    let mut layer = 0;
    network(cfg, |w| {
        layer += 1;
        Some(NoisyNorm::new(w, noise, SEED_NOISE * layer))
    })
}

fn accuracy<N: Normalize>(net: &mut Mlp<N>, points: &Points) -> Result<f64, Box<dyn Error>> {
    let score = net.evaluate(&points.x, &points.label)?;
    Ok(score.correct as f64 / points.len() as f64)
}

// ---------------------------------------------------------------------------------
// Part 1: internal covariate shift
// ---------------------------------------------------------------------------------

/// Per layer and unit, running sums over training steps of the unit's batch mean and
/// batch standard deviation (of its tanh output, the next layer's input), and a trace
/// of one unit for the plot.
struct Shift {
    /// `[layer][unit]`: Σ mean, Σ mean², Σ std, Σ std².
    sums: Vec<Vec<[f64; 4]>>,
    steps: usize,
    /// Per step, of unit [`TRACED_UNIT`] of the last hidden layer: (mean, std).
    trace: Vec<(f64, f64)>,
}

const TRACED_UNIT: usize = 0;

impl Shift {
    fn new(widths: &[usize]) -> Self {
        Shift {
            sums: widths.iter().map(|&w| vec![[0.0; 4]; w]).collect(),
            steps: 0,
            trace: Vec::new(),
        }
    }

    fn record(&mut self, activations: &[&[f32]]) {
        let layers = activations.len();
        for (l, (act, sums)) in activations.iter().zip(&mut self.sums).enumerate() {
            let width = sums.len();
            let batch = act.len() / width;
            for (unit, s) in sums.iter_mut().enumerate() {
                let values = act.iter().skip(unit).step_by(width).map(|&v| f64::from(v));
                let mean = values.clone().sum::<f64>() / batch as f64;
                let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / batch as f64;
                let std = var.sqrt();
                *s = [
                    s[0] + mean,
                    s[1] + mean * mean,
                    s[2] + std,
                    s[3] + std * std,
                ];
                if l + 1 == layers && unit == TRACED_UNIT {
                    self.trace.push((mean, std));
                }
            }
        }
        self.steps += 1;
    }

    /// Per layer, averaged over its units: how much the unit's batch mean and batch
    /// standard deviation vary over the steps (their standard deviation over steps).
    fn per_layer(&self) -> Vec<(f64, f64)> {
        let n = self.steps as f64;
        let spread = |sum: f64, sum_sq: f64| (sum_sq / n - (sum / n).powi(2)).max(0.0).sqrt();
        self.sums
            .iter()
            .map(|units| {
                let w = units.len() as f64;
                let mean_moves = units.iter().map(|s| spread(s[0], s[1])).sum::<f64>() / w;
                let std_moves = units.iter().map(|s| spread(s[2], s[3])).sum::<f64>() / w;
                (mean_moves, std_moves)
            })
            .collect()
    }
}

struct IcsRun {
    label: &'static str,
    color: &'static str,
    /// Per epoch: test accuracy (eval mode); mean mini-batch accuracy and loss (train
    /// mode, as the network trains: with noisy BN's noise).
    test_acc: Vec<f64>,
    batch_acc: Vec<f64>,
    batch_loss: Vec<f64>,
    shift: Shift,
}

fn train_ics<N: Normalize>(
    cfg: &Config,
    train: &Points,
    test: &Points,
    mut net: Mlp<N>,
    label: &'static str,
    color: &'static str,
) -> Result<IcsRun, Box<dyn Error>> {
    let mut batches = Batches::new(train, cfg.batch);
    let total = cfg.ics_epochs * batches.per_epoch();
    let mut run = IcsRun {
        label,
        color,
        test_acc: Vec::new(),
        batch_acc: Vec::new(),
        batch_loss: Vec::new(),
        shift: Shift::new(&cfg.widths),
    };
    let mut step = 0;
    for _ in 0..cfg.ics_epochs {
        let (mut correct, mut loss, mut seen) = (0, 0.0, 0);
        for batch in batches.epoch() {
            let lr = cosine(cfg.ics_lr, step, total);
            let score = net.train_step(&batch.x, &batch.label, lr)?;
            run.shift.record(&net.activations());
            correct += score.correct;
            loss += score.loss;
            seen += batch.len();
            step += 1;
        }
        run.batch_acc.push(correct as f64 / seen as f64);
        run.batch_loss.push(loss / seen as f64);
        run.test_acc.push(accuracy(&mut net, test)?);
    }
    Ok(run)
}

fn covariate_shift(
    cfg: &Config,
    train: &Points,
    test: &Points,
    out: &Output,
) -> Result<(), Box<dyn Error>> {
    println!(
        "\n## 1. Internal covariate shift (Santurkar et al. 2018, §2.1, Fig. 2)\n\n\
         {} epochs, peak learning rate {} (cosine decay). Noisy BN: after each BN, every unit \
         is scaled by s ~ U(1, s_max) and shifted by μ ~ U(−m, m), drawn anew at every step \
         (eval: s = (1 + s_max)/2, μ = 0).\n\
         Shift of a layer's output (its tanh activations, the next layer's input): per unit, \
         the standard deviation over all training steps of its batch mean and of its batch \
         standard deviation, averaged over the layer's units.\n",
        cfg.ics_epochs, cfg.ics_lr,
    );
    let runs = [
        train_ics(cfg, train, test, plain(cfg), "no BN", RED)?,
        train_ics(cfg, train, test, with_bn(cfg), "BN", BLUE)?,
        train_ics(
            cfg,
            train,
            test,
            with_noisy_bn(cfg, NOISE[0]),
            NOISY[0],
            GREEN,
        )?,
        train_ics(
            cfg,
            train,
            test,
            with_noisy_bn(cfg, NOISE[1]),
            NOISY[1],
            PURPLE,
        )?,
    ];
    println!(
        "| run | test accuracy | training loss, accuracy (mini-batches, last epoch) | shift of the mean, layers 1, 2, 3 | shift of the std, layers 1, 2, 3 |"
    );
    println!("|---|---:|---:|---:|---:|");
    for run in &runs {
        let layers = run.shift.per_layer();
        let join = |f: fn(&(f64, f64)) -> f64| {
            let cells: Vec<String> = layers.iter().map(|l| format!("{:.3}", f(l))).collect();
            cells.join(", ")
        };
        println!(
            "| {} | {:.1} % | {:.3}, {:.1} % | {} | {} |",
            run.label,
            100.0 * run.test_acc.last().copied().unwrap_or(f64::NAN),
            run.batch_loss.last().copied().unwrap_or(f64::NAN),
            100.0 * run.batch_acc.last().copied().unwrap_or(f64::NAN),
            join(|l| l.0),
            join(|l| l.1),
        );
    }
    for run in &runs {
        let first = |v: &[f64]| {
            let hit = v.iter().position(|&a| a >= 0.8);
            hit.map_or("never".to_string(), |e| format!("epoch {}", e + 1))
        };
        println!(
            "{}: accuracy ≥ 80 % first in mini-batches: {}, on the test set: {}",
            run.label,
            first(&run.batch_acc),
            first(&run.test_acc),
        );
    }

    let epochs = cfg.ics_epochs as f64;
    let steps = runs[0].shift.steps as f64;
    let per_epoch = |f: fn(&IcsRun) -> &[f64]| -> Vec<Mark> {
        runs.iter()
            .map(|r| Mark::Line {
                points: points_per_epoch(f(r)),
                color: r.color,
                dashed: false,
            })
            .collect()
    };
    let mut charts = vec![
        Chart {
            title: "training accuracy".into(),
            detail: "mini-batches in train mode, mean per epoch".into(),
            x: plot::count_axis(epochs),
            x_label: "epoch".into(),
            y: Axis::percent(1.0, 0.2),
            marks: per_epoch(|r| &r.batch_acc),
            reference: Some((1.0 / cfg.classes as f64, "chance".into())),
        },
        Chart {
            title: "training loss".into(),
            detail: "mini-batches in train mode, mean per epoch, log scale".into(),
            x: plot::count_axis(epochs),
            x_label: "epoch".into(),
            y: Axis::log(runs.iter().flat_map(|r| r.batch_loss.iter().copied())),
            marks: per_epoch(|r| &r.batch_loss),
            reference: None,
        },
        Chart {
            title: "test accuracy".into(),
            detail: "eval mode, after each epoch".into(),
            x: plot::count_axis(epochs),
            x_label: "epoch".into(),
            y: Axis::percent(1.0, 0.2),
            marks: per_epoch(|r| &r.test_acc),
            reference: Some((1.0 / cfg.classes as f64, "chance".into())),
        },
    ];
    let shifts: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            let layers = r.shift.per_layer().into_iter().enumerate();
            layers
                .map(|(l, (mean, _))| (l as f64 + 1.0, mean))
                .collect()
        })
        .collect();
    let top = shifts.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    charts.push(Chart {
        title: "shift of the mean, per layer".into(),
        detail: "std over steps of a unit's batch mean".into(),
        x: Axis::linear(0.5, cfg.widths.len() as f64 + 0.5, &[1.0, 2.0, 3.0]),
        x_label: "hidden layer".into(),
        y: plot::value_axis(0.0, top),
        marks: runs
            .iter()
            .zip(&shifts)
            .flat_map(|(r, points)| {
                [
                    Mark::Line {
                        points: points.clone(),
                        color: r.color,
                        dashed: false,
                    },
                    Mark::Dots {
                        points: points.clone(),
                        color: r.color,
                    },
                ]
            })
            .collect(),
        reference: None,
    });
    let (lo, hi) = runs
        .iter()
        .flat_map(|r| r.shift.trace.iter().flat_map(|(m, s)| [m - s, m + s]))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    for run in &runs {
        let trace = &run.shift.trace;
        // Every third step: the step-to-step jitter stays visible, the file small.
        let (band, line) = trace
            .iter()
            .enumerate()
            .step_by(3)
            .map(|(i, &(m, s))| ((i as f64 + 1.0, m - s, m + s), (i as f64 + 1.0, m)))
            .unzip();
        charts.push(Chart {
            title: format!("layer 3, unit {}: {}", TRACED_UNIT + 1, run.label),
            detail: "batch mean ± std of its tanh output".into(),
            x: plot::count_axis(steps),
            x_label: "training step".into(),
            y: plot::value_axis(lo.max(-1.0), hi.min(1.0)),
            marks: vec![
                Mark::Band {
                    points: band,
                    color: run.color,
                },
                Mark::Line {
                    points: line,
                    color: run.color,
                    dashed: false,
                },
            ],
            reference: None,
        });
    }
    let keys = keys(runs.iter().map(|r| (r.label, r.color)));
    let title = "1. Internal covariate shift: no BN, BN, and BN with noise injected after it";
    out.write("why_bn_ics", &plot::svg(title, &charts, 4, &keys))
}

fn points_per_epoch(values: &[f64]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as f64 + 1.0, v))
        .collect()
}

fn keys<'a>(entries: impl Iterator<Item = (&'a str, &'static str)>) -> Vec<Key> {
    entries
        .map(|(label, color)| Key {
            label: label.to_string(),
            color,
            dashed: false,
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Part 2: the loss landscape along the gradient
// ---------------------------------------------------------------------------------

/// At one checkpoint, over the step sizes η of [`PROBES`]: the mini-batch loss at
/// `θ − η·g`, `‖g(θ − η·g) − g‖`, and the largest `‖g(θ − η·g) − g‖ / ‖η·g‖`.
struct Probe {
    step: usize,
    loss: Vec<f64>,
    grad_change: Vec<f64>,
    beta: f64,
}

struct LandscapeRun {
    label: &'static str,
    color: &'static str,
    probes: Vec<Probe>,
}

fn flat_grad<N: Normalize>(net: &mut Mlp<N>) -> Vec<f32> {
    net.params()
        .iter()
        .flat_map(|p| p.grad.iter().copied())
        .collect()
}

fn norm2(v: impl Iterator<Item = f32>) -> f64 {
    v.map(|x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

/// Trains at a constant learning rate; every `landscape_every` steps, before the
/// update, probes the mini-batch loss and gradient along the gradient direction.
fn train_landscape<N: Normalize>(
    cfg: &Config,
    train: &Points,
    mut net: Mlp<N>,
    label: &'static str,
    color: &'static str,
) -> Result<LandscapeRun, Box<dyn Error>> {
    let lr = cfg.landscape_lr;
    let mut batches = Batches::new(train, cfg.batch);
    let mut probes = Vec::new();
    let mut step = 0;
    for _ in 0..cfg.landscape_epochs {
        for batch in batches.epoch() {
            if step % cfg.landscape_every == 0 {
                // The gradient at θ, kept in `net` for the update below.
                net.gradients(&batch.x, &batch.label)?;
                let g = flat_grad(&mut net);
                let g_norm = norm2(g.iter().copied());
                let mut probe = Probe {
                    step,
                    loss: Vec::new(),
                    grad_change: Vec::new(),
                    beta: 0.0,
                };
                for multiple in PROBES {
                    let eta = multiple * lr;
                    // A clone, so that the probe's forward passes leave the running
                    // statistics of the trained network alone.
                    let mut moved = net.clone();
                    for p in moved.params() {
                        p.step(eta); // θ − η·g: the gradient is still in `grad`
                    }
                    let score = moved.gradients(&batch.x, &batch.label)?;
                    let g_moved = flat_grad(&mut moved);
                    let change = norm2(g_moved.iter().zip(&g).map(|(a, b)| a - b));
                    probe.loss.push(score.loss / batch.len() as f64);
                    probe.grad_change.push(change);
                    probe.beta = probe.beta.max(change / (f64::from(eta) * g_norm));
                }
                probes.push(probe);
                for p in net.params() {
                    p.step(lr);
                }
            } else {
                net.train_step(&batch.x, &batch.label, lr)?;
            }
            step += 1;
        }
    }
    Ok(LandscapeRun {
        label,
        color,
        probes,
    })
}

fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn landscape(cfg: &Config, train: &Points, out: &Output) -> Result<(), Box<dyn Error>> {
    println!(
        "\n## 2. The loss landscape along the gradient (Santurkar et al. 2018, §3, Fig. 4)\n\n\
         {} epochs at a constant learning rate {}; every {} steps, on that step's mini-batch, \
         the loss and the gradient at θ − η·∇L for η = {} × the learning rate.\n\
         Per checkpoint: loss range = max − min of the loss over η; gradient change = the \
         largest ‖∇L(θ − η∇L) − ∇L(θ)‖; β = the largest ‖∇L(θ − η∇L) − ∇L(θ)‖ / ‖η∇L(θ)‖.\n",
        cfg.landscape_epochs,
        cfg.landscape_lr,
        cfg.landscape_every,
        PROBES.map(|m| m.to_string()).join(", "),
    );
    let runs = [
        train_landscape(cfg, train, plain(cfg), "no BN", RED)?,
        train_landscape(cfg, train, with_bn(cfg), "BN", BLUE)?,
    ];
    // The whole run, and its first quarter and the rest apart: early on the plain
    // network sits on a plateau, and the two phases differ.
    let quarter = cfg.landscape_epochs * (train.len() / cfg.batch) / 4;
    let phases = [
        ("all", 0..usize::MAX),
        ("first quarter", 0..quarter),
        ("the rest", quarter..usize::MAX),
    ];
    println!(
        "| run | steps | checkpoints | loss range, median (max) | gradient change, median (max) | β, median (max) |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for run in &runs {
        for (phase, steps) in &phases {
            let probes: Vec<&Probe> = run
                .probes
                .iter()
                .filter(|p| steps.contains(&p.step))
                .collect();
            let loss_range: Vec<f64> = probes
                .iter()
                .map(|p| {
                    let (lo, hi) = range(&p.loss);
                    hi - lo
                })
                .collect();
            let change: Vec<f64> = probes.iter().map(|p| range(&p.grad_change).1).collect();
            let beta: Vec<f64> = probes.iter().map(|p| p.beta).collect();
            let cell = |v: &[f64]| format!("{:.3} ({:.3})", median(v.to_vec()), range(v).1);
            println!(
                "| {} | {phase} | {} | {} | {} | {} |",
                run.label,
                probes.len(),
                cell(&loss_range),
                cell(&change),
                cell(&beta)
            );
        }
    }

    let steps = runs
        .iter()
        .flat_map(|r| r.probes.last().map(|p| p.step as f64))
        .fold(1.0, f64::max);
    let x = || plot::count_axis(steps);
    let bands = |f: &dyn Fn(&Probe) -> (f64, f64)| -> Vec<Mark> {
        runs.iter()
            .map(|r| Mark::Band {
                points: r
                    .probes
                    .iter()
                    .map(|p| {
                        let (lo, hi) = f(p);
                        (p.step as f64, lo, hi)
                    })
                    .collect(),
                color: r.color,
            })
            .collect()
    };
    let all = |f: &dyn Fn(&Probe) -> Vec<f64>| -> Vec<f64> {
        runs.iter()
            .flat_map(|r| r.probes.iter().flat_map(f))
            .collect()
    };
    let charts = [
        Chart {
            title: "loss landscape".into(),
            detail: "mini-batch loss over the step sizes, log scale".into(),
            x: x(),
            x_label: "training step".into(),
            y: Axis::log(all(&|p| p.loss.clone()).into_iter()),
            marks: bands(&|p| range(&p.loss)),
            reference: None,
        },
        Chart {
            title: "gradient predictiveness".into(),
            detail: "ℓ2 change of the gradient over the step sizes".into(),
            x: x(),
            x_label: "training step".into(),
            y: Axis::log(all(&|p| p.grad_change.clone()).into_iter()),
            marks: bands(&|p| range(&p.grad_change)),
            reference: None,
        },
        Chart {
            title: "effective β-smoothness".into(),
            detail: "max ‖Δ gradient‖ / ‖Δ parameters‖, log scale".into(),
            x: x(),
            x_label: "training step".into(),
            y: Axis::log(all(&|p| vec![p.beta]).into_iter()),
            marks: runs
                .iter()
                .map(|r| Mark::Line {
                    points: r.probes.iter().map(|p| (p.step as f64, p.beta)).collect(),
                    color: r.color,
                    dashed: false,
                })
                .collect(),
            reference: None,
        },
    ];
    let keys = keys(runs.iter().map(|r| (r.label, r.color)));
    let title = format!(
        "2. Along the gradient, with and without BN (constant learning rate {})",
        cfg.landscape_lr
    );
    out.write("why_bn_landscape", &plot::svg(&title, &charts, 3, &keys))
}

// ---------------------------------------------------------------------------------
// Part 3: the learning-rate range
// ---------------------------------------------------------------------------------

struct SweepRun {
    /// The step at which a mini-batch loss first exceeded [`DIVERGED`] (or was NaN).
    diverged_at: Option<usize>,
    max_batch_loss: f64,
    /// After the last epoch, eval mode; `None` when the run diverged.
    test_acc: Option<f64>,
}

fn train_sweep(
    cfg: &Config,
    train: &Points,
    test: &Points,
    mut net: Mlp,
    peak: f32,
) -> Result<SweepRun, Box<dyn Error>> {
    let mut batches = Batches::new(train, cfg.batch);
    let total = cfg.sweep_epochs * batches.per_epoch();
    let mut max_batch_loss: f64 = 0.0;
    let mut step = 0;
    for _ in 0..cfg.sweep_epochs {
        for batch in batches.epoch() {
            let score = net.train_step(&batch.x, &batch.label, cosine(peak, step, total))?;
            let loss = score.loss / batch.len() as f64;
            max_batch_loss = max_batch_loss.max(loss);
            if loss.is_nan() || loss > DIVERGED {
                return Ok(SweepRun {
                    diverged_at: Some(step),
                    max_batch_loss: if loss.is_nan() {
                        f64::INFINITY
                    } else {
                        max_batch_loss
                    },
                    test_acc: None,
                });
            }
            step += 1;
        }
    }
    Ok(SweepRun {
        diverged_at: None,
        max_batch_loss,
        test_acc: Some(accuracy(&mut net, test)?),
    })
}

fn lr_sweep(
    cfg: &Config,
    train: &Points,
    test: &Points,
    out: &Output,
) -> Result<(), Box<dyn Error>> {
    println!(
        "\n## 3. The learning-rate range (Bjorck et al. 2018)\n\n\
         {} epochs per run, peak learning rate as listed (cosine decay); a run has diverged \
         once a mini-batch loss exceeds {DIVERGED:e} (it stops there).\n",
        cfg.sweep_epochs
    );
    let mut results: Vec<(f32, [SweepRun; 2])> = Vec::new();
    println!("| peak lr | no BN: test accuracy | no BN: max mini-batch loss | BN: test accuracy | BN: max mini-batch loss |");
    println!("|---:|---:|---:|---:|---:|");
    for lr in SWEEP_LRS {
        let pair = [
            train_sweep(cfg, train, test, plain(cfg), lr)?,
            train_sweep(cfg, train, test, with_bn(cfg), lr)?,
        ];
        let acc = |r: &SweepRun| match (r.test_acc, r.diverged_at) {
            (Some(a), _) => format!("{:.1} %", 100.0 * a),
            (None, Some(step)) => format!("diverged (step {step})"),
            (None, None) => "—".into(),
        };
        println!(
            "| {lr} | {} | {:.3e} | {} | {:.3e} |",
            acc(&pair[0]),
            pair[0].max_batch_loss,
            acc(&pair[1]),
            pair[1].max_batch_loss
        );
        results.push((lr, pair));
    }
    let chance = 1.0 / cfg.classes as f64;
    for (i, name) in ["no BN", "BN"].iter().enumerate() {
        let stable: Vec<f32> = results
            .iter()
            .filter(|(_, r)| r[i].diverged_at.is_none())
            .map(|(lr, _)| *lr)
            .collect();
        // "Learns": clearly above chance (twice its accuracy).
        let learns: Vec<f32> = results
            .iter()
            .filter(|(_, r)| r[i].test_acc.is_some_and(|a| a > 2.0 * chance))
            .map(|(lr, _)| *lr)
            .collect();
        let best = results
            .iter()
            .filter_map(|(lr, r)| r[i].test_acc.map(|a| (*lr, a)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let span = |v: &[f32]| match (v.first(), v.last()) {
            (Some(lo), Some(hi)) if v.len() > 1 => format!("{lo} … {hi} ({} values)", v.len()),
            (Some(lr), _) => format!("{lr} only"),
            _ => "none".into(),
        };
        println!(
            "{name}: no divergence at {}; above {:.0} % test accuracy at {}; best {}",
            span(&stable),
            200.0 * chance,
            span(&learns),
            best.map_or("—".into(), |(lr, a)| format!(
                "{:.1} % at lr {lr}",
                100.0 * a
            )),
        );
    }

    // The decades around the sweep (f32's 0.01 is just below 10⁻², hence f64 bounds).
    let x = || Axis::log([0.01, 316.0].into_iter());
    let colors = [RED, BLUE];
    let mut acc_marks = Vec::new();
    let mut loss_marks = Vec::new();
    for (i, color) in colors.into_iter().enumerate() {
        let acc =
            |(lr, r): &(f32, [SweepRun; 2])| (f64::from(*lr), r[i].test_acc.unwrap_or(f64::NAN));
        acc_marks.push(Mark::Line {
            points: results.iter().map(acc).collect(),
            color,
            dashed: false,
        });
        acc_marks.push(Mark::Dots {
            points: results.iter().map(acc).collect(),
            color,
        });
        let crosses = |y: f64| Mark::Crosses {
            points: results
                .iter()
                .filter(|(_, r)| r[i].diverged_at.is_some())
                .map(|(lr, _)| (f64::from(*lr), y))
                .collect(),
            color,
        };
        // Diverged runs: a × at the bottom (no BN) or just above it (BN).
        acc_marks.push(crosses(0.02 + 0.06 * i as f64));
        let loss = |(lr, r): &(f32, [SweepRun; 2])| (f64::from(*lr), r[i].max_batch_loss);
        loss_marks.push(Mark::Line {
            points: results.iter().map(loss).collect(),
            color,
            dashed: false,
        });
        loss_marks.push(Mark::Dots {
            points: results.iter().map(loss).collect(),
            color,
        });
    }
    let losses = results
        .iter()
        .flat_map(|(_, r)| r.iter().map(|r| r.max_batch_loss))
        .chain([DIVERGED, 10.0 * DIVERGED]);
    let charts = [
        Chart {
            title: "test accuracy after training".into(),
            detail: "× = diverged (mini-batch loss > 1000)".into(),
            x: x(),
            x_label: "peak learning rate".into(),
            y: Axis::percent(1.0, 0.2),
            marks: acc_marks,
            reference: Some((chance, "chance".into())),
        },
        Chart {
            title: "largest mini-batch loss".into(),
            detail: "until the end or divergence, log scale".into(),
            x: x(),
            x_label: "peak learning rate".into(),
            y: Axis::log(losses),
            marks: loss_marks,
            reference: Some((DIVERGED, "divergence".into())),
        },
    ];
    let keys = keys([("no BN", RED), ("BN", BLUE)].into_iter());
    let title = "3. Learning-rate sweep with and without BN";
    out.write("why_bn_lr", &plot::svg(title, &charts, 2, &keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_axis_covers_its_range() {
        let axis = plot::value_axis(-0.37, 0.81);
        assert!(axis.min <= -0.37 && axis.max >= 0.81);
        assert!(axis.ticks.len() >= 3 && axis.ticks.len() <= 12);
    }

    #[test]
    fn shift_of_a_constant_unit_is_zero_and_of_a_moving_one_is_not() {
        let mut shift = Shift::new(&[2]);
        for t in 0..10 {
            // unit 0 constant in time, unit 1 moving by t
            let act = [0.5, t as f32, -0.5, t as f32 + 1.0];
            shift.record(&[&act]);
        }
        let layer = shift.per_layer()[0];
        // unit 1's mean moves with std √((10²−1)/12) ≈ 2.87; unit 0 not at all.
        assert!((layer.0 - 0.5 * 2.8723).abs() < 1e-3, "{layer:?}");
        assert!(layer.1.abs() < 1e-9);
        assert_eq!(shift.trace.len(), 10);
    }
}
