//! Drawn test cases for the property tests of the fused and Batch Renormalization
//! entry points (tests/fused.rs, tests/renorm.rs), in the style of tests/kernels.rs:
//! a case is a shape, a per-channel profile of x and a seed; everything else (γ, β,
//! dy, z, running statistics) is derived from the seed, so a failing case prints as a
//! few numbers and proptest can shrink it.
//!
//! Shapes are drawn with odd sizes: C ∈ {1, 3, 17} or random 1..=40, spatial ∈
//! {1, 7, 49} or random 1..=64, batch 1..=7, both layouts. Offsets 0, ±1-ish, ±1e4
//! or random in ±1e4; spreads 1, 1e-3, 0 (constant channel) or random up to 100.
//!
//! Included with `#[path = "common/cases.rs"] mod cases;` next to `mod common;` by the
//! test crates that use it, so the other test crates do not compile proptest code
//! they never run.
// Each test crate uses a different part of this module.
#![allow(dead_code)]

use crate::common::Rng;
use crate::common::*;
use batchnorm::{BatchNorm, Correction, Layout, Momentum, Running, Shape};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

#[derive(Clone, Debug)]
pub struct Case {
    pub shape: Shape,
    pub profiles: Vec<Profile>,
    pub seed: u64,
    pub eps: f32,
    pub gamma: bool,
    pub beta: bool,
}

impl Case {
    pub fn x(&self) -> Vec<f32> {
        tensor(&self.shape, &self.profiles, self.seed)
    }

    /// γ (with 0, 1, −1 and random values in (−2, 2)) and β, when present.
    pub fn affine(&self) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        let mut rng = Rng::new(self.seed ^ 0x00a1_1ce0);
        let cs = self.shape.channels;
        let gamma: Vec<f32> = (0..cs)
            .map(|_| match rng.below(8) {
                0 => 1.0,
                1 => 0.0,
                2 => -1.0,
                _ => rng.range(-2.0, 2.0) as f32,
            })
            .collect();
        let beta: Vec<f32> = (0..cs)
            .map(|_| {
                if rng.below(6) == 0 {
                    0.0
                } else {
                    rng.range(-3.0, 3.0) as f32
                }
            })
            .collect();
        (self.gamma.then_some(gamma), self.beta.then_some(beta))
    }

    pub fn bn<'a>(&self, gamma: &'a Option<Vec<f32>>, beta: &'a Option<Vec<f32>>) -> BatchNorm<'a> {
        BatchNorm {
            eps: self.eps,
            gamma: gamma.as_deref(),
            beta: beta.as_deref(),
        }
    }

    /// Running statistics before a train step. Half the channels get statistics
    /// unrelated to the batch (a wrong momentum convention shows, and Batch
    /// Renormalization's r and d clip), half get statistics near the batch's (r and d
    /// inside or near their limits).
    pub fn running_before(&self) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(self.seed ^ 0x0b0b_0b0b);
        let mut rm = Vec::new();
        let mut rv = Vec::new();
        for p in &self.profiles {
            let s = p.spread.max(1e-3);
            if rng.below(2) == 0 {
                rm.push(match rng.below(3) {
                    0 => rng.range(-1e4, 1e4) as f32,
                    1 => 0.0,
                    _ => (p.offset + 5.0 * s * rng.gauss()) as f32,
                });
                rv.push((s * s * rng.range(0.0, 20.0)) as f32);
            } else {
                rm.push((p.offset + 0.3 * s * rng.gauss()) as f32);
                rv.push((s * s * rng.range(0.3, 3.0)) as f32);
            }
        }
        (rm, rv)
    }

    /// Running statistics for eval: near the channel's own statistics, or anywhere.
    pub fn running_for_eval(&self) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(self.seed ^ 0x00e0_a100);
        let rm = self
            .profiles
            .iter()
            .map(|p| {
                if rng.below(4) == 0 {
                    rng.range(-1e4, 1e4) as f32
                } else {
                    (p.offset + p.spread * rng.gauss()) as f32
                }
            })
            .collect();
        let rv = self
            .profiles
            .iter()
            .map(|p| (p.spread.max(1e-3).powi(2) * rng.range(0.25, 4.0)) as f32)
            .collect();
        (rm, rv)
    }

    /// dy: per channel an offset (0, 1, −0.5) plus a spread (1, 0.01, 10) of noise.
    pub fn dy(&self) -> Vec<f32> {
        let mut rng = Rng::new(self.seed ^ 0x0000_d00d);
        let profiles: Vec<Profile> = (0..self.shape.channels)
            .map(|_| Profile {
                offset: [0.0, 1.0, -0.5][rng.below(3)],
                spread: [1.0, 1e-2, 10.0][rng.below(3)],
            })
            .collect();
        tensor(&self.shape, &profiles, rng.next_u64())
    }

    /// The residual z of BN + Add + ReLU: per channel an offset (0, ±1, ±1e4: all y
    /// positive or all masked) plus a spread (1, 1e-3, 0 = constant, 10), so that
    /// bn + z crosses 0 often, near 0 sometimes, and not at all in some channels.
    pub fn z(&self) -> Vec<f32> {
        let mut rng = Rng::new(self.seed ^ 0x0000_2e5d);
        let profiles: Vec<Profile> = (0..self.shape.channels)
            .map(|_| Profile {
                offset: [0.0, 0.0, 1.0, -1.0, 1e4, -1e4][rng.below(6)],
                spread: [1.0, 1.0, 1e-3, 0.0, 10.0][rng.below(5)],
            })
            .collect();
        tensor(&self.shape, &profiles, rng.next_u64())
    }

    pub fn summary(&self) -> String {
        let s = &self.shape;
        format!(
            "{:?} N={} C={} S={} eps={:e} gamma={} beta={} seed={:#x}",
            s.layout, s.batch, s.channels, s.spatial, self.eps, self.gamma, self.beta, self.seed
        )
    }
}

pub fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::ChannelsFirst), Just(Layout::ChannelsLast)]
}

pub fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(17), 1..=40usize]
}

pub fn spatial() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(7), Just(49), 1..=64usize]
}

pub fn shape() -> impl Strategy<Value = Shape> {
    (layout(), 1..=7usize, channels(), spatial()).prop_map(|(layout, batch, channels, spatial)| {
        Shape {
            batch,
            channels,
            spatial,
            layout,
        }
    })
}

pub fn profile() -> impl Strategy<Value = Profile> {
    let offset = prop_oneof![
        Just(0.0f64),
        Just(1.0),
        Just(-3.0),
        Just(1e4),
        Just(-1e4),
        -1e4..1e4f64
    ];
    let spread =
        prop_oneof![3 => Just(1.0f64), 2 => Just(1e-3), 1 => Just(0.0), 2 => 1e-3..100.0f64];
    (offset, spread).prop_map(|(offset, spread)| Profile { offset, spread })
}

/// A case; with `eps` = 0 no channel of x is constant (eps = 0 with a constant
/// channel is an edge case of its own, tests/edge_cases.rs).
pub fn case() -> impl Strategy<Value = Case> {
    (
        shape(),
        prop::collection::vec(profile(), 40),
        any::<u64>(),
        prop_oneof![Just(0.0f32), Just(1e-5), Just(1e-3)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(shape, mut profiles, seed, eps, gamma, beta)| {
            profiles.truncate(shape.channels);
            if eps == 0.0 {
                for p in profiles.iter_mut().filter(|p| p.is_constant()) {
                    p.spread = 1.0;
                }
            }
            let mut case = Case {
                shape,
                profiles,
                seed,
                eps,
                gamma,
                beta,
            };
            // A tiny spread on a large offset can still round to one value (1e4 +
            // 1e-3·N(0, 1) in f32, or m = 1): then eps = 0 gets eps = 1e-5.
            if eps == 0.0 && has_constant_channel(&case.x(), &shape) {
                case.eps = 1e-5;
            }
            case
        })
}

/// Some channel of `x` holds one value only (so its variance is exactly 0).
pub fn has_constant_channel(x: &[f32], shape: &Shape) -> bool {
    (0..shape.channels).any(|c| {
        let mut it = channel_indices(shape, c).map(|i| x[i].to_bits());
        let first = it.next();
        first.is_some_and(|v| it.all(|w| w == v))
    })
}

/// How a train step updates running statistics: [`Running`]'s momentum, correction
/// and `batches_tracked` before the step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    pub momentum: Momentum,
    pub correction: Correction,
    pub batches_tracked: u64,
}

impl Update {
    /// PyTorch's default: `Exponential(0.1)`, unbiased, no updates before.
    pub const PYTORCH: Update = Update {
        momentum: Momentum::Exponential(0.1),
        correction: Correction::Unbiased,
        batches_tracked: 0,
    };

    /// The running statistics `mean`, `var` with this update's settings.
    pub fn running<'a>(&self, mean: &'a mut [f32], var: &'a mut [f32]) -> Running<'a> {
        Running {
            mean,
            var,
            momentum: self.momentum,
            correction: self.correction,
            batches_tracked: self.batches_tracked,
        }
    }

    /// The factor of the batch statistics in this update.
    pub fn factor(&self) -> f64 {
        momentum_factor(self.momentum, self.batches_tracked)
    }

    /// The running statistics before the update as the oracle takes them.
    pub fn oracle<'a>(&self, mean: &'a [f32], var: &'a [f32]) -> RefRunning<'a> {
        (mean, var, self.factor(), self.correction)
    }

    /// `batches_tracked` after a call that did (`ok`) or did not update: one more
    /// (saturating), or as before.
    pub fn counted(&self, ok: bool) -> u64 {
        if ok {
            self.batches_tracked.saturating_add(1)
        } else {
            self.batches_tracked
        }
    }

    /// The fewest values per channel the update needs.
    pub fn needed(&self) -> usize {
        match self.correction {
            Correction::Unbiased => 2,
            Correction::Biased => 1,
        }
    }
}

/// The running update (never absent: Batch Renormalization needs it): momentum,
/// correction and the updates made before.
pub fn momentum() -> impl Strategy<Value = Update> {
    let momentum = prop_oneof![
        Just(Momentum::Exponential(0.1)),
        Just(Momentum::Exponential(0.0)),
        Just(Momentum::Exponential(1.0)),
        (0.0..=1.0f32).prop_map(Momentum::Exponential),
        Just(Momentum::Cumulative),
    ];
    let correction = prop_oneof![2 => Just(Correction::Unbiased), 1 => Just(Correction::Biased)];
    let tracked = prop_oneof![2 => Just(0u64), 2 => 0..10_000u64, 1 => Just(u64::MAX)];
    (momentum, correction, tracked).prop_map(|(momentum, correction, batches_tracked)| Update {
        momentum,
        correction,
        batches_tracked,
    })
}

/// Up to three non-finite values (NaN, +inf, −inf) at random flat positions.
pub fn poison() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((any::<u64>(), 0..3usize), 1..=3)
}

/// Writes the `poison` values into `x`; returns which channels were hit.
pub fn apply_poison(x: &mut [f32], shape: &Shape, poison: &[(u64, usize)]) -> Vec<bool> {
    let mut poisoned = vec![false; shape.channels];
    for &(r, kind) in poison {
        let i = (r % x.len() as u64) as usize;
        x[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][kind];
        poisoned[channel_of(shape, i)] = true;
    }
    poisoned
}

/// Runs `test` on `cases` values drawn from `strategy` with proptest's deterministic
/// RNG (`BATCHNORM_PROPTEST_RANDOM=1` for a fresh seed, `PROPTEST_CASES=n` for another
/// count); a failure is shrunk to a minimal case and reported.
pub fn run<S>(name: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    };
    let n = config.cases;
    let rng = if std::env::var_os("BATCHNORM_PROPTEST_RANDOM").is_some() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        println!("BATCHNORM_PROPTEST_RANDOM seed from time {t:#x}");
        let mut rng = Rng::new(t);
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        TestRng::from_seed(config.rng_algorithm, &seed)
    } else {
        TestRng::deterministic_rng(config.rng_algorithm)
    };
    let mut runner = TestRunner::new_with_rng(config, rng);
    match runner.run(&strategy, |value| {
        test(value);
        Ok(())
    }) {
        Ok(()) => println!("{name}: {n} proptest cases passed"),
        Err(e) => panic!("{name}: {e}"),
    }
}
