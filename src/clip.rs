//! Gradient clipping over the caller's gradient slices (PyTorch's
//! `torch.nn.utils.clip_grad_value_` and `clip_grad_norm_`).

use crate::engine::{self, Band, Walk, SMALL};
use crate::error::Error;
use crate::kernels::{Clamp, Scale, SumSquares};
use crate::shape::Shape;

/// Which norm of all gradients together [`clip_grad_norm`] bounds: PyTorch's
/// `norm_type`.
///
/// ```
/// use batchnorm::GradNorm;
///
/// let pytorch_default = GradNorm::L2; // norm_type=2.0
/// let max = GradNorm::Max;            // norm_type=inf
/// # let _ = (pytorch_default, max);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradNorm {
    /// `√(Σ g²)` over every value of every slice.
    L2,
    /// `max |g|` over every value of every slice.
    Max,
}

/// What [`clip_grad_norm`] does when the total norm is NaN or infinite: PyTorch's
/// `error_if_nonfinite`.
///
/// ```
/// let strict = batchnorm::NonFinite::Error; // error_if_nonfinite=True
/// # let _ = strict;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFinite {
    /// Return [`Error::NonFiniteNorm`] and leave the gradients as they are.
    Error,
    /// Scale anyway, as PyTorch's default (`error_if_nonfinite=False`): an infinite
    /// norm scales every gradient by 0 (so infinite ones become NaN), a NaN norm
    /// makes every gradient NaN.
    Scale,
}

/// Clamps every gradient value into `[−clip_value, clip_value]`, in place. NaN stays
/// NaN, as `torch.clamp` keeps it.
///
/// # Errors
/// [`Error::Parameter`] (argument `"clip_value"`) when `clip_value` is NaN or
/// negative; nothing is written then. `f32::INFINITY` clips nothing.
///
/// ```
/// let (mut a, mut b) = ([0.5, -3.0], [f32::NAN, 2.0, -0.25]);
/// batchnorm::clip_grad_value(&mut [&mut a, &mut b], 1.0)?;
/// assert_eq!(a, [0.5, -1.0]);
/// assert!(b[0].is_nan() && b[1..] == [1.0, -0.25]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn clip_grad_value(grads: &mut [&mut [f32]], clip_value: f32) -> Result<(), Error> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::Parameter {
            arg: "clip_value",
            value: clip_value,
        });
    }
    for g in grads.iter_mut() {
        flat_map_in_place(Clamp, g, [-clip_value, clip_value]);
    }
    Ok(())
}

/// The norm of all gradient values together, as [`clip_grad_norm`] computes it
/// (PyTorch's `torch.nn.utils.get_total_norm`).
///
/// The L2 norm adds the squares in f32 blocks merged in f64, and where that could
/// overflow or underflow (values beyond about 2⁶⁴ or below 2⁻⁶⁴) adds them again
/// scaled by a power of two: it is exact to a few f32 roundings for any count of
/// values of any size. NaN anywhere makes it NaN; otherwise an infinite value
/// makes it infinite.
///
/// ```
/// use batchnorm::{total_norm, GradNorm};
///
/// let (a, b) = ([3.0, 0.0], [4.0]);
/// assert_eq!(total_norm(&[&a, &b], GradNorm::L2), 5.0);
/// assert_eq!(total_norm(&[&a, &b], GradNorm::Max), 4.0);
/// // Squares beyond f32's range do not overflow:
/// assert_eq!(total_norm(&[&[3e30, 4e30]], GradNorm::L2), 5e30);
/// ```
pub fn total_norm(grads: &[&[f32]], norm: GradNorm) -> f32 {
    total(grads.iter().map(|g| &**g), norm) as f32
}

/// Scales all gradients by `max_norm / (total + 1e-6)` when that is below 1, as
/// `torch.nn.utils.clip_grad_norm_` does, with `total` their [`total_norm`];
/// returns `total`.
///
/// # Errors
/// Checked before anything is written:
/// - [`Error::Parameter`] (argument `"max_norm"`) when `max_norm` is NaN or
///   negative;
/// - [`Error::NonFiniteNorm`] when the total norm (as an f32) is NaN or infinite
///   and `nonfinite` is [`NonFinite::Error`]. With [`NonFinite::Scale`], a total
///   beyond f32's range still scales by its exact value.
///
/// ```
/// use batchnorm::{clip_grad_norm, GradNorm, NonFinite};
///
/// let (mut a, mut b) = ([3.0, 0.0], [4.0]);
/// let total = clip_grad_norm(&mut [&mut a, &mut b], 1.0, GradNorm::L2, NonFinite::Error)?;
/// assert_eq!(total, 5.0);
/// assert!((a[0] - 0.6).abs() < 1e-6 && (b[0] - 0.8).abs() < 1e-6);
///
/// let mut c = [f32::INFINITY];
/// assert!(clip_grad_norm(&mut [&mut c], 1.0, GradNorm::L2, NonFinite::Error).is_err());
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn clip_grad_norm(
    grads: &mut [&mut [f32]],
    max_norm: f32,
    norm: GradNorm,
    nonfinite: NonFinite,
) -> Result<f32, Error> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::Parameter {
            arg: "max_norm",
            value: max_norm,
        });
    }
    let t = total(grads.iter().map(|g| &**g), norm);
    // The f32 total is what is returned (and what PyTorch computes): a total beyond
    // f32's range is infinite too.
    if !(t as f32).is_finite() && nonfinite == NonFinite::Error {
        return Err(Error::NonFiniteNorm { norm: t as f32 });
    }
    // PyTorch's factor, clamped to 1 (NaN stays NaN).
    let factor = f64::from(max_norm) / (t + 1e-6);
    let factor = if factor > 1.0 { 1.0 } else { factor } as f32;
    if factor != 1.0 {
        for g in grads.iter_mut() {
            flat_map_in_place(Scale, g, [factor]);
        }
    }
    Ok(t as f32)
}

/// The norm of all values of `slices`, in f64.
fn total<'a>(slices: impl Iterator<Item = &'a [f32]> + Clone, norm: GradNorm) -> f64 {
    let max = || {
        slices
            .clone()
            .map(max_abs)
            .fold(0.0, |m: f32, v| if v > m || v.is_nan() { v } else { m })
    };
    match norm {
        GradNorm::Max => f64::from(max()),
        GradNorm::L2 => {
            // Squares in f32 blocks lose nothing while the sum is well within f32's
            // range: that is the answer.
            let sum: f64 = slices.clone().map(|g| sum_squares(g, 1.0)).sum();
            if (libm::ldexp(1.0, -100)..libm::ldexp(1.0, 100)).contains(&sum) {
                return libm::sqrt(sum);
            }
            let m = max();
            if m == 0.0 || !m.is_finite() {
                // All zeros; or NaN, or infinite: what the largest value makes it.
                return f64::from(m);
            }
            // Again, scaled by the power of two that brings the largest value to
            // [0.5, 1) (as near as f32 allows).
            let e = (-libm::frexpf(m).1).clamp(-126, 127);
            let scale = libm::ldexpf(1.0, e);
            let sum: f64 = slices.map(|g| sum_squares(g, scale)).sum();
            libm::sqrt(sum) / f64::from(scale)
        }
    }
}

/// `Σ(x·scale)²` over one slice.
fn sum_squares(x: &[f32], scale: f32) -> f64 {
    let (walk, band) = flat(x.len());
    let mut sums = [[0.0; 1]; SMALL];
    let steps = 0..walk.steps();
    engine::reduce(
        SumSquares,
        &walk,
        band,
        [x],
        &mut [],
        [&[scale]],
        steps,
        &mut sums,
    );
    sums[0][0]
}

/// The largest `|x|` of one slice, NaN if it holds one.
fn max_abs(x: &[f32]) -> f32 {
    const L: usize = 16;
    let (mut m, mut nan) = ([0.0f32; L], false);
    let (chunks, rest) = x.as_chunks::<L>();
    for c in chunks {
        for (m, v) in m.iter_mut().zip(c) {
            let a = v.abs();
            nan |= a.is_nan();
            *m = if a > *m { a } else { *m };
        }
    }
    for v in rest {
        nan |= v.is_nan();
        m[0] = if v.abs() > m[0] { v.abs() } else { m[0] };
    }
    if nan {
        return f32::NAN;
    }
    m.iter().fold(0.0, |a, &b| if b > a { b } else { a })
}

/// `x = M(x)` over a flat slice, with the constants `k`.
fn flat_map_in_place<M: engine::Map<1, K>, const K: usize>(m: M, x: &mut [f32], k: [f32; K]) {
    let (walk, band) = flat(x.len());
    let k = k.map(|v| [v]);
    engine::map(
        m,
        &walk,
        band,
        [&[]],
        x,
        core::array::from_fn(|q| &k[q][..]),
    );
}

/// A flat slice as the engine walks it: one channel of `len` values.
fn flat(len: usize) -> (Walk, Band) {
    let walk = Walk::new(Shape::channels_first(1, 1, len));
    (
        walk,
        Band {
            first: 0,
            channels: 1,
        },
    )
}
