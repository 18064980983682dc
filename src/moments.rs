//! Per-channel mean and variance in one read, as mergeable partial moments.

use crate::engine::{self, by_cap, Band, Walk, SMALL};
use crate::error::{check_len, Error};
use crate::kernels::Shifted;
use crate::shape::Shape;

/// Partial moments of a set of values: how many, their mean, and `m2`, the sum of
/// squared deviations from that mean. The biased variance is `m2 / count`.
///
/// Moments of disjoint parts merge exactly (Chan, Golub & LeVeque), so chunks of a
/// batch, threads or machines can each reduce a part and combine the parts;
/// [`Moments::EMPTY`] is the identity. Kept in f64: merging many parts stays exact to
/// f64 rounding.
///
/// ```
/// use batchnorm::Moments;
///
/// let a = Moments::of(&[1.0, 2.0]);
/// let b = Moments::of(&[3.0, 4.0, 5.0]);
/// let all = a.merge(b);
/// assert_eq!(all.count, 5);
/// assert_eq!(all.mean, 3.0);
/// assert_eq!(all.var(), 2.0);          // biased: m2 / 5
/// assert_eq!(all.unbiased_var(), 2.5); // m2 / 4
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    /// Number of values.
    pub count: u64,
    /// Their mean (0 when `count` is 0).
    pub mean: f64,
    /// Σ(x − mean)² (0 when `count` is 0).
    pub m2: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments::EMPTY
    }
}

impl Moments {
    /// No values: the identity of [`merge`](Moments::merge).
    ///
    /// ```
    /// use batchnorm::Moments;
    ///
    /// let m = Moments { count: 3, mean: 1.5, m2: 2.0 };
    /// assert_eq!(Moments::EMPTY.merge(m), m);
    /// ```
    pub const EMPTY: Moments = Moments {
        count: 0,
        mean: 0.0,
        m2: 0.0,
    };

    /// The moments of `xs`, by the same shifted-sum kernel [`moments`] uses for
    /// a single channel.
    ///
    /// ```
    /// let m = batchnorm::Moments::of(&[2.0, 4.0, 6.0]);
    /// assert_eq!((m.count, m.mean, m.var()), (3, 4.0, 8.0 / 3.0));
    /// ```
    pub fn of(xs: &[f32]) -> Moments {
        let walk = Walk::new(Shape::channels_first(1, 1, xs.len()));
        let mut out = [Moments::EMPTY];
        for band in walk.bands(0) {
            band_moments::<SMALL>(&walk, band, xs, &mut out);
        }
        out[0]
    }

    /// The moments of the union of the values of `self` and `other`.
    ///
    /// Deterministic: the same two inputs always give the same bits. Merging in a
    /// different order or grouping agrees to f64 rounding.
    ///
    /// ```
    /// use batchnorm::Moments;
    ///
    /// let left = Moments::of(&[1.0, 1.0, 1.0]);
    /// let right = Moments::of(&[3.0]);
    /// assert_eq!(left.merge(right), Moments { count: 4, mean: 1.5, m2: 3.0 });
    /// ```
    pub fn merge(self, other: Moments) -> Moments {
        if other.count == 0 {
            return self;
        }
        if self.count == 0 {
            return other;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        Moments {
            count: self.count.saturating_add(other.count),
            mean: self.mean + delta * (nb / n),
            m2: self.m2 + other.m2 + delta * delta * (na * nb / n),
        }
    }

    /// The biased variance `m2 / count`, as batch norm normalizes with; NaN when empty.
    /// A rounding-negative `m2` counts as 0; NaN stays NaN.
    ///
    /// ```
    /// assert_eq!(batchnorm::Moments::of(&[1.0, 3.0]).var(), 1.0);
    /// ```
    pub fn var(&self) -> f64 {
        clamp_negative(self.m2) / self.count as f64
    }

    /// The unbiased variance `m2 / (count − 1)`, as running statistics keep; NaN with
    /// fewer than two values.
    ///
    /// ```
    /// use batchnorm::Moments;
    ///
    /// assert_eq!(Moments::of(&[1.0, 3.0]).unbiased_var(), 2.0);
    /// assert!(Moments::of(&[1.0]).unbiased_var().is_nan());
    /// ```
    pub fn unbiased_var(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        clamp_negative(self.m2) / (self.count as f64 - 1.0)
    }
}

/// `m2` with rounding below zero taken as 0, without turning NaN into a number.
fn clamp_negative(m2: f64) -> f64 {
    if m2 < 0.0 {
        0.0
    } else {
        m2
    }
}

/// Writes the moments of every channel of `x` to `out` (one per channel), reading `x`
/// once.
///
/// Exact to the accuracy of a careful two-pass computation also when the mean is far
/// larger than the spread: values are summed as deviations from a per-channel shift in
/// f32 vectors, and blocks of at most a few thousand values are merged in f64.
/// NaN or infinite values make their channel's moments NaN or infinite.
///
/// To reduce a tensor in parts (chunks of the batch, threads, machines), call this on
/// each part with the part's own shape and [`merge`](Moments::merge) the results.
///
/// # Errors
/// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
/// - [`Error::Length`] when `x` does not hold `batch·channels·spatial` values
///   (argument `"x"`) or `out` does not hold `channels` values (`"out"`).
///
/// Nothing is written on error.
///
/// ```
/// use batchnorm::{moments, Moments, Shape};
///
/// // Two samples, two channels, three spatial positions, NCHW.
/// let x = [1.0, 2.0, 3.0, /**/ 10.0, 10.0, 10.0,
///          4.0, 5.0, 6.0, /**/ 10.0, 10.0, 10.0];
/// let mut out = [Moments::EMPTY; 2];
/// moments(&x, Shape::channels_first(2, 2, 3), &mut out)?;
/// assert_eq!(out[0].mean, 3.5);
/// assert_eq!(out[0].var(), 17.5 / 6.0);
/// assert_eq!((out[1].mean, out[1].var()), (10.0, 0.0));
///
/// // The same tensor in two halves, merged.
/// let (mut a, mut b) = ([Moments::EMPTY; 2], [Moments::EMPTY; 2]);
/// moments(&x[..6], Shape::channels_first(1, 2, 3), &mut a)?;
/// moments(&x[6..], Shape::channels_first(1, 2, 3), &mut b)?;
/// assert_eq!(a[0].merge(b[0]).var(), out[0].var());
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn moments(x: &[f32], shape: Shape, out: &mut [Moments]) -> Result<(), Error> {
    check_len("x", x.len(), shape.len()?)?;
    check_len("out", out.len(), shape.channels)?;
    let walk = Walk::new(shape);
    for band in walk.bands(0) {
        // In range (`out` was checked); `get_mut` keeps a panic path out of the build.
        let out = out
            .get_mut(band.first..band.first + band.channels)
            .unwrap_or(&mut []);
        by_cap!(walk, B => band_moments::<B>(&walk, band, x, out));
    }
    Ok(())
}

/// The moments of the channels of `band` (`out[i]` for channel `band.first + i`).
///
/// Shifted sums: per channel, `d = x − shift` and `d²` are summed, so the sums do not
/// cancel however large the mean is against the spread. The first block (one sample,
/// or 64 lines) is summed around the channel's first finite value; the rest around
/// the first block's mean, and the two parts merge exactly. A first value far from
/// the others (an outlier) makes the first block's `Σd²` large against its `m2`, so
/// that `m2 = Σd² − (Σd)²/n` would cancel: past a factor 16, the first block is summed
/// again around its own mean (it is in cache).
/// `B` is the band capacity of the walk (see [`Walk::cap`]).
// Its arrays in a frame of its own (see `by_cap`).
#[cfg_attr(target_pointer_width = "64", inline(never))]
pub(crate) fn band_moments<const B: usize>(
    walk: &Walk,
    band: Band,
    x: &[f32],
    out: &mut [Moments],
) {
    let mut shift = [0.0; B];
    for (i, k) in shift.iter_mut().enumerate().take(band.channels) {
        let v = walk
            .first_index(band.first + i)
            .and_then(|at| x.get(at))
            .copied();
        *k = v.filter(|v| v.is_finite()).unwrap_or(0.0);
    }
    let first = walk.first_block();
    let n = walk.count(first.clone());
    let mut sums = [[0.0; 2]; B];
    let reduce = |shift: &[f32; B], steps, sums: &mut [[f64; 2]; B]| {
        engine::reduce(Shifted, walk, band, [x], &mut [], [shift], steps, sums)
    };
    reduce(&shift, first.clone(), &mut sums);
    let mut far = false;
    for ((out, k), s) in out.iter_mut().zip(&shift).zip(&sums) {
        *out = part(*k, *s, n);
        far |= s[1] > 16.0 * out.m2;
    }
    if far {
        for ((k, s), out) in shift.iter_mut().zip(&mut sums).zip(&*out) {
            reshift(k, *out);
            *s = [0.0; 2];
        }
        reduce(&shift, first.clone(), &mut sums);
        for ((out, k), s) in out.iter_mut().zip(&shift).zip(&sums) {
            *out = part(*k, *s, n);
        }
    }
    let rest = first.end..walk.steps();
    if rest.is_empty() {
        return;
    }
    for ((k, s), out) in shift.iter_mut().zip(&mut sums).zip(&*out) {
        reshift(k, *out);
        *s = [0.0; 2];
    }
    let n = walk.count(rest.clone());
    reduce(&shift, rest, &mut sums);
    for ((out, k), s) in out.iter_mut().zip(&shift).zip(&sums) {
        *out = out.merge(part(*k, *s, n));
    }
}

/// The moments of `n` values from their sums `[Σd, Σd²]` around `shift`.
fn part(shift: f32, [sd, sq]: [f64; 2], n: usize) -> Moments {
    if n == 0 {
        return Moments::EMPTY;
    }
    let count = n as f64;
    let d = sd / count;
    Moments {
        count: n as u64,
        mean: f64::from(shift) + d,
        m2: sq - sd * d,
    }
}

/// Moves `shift` to the mean of `m`, where that is a finite f32.
fn reshift(shift: &mut f32, m: Moments) {
    let mean = m.mean as f32;
    if m.count > 0 && mean.is_finite() {
        *shift = mean;
    }
}
