//! The accuracy contract of DESIGN.md: measured against float64 from the same f32
//! inputs, the relative error of the variance stays ≤ 1e-5, also when |mean|/std =
//! 10⁴ and m = 10⁷, in both layouts, with one read of x.
//!
//! For each channel we measure the variance three ways through the public API:
//! `moments` (f64 output), train forward's `save_invstd` with eps = 0 (var = 1/invstd²),
//! and the running variance after one step with momentum 1 (= the unbiased batch
//! variance, rounded to f32). Beside them we print what naive f32 `E[x²] − E[x]²`
//! (8 lanes of f32 accumulators, as a SIMD kernel would do it) and an f32 two-pass
//! give on the same data. Run with `--nocapture` to see the table.

mod common;

use batchnorm::{moments, BatchNorm, Moments, Momentum, Running, SavedMut, Shape};
use common::Rng;
use common::*;

/// DESIGN.md's bound on the relative error of the variance.
const VAR_REL: f64 = 1e-5;

/// Σ of `f(x)` over channel c in 8 f32 lanes, combined at the end (in f32).
fn lanes_f32(x: &[f32], shape: &Shape, c: usize, f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    for (k, i) in channel_indices(shape, c).enumerate() {
        acc[k % 8] += f(x[i]);
    }
    acc.iter().sum()
}

/// Naive single-pass f32: E[x²] − E[x]².
fn naive_f32_var(x: &[f32], shape: &Shape, c: usize) -> f32 {
    let m = per_channel(shape) as f32;
    let s1 = lanes_f32(x, shape, c, |v| v);
    let s2 = lanes_f32(x, shape, c, |v| v * v);
    s2 / m - (s1 / m) * (s1 / m)
}

/// f32 two-pass: mean first, then Σ(x − mean)².
fn two_pass_f32_var(x: &[f32], shape: &Shape, c: usize) -> f32 {
    let m = per_channel(shape) as f32;
    let mean = lanes_f32(x, shape, c, |v| v) / m;
    lanes_f32(x, shape, c, |v| (v - mean) * (v - mean)) / m
}

fn rel(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}

/// Measures every channel of `x`, prints one line per channel (the first four) and
/// returns the worst relative error of the variance over the three kernel
/// measurements; callers assert it after everything is printed.
fn measure(label: &str, x: &[f32], shape: Shape) -> f64 {
    let cs = shape.channels;
    let m = per_channel(&shape);
    let r = ref_moments(x, &shape);

    let mut parts = vec![Moments::EMPTY; cs];
    moments(x, shape, &mut parts).unwrap();

    let bn = BatchNorm {
        eps: 0.0,
        gamma: None,
        beta: None,
    };
    let mut y = vec![0.0f32; x.len()];
    let (mut save_mean, mut save_invstd) = (vec![0.0f32; cs], vec![0.0f32; cs]);
    let (mut rm, mut rv) = (vec![0.0f32; cs], vec![1.0f32; cs]);
    let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(1.0));
    bn.train(
        x,
        &mut y,
        shape,
        SavedMut {
            mean: &mut save_mean,
            invstd: &mut save_invstd,
        },
        Some(&mut running),
    )
    .unwrap();

    let mut worst = 0.0f64;
    let mut worst_naive = 0.0f64;
    for c in 0..cs {
        let s = &r[c];
        let std = s.var.sqrt();
        let e_moments = rel(parts[c].var(), s.var);
        let e_train = rel(1.0 / (save_invstd[c] as f64).powi(2), s.var);
        let e_running = rel(rv[c] as f64, s.unbiased_var());
        let e_mean = (save_mean[c] as f64 - s.mean).abs() / std;
        let e_naive = rel(naive_f32_var(x, &shape, c) as f64, s.var);
        let e_two_pass = rel(two_pass_f32_var(x, &shape, c) as f64, s.var);
        if c < 4 {
            println!(
            "{label:<34} c={c} m={m:<9} |mean|/std={:<9.3e} var rel err: moments {e_moments:.2e}  train {e_train:.2e}  \
             running {e_running:.2e} | save_mean err/std {e_mean:.2e} | naive f32 E[x²]−E[x]² {e_naive:.2e}  f32 two-pass {e_two_pass:.2e}",
            s.mean.abs() / std
        );
        }
        worst = worst.max(e_moments).max(e_train).max(e_running);
        worst_naive = worst_naive.max(e_naive);
    }
    if cs > 4 {
        println!("{label:<34} ... {cs} channels: worst var rel err {worst:.2e}, naive f32 worst {worst_naive:.2e}");
    }
    worst
}

/// A cheap approximately normal tensor for the large tests: channel c gets
/// `offset + spread·z`, z = (u₁+u₂+u₃+u₄ − 2)·√3 (Irwin–Hall: mean 0, variance 1) from
/// the four 16-bit quarters of one SplitMix64 draw, filled in memory order.
fn fast_tensor(shape: &Shape, profiles: &[Profile], seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = vec![0.0f32; numel(shape)];
    for (i, v) in x.iter_mut().enumerate() {
        let p = profiles[channel_of(shape, i)];
        let r = rng.next_u64();
        let sum = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
        let z = (sum as f64 * (1.0 / 65536.0) - 2.0) * 3f64.sqrt();
        *v = (p.offset + p.spread * z) as f32;
    }
    x
}

/// Channel c: 1e4 + N(0,1) for even c, 1 + 1e-3·N(0,1) for odd c.
fn profiles(cs: usize) -> Vec<Profile> {
    (0..cs)
        .map(|c| {
            if c % 2 == 0 {
                Profile {
                    offset: 1e4,
                    spread: 1.0,
                }
            } else {
                Profile {
                    offset: 1.0,
                    spread: 1e-3,
                }
            }
        })
        .collect()
}

#[test]
fn variance_within_1e_5_at_mean_over_std_1e4_both_layouts() {
    let shapes = [
        Shape::channels_first(16, 3, 2000),
        Shape::channels_last(16, 3, 2000),
        Shape::channels_first(3, 4, 16_384),
        Shape::channels_last(3, 5, 16_384),
        Shape::rows(50_000, 5),
        Shape::channels_last(7, 64, 49),
    ];
    let mut worst = 0.0f64;
    for (k, shape) in shapes.into_iter().enumerate() {
        let x = tensor(&shape, &profiles(shape.channels), 0x5eed + k as u64);
        let label = format!(
            "{:?} N={} C={} S={}",
            shape.layout, shape.batch, shape.channels, shape.spatial
        );
        worst = worst.max(measure(&label, &x, shape));
    }
    println!("worst variance relative error: {worst:.2e} (bound {VAR_REL:e})");
    assert!(
        worst <= VAR_REL,
        "variance relative error {worst:e} exceeds {VAR_REL:e}"
    );
}

/// m = 10⁷ values per channel (N = 2, S = 5·10⁶, C = 2: 2·10⁷ elements), channel 0 =
/// 1e4 + N(0,1), channel 1 = 1 + 1e-3·N(0,1), channels-first and channels-last.
#[test]
fn variance_within_1e_5_at_m_1e7() {
    for shape in [
        Shape::channels_first(2, 2, 5_000_000),
        Shape::channels_last(2, 2, 5_000_000),
    ] {
        let t = std::time::Instant::now();
        let x = fast_tensor(&shape, &profiles(2), 0x1e7);
        let generated = t.elapsed();
        let label = format!("{:?} N=2 C=2 S=5e6", shape.layout);
        let worst = measure(&label, &x, shape);
        println!(
            "{label}: worst var rel err {worst:.2e}; generating took {generated:.2?}, measuring {:.2?}",
            t.elapsed() - generated
        );
        assert!(
            worst <= VAR_REL,
            "{label}: variance relative error {worst:e} exceeds {VAR_REL:e}"
        );
    }
}

/// A careful two-pass does not depend on which value of a channel comes first; a
/// single pass whose shift is the channel's first value must not either. Each
/// channel is offset + N(0,1) except its first value, an outlier at +10σ, +30σ or
/// +100σ (it is data: the reference variance includes it). Shapes of 2048 and 4096
/// values per channel, so the whole channel is one or two accumulation blocks.
#[test]
fn variance_within_1e_5_when_the_first_value_is_an_outlier() {
    let mut worst = 0.0f64;
    for offset in [0.0, 1e4] {
        for shape in [
            Shape::channels_first(1, 3, 2048),
            Shape::channels_first(2, 3, 2048),
            Shape::channels_last(8, 3, 256),
            Shape::rows(4096, 3),
            // Several 64-channel groups walked together, row by row.
            Shape::channels_last(8, 200, 256),
            Shape::rows(4096, 130),
        ] {
            let profiles = vec![
                Profile {
                    offset,
                    spread: 1.0
                };
                shape.channels
            ];
            let mut x = tensor(&shape, &profiles, 0x711e4);
            for c in 0..shape.channels {
                let k = [30.0, 100.0, 10.0][c % 3];
                x[index(&shape, 0, c, 0)] = (offset + k) as f32;
            }
            let label = format!(
                "{:?} N={} C={} S={} offset {offset:e}, first at +30/100/10σ",
                shape.layout, shape.batch, shape.channels, shape.spatial
            );
            worst = worst.max(measure(&label, &x, shape));
        }
    }
    println!("worst variance relative error with an outlier first: {worst:.2e}");
    assert!(
        worst <= VAR_REL,
        "variance relative error {worst:e} exceeds {VAR_REL:e}"
    );
}
