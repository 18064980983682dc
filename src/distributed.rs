//! Building blocks of synchronized (distributed) batch norm: the train forward and
//! backward, each split in two halves around a reduction that the caller does across
//! ranks (processes, machines, or threads, as [`parallel`](crate) does).
//!
//! Every rank holds a part of the global batch (its own samples, with the same
//! channels) and normalizes it with the statistics of the **whole** batch:
//!
//! | step | call | then reduce across ranks |
//! |---|---|---|
//! | forward (a) | [`moments`](crate::moments) of the local part | the `C` [`Moments`] (count, mean, M2): [`Moments::merge`] in f64 |
//! | forward (b) | [`BatchNorm::train_with_moments`] with the merged moments | — |
//! | backward (a) | [`backward_sums`] of the local part | the `C` [`BackwardSums`] (Σdy, Σdy·(x − mean), Σ(x − mean)): [`BackwardSums::merge`] (a sum) in f64 |
//! | backward (b) | [`BatchNorm::backward_with_sums`] with the merged sums and the global count | — |
//!
//! # The reduction a caller does
//! - **What**: forward, per channel `(count, mean, M2)`; the count is the same for every
//!   channel, so a rank sends `2C + 1` values. Backward, per channel `Σdy`,
//!   `Σdy·(x − mean)` and `Σ(x − mean)`: `3C` values (the global count is known from
//!   the forward).
//! - **Precision**: f64, as this crate produces them. Summing the backward sums in f32, or
//!   turning moments into `Σx`, `Σx²` to reduce them with a plain sum, loses what the
//!   local kernels kept (`Σx² − (Σx)²/m` cancels when the mean is large against the
//!   spread). Moments merge with [`Moments::merge`] (Chan et al.), not by a sum.
//! - **Order**: floating-point merging is not associative, so for results that are the
//!   same on every run **and on every rank**, merge the parts in one fixed order (rank
//!   order, or a fixed tree over ranks) that does not depend on arrival order, and give
//!   every rank the same merged result (all merge in that order, or one merges and
//!   broadcasts). Every rank must normalize with bit-identical moments: otherwise the
//!   replicas' running statistics drift apart.
//!
//! Over a single part (one rank), the two halves give **bit for bit** what
//! [`BatchNorm::train`] and [`BatchNorm::backward`] give: those are the same code with
//! the reduction left out.
//!
//! # Errors the halves report
//! Besides the checks of `train` and `backward` (lengths, `eps`, momentum), a rank
//! whose part is empty (`batch·spatial = 0`) and merged statistics that count fewer
//! values than the rank itself holds, none, or one with running statistics, are
//! [`Error::TooFewValues`]; moments or sums for the wrong number of channels are an
//! [`Error::Length`] of `"global"`. Across ranks, a caller must agree on the outcome
//! before reducing (as the repository's
//! [`integrations/mpi`](https://github.com/batchnorm-rs/batchnorm/tree/main/integrations/mpi)
//! does), or a rank that returns early leaves the others waiting in the collective.
//!
//! ```
//! use batchnorm::distributed::{backward_sums, BackwardSums};
//! use batchnorm::{moments, BatchNorm, Grads, Moments, SavedMut, Shape};
//!
//! // Two "ranks", each with two samples of a [N, 2] batch.
//! let parts = [[1.0, 10.0, 3.0, 30.0], [5.0, 50.0, 7.0, 70.0]];
//! let shape = Shape::rows(2, 2);
//! let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
//!
//! // Forward (a): local moments; the "allreduce": merge in rank order.
//! let mut global = [Moments::EMPTY; 2];
//! for part in &parts {
//!     let mut local = [Moments::EMPTY; 2];
//!     moments(part, shape, &mut local)?;
//!     for (g, l) in global.iter_mut().zip(local) {
//!         *g = g.merge(l);
//!     }
//! }
//! // Forward (b) on rank 0: normalized with the global mean 4 and variance 5.
//! let (mut y, mut mean, mut invstd) = ([0.0; 4], [0.0; 2], [0.0; 2]);
//! let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
//! bn.train_with_moments(&parts[0], &mut y, shape, &global, saved, None)?;
//! assert_eq!(mean, [4.0, 40.0]);
//! assert!((y[0] - (1.0 - 4.0) / 5f32.sqrt()).abs() < 1e-6);
//!
//! // Backward (a): local sums, summed in rank order; (b): dx of rank 0.
//! let dy = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]];
//! let mut sums = [BackwardSums::ZERO; 2];
//! for (part, dy) in parts.iter().zip(&dy) {
//!     let mut local = [BackwardSums::ZERO; 2];
//!     backward_sums(part, dy, shape, &mean, &mut local)?;
//!     for (s, l) in sums.iter_mut().zip(local) {
//!         *s = s.merge(l);
//!     }
//! }
//! assert_eq!(sums[0], BackwardSums { dy: 1.0, dy_xmu: -3.0, x_mu: 0.0 });
//! let mut dx = [0.0; 4];
//! let grads = Grads { dx: &mut dx, dgamma: None, dbeta: None };
//! let saved = batchnorm::Saved { mean: &mean, invstd: &invstd };
//! bn.backward_with_sums(&parts[0], &dy[0], shape, saved, &sums, 4, grads)?;
//! assert!(dx[0] > 0.0 && dx[1] == 0.0);
//! # Ok::<(), batchnorm::Error>(())
//! ```

use crate::backward::{grad_sums_pass, Grads, Through};
use crate::engine::{by_cap, Walk};
use crate::error::{check_len, Error};
use crate::forward::{BatchNorm, SAVED};
use crate::kernels::Centered;
use crate::moments::Moments;
use crate::running::Running;
use crate::saved::{Saved, SavedMut};
use crate::shape::Shape;

/// The sums of one channel that the train backward needs from the whole batch:
/// `Σdy`, `Σdy·(x − mean)` and `Σ(x − mean)`, with `mean` the saved (f32) batch mean,
/// over a part of the batch. Parts add up: [`merge`](Self::merge) is their sum.
///
/// Once summed over the batch of `count` values, `δ = x_mu/count` is what the f32
/// `mean` misses of the exact batch mean, and `dβ = dy`,
/// `dγ = (dy_xmu − δ·dy)·invstd`: x̂ from the batch mean itself, as
/// [`BatchNorm::backward`] has it.
///
/// ```
/// use batchnorm::distributed::BackwardSums;
///
/// let a = BackwardSums { dy: 1.0, dy_xmu: 2.0, x_mu: 0.5 };
/// let b = BackwardSums { dy: 0.5, dy_xmu: -1.0, x_mu: -0.25 };
/// assert_eq!(a.merge(b), BackwardSums { dy: 1.5, dy_xmu: 1.0, x_mu: 0.25 });
/// assert_eq!(BackwardSums::ZERO.merge(a), a);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackwardSums {
    /// Σdy.
    pub dy: f64,
    /// Σdy·(x − mean).
    pub dy_xmu: f64,
    /// Σ(x − mean): the part of the batch mean that `mean` misses, times the count.
    pub x_mu: f64,
}

impl BackwardSums {
    /// No values: the identity of [`merge`](Self::merge).
    ///
    /// ```
    /// let z = batchnorm::distributed::BackwardSums::ZERO;
    /// assert_eq!((z.dy, z.dy_xmu, z.x_mu), (0.0, 0.0, 0.0));
    /// ```
    pub const ZERO: BackwardSums = BackwardSums {
        dy: 0.0,
        dy_xmu: 0.0,
        x_mu: 0.0,
    };

    /// The sums of the union of two parts, in f64. Deterministic; merging in another
    /// order agrees to f64 rounding.
    ///
    /// ```
    /// use batchnorm::distributed::BackwardSums;
    ///
    /// let a = BackwardSums { dy: 1.0, dy_xmu: 0.0, x_mu: 1.0 };
    /// let s = a.merge(BackwardSums { dy: 2.0, dy_xmu: 3.0, x_mu: -1.0 });
    /// assert_eq!(s, BackwardSums { dy: 3.0, dy_xmu: 3.0, x_mu: 0.0 });
    /// ```
    pub fn merge(self, other: BackwardSums) -> BackwardSums {
        BackwardSums {
            dy: self.dy + other.dy,
            dy_xmu: self.dy_xmu + other.dy_xmu,
            x_mu: self.x_mu + other.x_mu,
        }
    }
}

/// Backward (a): writes the [`BackwardSums`] of every channel of the local part to
/// `out`, reading `x` and `dy` once, by the kernel [`BatchNorm::backward`] runs.
/// `save_mean` is the global batch mean that
/// [`train_with_moments`](BatchNorm::train_with_moments) saved.
///
/// # Errors
/// Checked before anything is written:
/// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
/// - [`Error::Length`] when `x` or `dy` does not hold `batch·channels·spatial`
///   values, or `save_mean` or `out` not `channels`;
/// - [`Error::TooFewValues`] when the local part is empty (`batch·spatial = 0`).
///
/// ```
/// use batchnorm::distributed::{backward_sums, BackwardSums};
/// use batchnorm::Shape;
///
/// let mut out = [BackwardSums::ZERO];
/// backward_sums(&[0.0, 4.0], &[1.0, 2.0], Shape::rows(2, 1), &[1.0], &mut out)?;
/// let (dy, dy_xmu, x_mu) = (3.0, 1.0 * -1.0 + 2.0 * 3.0, -1.0 + 3.0);
/// assert_eq!(out[0], BackwardSums { dy, dy_xmu, x_mu });
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn backward_sums(
    x: &[f32],
    dy: &[f32],
    shape: Shape,
    save_mean: &[f32],
    out: &mut [BackwardSums],
) -> Result<(), Error> {
    let len = shape.len()?;
    check_len("x", x.len(), len)?;
    check_len("dy", dy.len(), len)?;
    check_len("save_mean", save_mean.len(), shape.channels)?;
    check_len("out", out.len(), shape.channels)?;
    check_local(shape)?;
    sums_kernel(dy, x, shape, save_mean, out);
    Ok(())
}

/// [`backward_sums`], unchecked.
pub(crate) fn sums_kernel(
    dy: &[f32],
    x: &[f32],
    shape: Shape,
    save_mean: &[f32],
    out: &mut [BackwardSums],
) {
    let walk = Walk::new(shape);
    by_cap!(walk, B => sums_bands::<B>(&walk, dy, x, save_mean, out));
}

/// [`backward_sums`] with per-channel arrays of `B`.
// Its arrays in a frame of its own (see `by_cap`).
#[cfg_attr(target_pointer_width = "64", inline(never))]
fn sums_bands<const B: usize>(
    walk: &Walk,
    dy: &[f32],
    x: &[f32],
    save_mean: &[f32],
    out: &mut [BackwardSums],
) {
    for band in walk.bands(0) {
        let mut sums = [[0.0; 3]; B];
        let mean = band.of(save_mean);
        grad_sums_pass(&mut Through::Bn, walk, band, dy, x, mean, &mut sums);
        let out = out
            .get_mut(band.first..band.first + band.channels)
            .unwrap_or(&mut []);
        for (o, [dy, dy_xmu, x_mu]) in out.iter_mut().zip(sums) {
            *o = BackwardSums { dy, dy_xmu, x_mu };
        }
    }
}

/// `TooFewValues` when the local part has no values per channel.
pub(crate) fn check_local(shape: Shape) -> Result<usize, Error> {
    let m = shape.per_channel()?;
    if m == 0 {
        return Err(Error::TooFewValues {
            needed: 1,
            actual: 0,
        });
    }
    Ok(m)
}

/// `TooFewValues` when merged statistics over `count` values cannot be those of a
/// batch that holds the local part's `m` values, or cannot feed the update asked for.
pub(crate) fn check_count(count: u64, m: usize, needed: usize) -> Result<(), Error> {
    let needed = needed.max(m);
    match usize::try_from(count) {
        Ok(c) if c >= needed => Ok(()),
        Ok(c) => Err(Error::TooFewValues { needed, actual: c }),
        // More values than usize counts: more than any local part holds.
        Err(_) => Ok(()),
    }
}

impl BatchNorm<'_> {
    /// Train forward (b): normalizes the local part `x` with `global`, the merged
    /// moments of the whole batch (one per channel), as [`train`](Self::train) does
    /// with the moments of `x`: `y = (x − mean)·invstd·γ + β`, writing `saved` for
    /// the backward pass and updating `running` once (one update counted), with the
    /// global count (`var·count/(count − 1)` for the unbiased variance). Every rank
    /// calls it with the same `global` and so updates the same running statistics.
    ///
    /// With `global` the moments of `x` alone, the result is bit for bit that of
    /// [`train`](Self::train). See the [module docs](self) for the reduction between
    /// [`moments`](crate::moments) and this call.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - as [`train`](Self::train) for `eps`, momentum, the shape and the lengths of
    ///   `x`, `y`, the saved and running statistics, γ and β;
    /// - [`Error::Length`] (argument `"global"`) when `global` does not hold `channels`
    ///   moments;
    /// - [`Error::TooFewValues`] when the local part is empty, or a channel's global
    ///   count is below the local `batch·spatial`, 0, or below 2 with `running` and
    ///   [`Correction::Unbiased`](crate::Correction).
    ///
    /// ```
    /// use batchnorm::{moments, BatchNorm, Moments, Momentum, Running, SavedMut, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let shape = Shape::rows(1, 1); // one value on this rank …
    /// let global = [Moments::of(&[1.0, 3.0, 5.0, 7.0])]; // … of four in the batch
    /// let (mut y, mut mean, mut invstd) = ([0.0], [0.0], [0.0]);
    /// let (mut rm, mut rv) = ([0.0], [0.0]);
    /// let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(1.0));
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// bn.train_with_moments(&[7.0], &mut y, shape, &global, saved, Some(&mut running))?;
    /// assert_eq!((running.stats().mean, running.stats().var), (&[4.0][..], &[20.0 / 3.0][..]));
    /// assert!((y[0] - 3.0 / 5f32.sqrt()).abs() < 1e-6);
    ///
    /// let one = [Moments::of(&[7.0])]; // a global batch of one value: no unbiased variance
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// let err = bn.train_with_moments(&[7.0], &mut y, shape, &one, saved, Some(&mut running));
    /// assert_eq!(err, Err(batchnorm::Error::TooFewValues { needed: 2, actual: 1 }));
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn train_with_moments(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        global: &[Moments],
        saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        let stats = [&*saved.mean, &*saved.invstd];
        let len = self.check_with_moments(shape, global, stats, running.as_deref())?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        let saved = [saved.mean, saved.invstd];
        self.train_kernel_with(Centered, [x], y, shape, saved, running, None, Some(global));
        Ok(())
    }

    /// The checks [`train_with_moments`](Self::train_with_moments) makes that depend
    /// on this rank alone (all but those of the merged moments), without touching any
    /// data: a rank runs them *before* the reduction and shares the outcome, so that
    /// every rank leaves together on bad input instead of some waiting in a collective.
    ///
    /// # Errors
    /// As [`train_with_moments`](Self::train_with_moments) but for `"global"` and the
    /// global count: eps, momentum, lengths, and an empty local part.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Error, Saved, Shape};
    ///
    /// let bn = BatchNorm { eps: 1e-5, gamma: None, beta: None };
    /// let shape = Shape::rows(2, 3);
    /// let saved = Saved { mean: &[0.0; 3], invstd: &[0.0; 3] };
    /// assert!(bn.check_train_part(&[0.0; 6], &[0.0; 6], shape, saved, None).is_ok());
    /// let err = bn.check_train_part(&[0.0; 6], &[0.0; 5], shape, saved, None);
    /// assert_eq!(err, Err(Error::Length { arg: "y", expected: 6, actual: 5 }));
    /// ```
    pub fn check_train_part(
        &self,
        x: &[f32],
        y: &[f32],
        shape: Shape,
        saved: Saved<'_>,
        running: Option<&Running<'_>>,
    ) -> Result<(), Error> {
        let len = shape.len()?;
        self.check(shape.channels)?;
        check_len("save_mean", saved.mean.len(), shape.channels)?;
        check_len("save_invstd", saved.invstd.len(), shape.channels)?;
        if let Some(r) = running {
            r.check(shape.channels)?;
        }
        check_local(shape)?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)
    }

    /// The checks [`backward_with_sums`](Self::backward_with_sums) makes that depend on
    /// this rank alone (all but those of the merged sums and count), without touching
    /// any data; see [`check_train_part`](Self::check_train_part).
    ///
    /// # Errors
    /// As [`backward_with_sums`](Self::backward_with_sums) but for `"global"` and
    /// `count`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Error, Grads, Saved, Shape};
    ///
    /// let bn = BatchNorm { eps: 1e-5, gamma: None, beta: None };
    /// let mut dx = [0.0; 4];
    /// let grads = Grads { dx: &mut dx, dgamma: None, dbeta: None };
    /// let shape = Shape::rows(2, 2);
    /// let saved = Saved { mean: &[0.0; 2], invstd: &[1.0; 2] };
    /// assert!(bn.check_backward_part(&[0.0; 4], &[0.0; 4], shape, saved, &grads).is_ok());
    /// let err = bn.check_backward_part(&[0.0; 4], &[0.0; 3], shape, saved, &grads);
    /// assert_eq!(err, Err(Error::Length { arg: "dy", expected: 4, actual: 3 }));
    /// ```
    pub fn check_backward_part(
        &self,
        x: &[f32],
        dy: &[f32],
        shape: Shape,
        saved: Saved<'_>,
        grads: &Grads<'_>,
    ) -> Result<(), Error> {
        self.check_backward(dy, x, shape, SAVED, [saved.mean, saved.invstd], grads)?;
        check_local(shape).map(|_| ())
    }

    /// The checks of [`train_with_moments`](Self::train_with_moments) but those of
    /// `x` and `y`; returns the element count.
    pub(crate) fn check_with_moments(
        &self,
        shape: Shape,
        global: &[Moments],
        saved: [&[f32]; 2],
        running: Option<&Running<'_>>,
    ) -> Result<usize, Error> {
        let len = shape.len()?;
        self.check(shape.channels)?;
        for (name, saved) in SAVED.into_iter().zip(saved) {
            check_len(name, saved.len(), shape.channels)?;
        }
        check_len("global", global.len(), shape.channels)?;
        let needed = match running {
            Some(r) => r.check(shape.channels)?,
            None => 1,
        };
        let m = check_local(shape)?;
        for g in global {
            check_count(g.count, m, needed)?;
        }
        Ok(len)
    }

    /// Train backward (b): `dx`, `dγ`, `dβ` of the local part from `global`, the
    /// [`BackwardSums`] of the whole batch (one per channel, summed over ranks), and
    /// `count`, the values per channel of the whole batch (the global moments'
    /// count): `dβ = Σdy`, `dγ = Σdy·x̂`,
    /// `dx = γ·invstd·(dy − dβ/count − x̂·dγ/count)`, with x̂ from the exact mean of the
    /// whole batch, `saved.mean + Σ(x − saved.mean)/count`, as in
    /// [`backward`](Self::backward). `saved` is what
    /// [`train_with_moments`](Self::train_with_moments) wrote. Every rank
    /// gets the same `dγ` and `dβ` (of the whole batch: do not reduce them again).
    ///
    /// With `global` the sums of this part alone and `count` its `batch·spatial`, the
    /// result is bit for bit that of [`backward`](Self::backward).
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - as [`backward`](Self::backward) for `eps`, the shape, and the lengths of `x`,
    ///   `dy`, `dx`, the saved statistics, γ, β, `dgamma` and `dbeta`;
    /// - [`Error::Length`] (argument `"global"`) when `global` does not hold `channels`
    ///   sums;
    /// - [`Error::TooFewValues`] when the local part is empty or `count` is below its
    ///   `batch·spatial` (or 0).
    ///
    /// ```
    /// use batchnorm::distributed::BackwardSums;
    /// use batchnorm::{BatchNorm, Grads, Saved, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// // This rank holds x = 3 of a batch [1, 3] (mean 2, invstd 1); dy = [1, 0].
    /// let global = [BackwardSums { dy: 1.0, dy_xmu: -1.0, x_mu: 0.0 }];
    /// let saved = Saved { mean: &[2.0], invstd: &[1.0] };
    /// let (mut dx, mut db) = ([0.0], [0.0]);
    /// let grads = Grads { dx: &mut dx, dgamma: None, dbeta: Some(&mut db) };
    /// bn.backward_with_sums(&[3.0], &[0.0], Shape::rows(1, 1), saved, &global, 2, grads)?;
    /// assert_eq!((dx, db), ([0.0], [1.0])); // 0 − 1/2 − 1·(−1)/2
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn backward_with_sums(
        &self,
        x: &[f32],
        dy: &[f32],
        shape: Shape,
        saved: Saved<'_>,
        global: &[BackwardSums],
        count: u64,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        let saved = [saved.mean, saved.invstd];
        self.check_backward(dy, x, shape, SAVED, saved, &grads)?;
        self.check_with_sums(shape, global, count)?;
        self.backward_sums_kernel(dy, x, shape, saved, grads, global, count);
        Ok(())
    }

    /// The checks of [`backward_with_sums`](Self::backward_with_sums) on `global` and
    /// `count`.
    pub(crate) fn check_with_sums(
        &self,
        shape: Shape,
        global: &[BackwardSums],
        count: u64,
    ) -> Result<(), Error> {
        check_len("global", global.len(), shape.channels)?;
        let m = check_local(shape)?;
        check_count(count, m, 1)
    }

    /// The train backward with given sums, unchecked.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_sums_kernel(
        &self,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        saved: [&[f32]; 2],
        grads: Grads<'_>,
        global: &[BackwardSums],
        count: u64,
    ) {
        let global = Some((global, count as f64));
        self.backward_kernel_with(Through::Bn, dy, x, shape, saved, grads, None, global);
    }
}
