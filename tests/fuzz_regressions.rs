//! Inputs the fuzz targets (`fuzz/`) found to misbehave, as plain tests.
//!
//! Each test fails until the bug it names is fixed, and then guards against its return.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use batchnorm::{moments, BatchNorm, Grads, Moments, RunningStats, Saved, SavedMut, Shape};

/// Runs `f` on its own thread and fails if it has not returned within `secs`
/// (the thread is left running; the test process exits when the tests are done).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} did not return within {secs} s"))
}

/// A channels-first shape whose spatial size is 0 holds no values whatever the batch,
/// so a huge batch is valid (the element count is 0) and must cost nothing.
/// Found by the `moments` target (`fuzz/artifacts/moments/timeout-…`, input
/// `ff 00 09 01 00`): the channels-first walk visits one empty segment per batch
/// entry, so these calls loop for ~2⁶⁴ iterations instead of returning at once.
const EMPTY_HUGE_BATCH: Shape = Shape::channels_first(usize::MAX, 1, 0);

#[test]
fn moments_empty_spatial_huge_batch_returns() {
    let out = within(10, "moments", || {
        let mut out = [Moments {
            count: 7,
            mean: 1.0,
            m2: 1.0,
        }];
        moments(&[], EMPTY_HUGE_BATCH, &mut out).map(|()| out)
    });
    assert_eq!(out, Ok([Moments::EMPTY]));
}

#[test]
fn eval_empty_spatial_huge_batch_returns() {
    let r = within(10, "eval", || {
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: None,
            beta: None,
        };
        bn.eval(
            &[],
            &mut [],
            EMPTY_HUGE_BATCH,
            RunningStats {
                mean: &[0.0],
                var: &[1.0],
            },
        )
    });
    assert_eq!(r, Ok(()));
}

#[test]
fn backward_empty_spatial_huge_batch_returns() {
    let r = within(10, "backward", || {
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: None,
            beta: None,
        };
        let mut db = [f32::NAN];
        let grads = Grads {
            dx: &mut [],
            dgamma: None,
            dbeta: Some(&mut db),
        };
        bn.backward(
            &[],
            &[],
            EMPTY_HUGE_BATCH,
            Saved {
                mean: &[0.0],
                invstd: &[1.0],
            },
            grads,
        )
        .map(|()| db)
    });
    assert_eq!(r, Ok([0.0]));
}

#[test]
fn backward_eval_empty_spatial_huge_batch_returns() {
    let r = within(10, "backward_eval", || {
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: None,
            beta: None,
        };
        let mut db = [f32::NAN];
        let grads = Grads {
            dx: &mut [],
            dgamma: None,
            dbeta: Some(&mut db),
        };
        bn.backward_eval(
            &[],
            &[],
            EMPTY_HUGE_BATCH,
            RunningStats {
                mean: &[0.0],
                var: &[1.0],
            },
            grads,
        )
        .map(|()| db)
    });
    assert_eq!(r, Ok([0.0]));
}

/// A channels-first shape with batch 0 holds no values whatever its spatial size, so
/// a huge spatial size is valid (the element count is 0). Found by the `moments`
/// target (input `ff 00 00 04 cc 05 2f 09 f4 00 00 02 04 0d 00`): the channels-first
/// walk computes `channels · spatial` (the step between a channel's segments) and
/// `first · spatial` before it knows there are no segments, which overflows: a panic
/// ("attempt to multiply with overflow", `src/walk.rs` `Plan::segments`) in builds
/// with overflow checks, a wrapped, unused value in others.
const EMPTY_HUGE_SPATIAL: Shape = Shape::channels_first(0, 7, usize::MAX / 2 + 1);

#[test]
fn moments_empty_batch_huge_spatial_no_overflow() {
    let mut out = [Moments {
        count: 7,
        mean: 1.0,
        m2: 1.0,
    }; 7];
    assert_eq!(moments(&[], EMPTY_HUGE_SPATIAL, &mut out), Ok(()));
    assert_eq!(out, [Moments::EMPTY; 7]);
}

#[test]
fn eval_empty_batch_huge_spatial_no_overflow() {
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    assert_eq!(
        bn.eval(
            &[],
            &mut [],
            EMPTY_HUGE_SPATIAL,
            RunningStats {
                mean: &[0.0; 7],
                var: &[1.0; 7]
            }
        ),
        Ok(())
    );
    assert_eq!(
        bn.eval_in_place(
            &mut [],
            EMPTY_HUGE_SPATIAL,
            RunningStats {
                mean: &[0.0; 7],
                var: &[1.0; 7]
            }
        ),
        Ok(())
    );
}

#[test]
fn backward_empty_batch_huge_spatial_no_overflow() {
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    for eval in [false, true] {
        let (mut dg, mut db) = ([f32::NAN; 7], [f32::NAN; 7]);
        let grads = Grads {
            dx: &mut [],
            dgamma: Some(&mut dg),
            dbeta: Some(&mut db),
        };
        let r = if eval {
            bn.backward_eval(
                &[],
                &[],
                EMPTY_HUGE_SPATIAL,
                RunningStats {
                    mean: &[0.0; 7],
                    var: &[1.0; 7],
                },
                grads,
            )
        } else {
            bn.backward(
                &[],
                &[],
                EMPTY_HUGE_SPATIAL,
                Saved {
                    mean: &[0.0; 7],
                    invstd: &[1.0; 7],
                },
                grads,
            )
        };
        assert_eq!(r, Ok(()), "eval = {eval}");
        assert_eq!((dg, db), ([0.0; 7], [0.0; 7]), "eval = {eval}");
    }
}

/// The train backward folds `γ·invstd·invstd·dγ/m` into one f32 constant per channel,
/// which overflows to ±inf when invstd is large (here 1e22: eps = 0 and a spread of
/// 1e-22), although `dx = γ·invstd·(dy − dβ/m − x̂·dγ/m)` is finite, with
/// `x̂ = (x − mean)·invstd` of order 1. Found by the `backward` target (`channels 28,
/// γ 340, invstd 1.05e22`: dx = inf, reference −1.67e22). This is the doc example of
/// `backward` scaled by 1e-22 in x: the true dx is [0, 0], the kernel gives [−inf, inf].
#[test]
fn backward_large_invstd_does_not_overflow() {
    let bn = BatchNorm {
        eps: 0.0,
        gamma: None,
        beta: None,
    };
    let x = [-1e-22, 1e-22]; // mean 0, biased var 1e-44, invstd 1e22
    let dy = [1.0, 0.0];
    let (mut dx, mut dg, mut db) = ([f32::NAN; 2], [f32::NAN], [f32::NAN]);
    let grads = Grads {
        dx: &mut dx,
        dgamma: Some(&mut dg),
        dbeta: Some(&mut db),
    };
    bn.backward(
        &x,
        &dy,
        Shape::rows(2, 1),
        Saved {
            mean: &[0.0],
            invstd: &[1e22],
        },
        grads,
    )
    .unwrap();
    assert_eq!(db, [1.0]);
    assert!((dg[0] + 1.0).abs() < 1e-5, "dgamma {dg:?}");
    // dx = 1e22·(dy − 1/2 − x̂·(−1)/2) with x̂ = ∓1: 0 up to rounding of terms ~1e22.
    for v in dx {
        assert!(
            v.is_finite() && v.abs() < 1e22 * 1e-5,
            "dx = {dx:?}, expected ≈ [0, 0]"
        );
    }
}

/// The train backward against its formula in f64, `dx = γ·invstd·(dy − dβ/m − x̂·dγ/m)`
/// with the invstd given and x̂ from the exact batch mean (the backward's, whatever
/// `mean` is); the tolerance is relative to the terms summed, among them those of
/// the kernel's `(x − mean)·a` and `a·δ` for a `mean` that misses the batch mean by δ.
fn backward_matches_f64(gamma: f32, x: &[f32], dy: &[f32], mean: f32, invstd: f32) {
    let bn = BatchNorm {
        eps: 0.0,
        gamma: Some(&[gamma]),
        beta: None,
    };
    let mut dx = vec![f32::NAN; x.len()];
    let grads = Grads {
        dx: &mut dx,
        dgamma: None,
        dbeta: None,
    };
    bn.backward(
        x,
        dy,
        Shape::rows(x.len(), 1),
        Saved {
            mean: &[mean],
            invstd: &[invstd],
        },
        grads,
    )
    .unwrap();
    let (g, inv, m) = (f64::from(gamma), f64::from(invstd), x.len() as f64);
    let mu = x.iter().map(|&v| f64::from(v)).sum::<f64>() / m;
    let xhat = |i: usize| (f64::from(x[i]) - mu) * inv;
    let shift = (mu - f64::from(mean)) * inv;
    let db: f64 = dy.iter().map(|&d| f64::from(d)).sum();
    let dg: f64 = (0..x.len()).map(|i| f64::from(dy[i]) * xhat(i)).sum();
    for i in 0..x.len() {
        let terms = [f64::from(dy[i]), -db / m, -xhat(i) * dg / m].map(|t| g * inv * t);
        let want: f64 = terms.iter().sum();
        let shifted = (g * inv * dg / m).abs() * ((xhat(i) + shift).abs() + shift.abs());
        let tol = 1e-5 * (terms.iter().map(|t| t.abs()).sum::<f64>() + shifted) + 1e-44;
        let got = f64::from(dx[i]);
        assert!(
            (got - want).abs() <= tol,
            "dx[{i}] = {got:e}, expected {want:e} ± {tol:e}"
        );
    }
}

/// γ the smallest subnormal: γ·invstd rounds to 0 in f32 although dx does not (found
/// by the `backward` target after the fix above moved γ·invstd out of the constants).
#[test]
fn backward_subnormal_gamma_keeps_dx() {
    let x = [0.0, 1048576.0, 3.0, -7.0];
    let dy = [1048576.0, 0.0, -3.0, 5.0];
    backward_matches_f64(f32::from_bits(1), &x, &dy, 0.0, 0.25);
}

/// Large γ, small invstd and subnormal dy: the per-channel constants differ by ~45
/// orders of magnitude, and scaling them all by the largest pushed the smallest below
/// f32's range (found by the `backward` target: dx off by 7%).
#[test]
fn backward_tiny_dy_large_gamma_keeps_dx() {
    let x = [1.0e5, 2.0e6, 3.1e5, 1.6e6, 9.0e5, 2.5e6, 1.2e6, 4.0e5];
    let dy = [
        9.8e-39, 2.0e-38, -5.0e-39, 1.0e-38, 3.0e-39, -1.2e-38, 7.0e-39, 0.0,
    ];
    backward_matches_f64(7.2e19, &x, &dy, 1.6e6, 2.52e-7);
}

/// No channels: `batch·spatial` fits but is bounded by no slice, and sizing the
/// channels-first bands by its bytes (`·4·reread`) overflowed (found by the `moments`,
/// `forward` and `backward` targets).
#[test]
fn no_channels_huge_batch_does_not_overflow() {
    let shape = Shape::channels_first(usize::MAX / 4, 0, 2);
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: Some(&[]),
        beta: None,
    };
    assert_eq!(moments(&[], shape, &mut []), Ok(()));
    assert_eq!(
        bn.train(
            &[],
            &mut [],
            shape,
            SavedMut {
                mean: &mut [],
                invstd: &mut []
            },
            None
        ),
        Ok(())
    );
    let grads = Grads {
        dx: &mut [],
        dgamma: Some(&mut []),
        dbeta: None,
    };
    assert_eq!(
        bn.backward(
            &[],
            &[],
            shape,
            Saved {
                mean: &[],
                invstd: &[]
            },
            grads
        ),
        Ok(())
    );
}

/// The walk computed `batch · channels · spatial` in another order than `Shape::len`
/// checks it: with spatial 0 and a huge batch, `batch · channels` overflowed (a panic
/// with overflow checks on). Fuzz seed `fuzz/corpus/forward/regression_empty_huge_batch`.
#[test]
fn empty_tensor_with_huge_batch_and_channels_does_not_overflow() {
    let shape = Shape::channels_last(usize::MAX / 2 + 1, 2, 0);
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    assert_eq!(
        bn.eval(
            &[],
            &mut [],
            shape,
            RunningStats {
                mean: &[0.0; 2],
                var: &[1.0; 2]
            }
        ),
        Ok(())
    );
    let mut out = [Moments::EMPTY; 2];
    assert_eq!(moments(&[], shape, &mut out), Ok(()));
    assert_eq!(out, [Moments::EMPTY; 2]);
}

/// An empty tensor (batch 0) whose channels · spatial does not fit in `usize` is valid
/// (its element count is 0), but `GroupNorm`'s check computes the values per group as
/// `channels / groups · spatial` unchecked (src/group_norm.rs, `GroupNorm::check`):
/// with overflow checks on (debug builds, the fuzz targets) that multiplication panics;
/// without, it wraps. Instance norm goes through the same check. Found while writing
/// the `group_norm` fuzz target.
#[test]
fn group_norm_empty_tensor_with_huge_channels_and_spatial_does_not_overflow() {
    use batchnorm::{GroupNorm, InstanceNorm, SavedMut};
    let shape = Shape::channels_first(0, 1 << 40, 1 << 40);
    let gn = GroupNorm {
        groups: 1,
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    let saved = || SavedMut {
        mean: &mut [],
        invstd: &mut [],
    };
    assert_eq!(gn.forward(&[], &mut [], shape, saved()), Ok(()));
    let inorm = InstanceNorm {
        eps: 1e-5,
        gamma: None,
        beta: None,
    };
    assert_eq!(inorm.forward(&[], &mut [], shape, saved(), None), Ok(()));
}

/// An empty tensor (batch 0) costs `GroupNorm` and `InstanceNorm` time in proportion
/// to its channel count: they walk the channels chunk by chunk (src/group_norm.rs,
/// `forward_chunks`/`backward_chunks` over `Grouping::chunks`) before finding no
/// sample in any, about 10 ms per 2²⁴ channels in a debug build, so 2⁴⁰ channels take
/// hours. Found while writing the `group_norm` fuzz target (a hang there).
#[test]
fn group_norm_empty_tensor_with_huge_channel_count_returns() {
    use batchnorm::{GroupNorm, InstanceNorm, Saved, SavedMut};
    let shape = Shape::channels_first(0, 1 << 40, 1);
    let out = within(10, "GroupNorm::forward", move || {
        let gn = GroupNorm {
            groups: 1 << 40,
            eps: 1e-5,
            gamma: None,
            beta: None,
        };
        let saved = SavedMut {
            mean: &mut [],
            invstd: &mut [],
        };
        gn.forward(&[], &mut [], shape, saved)
    });
    assert_eq!(out, Ok(()));
    let out = within(10, "InstanceNorm::backward", move || {
        let inorm = InstanceNorm {
            eps: 1e-5,
            gamma: None,
            beta: None,
        };
        let grads = Grads {
            dx: &mut [],
            dgamma: None,
            dbeta: None,
        };
        let saved = Saved {
            mean: &[],
            invstd: &[],
        };
        inorm.backward(&[], &[], shape, saved, grads)
    });
    assert_eq!(out, Ok(()));
}
