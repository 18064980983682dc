//! Group norm and instance norm (PyTorch's `F.group_norm` and `F.instance_norm`):
//! statistics per sample and group of channels, with batch norm's per-channel γ, β.
//! Instance norm is group norm with one channel per group, plus optional running
//! statistics.
//!
//! Both walk one sample at a time, with the engine's walk of a one-sample shape, in
//! chunks of whole groups that fit a band: a chunk's statistics, then its output,
//! while it is cached.

use core::ops::Range;

use crate::backward::{out_of_range, Grads};
use crate::engine::{self, by_cap, put, Band, Walk};
use crate::error::{check_len, Error};
use crate::forward::BatchNorm;
use crate::kernels::{Centered, GradInput, GradSums};
use crate::moments::{band_moments, Moments};
use crate::running::Running;
use crate::saved::{Saved, SavedMut};
use crate::shape::Shape;

/// Group normalization (Wu & He, 2018; PyTorch's `nn.GroupNorm`): the channels of
/// every sample fall into `groups` groups of `C/groups` consecutive channels, and
/// each (sample, group) is normalized by its own mean and biased variance over its
/// channels and spatial positions; then `y = x̂·γ_c + β_c` per channel.
///
/// | PyTorch | ONNX `GroupNormalization` (opset 21) | here |
/// |---|---|---|
/// | `num_groups` | `num_groups` | `groups` |
/// | `eps = 1e-5` | `epsilon = 1e-5` | `eps` |
/// | `weight`, `bias` (per channel) | `scale`, `bias` (per channel) | `gamma`, `beta` |
/// | `affine=False` | – | `gamma: None, beta: None` |
/// | (float32 statistics) | `stash_type = 1` | statistics in f64 from f32 inputs |
///
/// Both layouts are supported (PyTorch's `channels_last` too); the statistics and
/// the saved `mean`, `invstd` are `[batch][groups]`.
///
/// ```
/// use batchnorm::{GroupNorm, SavedMut, Shape};
///
/// let gn = GroupNorm { groups: 1, eps: 0.0, gamma: None, beta: Some(&[0.0, 10.0]) };
/// let x = [1.0, 1.0, 3.0, 3.0]; // NCHW: 1 sample, 2 channels, 2 positions
/// let (mut y, mut mean, mut invstd) = ([0.0; 4], [0.0], [0.0]);
/// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
/// gn.forward(&x, &mut y, Shape::channels_first(1, 2, 2), saved)?;
/// assert_eq!((mean, invstd), ([2.0], [1.0]));
/// assert_eq!(y, [-1.0, -1.0, 11.0, 11.0]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNorm<'a> {
    /// How many groups; at least 1, and it must divide the channels.
    pub groups: usize,
    /// Added to the variance; finite and ≥ 0 (PyTorch's default `1e-5`).
    pub eps: f32,
    /// γ, one per channel; `None` is γ = 1.
    pub gamma: Option<&'a [f32]>,
    /// β, one per channel; `None` is β = 0.
    pub beta: Option<&'a [f32]>,
}

/// Instance normalization (Ulyanov et al., 2016; PyTorch's `nn.InstanceNorm1d/2d/3d`
/// with `use_input_stats=True`): every (sample, channel) is normalized by its own
/// mean and biased variance over its spatial positions: group norm with one channel
/// per group.
///
/// With `track_running_stats=True`, PyTorch also updates running statistics with
/// the mean over the batch of the instances' means and unbiased variances; pass
/// [`Running`] for that. In eval mode with running statistics PyTorch's instance
/// norm is batch norm's eval: use [`BatchNorm::eval`].
///
/// ONNX's `InstanceNormalization` maps directly (`epsilon` 1e-5, per-channel
/// `scale` and `B`, which are required there).
///
/// ```
/// use batchnorm::{InstanceNorm, SavedMut, Shape};
///
/// let inorm = InstanceNorm { eps: 0.0, gamma: None, beta: None };
/// let x = [1.0, 3.0, 5.0, 9.0]; // NCL: 2 samples, 1 channel, 2 positions
/// let (mut y, mut mean, mut invstd) = ([0.0; 4], [0.0; 2], [0.0; 2]);
/// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
/// inorm.forward(&x, &mut y, Shape::channels_first(2, 1, 2), saved, None)?;
/// assert_eq!((mean, invstd), ([2.0, 7.0], [1.0, 0.5]));
/// assert_eq!(y, [-1.0, 1.0, -1.0, 1.0]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstanceNorm<'a> {
    /// Added to the variance; finite and ≥ 0 (PyTorch's default `1e-5`).
    pub eps: f32,
    /// γ, one per channel; `None` is γ = 1 (PyTorch's default `affine=False`).
    pub gamma: Option<&'a [f32]>,
    /// β, one per channel; `None` is β = 0.
    pub beta: Option<&'a [f32]>,
}

impl GroupNorm<'_> {
    /// Forward pass: normalizes every (sample, group) of `x` into `y` and writes its
    /// mean and `invstd = 1/√(var + eps)` (biased variance) to `saved`, one per
    /// (sample, group) in `[batch][groups]` order, as PyTorch's `native_group_norm`
    /// returns them.
    ///
    /// The statistics come from one read of `x`, exact as batch norm's (see
    /// [`moments`](fn@crate::moments)): per channel, merged over the group's
    /// channels in f64. A NaN or infinity makes its group's statistics and output
    /// NaN.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Groups`] when `groups` is 0 or does not divide `channels`;
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when the shape's element count, or `batch · groups`,
    ///   does not fit in `usize`;
    /// - [`Error::Length`] when `x` or `y` does not hold `batch·channels·spatial`
    ///   values, `gamma` or `beta` not `channels`, or `saved.mean` (`"save_mean"`)
    ///   or `saved.invstd` (`"save_invstd"`) not `batch · groups`;
    /// - [`Error::TooFewValues`] when a group holds no value (`spatial` is 0) and
    ///   there are samples.
    ///
    /// ```
    /// use batchnorm::{GroupNorm, SavedMut, Shape};
    ///
    /// // NHWC: 1 sample, 2 positions, 4 channels in 2 groups.
    /// let gn = GroupNorm { groups: 2, eps: 0.0, gamma: None, beta: None };
    /// let x = [0.0, 2.0, 10.0, 10.0, /**/ 2.0, 0.0, 20.0, 20.0];
    /// let (mut y, mut mean, mut invstd) = ([0.0; 8], [0.0; 2], [0.0; 2]);
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// gn.forward(&x, &mut y, Shape::channels_last(1, 4, 2), saved)?;
    /// assert_eq!((mean, invstd), ([1.0, 15.0], [1.0, 0.2]));
    /// assert_eq!(y, [-1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 1.0, 1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn forward(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        saved: SavedMut<'_>,
    ) -> Result<(), Error> {
        let len = self.check(shape, [saved.mean.len(), saved.invstd.len()])?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        self.forward_kernel(x, y, shape, saved, None);
        Ok(())
    }

    /// [`forward`](Self::forward) with `y` written over `x`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward); the tensor is argument `"x"`.
    ///
    /// ```
    /// use batchnorm::{GroupNorm, SavedMut, Shape};
    ///
    /// let gn = GroupNorm { groups: 1, eps: 0.0, gamma: None, beta: None };
    /// let mut x = [4.0, 6.0];
    /// let (mut mean, mut invstd) = ([0.0], [0.0]);
    /// gn.forward_in_place(&mut x, Shape::rows(1, 2), SavedMut { mean: &mut mean, invstd: &mut invstd })?;
    /// assert_eq!(x, [-1.0, 1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn forward_in_place(
        &self,
        x: &mut [f32],
        shape: Shape,
        saved: SavedMut<'_>,
    ) -> Result<(), Error> {
        let len = self.check(shape, [saved.mean.len(), saved.invstd.len()])?;
        check_len("x", x.len(), len)?;
        self.forward_kernel(&[], x, shape, saved, None);
        Ok(())
    }

    /// Backward pass of [`forward`](Self::forward), from the statistics it saved.
    /// With `x̂ = (x − mean)·invstd` per (sample, group), `g = dy·γ_c` and means over
    /// the group:
    ///
    /// `dx = invstd·(g − mean(g) − x̂·mean(g·x̂))`, `dγ_c = Σdy·x̂`, `dβ_c = Σdy` (sums
    /// over samples and positions).
    ///
    /// Two reads of `dy` and `x`, per chunk of groups while it is cached: one for the
    /// per-channel sums, one for `dx`. `dγ` and `dβ` add up in f64, but for groups of
    /// more channels than a band (64 channels-first, 1024 channels-last), whose
    /// per-sample parts add in f32.
    ///
    /// # Errors
    /// Checked before anything is written: as [`forward`](Self::forward), and
    /// [`Error::Length`] when `dy` or `dx` does not hold `batch·channels·spatial`
    /// values or `dgamma` or `dbeta` not `channels`.
    ///
    /// ```
    /// use batchnorm::{GroupNorm, Grads, Saved, Shape};
    ///
    /// let gn = GroupNorm { groups: 1, eps: 0.0, gamma: None, beta: None };
    /// let (x, dy) = ([1.0, 3.0], [1.0, 1.0]); // one group: mean 2, invstd 1
    /// let (mut dx, mut dg, mut db) = ([0.0; 2], [0.0; 2], [0.0; 2]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    /// gn.backward(&x, &dy, Shape::rows(1, 2), Saved { mean: &[2.0], invstd: &[1.0] }, grads)?;
    /// assert_eq!((dx, dg, db), ([0.0; 2], [-1.0, 1.0], [1.0, 1.0]));
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
        let len = self.check(shape, [saved.mean.len(), saved.invstd.len()])?;
        check_len("x", x.len(), len)?;
        check_len("dy", dy.len(), len)?;
        check_len("dx", grads.dx.len(), len)?;
        for (name, d) in [("dgamma", &grads.dgamma), ("dbeta", &grads.dbeta)] {
            if let Some(d) = d {
                check_len(name, d.len(), shape.channels)?;
            }
        }
        let g = Grouping::new(shape, self.groups);
        if len == 0 {
            // No values: dγ and dβ are 0, and nothing is walked.
            for d in [grads.dgamma, grads.dbeta].into_iter().flatten() {
                d.fill(0.0);
            }
        } else {
            by_cap!(g.walk, B => self.backward_chunks::<B>(&g, x, dy, saved, grads))
        }
        Ok(())
    }

    /// Checks the parameters against `shape` and the saved statistics' lengths;
    /// returns the element count.
    fn check(&self, shape: Shape, saved: [usize; 2]) -> Result<usize, Error> {
        let len = shape.len()?;
        let c = shape.channels;
        if self.groups == 0 || !c.is_multiple_of(self.groups) {
            return Err(Error::Groups {
                groups: self.groups,
                arg: "channels",
                channels: c,
            });
        }
        self.bn().check(c)?;
        let stats = shape
            .batch
            .checked_mul(self.groups)
            .ok_or(Error::Overflow { arg: "save_mean" })?;
        for (name, len) in ["save_mean", "save_invstd"].into_iter().zip(saved) {
            check_len(name, len, stats)?;
        }
        // Saturating: an empty batch may hold channels · spatial beyond usize.
        let per_group = (c / self.groups).saturating_mul(shape.spatial);
        if stats > 0 && per_group == 0 {
            return Err(Error::TooFewValues {
                needed: 1,
                actual: 0,
            });
        }
        Ok(len)
    }

    /// eps, γ and β as batch norm holds them.
    fn bn(&self) -> BatchNorm<'_> {
        BatchNorm {
            eps: self.eps,
            gamma: self.gamma,
            beta: self.beta,
        }
    }

    /// The checked forward; `running` (instance norm) is updated with the mean over
    /// the batch of each channel's mean and unbiased variance. An empty `x` is `y`
    /// itself (in place).
    fn forward_kernel(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        saved: SavedMut<'_>,
        mut running: Option<&mut Running<'_>>,
    ) {
        if shape.len() != Ok(0) {
            // (No values: no statistics either, and nothing to walk, however many
            // channels there are.)
            let g = Grouping::new(shape, self.groups);
            by_cap!(g.walk, B => self.forward_chunks::<B>(&g, x, y, saved, running.as_deref_mut()))
        }
        if let Some(r) = running {
            r.advance();
        }
    }

    // Its arrays in a frame of its own (see `by_cap`).
    #[cfg_attr(target_pointer_width = "64", inline(never))]
    fn forward_chunks<const B: usize>(
        &self,
        g: &Grouping,
        x: &[f32],
        y: &mut [f32],
        saved: SavedMut<'_>,
        mut running: Option<&mut Running<'_>>,
    ) {
        let bn = self.bn();
        // Validated in `InstanceNorm::check_running`.
        let factor = running.as_ref().map_or(0.0, |r| r.factor());
        let correction = running.as_ref().map(|r| r.correction).unwrap_or_default();
        let per_group = (g.per * g.spatial) as f64;
        for chunk in g.chunks::<B>(1) {
            let first_group = g.group_of(chunk.start);
            let groups = chunk.len() / g.per.max(1);
            // Σ over samples of each channel's mean and unbiased variance (instance
            // norm's running statistics; a chunk then holds at most B channels).
            let mut batch_sums = [[0.0; 2]; B];
            for n in 0..g.batch {
                let at = g.sample(n);
                let xn = x.get(at.clone()).unwrap_or(&[]);
                let yn = y.get_mut(at).unwrap_or_default();
                let src = if x.is_empty() { &*yn } else { xn };
                let mut stats = [Moments::EMPTY; B];
                for band in g.bands::<B>(chunk.clone()) {
                    let mut m = [Moments::EMPTY; B];
                    band_moments::<B>(
                        &g.walk,
                        band,
                        src,
                        m.get_mut(..band.channels).unwrap_or(&mut []),
                    );
                    for (i, m) in m.iter().enumerate().take(band.channels) {
                        if let Some(s) = stats.get_mut(g.group_of(band.first + i) - first_group) {
                            *s = s.merge(*m);
                        }
                    }
                }
                let inv = bn.invstds::<B>(groups, |i| stats.get(i).map_or(1.0, Moments::var));
                let at = n * g.groups + first_group;
                let (mean, invstd) = (saved.mean.get_mut(at..), saved.invstd.get_mut(at..));
                let out = mean
                    .unwrap_or_default()
                    .iter_mut()
                    .zip(invstd.unwrap_or_default());
                let sums = batch_sums.iter_mut();
                for (((st, inv), (mean, invstd)), sums) in
                    stats.iter().zip(inv).zip(out).zip(sums).take(groups)
                {
                    (*mean, *invstd) = (st.mean as f32, inv as f32);
                    if running.is_some() {
                        sums[0] += st.mean;
                        sums[1] += correction.batch_var(st.var(), per_group);
                    }
                }
                for band in g.bands::<B>(chunk.clone()) {
                    // [mean, scale, shift] per channel, as batch norm's train forward.
                    let mut k = [[0.0; B]; 3];
                    for i in 0..band.channels {
                        let c = band.first + i;
                        let j = g.group_of(c) - first_group;
                        let (st, inv) = (get(&stats, j), get(&inv, j));
                        let s = bn.gamma(c) * inv;
                        let mu = st.mean as f32;
                        let shift = bn.beta(c) - (st.mean - f64::from(mu)) * s;
                        for (k, v) in k.iter_mut().zip([mu, s as f32, shift as f32]) {
                            put(k, i, v);
                        }
                    }
                    let k = [&k[0][..], &k[1][..], &k[2][..]];
                    let yn = y.get_mut(g.sample(n)).unwrap_or_default();
                    engine::map(Centered, &g.walk, band, [xn], yn, k);
                }
            }
            if let Some(r) = running.as_mut() {
                let samples = g.batch as f64;
                let update = |old: &mut f32, batch: f64| {
                    *old = ((1.0 - factor) * f64::from(*old) + factor * batch / samples) as f32
                };
                let rm = r.mean.get_mut(first_group..).unwrap_or_default();
                let running = rm
                    .iter_mut()
                    .zip(r.var.get_mut(first_group..).unwrap_or_default());
                for ([mean, var], (rm, rv)) in batch_sums.iter().zip(running).take(groups) {
                    update(rm, *mean);
                    update(rv, *var);
                }
            }
        }
    }

    // Its arrays in a frame of its own (see `by_cap`).
    #[cfg_attr(target_pointer_width = "64", inline(never))]
    fn backward_chunks<const B: usize>(
        &self,
        g: &Grouping,
        x: &[f32],
        dy: &[f32],
        saved: Saved<'_>,
        grads: Grads<'_>,
    ) {
        let bn = self.bn();
        let Grads {
            dx,
            mut dgamma,
            mut dbeta,
        } = grads;
        for d in [&mut dgamma, &mut dbeta].into_iter().flatten() {
            d.fill(0.0);
        }
        let m = (g.per * g.spatial) as f64;
        for chunk in g.chunks::<B>(2) {
            let first_group = g.group_of(chunk.start);
            // Whether the chunk's per-channel sums over samples fit the arrays below
            // (else they add up in the f32 outputs).
            let exact = chunk.len() <= B;
            let mut param_sums = [[0.0; 2]; B];
            for n in 0..g.batch {
                let at = g.sample(n);
                let (xn, dyn_) = (x.get(at.clone()), dy.get(at));
                let (xn, dyn_) = (xn.unwrap_or_default(), dyn_.unwrap_or_default());
                let stat = |c: usize, s: &[f32]| get(s, n * g.groups + g.group_of(c));
                // Per group of the chunk: [Σγ·dy, Σγ·dy·(x − mean)].
                let mut group_sums = [[0.0; 2]; B];
                for band in g.bands::<B>(chunk.clone()) {
                    let mu: [f32; B] = core::array::from_fn(|i| {
                        let c = (band.first + i).min(g.channels.saturating_sub(1));
                        stat(c, saved.mean)
                    });
                    let mut sums = [[0.0; 2]; B];
                    let steps = 0..g.walk.steps();
                    let ins = [dyn_, xn];
                    engine::reduce(
                        GradSums,
                        &g.walk,
                        band,
                        ins,
                        &mut [],
                        [&mu],
                        steps,
                        &mut sums,
                    );
                    for (i, [sum_dy, sum_dyx]) in sums.iter().enumerate().take(band.channels) {
                        let c = band.first + i;
                        let (gamma, inv) = (bn.gamma(c), f64::from(stat(c, saved.invstd)));
                        if let Some(s) = group_sums.get_mut(g.group_of(c) - first_group) {
                            s[0] += gamma * sum_dy;
                            s[1] += gamma * sum_dyx;
                        }
                        let (db, dg) = (*sum_dy, sum_dyx * inv);
                        if exact {
                            if let Some(p) = param_sums.get_mut(c - chunk.start) {
                                p[0] += db;
                                p[1] += dg;
                            }
                        } else {
                            add(&mut dbeta, c, db);
                            add(&mut dgamma, c, dg);
                        }
                    }
                }
                for band in g.bands::<B>(chunk.clone()) {
                    // dx = dy·k + (x − mean)·a + b, k = γ·invstd, a = −invstd³·Σγdy(x − mean)/m
                    // and b = −invstd·Σγdy/m, scaled by `p` as batch norm's.
                    let mut k = [[0.0; B]; 5];
                    for i in 0..band.channels {
                        let c = band.first + i;
                        let [sum_g, sum_gd] = get(&group_sums, g.group_of(c) - first_group);
                        let inv = f64::from(stat(c, saved.invstd));
                        let kk = bn.gamma(c) * inv;
                        let a = -inv * inv * inv * sum_gd / m;
                        let b = -inv * sum_g / m;
                        let p = out_of_range(kk.abs().max(a.abs()).max(b.abs()));
                        let mu = stat(c, saved.mean);
                        for (k, v) in k.iter_mut().zip([kk / p, f64::from(mu), a / p, b / p, p]) {
                            put(k, i, v as f32);
                        }
                    }
                    let k = [&k[0][..], &k[1][..], &k[2][..], &k[3][..], &k[4][..]];
                    let out = dx.get_mut(g.sample(n)).unwrap_or_default();
                    engine::map(GradInput, &g.walk, band, [dyn_, xn], out, k);
                }
            }
            if exact {
                for (i, [db, dg]) in param_sums.iter().enumerate().take(chunk.len()) {
                    let c = chunk.start + i;
                    add(&mut dbeta, c, *db);
                    add(&mut dgamma, c, *dg);
                }
            }
        }
    }
}

impl InstanceNorm<'_> {
    /// As group norm with one channel per group.
    fn groups(&self, shape: Shape) -> GroupNorm<'_> {
        GroupNorm {
            groups: shape.channels.max(1),
            eps: self.eps,
            gamma: self.gamma,
            beta: self.beta,
        }
    }

    /// Forward pass: normalizes every (sample, channel) of `x` into `y` and writes its
    /// mean and `invstd` to `saved`, `[batch][channels]`; updates `running` when given
    /// (PyTorch's `track_running_stats=True` in training mode), counting the update:
    /// `mean ← (1 − f)·mean + f·(mean over the batch of the instances' means)`, and
    /// the same for the variance with the instances' variances (unbiased, or biased
    /// with [`Correction::Biased`](crate::Correction)).
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] for an `eps` that is negative, NaN or infinite, or an
    ///   exponential momentum outside `[0, 1]` (argument `"momentum"`);
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `x` or `y` does not hold `batch·channels·spatial`
    ///   values, `gamma`, `beta`, `running_mean` or `running_var` not `channels`, or
    ///   `saved.mean` (`"save_mean"`) or `saved.invstd` (`"save_invstd"`) not
    ///   `batch · channels`;
    /// - [`Error::TooFewValues`] when `spatial` is 0 and there are instances, or,
    ///   with `running`, when `spatial` is below 2 with [`Correction::Unbiased`](crate::Correction)
    ///   (the unbiased variance needs two values) or `batch` is 0.
    ///
    /// ```
    /// use batchnorm::{InstanceNorm, Momentum, Running, SavedMut, Shape};
    ///
    /// let inorm = InstanceNorm { eps: 0.0, gamma: None, beta: None };
    /// let x = [1.0, 3.0, 5.0, 9.0]; // 2 samples, 1 channel, 2 positions
    /// let (mut y, mut mean, mut invstd) = ([0.0; 4], [0.0; 2], [0.0; 2]);
    /// let (mut rm, mut rv) = ([0.0], [1.0]);
    /// let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(0.5));
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// inorm.forward(&x, &mut y, Shape::channels_first(2, 1, 2), saved, Some(&mut running))?;
    /// assert_eq!(running.batches_tracked, 1);
    /// assert_eq!(rm, [0.5 * (2.0 + 7.0) / 2.0]);       // means 2 and 7
    /// assert_eq!(rv, [0.5 + 0.5 * (2.0 + 8.0) / 2.0]); // unbiased variances 2 and 8
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn forward(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        let gn = self.groups(shape);
        let len = gn.check(shape, [saved.mean.len(), saved.invstd.len()])?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        check_running(shape, running.as_deref())?;
        gn.forward_kernel(x, y, shape, saved, running);
        Ok(())
    }

    /// [`forward`](Self::forward) with `y` written over `x`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward); the tensor is argument `"x"`.
    ///
    /// ```
    /// use batchnorm::{InstanceNorm, SavedMut, Shape};
    ///
    /// let mut x = [1.0, 3.0];
    /// let (mut mean, mut invstd) = ([0.0], [0.0]);
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// InstanceNorm { eps: 0.0, gamma: None, beta: None }
    ///     .forward_in_place(&mut x, Shape::channels_last(1, 1, 2), saved, None)?;
    /// assert_eq!(x, [-1.0, 1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn forward_in_place(
        &self,
        x: &mut [f32],
        shape: Shape,
        saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        let gn = self.groups(shape);
        let len = gn.check(shape, [saved.mean.len(), saved.invstd.len()])?;
        check_len("x", x.len(), len)?;
        check_running(shape, running.as_deref())?;
        gn.forward_kernel(&[], x, shape, saved, running);
        Ok(())
    }

    /// Backward pass of [`forward`](Self::forward): [`GroupNorm::backward`] with one
    /// channel per group (the running statistics take no part).
    ///
    /// # Errors
    /// As [`GroupNorm::backward`], with `saved` of `batch · channels` values.
    ///
    /// ```
    /// use batchnorm::{Grads, InstanceNorm, Saved, Shape};
    ///
    /// let inorm = InstanceNorm { eps: 0.0, gamma: Some(&[2.0]), beta: None };
    /// let (x, dy) = ([1.0, 3.0], [1.0, 0.0]);
    /// let mut dx = [0.0; 2];
    /// let grads = Grads { dx: &mut dx, dgamma: None, dbeta: None };
    /// let saved = Saved { mean: &[2.0], invstd: &[1.0] };
    /// inorm.backward(&x, &dy, Shape::channels_first(1, 1, 2), saved, grads)?;
    /// assert_eq!(dx, [0.0, 0.0]); // 2·(dy − 1/2 − x̂·(−1/2))
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
        self.groups(shape).backward(x, dy, shape, saved, grads)
    }
}

/// Checks instance norm's running statistics.
fn check_running(shape: Shape, running: Option<&Running<'_>>) -> Result<(), Error> {
    let Some(r) = running else {
        return Ok(());
    };
    let needed = r.check(shape.channels)?;
    let (needed, actual) = match (shape.batch, shape.spatial) {
        (0, _) => (1, 0),
        (_, s) => (needed, s),
    };
    if actual < needed {
        return Err(Error::TooFewValues { needed, actual });
    }
    Ok(())
}

/// `xs[i]`, or the default past the end (which the callers' checks rule out).
fn get<T: Copy + Default>(xs: &[T], i: usize) -> T {
    xs.get(i).copied().unwrap_or_default()
}

/// Adds `v` to `out[c]` when `out` was asked for (in f32).
pub(crate) fn add(out: &mut Option<&mut [f32]>, c: usize, v: f64) {
    if let Some(d) = out.as_deref_mut().and_then(|d| d.get_mut(c)) {
        *d = (f64::from(*d) + v) as f32;
    }
}

/// Bytes of a chunk's tensors (channels-first) that its second pass rereads.
const REUSE_BYTES: usize = 256 << 10;

/// How a checked shape's samples are walked and its channels grouped.
struct Grouping {
    /// The walk of one sample.
    walk: Walk,
    batch: usize,
    channels: usize,
    spatial: usize,
    groups: usize,
    /// Channels per group.
    per: usize,
}

impl Grouping {
    /// The group of channel `c`.
    fn group_of(&self, c: usize) -> usize {
        // `per` ≥ 1 for a checked shape; `max` shows the compiler so (no panic path).
        c / self.per.max(1)
    }

    fn new(shape: Shape, groups: usize) -> Grouping {
        Grouping {
            walk: Walk::new(Shape { batch: 1, ..shape }),
            batch: shape.batch,
            channels: shape.channels,
            spatial: shape.spatial,
            groups,
            per: shape.channels / groups.max(1),
        }
    }

    /// Sample `n`'s values (the same range in both layouts).
    fn sample(&self, n: usize) -> Range<usize> {
        let len = self.channels * self.spatial;
        n * len..(n + 1) * len
    }

    /// Channel ranges of whole groups, as many as fit `B` channels (or one group when
    /// a group holds more). When the walk packs a sample (at most `B` channels), one
    /// chunk holds them all, as a packed band must.
    ///
    /// Channels-first, a chunk holds no more groups than keep the `reread` tensors
    /// its second pass reads again (forward `x`, backward `x` and `dy`) within
    /// [`REUSE_BYTES`], so that they come from L2.
    fn chunks<const B: usize>(&self, reread: usize) -> impl Iterator<Item = Range<usize>> {
        let per = self.per.max(1);
        let group = per.saturating_mul(self.spatial).saturating_mul(4 * reread);
        let fit = match self.walk.runs() {
            true => REUSE_BYTES / group.max(1),
            false => B,
        };
        let width = if per <= B {
            (B / per).min(fit.max(1)) * per
        } else {
            per
        };
        let c = self.channels;
        (0..c)
            .step_by(width)
            .map(move |first| first..(first + width).min(c))
    }

    /// A chunk's bands of at most `B` channels.
    fn bands<const B: usize>(&self, chunk: Range<usize>) -> impl Iterator<Item = Band> {
        let end = chunk.end;
        chunk.step_by(B).map(move |first| Band {
            first,
            channels: B.min(end - first),
        })
    }
}
