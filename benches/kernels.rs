//! Criterion benchmarks: every kernel × shape × layout, each beside a copy of its
//! minimum memory traffic (the bandwidth limit) and a plain scalar implementation,
//! with throughput in bytes of minimum traffic. `cargo bench --bench kernels [filter]`.
//! For the one-glance table, `cargo run --release --example bench_table`.

mod common;

use std::time::Duration;

use common::{layout_name, traffic_bytes, Work, CASES, KERNELS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn kernels(c: &mut Criterion) {
    for case in CASES {
        for &layout in case.layouts() {
            let mut work = Work::new(case, layout);
            for &kernel in KERNELS {
                let id = format!(
                    "{}/{}/{}",
                    case.name,
                    layout_name(&case, layout),
                    kernel.name()
                );
                let mut group = c.benchmark_group(id);
                group.throughput(Throughput::Bytes(
                    traffic_bytes(&case, layout, kernel) as u64
                ));
                group.bench_function("ours", |b| b.iter(|| work.run(kernel)));
                group.bench_function("copy", |b| b.iter(|| work.copy(kernel)));
                group.bench_function("scalar", |b| b.iter(|| work.scalar(kernel)));
                group.finish();
            }
        }
    }
}

criterion_group! {
    name = benches;
    // Short: ~585 benchmarks (15 shape × layout, 13 kernels, 3 sides); S3 (~100 MB per
    // tensor) takes tens of ms per call.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(600));
    targets = kernels
}
criterion_main!(benches);
