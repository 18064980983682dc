//! What to use when batches are small, part 4 of the demonstration:
//! `cargo run --release --example small_batch`.
//!
//! The `mlp` demo's network and data (the same tanh MLP on five noisy spirals, the
//! same seeds), trained at batch sizes 32, 8, 4 and 2 with four normalizations after
//! every hidden linear layer: BN, Batch Renormalization (Ioffe 2017, Fig. 2), group
//! norm and layer norm (Wu & He 2018, Fig. 1). Each is evaluated the way it is
//! deployed: BN and Batch Renormalization with their running statistics, group and
//! layer norm with each sample's own statistics, as in training.
//!
//! Prints the figures and writes `target/small_batch.svg` (and, in the full run under
//! cargo, `docs/small_batch.svg`). `SMALL_BATCH_QUICK=1` (or `--quick`) runs every
//! configuration on fewer points and epochs: the CI smoke test.

#[path = "../mlp/data.rs"]
mod data;
#[path = "../mlp/linear.rs"]
mod linear;
// Shared with the mlp and why_bn demos, which use parts of these that this one does not.
#[allow(dead_code)]
#[path = "../mlp/plot.rs"]
mod mlp_plot;
#[allow(dead_code)]
#[path = "../mlp/net.rs"]
mod net;
mod norms;
#[path = "../why_bn/output.rs"]
mod output;
#[allow(dead_code)]
#[path = "../why_bn/plot.rs"]
mod plot;
#[path = "../why_bn/training.rs"]
mod training;

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use data::{Points, Rng};
use mlp_plot::Axis;
use net::{Mlp, Norm, Normalize};
use norms::{BatchRenorm, Kind, PerSample, Schedule, MOMENTUM, RELAXED_AT};
use output::Output;
use plot::{Chart, Key, Mark};
use training::{cosine, Batches};

/// Everything that sets the size of the experiment. The data and the network are the
/// `mlp` demo's.
struct Config {
    classes: usize,
    points_per_class: usize,
    turns: f64,
    noise: f64,
    widths: [usize; 3],
    /// Epochs per run, the same at every batch size (so smaller batches take more steps).
    epochs: usize,
    /// Peak learning rate at batch 32; at batch B it is `lr_at_32 · B/32` (the linear
    /// scaling rule, as Wu & He use it), with cosine decay.
    lr_at_32: f32,
}

const FULL: Config = Config {
    classes: 5,
    points_per_class: 800,
    turns: 1.0,
    noise: 0.04,
    widths: [128, 128, 128],
    epochs: 20,
    lr_at_32: 0.3,
};

const QUICK: Config = Config {
    points_per_class: 200,
    epochs: 2,
    ..FULL
};

const BATCHES: [usize; 4] = [32, 8, 4, 2];
/// Wu & He's default number of groups: 32 groups of 4 features in a layer of 128.
const GROUPS: usize = 32;
/// The mlp demo's seeds: data, initial weights (the same in every run).
const SEED_DATA: u64 = 5;
const SEED_INIT: u64 = 42;
const TEST_FRACTION: f64 = 0.25;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Bn,
    Renorm,
    Group,
    Layer,
}

const NORMS: [Which; 4] = [Which::Bn, Which::Renorm, Which::Group, Which::Layer];

impl Which {
    fn label(self) -> &'static str {
        match self {
            Which::Bn => "BN",
            Which::Renorm => "Batch Renorm",
            Which::Group => "group norm (32 groups)",
            Which::Layer => "layer norm",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Which::Bn => "#1f6fb4",
            Which::Renorm => "#d6452a",
            Which::Group => "#2a9d4a",
            Which::Layer => "#8e44ad",
        }
    }
}

fn main() -> ExitCode {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("SMALL_BATCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    match run(if quick { &QUICK } else { &FULL }, quick) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One run's figures.
struct Run {
    which: Which,
    batch: usize,
    /// Per epoch: test accuracy as deployed (eval mode), and the mean mini-batch
    /// accuracy in train mode (what the network saw while it trained).
    test_acc: Vec<f64>,
    batch_acc: Vec<f64>,
}

impl Run {
    fn last_test(&self) -> f64 {
        self.test_acc.last().copied().unwrap_or(f64::NAN)
    }

    fn last_batch(&self) -> f64 {
        self.batch_acc.last().copied().unwrap_or(f64::NAN)
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
        "## 4. Small batches (Ioffe 2017, Fig. 2; Wu & He 2018, Fig. 1)\n\n\
         {} interleaved spirals, {} training and {} test points{}; MLP 2 → {} → {} (tanh), \
         plain SGD, {} epochs at every batch size, peak learning rate {}·B/32 (cosine decay).\n\
         BN and Batch Renorm: momentum 0.01 (Ioffe's), evaluated with their running statistics. Batch \
         Renorm's limits: rmax = 1, dmax = 0 for the first 1/16 of the steps, then linear to \
         dmax = 5 at 5/16 and rmax = 3 at {} of the run (the paper's 5k, 25k, 40k steps). \
         Group norm: {GROUPS} groups of {} features.\n",
        cfg.classes,
        train.len(),
        test.len(),
        if quick { " (quick mode)" } else { "" },
        cfg.widths.map(|w| w.to_string()).join(" → "),
        cfg.classes,
        cfg.epochs,
        cfg.lr_at_32,
        RELAXED_AT,
        cfg.widths[0] / GROUPS,
    );
    let mut runs = Vec::new();
    for batch in BATCHES {
        for which in NORMS {
            let run = match which {
                Which::Bn => {
                    let bn = |w| Norm::with_momentum(w, MOMENTUM);
                    train_run(cfg, &train, &test, network(cfg, bn), which, batch)
                }
                Which::Renorm => {
                    let steps = cfg.epochs * (train.len() / batch);
                    let renorm = |w| BatchRenorm::new(w, Schedule { steps });
                    train_run(cfg, &train, &test, network(cfg, renorm), which, batch)
                }
                Which::Group => {
                    let gn = |w| PerSample::new(w, Kind::Group { groups: GROUPS });
                    train_run(cfg, &train, &test, network(cfg, gn), which, batch)
                }
                Which::Layer => {
                    let ln = |w| PerSample::new(w, Kind::Layer);
                    train_run(cfg, &train, &test, network(cfg, ln), which, batch)
                }
            }?;
            runs.push(run);
        }
    }
    report(&runs);
    let out = Output { quick };
    out.write("small_batch", &picture(cfg, &runs))?;
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A fresh network: the same initial weights whatever the norm.
fn network<N: Normalize>(cfg: &Config, norm: impl Fn(usize) -> N) -> Mlp<N> {
    let norm = |w| Some(norm(w));
    Mlp::with_norm(2, &cfg.widths, cfg.classes, norm, &mut Rng::new(SEED_INIT))
}

fn train_run<N: Normalize>(
    cfg: &Config,
    train: &Points,
    test: &Points,
    mut net: Mlp<N>,
    which: Which,
    batch: usize,
) -> Result<Run, Box<dyn Error>> {
    let mut batches = Batches::new(train, batch);
    let total = cfg.epochs * batches.per_epoch();
    let peak = cfg.lr_at_32 * batch as f32 / 32.0;
    let mut run = Run {
        which,
        batch,
        test_acc: Vec::new(),
        batch_acc: Vec::new(),
    };
    let mut step = 0;
    for _ in 0..cfg.epochs {
        let (mut correct, mut seen) = (0, 0);
        for b in batches.epoch() {
            let score = net.train_step(&b.x, &b.label, cosine(peak, step, total))?;
            correct += score.correct;
            seen += b.len();
            step += 1;
        }
        run.batch_acc.push(correct as f64 / seen as f64);
        let score = net.evaluate(&test.x, &test.label)?;
        run.test_acc.push(score.correct as f64 / test.len() as f64);
    }
    Ok(run)
}

fn find(runs: &[Run], which: Which, batch: usize) -> Option<&Run> {
    runs.iter().find(|r| r.which == which && r.batch == batch)
}

fn report(runs: &[Run]) {
    let header = BATCHES.map(|b| format!("batch {b}")).join(" | ");
    let rule = BATCHES.map(|_| "---:").join("|");
    let table = |title: &str, value: fn(&Run) -> f64| {
        println!("{title}\n\n| norm | {header} |\n|---|{rule}|");
        for which in NORMS {
            let cells: Vec<String> = BATCHES
                .iter()
                .map(|&b| find(runs, which, b).map_or("—".into(), |r| pct(value(r))))
                .collect();
            println!("| {} | {} |", which.label(), cells.join(" | "));
        }
        println!();
    };
    table(
        "Test accuracy after training, as deployed (BN and Batch Renorm: running statistics):",
        Run::last_test,
    );
    table(
        "Mini-batch accuracy in train mode, last epoch (BN: batch statistics; Batch Renorm: batch statistics corrected by r and d):",
        Run::last_batch,
    );
    // How fast each learns: the first epoch at which its test accuracy reaches 90 %.
    let first_90 = |r: &Run| r.test_acc.iter().position(|&a| a >= 0.9).map(|e| e + 1);
    println!("First epoch with test accuracy ≥ 90 %:\n\n| norm | {header} |\n|---|{rule}|");
    for which in NORMS {
        let cells: Vec<String> = BATCHES
            .iter()
            .map(|&b| {
                let epoch = find(runs, which, b).and_then(first_90);
                epoch.map_or("never".into(), |e| e.to_string())
            })
            .collect();
        println!("| {} | {} |", which.label(), cells.join(" | "));
    }
    println!();
    for which in NORMS {
        let at = |b| find(runs, which, b).map_or(f64::NAN, Run::last_test);
        println!(
            "{}: from batch 32 to batch 2, test accuracy {} → {} ({:+.1} points)",
            which.label(),
            pct(at(32)),
            pct(at(2)),
            100.0 * (at(2) - at(32)),
        );
    }
}

fn pct(v: f64) -> String {
    format!("{:.1} %", 100.0 * v)
}

/// Four panels: test and train-mode accuracy against the batch size, and the test
/// accuracy over the epochs at batch 4 (Ioffe's Fig. 2) and at batch 2.
fn picture(cfg: &Config, runs: &[Run]) -> String {
    let batch_axis = || Axis {
        min: 1.5,
        max: 48.0,
        log: true,
        ticks: [2, 4, 8, 16, 32]
            .map(|b| (f64::from(b), b.to_string()))
            .to_vec(),
        minor: Vec::new(),
    };
    let chance = 1.0 / cfg.classes as f64;
    let per_batch = |value: fn(&Run) -> f64| -> Vec<Mark> {
        NORMS
            .iter()
            .flat_map(|&which| {
                let points: Vec<(f64, f64)> = BATCHES
                    .iter()
                    .rev()
                    .filter_map(|&b| find(runs, which, b))
                    .map(|r| (r.batch as f64, value(r)))
                    .collect();
                let color = which.color();
                [
                    Mark::Line {
                        points: points.clone(),
                        color,
                        dashed: false,
                    },
                    Mark::Dots { points, color },
                ]
            })
            .collect()
    };
    let per_epoch = |batch: usize| -> Vec<Mark> {
        NORMS
            .iter()
            .filter_map(|&which| find(runs, which, batch))
            .map(|r| Mark::Line {
                points: (0..=r.test_acc.len())
                    .map(|e| {
                        let acc = if e == 0 { f64::NAN } else { r.test_acc[e - 1] };
                        (e as f64, acc)
                    })
                    .collect(),
                color: r.which.color(),
                dashed: false,
            })
            .collect()
    };
    let epochs = cfg.epochs as f64;
    let charts = [
        Chart {
            title: "test accuracy after training".into(),
            detail: "as deployed (BN, Renorm: running stats)".into(),
            x: batch_axis(),
            x_label: "batch size".into(),
            y: Axis::percent(1.0, 0.2),
            marks: per_batch(Run::last_test),
            reference: Some((chance, "chance".into())),
        },
        Chart {
            title: "mini-batch accuracy in train mode".into(),
            detail: "last epoch (BN, Renorm: batch stats)".into(),
            x: batch_axis(),
            x_label: "batch size".into(),
            y: Axis::percent(1.0, 0.2),
            marks: per_batch(Run::last_batch),
            reference: Some((chance, "chance".into())),
        },
        Chart {
            title: "test accuracy at batch 4".into(),
            detail: "after each epoch, as deployed".into(),
            x: plot::count_axis(epochs),
            x_label: "epoch".into(),
            y: Axis::percent(1.0, 0.2),
            marks: per_epoch(4),
            reference: Some((chance, "chance".into())),
        },
        Chart {
            title: "test accuracy at batch 2".into(),
            detail: "after each epoch, as deployed".into(),
            x: plot::count_axis(epochs),
            x_label: "epoch".into(),
            y: Axis::percent(1.0, 0.2),
            marks: per_epoch(2),
            reference: Some((chance, "chance".into())),
        },
    ];
    let keys: Vec<Key> = NORMS
        .iter()
        .map(|w| Key {
            label: w.label().into(),
            color: w.color(),
            dashed: false,
        })
        .collect();
    let title = "4. Small batches: BN, Batch Renorm, group norm, layer norm";
    plot::svg(title, &charts, 4, &keys)
}
