//! One row of the multi-core comparison (`benches/parallel_compare.py` runs it): a
//! kernel of `batchnorm::parallel` on 1 and on 2 threads, and a 2-thread copy of the
//! kernel's minimum traffic (its limit), medians in ms.
//!
//! ```sh
//! cargo run --release --features rayon --example parallel_table -- S2 NCHW train
//! ```
//!
//! Prints `ours_1t_ms ours_2t_ms copy_2t_ms bytes_per_elem`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use batchnorm::{
    parallel, BatchNorm, Grads, Layout, Momentum, Running, RunningStats, Saved, SavedMut,
};
use common::{layout_name, traffic_per_elem, Kernel, Work, CASES};
use rayon::prelude::*;

const SAMPLE: Duration = Duration::from_millis(4);
const SAMPLES: usize = 9;

/// The parallel counterpart of `Work::run` for the five plain kernels.
fn run(w: &mut Work, kernel: Kernel) {
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: Some(&w.gamma),
        beta: Some(&w.beta),
    };
    let grads = Grads {
        dx: &mut w.out,
        dgamma: Some(&mut w.dgamma),
        dbeta: Some(&mut w.dbeta),
    };
    let r = match kernel {
        Kernel::Moments => parallel::moments(&w.x, w.shape, &mut w.parts),
        Kernel::Eval => parallel::eval(
            &bn,
            &w.x,
            grads.dx,
            w.shape,
            RunningStats {
                mean: &w.running_mean,
                var: &w.running_var,
            },
        ),
        Kernel::Train => {
            let mut running = Running::new(
                &mut w.running_mean,
                &mut w.running_var,
                Momentum::Exponential(0.1),
            );
            parallel::train(
                &bn,
                &w.x,
                grads.dx,
                w.shape,
                SavedMut {
                    mean: &mut w.mean,
                    invstd: &mut w.invstd,
                },
                Some(&mut running),
            )
        }
        Kernel::Backward => parallel::backward(
            &bn,
            &w.x,
            &w.dy,
            w.shape,
            Saved {
                mean: &w.mean,
                invstd: &w.invstd,
            },
            grads,
        ),
        Kernel::BackwardEval => parallel::backward_eval(
            &bn,
            &w.x,
            &w.dy,
            w.shape,
            RunningStats {
                mean: &w.running_mean,
                var: &w.running_var,
            },
            grads,
        ),
        _ => panic!("parallel_table measures moments, eval, train, backward, backward_eval"),
    };
    r.expect("valid benchmark arguments");
}

/// Median ms per call of `f` over [`SAMPLES`] samples of at least [`SAMPLE`].
fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut reps = 1;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed() >= SAMPLE / 4 {
            break;
        }
        reps *= 4;
    }
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let reps =
        ((reps as f64 * SAMPLE.as_secs_f64() / t.elapsed().as_secs_f64()).ceil() as usize).max(1);
    let mut times: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[SAMPLES / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [shape, layout, kernel] = &args[..] else {
        eprintln!("usage: parallel_table SHAPE NCHW|NHWC|NC KERNEL");
        std::process::exit(2);
    };
    let case = CASES
        .iter()
        .find(|c| c.name == shape)
        .expect("a shape of benches/common");
    let layout = *case
        .layouts()
        .iter()
        .find(|&&l| layout_name(case, l) == layout)
        .unwrap_or(&Layout::ChannelsFirst);
    let kernel = Kernel::from_name(kernel).expect("a kernel name");
    let mut work = Work::new(*case, layout);
    let bpe = traffic_per_elem(case, layout, kernel);
    // The copy: as many bytes read and written as the kernel's minimum traffic, in two
    // halves on two threads.
    let floats = bpe * case.len() / 8;
    let src = vec![1.0f32; floats];
    let mut dst = vec![0.0f32; floats];
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let (one, two) = (pool(1), pool(2));
    let t1 = one.install(|| median_ms(|| run(black_box(&mut work), kernel)));
    let t2 = two.install(|| median_ms(|| run(black_box(&mut work), kernel)));
    let half = floats.div_ceil(2).max(1);
    let copy = two.install(|| {
        median_ms(|| {
            dst.par_chunks_mut(half)
                .zip(src.par_chunks(half))
                .for_each(|(d, s)| d.copy_from_slice(black_box(s)))
        })
    });
    println!("{t1:.6} {t2:.6} {copy:.6} {bpe}");
}
