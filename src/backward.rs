//! The backward pass, for train and for eval mode.

use crate::distributed::BackwardSums;
use crate::engine::{self, at, by_cap, put, Band, Walk};
use crate::error::{check_len, Error};
use crate::forward::{BatchNorm, RUNNING, SAVED};
use crate::kernels::{
    GradInput, GradSums, ReluGradInput, ReluGradSums, ReluMask, ReluScale, ReluScaledGradSums,
    Scale, ScaledGradSums,
};
use crate::running::RunningStats;
use crate::saved::Saved;
use crate::shape::Shape;

/// Where the backward pass writes: the input gradient `dx` (same shape as `x`), and
/// optionally the per-channel gradients of γ and β.
///
/// `dgamma` and `dbeta` can be asked for whether or not the layer has γ and β
/// (PyTorch's `output_mask`); leave them `None` to skip them.
///
/// ```
/// use batchnorm::Grads;
///
/// let (mut dx, mut dgamma) = ([0.0f32; 12], [0.0f32; 3]);
/// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dgamma), dbeta: None };
/// # let _ = grads;
/// ```
#[derive(Debug)]
pub struct Grads<'a> {
    /// ∂L/∂x, one per element.
    pub dx: &'a mut [f32],
    /// ∂L/∂γ, one per channel, if wanted.
    pub dgamma: Option<&'a mut [f32]>,
    /// ∂L/∂β, one per channel, if wanted.
    pub dbeta: Option<&'a mut [f32]>,
}

impl BatchNorm<'_> {
    /// Backward pass of the train forward (PyTorch's `native_batch_norm_backward`
    /// with `train=True`), from the statistics `saved` it wrote. With
    /// `m = batch·spatial`, `mean` the batch mean of `x` and
    /// `x̂ = (x − mean)·saved.invstd`:
    ///
    /// `dβ = Σdy`, `dγ = Σdy·x̂`, `dx = γ·invstd·(dy − dβ/m − x̂·dγ/m)`.
    ///
    /// `mean` is the batch mean of `x` itself, exactly, whatever f32 rounding
    /// `saved.mean` carries: the sums pass adds `Σ(x − saved.mean)` to `Σdy` and
    /// `Σdy·(x − saved.mean)` (one more add per value, no extra read), and
    /// `mean = saved.mean + δ`, `δ = Σ(x − saved.mean)/m` in f64, so that dγ and dx are
    /// as exact as from an f64 mean. `saved.mean` only serves as the shift of the sums:
    /// one far from the batch mean costs precision, about `1e-5·|saved.mean − mean|`
    /// on `x − mean` (`1e-5·|saved.mean − mean|·invstd` on x̂).
    ///
    /// PyTorch's takes `saved.mean` for the mean, and so differs from this one by
    /// exactly PyTorch's own rounding error: its dγ is off by
    /// `(saved.mean − mean)·invstd·Σdy`, and its dx by
    /// `γ·invstd·(saved.mean − mean)·invstd·(x̂·Σdy + dγ)/m` (to first order), which at
    /// |mean|/std = 10⁴ is tens of times the error of the sums.
    /// Where `x`, `dy` or the statistics of a channel are not all finite (or its sums
    /// overflow), `δ` is left out there (it would give ∞ − ∞): that channel is
    /// PyTorch's, `x̂ = (x − saved.mean)·invstd`, and its infinities and NaNs propagate
    /// per element as IEEE arithmetic says.
    ///
    /// Two reads of `x` and `dy`: one for the three sums, one for `dx`; in
    /// channels-first layout both run back to back per channel, while it is in cache.
    /// The sums accumulate in f32 vectors merged in f64 every few thousand values.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite (it is not used
    ///   here, but a layer with such an `eps` is invalid);
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `x`, `dy` or `dx` does not hold
    ///   `batch·channels·spatial` values, or `saved.mean` (`"save_mean"`),
    ///   `saved.invstd` (`"save_invstd"`), `gamma`, `beta`, `dgamma` or `dbeta` not
    ///   `channels`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Grads, Saved, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let shape = Shape::rows(2, 1);
    /// let x = [1.0, 3.0];                  // mean 2, var 1, x̂ = [-1, 1]
    /// let dy = [1.0, 0.0];
    /// let (mut dx, mut dg, mut db) = ([0.0; 2], [0.0], [0.0]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    /// bn.backward(&x, &dy, shape, Saved { mean: &[2.0], invstd: &[1.0] }, grads)?;
    /// assert_eq!((db, dg), ([1.0], [-1.0]));
    /// assert_eq!(dx, [0.0, 0.0]);          // 1 − 1/2 − (−1)(−1)/2 and 0 − 1/2 + 1/2
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        shape: Shape,
        saved: Saved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        let saved = [saved.mean, saved.invstd];
        self.check_backward(dy, x, shape, SAVED, saved, &grads)?;
        self.backward_kernel(Through::Bn, dy, x, shape, saved, grads, None);
        Ok(())
    }

    /// Backward pass of the eval forward, where the statistics are constants (PyTorch's
    /// `native_batch_norm_backward` with `train=False`). With
    /// `x̂ = (x − running_mean)/√(running_var + eps)`:
    ///
    /// `dx = dy·γ/√(running_var + eps)`, `dγ = Σdy·x̂`, `dβ = Σdy`.
    ///
    /// `x` is read only when `dgamma` or `dbeta` is asked for.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `x`, `dy` or `dx` does not hold
    ///   `batch·channels·spatial` values, or `stats.mean` (`"running_mean"`),
    ///   `stats.var` (`"running_var"`), `gamma`, `beta`, `dgamma` or `dbeta` not
    ///   `channels`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Grads, RunningStats, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: Some(&[3.0]), beta: None };
    /// let (x, dy) = ([1.0, 5.0], [1.0, 2.0]);
    /// let (mut dx, mut dg) = ([0.0; 2], [0.0]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: None };
    /// let stats = RunningStats { mean: &[3.0], var: &[4.0] };
    /// bn.backward_eval(&x, &dy, Shape::rows(2, 1), stats, grads)?;
    /// assert_eq!(dx, [1.5, 3.0]);          // dy·3/2
    /// assert_eq!(dg, [1.0 * -1.0 + 2.0 * 1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn backward_eval(
        &self,
        x: &[f32],
        dy: &[f32],
        shape: Shape,
        stats: RunningStats<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        let stats = [stats.mean, stats.var];
        self.check_backward(dy, x, shape, RUNNING, stats, &grads)?;
        self.backward_eval_kernel(Through::Bn, dy, x, shape, stats, grads);
        Ok(())
    }

    /// The train backward through `through`: per band, the sums pass, then `dx`.
    /// With `renorm = [r, d]`, Batch Renormalization's: γ·r takes γ's place in `dx`,
    /// and `dγ = r·Σdy·x̂ + d·Σdy`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_kernel(
        &self,
        through: Through<'_>,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        saved: [&[f32]; 2],
        grads: Grads<'_>,
        renorm: Option<[&[f32]; 2]>,
    ) {
        self.backward_kernel_with(through, dy, x, shape, saved, grads, renorm, None);
    }

    /// [`backward_kernel`](Self::backward_kernel), with the sums
    /// `[Σdy, Σdy·(x − mean), Σ(x − mean)]` of every channel either reduced from the
    /// tensor (`global` None) or given with the count `m` they were taken over (the
    /// sums of a larger batch, of which this tensor is a part). From there on both
    /// take the same path: the distributed and parallel backward are this function.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_kernel_with(
        &self,
        through: Through<'_>,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        saved: [&[f32]; 2],
        grads: Grads<'_>,
        renorm: Option<[&[f32]; 2]>,
        global: Option<(&[BackwardSums], f64)>,
    ) {
        let walk = Walk::new(shape);
        let count = global.map_or((shape.batch * shape.spatial) as f64, |(_, m)| m);
        let args = (through, dy, x, saved, grads, renorm, global);
        by_cap!(walk, B => self.backward_bands::<B>(&walk, count, args))
    }

    /// [`backward_kernel_with`](Self::backward_kernel_with) with per-channel arrays
    /// of `B`.
    #[allow(clippy::type_complexity)]
    // Its arrays in a frame of its own (see `by_cap`).
    #[cfg_attr(target_pointer_width = "64", inline(never))]
    fn backward_bands<const B: usize>(
        &self,
        walk: &Walk,
        count: f64,
        (mut through, dy, x, [save_mean, save_invstd], grads, renorm, global): (
            Through<'_>,
            &[f32],
            &[f32],
            [&[f32]; 2],
            Grads<'_>,
            Option<[&[f32]; 2]>,
            Option<(&[BackwardSums], f64)>,
        ),
    ) {
        let Grads {
            dx,
            mut dgamma,
            mut dbeta,
        } = grads;
        // Channels-first: the sums and dx of a band run back to back while it is cached.
        let per_value = 1.0 / count;
        for band in walk.bands(2) {
            let mu = [band.of(save_mean)];
            let mut sums = [[0.0; 3]; B];
            match global {
                Some((global, _)) => {
                    for (s, g) in sums.iter_mut().zip(band.of(global)) {
                        *s = [g.dy, g.dy_xmu, g.x_mu];
                    }
                }
                None => grad_sums_pass(&mut through, walk, band, dy, x, mu[0], &mut sums),
            }
            // [k, a, b, p] of every channel
            let mut k = [[0.0; B]; 4];
            for (i, [sum_dy, sum_dyx, sum_x]) in sums.iter().enumerate().take(band.channels) {
                let c = band.first + i;
                let invstd = f64::from(at(save_invstd, c));
                let (db, mut gamma) = (*sum_dy, self.gamma(c));
                if let Some([r, _]) = renorm {
                    gamma *= f64::from(at(r, c));
                }
                let kk = gamma * invstd;
                // The batch mean is mu + δ: x̂ = (x − mu − δ)·invstd, exactly, whatever
                // rounding the f32 saved mean carries. Where x, dy, mu or the
                // constants are not finite (or the sums overflowed) the correction
                // would be ∞ − ∞ or NaN: there x̂ = (x − mu)·invstd, PyTorch's, whose
                // infinities and NaNs propagate per element as IEEE says.
                let delta = sum_x * per_value;
                let exact =
                    (delta * db).is_finite() && sum_dyx.is_finite() && (kk * invstd).is_finite();
                let dg = match exact {
                    true => (sum_dyx - delta * db) * invstd,
                    false => sum_dyx * invstd,
                };
                let dgamma_c = match renorm {
                    Some([r, d]) => f64::from(at(r, c)) * dg + f64::from(at(d, c)) * db,
                    None => dg,
                };
                write(&mut dbeta, c, db);
                write(&mut dgamma, c, dgamma_c);
                // dx = dy·k + (x − mu)·a + b, with k = γ·invstd, a = −k·invstd·dγ/m
                // and b = −k·dβ/m − a·δ, each of which may overflow (or underflow)
                // f32 where dx does not: when the largest is far out, a power of two
                // comes out of all three, dx = (…)·p, which brings them back and
                // costs no rounding.
                let aa = -kk * invstd * dg * per_value;
                let bb = match exact {
                    true => -kk * db * per_value - aa * delta,
                    false => -kk * db * per_value,
                };
                let p = out_of_range(kk.abs().max(aa.abs()).max(bb.abs()));
                // p is a power of two, mostly 1 (no division then): dividing is exact.
                let v = match p {
                    1.0 => [kk, aa, bb, p],
                    _ => [kk / p, aa / p, bb / p, p],
                };
                for (k, v) in k.iter_mut().zip(v) {
                    put(k, i, v as f32);
                }
            }
            let k = [&k[0][..], mu[0], &k[1][..], &k[2][..], &k[3][..]];
            match &through {
                Through::Bn => engine::map(GradInput, walk, band, [dy, x], dx, k),
                Through::Relu { y } => engine::map(ReluGradInput, walk, band, [dy, y, x], dx, k),
                Through::AddRelu { dz, .. } => engine::map(GradInput, walk, band, [dz, x], dx, k),
            }
        }
    }

    /// The eval backward through `through`: the sums pass when `dγ` or `dβ` is asked
    /// for, then `dx = dy·γ/√(running_var + eps)` (`dy` masked by the ReLU).
    pub(crate) fn backward_eval_kernel(
        &self,
        through: Through<'_>,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        stats: [&[f32]; 2],
        grads: Grads<'_>,
    ) {
        self.backward_eval_kernel_with(through, dy, x, shape, stats, grads, EvalSums::Reduce);
    }

    /// [`backward_eval_kernel`](Self::backward_eval_kernel), where the sums of `dγ` and
    /// `dβ` may also be given or kept (see [`EvalSums`]): a tensor in parts (threads)
    /// takes the same path as a whole one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_eval_kernel_with(
        &self,
        through: Through<'_>,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        stats: [&[f32]; 2],
        grads: Grads<'_>,
        sums: EvalSums<'_>,
    ) {
        let walk = Walk::new(shape);
        let args = (through, dy, x, stats, grads, sums);
        by_cap!(walk, B => self.backward_eval_bands::<B>(&walk, args))
    }

    /// [`backward_eval_kernel_with`](Self::backward_eval_kernel_with) with
    /// per-channel arrays of `B`.
    #[allow(clippy::type_complexity)]
    // Its arrays in a frame of its own (see `by_cap`).
    #[cfg_attr(target_pointer_width = "64", inline(never))]
    fn backward_eval_bands<const B: usize>(
        &self,
        walk: &Walk,
        (mut through, dy, x, [running_mean, running_var], grads, mut mode): (
            Through<'_>,
            &[f32],
            &[f32],
            [&[f32]; 2],
            Grads<'_>,
            EvalSums<'_>,
        ),
    ) {
        let Grads {
            dx,
            mut dgamma,
            mut dbeta,
        } = grads;
        let steps = 0..walk.steps();

        let sums_wanted = dgamma.is_some() || dbeta.is_some() || !matches!(mode, EvalSums::Reduce);
        for band in walk.bands(usize::from(sums_wanted)) {
            // [running mean, γ/√(running_var + eps)]
            let at = |i: usize| {
                running_var
                    .get(band.first + i)
                    .map_or(1.0, |&v| f64::from(v))
            };
            let invstd = self.invstds::<B>(band.channels, at);
            let mut scale = [0.0; B];
            for (i, (s, invstd)) in scale.iter_mut().zip(invstd).enumerate().take(band.channels) {
                *s = (self.gamma(band.first + i) * invstd) as f32;
            }
            let mu = band.of(running_mean);
            let k = [mu, &scale[..]];
            let scale = [&scale[..]];
            if !sums_wanted {
                match &mut through {
                    Through::Bn => engine::map(Scale, walk, band, [dy], dx, scale),
                    Through::Relu { y } => engine::map(ReluScale, walk, band, [dy, y], dx, scale),
                    Through::AddRelu { y, dz } => {
                        engine::map(ReluMask, walk, band, [dy, y], dz, []);
                        engine::map(Scale, walk, band, [dz], dx, scale)
                    }
                }
                continue;
            }
            // dx is written in the sums pass: one read of dy.
            let mut sums = [[0.0; 2]; B];
            let all = steps.clone();
            if let EvalSums::Given(given) = mode {
                for (s, g) in sums.iter_mut().zip(band.of(given)) {
                    *s = [g.dy, g.dy_xmu];
                }
            } else {
                match &mut through {
                    Through::Bn => {
                        engine::reduce(ScaledGradSums, walk, band, [dy, x], dx, k, all, &mut sums)
                    }
                    Through::Relu { y } => {
                        let ins = [dy, y, x];
                        engine::reduce(ReluScaledGradSums, walk, band, ins, dx, k, all, &mut sums)
                    }
                    Through::AddRelu { y, dz } => {
                        let ins = [dy, y, x];
                        engine::reduce(
                            ReluGradSums::<true>,
                            walk,
                            band,
                            ins,
                            dz,
                            [mu],
                            all,
                            &mut sums,
                        );
                        engine::map(Scale, walk, band, [dz], dx, scale)
                    }
                }
            }
            if let EvalSums::Into(out) = &mut mode {
                let out = out
                    .get_mut(band.first..band.first + band.channels)
                    .unwrap_or(&mut []);
                for (o, [dy, dy_xmu]) in out.iter_mut().zip(sums) {
                    // Σ(x − mean) is the train backward's alone.
                    *o = BackwardSums {
                        dy,
                        dy_xmu,
                        x_mu: 0.0,
                    };
                }
                continue;
            }
            for (i, ([sum_dy, sum_dyx], invstd)) in
                sums.iter().zip(invstd).enumerate().take(band.channels)
            {
                let c = band.first + i;
                write(&mut dbeta, c, *sum_dy);
                write(&mut dgamma, c, sum_dyx * invstd);
            }
        }
    }

    pub(crate) fn check_backward(
        &self,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        stat_names: [&'static str; 2],
        stats: [&[f32]; 2],
        grads: &Grads<'_>,
    ) -> Result<(), Error> {
        let len = shape.len()?;
        self.check(shape.channels)?;
        for (name, stat) in stat_names.into_iter().zip(stats) {
            check_len(name, stat.len(), shape.channels)?;
        }
        check_len("dy", dy.len(), len)?;
        check_len("x", x.len(), len)?;
        check_len("dx", grads.dx.len(), len)?;
        if let Some(dg) = &grads.dgamma {
            check_len("dgamma", dg.len(), shape.channels)?;
        }
        if let Some(db) = &grads.dbeta {
            check_len("dbeta", db.len(), shape.channels)?;
        }
        Ok(())
    }
}

/// What the gradient flows back through: batch norm alone, or fused with a ReLU
/// (`y` is the fused forward's output) or with an Add and a ReLU (`dz` receives the
/// residual's gradient).
pub(crate) enum Through<'a> {
    Bn,
    Relu { y: &'a [f32] },
    AddRelu { y: &'a [f32], dz: &'a mut [f32] },
}

/// Where the eval backward's sums `[Σdy, Σdy·(x − running_mean)]` come from and
/// go: reduced from the tensor into `dγ`, `dβ` (`Reduce`); reduced and kept, one per
/// channel, with `dγ`, `dβ` left alone (`Into`: a part of a tensor); or given, and
/// only turned into `dγ`, `dβ` (`Given`: the merged sums of the parts).
// Only the parallel backward keeps or gives sums.
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
pub(crate) enum EvalSums<'a> {
    Reduce,
    Into(&'a mut [BackwardSums]),
    Given(&'a [BackwardSums]),
}

/// 1 when `v` (≥ 0 or NaN: a largest magnitude) lies within 2^±64, is 0 or is not
/// finite, else the power of two (within f32's normal range) that brings it to about
/// 2^±64: the same scaling for all of a channel's constants keeps the largest in range
/// without pushing the smaller ones out.
pub(crate) fn out_of_range(v: f64) -> f64 {
    const LIMIT: i32 = 64;
    // [2^-65, 2^64) is where frexp's exponent is within ±LIMIT.
    const IN_RANGE: core::ops::Range<f64> = 0.5 / 18446744073709551616.0..18446744073709551616.0;
    if IN_RANGE.contains(&v) || !v.is_finite() || v == 0.0 {
        return 1.0;
    }
    let e = libm::frexp(v).1;
    libm::ldexp(1.0, (e - LIMIT * e.signum()).clamp(-126, 127))
}

/// Stores `v` at `out[c]` when `out` was asked for.
fn write(out: &mut Option<&mut [f32]>, c: usize, v: f64) {
    if let Some(out) = out {
        put(out, c, v as f32);
    }
}

/// The sums pass of the train backward over `band`: `[Σdy, Σdy·(x − mean), Σ(x − mean)]`
/// of each of its channels into `sums`, with `dy` masked by the fused ReLU (and the
/// masked `dy` written to `dz` for Add + ReLU); `Σ(x − mean)` takes every `x`.
pub(crate) fn grad_sums_pass(
    through: &mut Through<'_>,
    walk: &Walk,
    band: Band,
    dy: &[f32],
    x: &[f32],
    mean: &[f32],
    sums: &mut [[f64; 3]],
) {
    let steps = 0..walk.steps();
    let mu = [mean];
    match through {
        Through::Bn => engine::reduce(GradSums, walk, band, [dy, x], &mut [], mu, steps, sums),
        Through::Relu { y } => engine::reduce(
            ReluGradSums::<false>,
            walk,
            band,
            [dy, y, x],
            &mut [],
            mu,
            steps,
            sums,
        ),
        Through::AddRelu { y, dz } => engine::reduce(
            ReluGradSums::<true>,
            walk,
            band,
            [dy, y, x],
            dz,
            mu,
            steps,
            sums,
        ),
    }
}
