//! Every kernel × shape × layout beside a copy of its minimum traffic (the limit) and a
//! plain scalar implementation, interleaved in one run; prints a markdown table.
//!
//! ```sh
//! cargo run --release --example bench_table                                  # SSE2 default
//! RUSTFLAGS="-C target-cpu=native" cargo run --release --example bench_table
//! cargo run --release --example bench_table -- --csv S1 S5   # some shapes, machine-readable
//! cargo run --release --example bench_table -- S3 --layout=NHWC --kernel=train  # one row
//! ```
//!
//! Columns: median ms of ours, of the copy and of scalar; `limit` = copy time / our
//! time (1.0 = at the bandwidth limit); `× scalar` = scalar time / our time.

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{layout_name, traffic_per_elem, Case, Kernel, Work, CASES, KERNELS};

/// Each sample lasts at least this long (repeating the call), so timer resolution and
/// per-sample noise do not matter even for 20 µs kernels.
const SAMPLE: Duration = Duration::from_millis(4);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    let csv = args.iter().any(|a| a == "--csv");
    let samples = args
        .iter()
        .find_map(|a| a.strip_prefix("--samples=")?.parse().ok())
        .unwrap_or(15usize);
    // `--layout=NHWC`, `--kernel=train`: one row at a time (benches/pytorch_compare.py).
    let pick = |key: &str| -> Option<String> {
        args.iter()
            .find_map(|a| a.strip_prefix(key).map(str::to_owned))
    };
    let (only_layout, only_kernel) = (pick("--layout="), pick("--kernel="));
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.as_str())
        .collect();
    let cases: Vec<Case> = CASES
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.name))
        .collect();

    if csv {
        println!("shape,layout,kernel,ours_ms,copy_ms,scalar_ms,bytes_per_elem");
    } else {
        println!("| shape | layout | kernel | B/elem | ours ms | copy ms | scalar ms | limit | × scalar |");
        println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    }
    let mut fractions = Vec::new();
    for case in cases {
        for &layout in case.layouts() {
            let name = layout_name(&case, layout);
            if only_layout.as_ref().is_some_and(|l| l != name) {
                continue;
            }
            let mut work = Work::new(case, layout);
            for kernel in KERNELS {
                if only_kernel.as_ref().is_some_and(|k| k != kernel.name()) {
                    continue;
                }
                let [ours, copy, scalar] = measure(&mut work, kernel, samples);
                let bpe = traffic_per_elem(&case, layout, kernel);
                if csv {
                    println!(
                        "{},{},{},{ours:.5},{copy:.5},{scalar:.5},{bpe}",
                        case.name,
                        name,
                        kernel.name()
                    );
                } else {
                    println!(
                        "| {} | {} | {} | {bpe} | {ours:.3} | {copy:.3} | {scalar:.3} | {:.2} | {:.1} |",
                        case.name,
                        name,
                        kernel.name(),
                        copy / ours,
                        scalar / ours
                    );
                }
                fractions.push((copy / ours, scalar / ours));
            }
        }
    }
    if !csv && !fractions.is_empty() {
        let geo = |f: &dyn Fn(&(f64, f64)) -> f64| {
            (fractions.iter().map(|p| f(p).ln()).sum::<f64>() / fractions.len() as f64).exp()
        };
        println!(
            "\ngeomean: limit {:.2}, × scalar {:.1}",
            geo(&|p| p.0),
            geo(&|p| p.1)
        );
    }
}

/// Median milliseconds per call of [ours, copy, scalar], interleaved sample by sample
/// so that drifts of the machine (clock, neighbours) hit all three alike.
fn measure(work: &mut Work, kernel: Kernel, samples: usize) -> [f64; 3] {
    type Run = fn(&mut Work, Kernel);
    let runs: [Run; 3] = [Work::run, Work::copy, Work::scalar];
    // Warm up and find how many calls fill a sample.
    let reps = runs.map(|f| {
        f(work, kernel);
        let t = Instant::now();
        f(work, kernel);
        let once = t.elapsed().max(Duration::from_nanos(100));
        (SAMPLE.as_nanos() / once.as_nanos()).clamp(1, 10_000) as usize
    });
    let mut times = [(); 3].map(|_| Vec::with_capacity(samples));
    for _ in 0..samples {
        for (i, f) in runs.iter().enumerate() {
            let t = Instant::now();
            for _ in 0..reps[i] {
                f(work, kernel);
            }
            times[i].push(t.elapsed().as_secs_f64() * 1e3 / reps[i] as f64);
        }
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}
