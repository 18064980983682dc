//! The demonstration: `cargo run --release --example mlp`.
//!
//! Trains the same small tanh network on interleaved spirals four times — with and
//! without batch norm, at a moderate and a high learning rate — to show two claims of
//! the batch-norm literature in miniature: BN keeps tanh units out of saturation, and
//! BN lets a network train at a learning rate that breaks it without BN (Ioffe &
//! Szegedy 2015; Bjorck et al. 2018). Then it folds every BN into the linear layer
//! before it, checks that the folded network computes the same outputs, and times
//! both. A plot of the four runs goes to `target/mlp.svg`.
//!
//! `MLP_QUICK=1` (or `--quick`) trains 2 epochs on fewer points: the CI smoke test,
//! with the same fold check.

mod data;
mod linear;
// Shared with the why_bn demo, which uses parts of it this one does not.
#[allow(dead_code)]
mod net;
mod plot;

use std::error::Error;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use data::{Points, Rng};
use net::{Mlp, Mode};

/// Everything that sets the size of the experiment.
struct Config {
    classes: usize,
    points_per_class: usize,
    /// How often each spiral arm winds around the centre.
    turns: f64,
    /// Standard deviation of the Gaussian noise added to every point.
    noise: f64,
    widths: [usize; 3],
    batch: usize,
    epochs: usize,
    /// Peak learning rates (moderate, high); each run decays its own to 0.
    learning_rates: [f32; 2],
}

/// The learning rates: 0.3 is a good one for the plain network; 3, ten times more, is
/// where it breaks. Both are peak values of a cosine schedule, so that the final
/// figures are those of a settled network rather than a snapshot of SGD noise.
const FULL: Config = Config {
    classes: 5,
    points_per_class: 800,
    turns: 1.0,
    noise: 0.04,
    widths: [128, 128, 128],
    batch: 64,
    epochs: 40,
    learning_rates: [0.3, 3.0],
};

const QUICK: Config = Config {
    points_per_class: 200,
    epochs: 2,
    ..FULL
};

/// Seeds: data, initial weights (the same in all four runs), batch order (the same
/// sequence of batches in all four runs).
const SEED_DATA: u64 = 5;
const SEED_INIT: u64 = 42;
const SEED_ORDER: u64 = 7;

/// The share of the points held out for testing.
const TEST_FRACTION: f64 = 0.25;

/// How many timed passes each eval timing takes the median of.
const TIMING_PASSES: usize = 21;

/// The network after one epoch, measured in eval mode.
struct Epoch {
    /// Mean cross-entropy on the training set.
    loss: f64,
    train_acc: f64,
    test_acc: f64,
    /// Per hidden layer: the fraction of tanh outputs with |tanh| > 0.99 on the
    /// training set.
    saturated: Vec<f64>,
}

/// One training run and its history.
struct Run {
    batch_norm: bool,
    lr: f32,
    epochs: Vec<Epoch>,
    seconds: f64,
    net: Mlp,
}

impl Run {
    fn label(&self) -> String {
        label(self.batch_norm, self.lr)
    }

    fn last(&self) -> &Epoch {
        self.epochs
            .last()
            .expect("every run trains at least one epoch")
    }
}

fn label(batch_norm: bool, lr: f32) -> String {
    let bn = if batch_norm { "BN" } else { "no BN" };
    format!("{bn}, lr {lr}")
}

/// Exits non-zero, with the reason on stderr, when a crate call fails or the folded
/// network does not match the unfolded one.
fn main() -> ExitCode {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("MLP_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
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
    print_setup(cfg, &train, &test, quick);

    let mut runs = Vec::new();
    for lr in cfg.learning_rates {
        for batch_norm in [false, true] {
            runs.push(train_run(cfg, &train, &test, batch_norm, lr)?);
        }
    }
    print_summary(&runs);

    println!("\n## Inference: BN with running statistics, and folded into the linear layers\n");
    for run in runs.iter_mut().filter(|r| r.batch_norm) {
        check_fold(run, &test)?;
    }

    let path = target_dir().join(if quick { "mlp-quick.svg" } else { "mlp.svg" });
    write_plot(cfg, &runs, &path)?;
    println!("\nplot: {}", path.display());
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn print_setup(cfg: &Config, train: &Points, test: &Points, quick: bool) {
    println!(
        "{} interleaved spirals, {} training and {} test points{}.",
        cfg.classes,
        train.len(),
        test.len(),
        if quick { " (quick mode)" } else { "" },
    );
    println!(
        "MLP 2 → {} → {}: Linear → BN → tanh (or Linear → tanh) per hidden layer, softmax \
         cross-entropy;\nplain SGD, batch {}, {} epochs, learning rate decaying from its \
         peak to 0 (cosine).",
        cfg.widths.map(|w| w.to_string()).join(" → "),
        cfg.classes,
        cfg.batch,
        cfg.epochs,
    );
    println!(
        "After each epoch, in eval mode: loss and accuracy on the training set, accuracy on \
         the test set,\nand the fraction of saturated units (|tanh| > 0.99) in hidden layers \
         1, 2, 3.\n"
    );
}

/// Trains a fresh network (the same initial weights and batch order in every run) and
/// prints a line per epoch.
fn train_run(
    cfg: &Config,
    train: &Points,
    test: &Points,
    batch_norm: bool,
    lr: f32,
) -> Result<Run, Box<dyn Error>> {
    println!("## {}\n", label(batch_norm, lr));
    let mut net = Mlp::new(
        2,
        &cfg.widths,
        cfg.classes,
        batch_norm,
        &mut Rng::new(SEED_INIT),
    );
    let mut order_rng = Rng::new(SEED_ORDER);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let steps_per_epoch = train.len() / cfg.batch;
    let total_steps = cfg.epochs * steps_per_epoch;
    let mut epochs = Vec::new();
    let started = Instant::now();
    for epoch in 0..cfg.epochs {
        order_rng.shuffle(&mut order);
        // Whole batches only: every BN step sees the same batch size.
        for (i, indices) in order.chunks_exact(cfg.batch).enumerate() {
            let batch = train.select(indices);
            let step = epoch * steps_per_epoch + i;
            net.train_step(&batch.x, &batch.label, cosine(lr, step, total_steps))?;
        }
        let record = measure(&mut net, train, test)?;
        println!(
            "epoch {:>2}/{}  loss {:8.4}  train {:5.1} %  test {:5.1} %  saturated {}",
            epoch + 1,
            cfg.epochs,
            record.loss,
            100.0 * record.train_acc,
            100.0 * record.test_acc,
            percents(&record.saturated, 5, " "),
        );
        epochs.push(record);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{seconds:.1} s\n");
    Ok(Run {
        batch_norm,
        lr,
        epochs,
        seconds,
        net,
    })
}

/// The learning rate at `step` of `total`: from `peak` down to 0 along half a cosine
/// (Loshchilov & Hutter 2017, without restarts).
fn cosine(peak: f32, step: usize, total: usize) -> f32 {
    let progress = step as f64 / total as f64;
    (f64::from(peak) * 0.5 * (1.0 + (PI * progress).cos())) as f32
}

/// The network as it would be deployed, in eval mode (BN with its running
/// statistics): loss, accuracy and saturation on the training set, accuracy on the
/// test set.
fn measure(net: &mut Mlp, train: &Points, test: &Points) -> Result<Epoch, Box<dyn Error>> {
    let on_train = net.evaluate(&train.x, &train.label)?;
    let saturated = net.saturation();
    let on_test = net.evaluate(&test.x, &test.label)?;
    Ok(Epoch {
        loss: on_train.loss / train.len() as f64,
        train_acc: on_train.correct as f64 / train.len() as f64,
        test_acc: on_test.correct as f64 / test.len() as f64,
        saturated,
    })
}

/// Fractions as percentages, each right-aligned in `width` characters before the `%`.
fn percents(fractions: &[f64], width: usize, separator: &str) -> String {
    let cells: Vec<String> = fractions
        .iter()
        .map(|f| format!("{:width$.1} %", 100.0 * f))
        .collect();
    cells.join(separator)
}

fn print_summary(runs: &[Run]) {
    println!("## Summary (after the last epoch)\n");
    println!(
        "| run | test accuracy | training loss | saturated tanh units, layers 1, 2, 3 | time |"
    );
    println!("|---|---:|---:|---:|---:|");
    for run in runs {
        let last = run.last();
        println!(
            "| {} | {:.1} % | {:.3} | {} | {:.1} s |",
            run.label(),
            100.0 * last.test_acc,
            last.loss,
            percents(&last.saturated, 0, ", "),
            run.seconds,
        );
    }
}

/// Eval mode with BN (running statistics) against the same network with every BN
/// folded into the linear layer before it: the same outputs up to rounding, and a
/// forward pass without the BN layers.
fn check_fold(run: &mut Run, test: &Points) -> Result<(), Box<dyn Error>> {
    let label = run.label();
    let net = &mut run.net;
    let mut folded = net.folded()?;
    let reference = net.forward(&test.x, Mode::Eval)?.to_vec();
    let output = folded.forward(&test.x, Mode::Eval)?;
    let max_diff = reference
        .iter()
        .zip(output)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let max_logit = reference.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let tolerance = fold_tolerance(max_logit);
    println!(
        "{label}: logits up to {max_logit:.2} in magnitude; folded vs unfolded: max abs difference \
         {max_diff:.1e} (tolerance {tolerance:.1e})"
    );
    if max_diff.is_nan() || max_diff > tolerance {
        return Err(format!(
            "{label}: folding BN into the linear layers changed the network's outputs: \
             max abs difference {max_diff:e} exceeds the tolerance {tolerance:e}"
        )
        .into());
    }
    let (with_bn, folded) = time_pair(
        TIMING_PASSES,
        || net.forward(&test.x, Mode::Eval).map(drop),
        || folded.forward(&test.x, Mode::Eval).map(drop),
    )?;
    println!(
        "  eval forward of {} points, median (minimum) of {TIMING_PASSES} passes: with BN \
         {:.2} ms ({:.2} ms), folded {:.2} ms ({:.2} ms)",
        test.len(),
        1e3 * with_bn.median,
        1e3 * with_bn.min,
        1e3 * folded.median,
        1e3 * folded.min,
    );
    println!(
        "  speed-up from folding: {:.2}× by the medians, {:.2}× by the minima",
        with_bn.median / folded.median,
        with_bn.min / folded.min,
    );
    Ok(())
}

/// How far folded logits may stray from unfolded ones: 1e-4 of their scale.
///
/// A correct fold changes nothing but rounding. Each folded weight and bias is rounded
/// once from f64 to f32 (relative error 2⁻²⁴ ≈ 6e-8), and each pre-activation, a sum
/// of at most 128 products, then rounds along a different path: at worst about
/// 130 · 6e-8 ≈ 1e-5 of the sum of its terms' magnitudes. tanh (slope ≤ 1) and the
/// later layers carry that to the logits like any small perturbation, so over four
/// layers it stays below 1e-4 of the logits' scale (observed: about 1e-6 of it). A
/// wrong fold — a sign, eps, a statistic, γ or β — is off by 1e-2 of it or more.
fn fold_tolerance(max_logit: f32) -> f32 {
    1e-4 * max_logit.max(1.0)
}

/// Wall time of one function over several passes.
struct Timing {
    median: f64,
    /// The least disturbed pass: on a busy machine a pass shorter than the
    /// scheduler's time slice either runs through or waits a whole slice, so the
    /// median alone can land on either mode.
    min: f64,
}

impl Timing {
    fn of(mut seconds: Vec<f64>) -> Timing {
        seconds.sort_by(f64::total_cmp);
        Timing {
            median: seconds[seconds.len() / 2],
            min: seconds[0],
        }
    }
}

/// Times `passes` calls each of `a` and `b`. The calls alternate and swap order
/// every pass (a b, b a, a b, …), so that neither a change of machine load nor a
/// rhythm in it favours one of the two.
fn time_pair<E>(
    passes: usize,
    mut a: impl FnMut() -> Result<(), E>,
    mut b: impl FnMut() -> Result<(), E>,
) -> Result<(Timing, Timing), E> {
    let time = |f: &mut dyn FnMut() -> Result<(), E>, into: &mut Vec<f64>| {
        let start = Instant::now();
        f()?;
        into.push(start.elapsed().as_secs_f64());
        Ok(())
    };
    let (mut times_a, mut times_b) = (Vec::with_capacity(passes), Vec::with_capacity(passes));
    for pass in 0..passes {
        if pass % 2 == 0 {
            time(&mut a, &mut times_a)?;
            time(&mut b, &mut times_b)?;
        } else {
            time(&mut b, &mut times_b)?;
            time(&mut a, &mut times_a)?;
        }
    }
    Ok((Timing::of(times_a), Timing::of(times_b)))
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` if set, else `target/` beside
/// Cargo.toml (`cargo run` sets `CARGO_MANIFEST_DIR`), else `./target`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return dir.into();
    }
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || PathBuf::from("target"),
        |d| PathBuf::from(d).join("target"),
    )
}

/// Writes the SVG of the four runs to `path`. Colour says BN or not, a dashed line
/// the moderate learning rate.
fn write_plot(cfg: &Config, runs: &[Run], path: &Path) -> std::io::Result<()> {
    let series: Vec<plot::Series> = runs
        .iter()
        .map(|run| plot::Series {
            label: run.label(),
            color: if run.batch_norm { "#1f6fb4" } else { "#d6452a" },
            dashed: run.lr < cfg.learning_rates[1],
            loss: run.epochs.iter().map(|e| e.loss).collect(),
            test_acc: run.epochs.iter().map(|e| e.test_acc).collect(),
            saturated: run
                .epochs
                .iter()
                .map(|e| e.saturated.iter().sum::<f64>() / e.saturated.len() as f64)
                .collect(),
        })
        .collect();
    let title = format!(
        "{} spirals, MLP 2 → {} → {} (tanh), plain SGD: with and without batch norm",
        cfg.classes,
        cfg.widths.map(|w| w.to_string()).join(" → "),
        cfg.classes
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        path,
        plot::svg(&title, &series, cfg.epochs, 1.0 / cfg.classes as f64),
    )
}
