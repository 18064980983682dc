//! Every kernel × shape × layout beside a copy of its minimum traffic (the limit) and a
//! plain scalar implementation, interleaved in one run; prints a markdown table.
//!
//! ```sh
//! cargo run --release --example bench_table                                  # SSE2 default
//! RUSTFLAGS="-C target-cpu=native" cargo run --release --example bench_table
//! cargo run --release --example bench_table -- --csv S1 S5   # some shapes, machine-readable
//! cargo run --release --example bench_table -- S3 --layout=NHWC --kernel=train  # one row
//! cargo run --release --example bench_table -- --list        # the rows, without measuring
//! cargo run --release --example bench_table -- S5 --layout=NCHW --kernel=train --calls=20
//! ```
//!
//! `--calls=N` times nothing: it makes N calls of our kernel in `calls`, for a profiler
//! to count (`benches/instruction_counts.sh` runs callgrind on it).
//!
//! Columns: median time of ours, of the copy and of scalar per call (ms, or µs per call
//! on the tiny `T*` shapes); `limit` = copy time / our time (1.0 = at the bandwidth
//! limit); `× scalar` = scalar time / our time. The CSV is always in ms.

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{layout_name, traffic_per_elem, Case, Kernel, Work, CASES, KERNELS};

/// Each sample lasts at least this long (repeating the call), so timer resolution and
/// per-sample noise do not matter even for 20 ns calls.
const SAMPLE: Duration = Duration::from_millis(4);
/// Calls per sample at most: 4 ms of calls as short as 0.4 ns.
const MAX_REPS: usize = 10_000_000;

/// `n` calls of our `kernel`, nothing else: what `--calls` gives a profiler (callgrind's
/// `--toggle-collect` names this function).
#[inline(never)]
fn calls(work: &mut Work, kernel: Kernel, n: usize) {
    work.repeat(Work::run, kernel, n);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let (csv, list) = (flag("--csv"), flag("--list"));
    let samples = args
        .iter()
        .find_map(|a| a.strip_prefix("--samples=")?.parse().ok())
        .unwrap_or(15usize)
        .max(1);
    // `--layout=NHWC`, `--kernel=train`: one row at a time (benches/pytorch_compare.py).
    let pick = |key: &str| -> Option<String> {
        args.iter()
            .find_map(|a| a.strip_prefix(key).map(str::to_owned))
    };
    let (only_layout, only_kernel) = (pick("--layout="), pick("--kernel="));
    let calls: Option<usize> = pick("--calls=").and_then(|n| n.parse().ok());
    if let Some(k) = only_kernel
        .as_deref()
        .filter(|k| Kernel::from_name(k).is_none())
    {
        let names: Vec<_> = KERNELS.iter().map(|k| k.name()).collect();
        eprintln!("unknown kernel {k:?}; kernels: {}", names.join(", "));
        std::process::exit(2);
    }
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.as_str())
        .collect();
    if let Some(s) = only.iter().find(|s| !CASES.iter().any(|c| c.name == **s)) {
        let names: Vec<_> = CASES.iter().map(|c| c.name).collect();
        eprintln!("unknown shape {s:?}; shapes: {}", names.join(", "));
        std::process::exit(2);
    }
    let cases: Vec<Case> = CASES
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.name))
        .collect();

    if list {
        println!("shape,layout,kernel,family,bytes_per_elem,batch,channels,spatial,per_call");
    } else if csv {
        println!("shape,layout,kernel,ours_ms,copy_ms,scalar_ms,family,bytes_per_elem");
    } else {
        println!("| shape | layout | kernel | B/elem | ours | copy | scalar | limit | × scalar |");
        println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    }
    let mut fractions = Vec::new();
    for case in cases {
        for &layout in case.layouts() {
            let name = layout_name(&case, layout);
            if only_layout.as_ref().is_some_and(|l| l != name) {
                continue;
            }
            let kernels = KERNELS
                .iter()
                .copied()
                .filter(|&k| case.runs(k))
                .filter(|k| only_kernel.as_ref().is_none_or(|o| o == k.name()));
            if list {
                for kernel in kernels {
                    let bpe = traffic_per_elem(&case, layout, kernel);
                    let (k, f) = (kernel.name(), kernel.family());
                    let Case {
                        name: shape,
                        batch,
                        channels,
                        spatial,
                        per_call,
                        ..
                    } = case;
                    println!(
                        "{shape},{name},{k},{f},{bpe},{batch},{channels},{spatial},{per_call}"
                    );
                }
                continue;
            }
            let mut work = Work::new(case, layout);
            if let Some(n) = calls {
                kernels.for_each(|kernel| self::calls(&mut work, kernel, n));
                continue;
            }
            for kernel in kernels {
                let [ours, copy, scalar] = measure(&mut work, kernel, samples);
                let bpe = traffic_per_elem(&case, layout, kernel);
                let (k, f) = (kernel.name(), kernel.family());
                if csv {
                    println!(
                        "{},{name},{k},{ours:.7},{copy:.7},{scalar:.7},{f},{bpe}",
                        case.name
                    );
                } else {
                    let t = |ms: f64| time(ms, case.per_call);
                    println!(
                        "| {} | {name} | {k} | {bpe} | {} | {} | {} | {:.2} | {:.2} |",
                        case.name,
                        t(ours),
                        t(copy),
                        t(scalar),
                        copy / ours,
                        scalar / ours
                    );
                }
                if !case.per_call {
                    fractions.push((copy / ours, scalar / ours));
                }
            }
        }
    }
    if !csv && !list && !fractions.is_empty() {
        let geo = |f: &dyn Fn(&(f64, f64)) -> f64| {
            (fractions.iter().map(|p| f(p).ln()).sum::<f64>() / fractions.len() as f64).exp()
        };
        println!(
            "\ngeomean over the sized shapes (not T*): limit {:.2}, × scalar {:.2}",
            geo(&|p| p.0),
            geo(&|p| p.1)
        );
    }
}

/// `ms` milliseconds as ms, or as µs on a per-call shape.
fn time(ms: f64, per_call: bool) -> String {
    if per_call {
        format!("{:.3} µs", ms * 1e3)
    } else {
        format!("{ms:.3} ms")
    }
}

type Run = fn(&mut Work, Kernel);

/// Median milliseconds per call of [ours, copy, scalar], interleaved sample by sample
/// so that drifts of the machine (clock, neighbours) hit all three alike.
fn measure(work: &mut Work, kernel: Kernel, samples: usize) -> [f64; 3] {
    let runs: [Run; 3] = [Work::run, Work::copy, Work::scalar];
    let reps = runs.map(|f| calls_per_sample(work, f, kernel));
    let mut times = [(); 3].map(|_| Vec::with_capacity(samples));
    for _ in 0..samples {
        for (i, &f) in runs.iter().enumerate() {
            let t = Instant::now();
            work.repeat(f, kernel, reps[i]);
            times[i].push(t.elapsed().as_secs_f64() * 1e3 / reps[i] as f64);
        }
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}

/// Warms `f` up and finds how many calls fill a [`SAMPLE`]: the calls are timed in
/// batches growing ×4 until one lasts a quarter of a sample, so that a 20 ns call is
/// not timed alone (the timer costs about as much). A 30 ms call is run twice.
fn calls_per_sample(work: &mut Work, f: Run, kernel: Kernel) -> usize {
    work.repeat(f, kernel, 1);
    let mut reps = 1;
    loop {
        let t = Instant::now();
        work.repeat(f, kernel, reps);
        let took = t.elapsed().max(Duration::from_nanos(1));
        if took >= SAMPLE / 4 || reps >= MAX_REPS {
            let fill = reps as f64 * SAMPLE.as_secs_f64() / took.as_secs_f64();
            return (fill.ceil() as usize).clamp(1, MAX_REPS);
        }
        reps *= 4;
    }
}
