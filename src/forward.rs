//! The layer: eval and train forward.

use crate::engine::{self, at, by_cap, put, Band, Map, Walk};
use crate::error::{check_eps, check_len, Error};
use crate::kernels::{Affine, Centered};
use crate::moments::{band_moments, Moments};
use crate::renorm::Renorm;
use crate::running::{Running, RunningStats};
use crate::saved::SavedMut;
use crate::shape::Shape;

/// A batch-normalization layer's parameters, borrowed: `eps`, and the affine `γ`
/// (`gamma`, scale) and `β` (`beta`, shift), one per channel.
///
/// `gamma: None` means γ = 1 and `beta: None` means β = 0, as PyTorch's
/// `affine=False`. The statistics are arguments of each call, so one value serves the
/// eval forward, the train forward and the backward pass.
///
/// | method | computes (per channel `c`) |
/// |---|---|
/// | [`eval`](Self::eval) | `y = (x − running_mean)/√(running_var + eps)·γ + β` |
/// | [`train`](Self::train) | `y = (x − mean)·invstd·γ + β` with batch statistics, `invstd = 1/√(var + eps)` |
/// | [`backward`](Self::backward) | `dx, dγ, dβ` of the train forward |
/// | [`backward_eval`](Self::backward_eval) | `dx, dγ, dβ` of the eval forward |
///
/// Every method takes the tensor `x` first (then `y`, or `dy`), the [`Shape`], then
/// the statistics: [`SavedMut`] (train writes) and [`Saved`](crate::Saved) (backward
/// reads) for the batch's, `Option<&mut Running>` (train updates) and
/// [`RunningStats`] (eval reads) for the running ones.
///
/// ```
/// use batchnorm::{BatchNorm, RunningStats, Shape};
///
/// let gamma = [2.0, 1.0];
/// let bn = BatchNorm { eps: 0.0, gamma: Some(&gamma), beta: None };
/// let x = [1.0, 10.0, 3.0, 30.0]; // [batch 2][channels 2]
/// let mut y = [0.0; 4];
/// let stats = RunningStats { mean: &[2.0, 20.0], var: &[1.0, 100.0] };
/// bn.eval(&x, &mut y, Shape::rows(2, 2), stats)?;
/// assert_eq!(y, [-2.0, -1.0, 2.0, 1.0]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm<'a> {
    /// Added to the variance before the square root; finite and ≥ 0 (PyTorch's
    /// default is `1e-5`).
    pub eps: f32,
    /// γ, one per channel; `None` is γ = 1.
    pub gamma: Option<&'a [f32]>,
    /// β, one per channel; `None` is β = 0.
    pub beta: Option<&'a [f32]>,
}

/// The saved statistics as the train calls name them, for errors.
pub(crate) const SAVED: [&str; 2] = ["save_mean", "save_invstd"];

/// The running statistics as the eval calls name them, for errors.
pub(crate) const RUNNING: [&str; 2] = ["running_mean", "running_var"];

impl BatchNorm<'_> {
    /// Checks eps and the lengths of γ and β against `channels`.
    pub(crate) fn check(&self, channels: usize) -> Result<(), Error> {
        check_eps(self.eps)?;
        if let Some(gamma) = self.gamma {
            check_len("gamma", gamma.len(), channels)?;
        }
        if let Some(beta) = self.beta {
            check_len("beta", beta.len(), channels)?;
        }
        Ok(())
    }

    /// γ of channel `c` in f64 (1 when absent).
    pub(crate) fn gamma(&self, c: usize) -> f64 {
        self.gamma
            .and_then(|g| g.get(c))
            .map_or(1.0, |&g| f64::from(g))
    }

    /// β of channel `c` in f64 (0 when absent).
    pub(crate) fn beta(&self, c: usize) -> f64 {
        self.beta
            .and_then(|b| b.get(c))
            .map_or(0.0, |&b| f64::from(b))
    }

    /// `1/√(var(i) + eps)` in f64 for the `n` channels of a band: four at a time
    /// where there is SIMD (a square root and a division per channel cost more than a
    /// tiny tensor's elementwise pass), one by one elsewhere.
    pub(crate) fn invstds<const B: usize>(&self, n: usize, var: impl Fn(usize) -> f64) -> [f64; B] {
        let mut out = [0.0; B];
        let eps = f64::from(self.eps);
        #[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64"))]
        for (i, out) in out
            .as_chunks_mut::<4>()
            .0
            .iter_mut()
            .enumerate()
            .take(n.div_ceil(4))
        {
            let v = wide::f64x4::new(core::array::from_fn(|l| var(4 * i + l) + eps));
            *out = (wide::f64x4::ONE / v.sqrt()).to_array();
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
        for (i, out) in out.iter_mut().enumerate().take(n) {
            *out = 1.0 / libm::sqrt(var(i) + eps);
        }
        out
    }

    /// Eval forward: `y = (x − running_mean)/√(running_var + eps)·γ + β`, with the
    /// running statistics `stats` (PyTorch's `model.eval()`, ONNX's
    /// `BatchNormalization` in inference mode).
    ///
    /// Per channel, `scale = γ/√(running_var + eps)` and
    /// `shift = β − running_mean·scale` are computed once in f64, by the same code as
    /// the fold ([`fold::EvalBn`](crate::fold::EvalBn)); each element then costs one
    /// multiply-add, `y = x·scale + shift`. NaN and infinities in `x` stay in their own
    /// element.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `x` or `y` does not hold `batch·channels·spatial`
    ///   values, or `stats.mean` (`"running_mean"`), `stats.var` (`"running_var"`),
    ///   `gamma` or `beta` not `channels`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, RunningStats, Shape};
    ///
    /// let bn = BatchNorm { eps: 1e-5, gamma: None, beta: Some(&[0.5, -0.5]) };
    /// let shape = Shape::channels_last(1, 2, 3); // NHWC, H·W = 3
    /// let x = [1.0, 5.0, 2.0, 6.0, 3.0, 7.0];
    /// let mut y = [0.0; 6];
    /// bn.eval(&x, &mut y, shape, RunningStats { mean: &[2.0, 6.0], var: &[1.0, 1.0] })?;
    /// let expect = [-0.5, -1.5, 0.5, -0.5, 1.5, 0.5];
    /// assert!(y.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-4));
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn eval(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        stats: RunningStats<'_>,
    ) -> Result<(), Error> {
        let len = self.check_eval(shape, stats)?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        self.eval_kernel(Affine, [x], y, shape, stats);
        Ok(())
    }

    /// [`eval`](Self::eval) with `y` written over `x`.
    ///
    /// # Errors
    /// As [`eval`](Self::eval); the tensor is argument `"x"`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, RunningStats, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let mut x = [3.0, 5.0, 7.0];
    /// bn.eval_in_place(&mut x, Shape::rows(3, 1), RunningStats { mean: &[5.0], var: &[4.0] })?;
    /// assert_eq!(x, [-1.0, 0.0, 1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn eval_in_place(
        &self,
        x: &mut [f32],
        shape: Shape,
        stats: RunningStats<'_>,
    ) -> Result<(), Error> {
        let len = self.check_eval(shape, stats)?;
        check_len("x", x.len(), len)?;
        self.eval_kernel(Affine, [&[]], x, shape, stats);
        Ok(())
    }

    pub(crate) fn check_eval(&self, shape: Shape, stats: RunningStats<'_>) -> Result<usize, Error> {
        let len = shape.len()?;
        self.check(shape.channels)?;
        stats.check(shape.channels)?;
        Ok(len)
    }

    /// `y = M(x, …)` with the eval constants `[scale, shift]` of every channel. An
    /// empty `ins[0]` is `y` itself (in place).
    pub(crate) fn eval_kernel<M: Map<I, 2> + Copy, const I: usize>(
        &self,
        m: M,
        ins: [&[f32]; I],
        y: &mut [f32],
        shape: Shape,
        stats: RunningStats<'_>,
    ) {
        let walk = Walk::new(shape);
        by_cap!(walk, B => self.eval_bands::<M, I, B>(m, &walk, ins, y, stats))
    }

    /// [`eval_kernel`](Self::eval_kernel) with per-channel arrays of `B`.
    // Its arrays in a frame of its own (see `by_cap`).
    #[cfg_attr(target_pointer_width = "64", inline(never))]
    fn eval_bands<M: Map<I, 2> + Copy, const I: usize, const B: usize>(
        &self,
        m: M,
        walk: &Walk,
        ins: [&[f32]; I],
        y: &mut [f32],
        stats: RunningStats<'_>,
    ) {
        for band in walk.bands(0) {
            let [scale, shift] = self.eval_consts::<B>(band, stats);
            engine::map(m, walk, band, ins, y, [&scale, &shift]);
        }
    }

    /// `[scale, shift]` of the eval forward for the channels of `band`, by
    /// [`eval_affine`], four channels at a time where there is SIMD.
    fn eval_consts<const B: usize>(&self, band: Band, stats: RunningStats<'_>) -> [[f32; B]; 2] {
        let eps = f64::from(self.eps);
        let [mut scale, mut shift] = [[0.0; B]; 2];
        #[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64"))]
        {
            use wide::f64x4;
            // The band's part of each input, `None` for an absent γ or β (1 and 0).
            let [gamma, beta] = [self.gamma, self.beta].map(|xs| xs.map(|xs| band.of(xs)));
            let (mean, var) = (Some(band.of(stats.mean)), Some(band.of(stats.var)));
            // Channels `4q..4q + 4` of `xs` (`none` past its end or when absent): one
            // slice access for four channels but in the last, partial quad.
            fn quad(xs: Option<&[f32]>, q: usize, none: f64) -> f64x4 {
                let lanes = match xs.map(|xs| xs.get(4 * q..4 * q + 4)) {
                    Some(Some(&[a, b, c, d])) => [a, b, c, d].map(f64::from),
                    _ => core::array::from_fn(|l| {
                        xs.and_then(|xs| xs.get(4 * q + l))
                            .map_or(none, |&v| f64::from(v))
                    }),
                };
                f64x4::new(lanes)
            }
            let quads = scale.as_chunks_mut::<4>().0.iter_mut();
            let quads = quads.zip(shift.as_chunks_mut::<4>().0);
            for (q, (scale, shift)) in quads.enumerate().take(band.channels.div_ceil(4)) {
                let [s, b] = eval_affine(
                    quad(gamma, q, 1.0),
                    quad(beta, q, 0.0),
                    quad(mean, q, 0.0),
                    quad(var, q, 1.0),
                    f64x4::splat(eps),
                );
                *scale = s.to_array().map(|v| v as f32);
                *shift = b.to_array().map(|v| v as f32);
            }
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
        {
            // Channel by channel (no f64 vectors): the smallest code.
            let at = |xs: &[f32], i: usize, none: f64| {
                xs.get(band.first + i).map_or(none, |&v| f64::from(v))
            };
            let of =
                |xs: Option<&[f32]>, i: usize, none: f64| xs.map_or(none, |xs| at(xs, i, none));
            let channels = scale.iter_mut().zip(&mut shift).enumerate();
            for (i, (scale, shift)) in channels.take(band.channels) {
                let [s, b] = eval_affine(
                    of(self.gamma, i, 1.0),
                    of(self.beta, i, 0.0),
                    at(stats.mean, i, 0.0),
                    at(stats.var, i, 1.0),
                    eps,
                );
                (*scale, *shift) = (s as f32, b as f32);
            }
        }
        [scale, shift]
    }

    /// Train forward: normalizes with the batch statistics of each channel,
    /// `y = (x − mean)·invstd·γ + β`, `invstd = 1/√(var + eps)`, with `var` the biased
    /// variance over the `m = batch·spatial` values of the channel.
    ///
    /// Writes `saved.mean` (the batch mean) and `saved.invstd` (`invstd`) for the
    /// backward pass, as PyTorch's `native_batch_norm` returns them, and updates
    /// `running` when given, counting the update in its `batches_tracked` (see
    /// [`Running`]). Statistics come from one read of `x`
    /// (see [`moments`](fn@crate::moments) for their accuracy); in channels-first layout
    /// each channel is normalized right after its statistics, while its values are in
    /// cache. Per element: one subtraction and one multiply-add,
    /// `y = (x − mean)·(γ·invstd) + shift`, where `mean` is the f32 batch mean and
    /// `shift` is β corrected by the part of the f64 mean that f32 cannot hold, so `y`
    /// is as exact as its f32 rounding also when the mean is large against the spread.
    ///
    /// A channel whose values are all equal has variance 0: with `eps > 0` its output
    /// is β; with `eps = 0` its invstd is infinite and its output NaN. A NaN or
    /// infinity in `x` makes its channel's statistics and output NaN.
    ///
    /// # Errors
    /// Checked before anything is written (`running` included):
    /// - [`Error::Parameter`] for an `eps` that is negative, NaN or infinite, or an
    ///   exponential momentum outside `[0, 1]` (argument `"momentum"`);
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `x` or `y` does not hold `batch·channels·spatial`
    ///   values, or `saved.mean` (`"save_mean"`), `saved.invstd` (`"save_invstd"`),
    ///   `gamma`, `beta`, `running.mean` (`"running_mean"`) or `running.var`
    ///   (`"running_var"`) not `channels`;
    /// - [`Error::TooFewValues`] when `batch·spatial` is 0 (no mean exists), or below 2
    ///   with `running` given and [`Correction::Unbiased`](crate::Correction) (the
    ///   unbiased variance needs two values).
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Momentum, Running, SavedMut, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let x = [1.0, 3.0, 5.0, 7.0]; // NCHW: batch 2, 1 channel, 2 positions
    /// let (mut y, mut mean, mut invstd) = ([0.0; 4], [0.0], [0.0]);
    /// let (mut rm, mut rv) = ([0.0], [1.0]);
    /// let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(0.1));
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// bn.train(&x, &mut y, Shape::channels_first(2, 1, 2), saved, Some(&mut running))?;
    /// assert_eq!(running.batches_tracked, 1);
    /// assert_eq!(mean, [4.0]);
    /// assert_eq!(invstd, [1.0 / 5.0f32.sqrt()]);          // biased variance 5
    /// assert_eq!(rm, [0.4]);                                // 0.9·0 + 0.1·4
    /// assert!((rv[0] - (0.9 + 0.1 * 20.0 / 3.0)).abs() < 1e-6); // unbiased 20/3
    /// assert!((y[0] + 3.0 / 5.0f32.sqrt()).abs() < 1e-6);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn train(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        let len = self.check_train(shape, SAVED, [saved.mean, saved.invstd], running.as_deref())?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        self.train_kernel(
            Centered,
            [x],
            y,
            shape,
            [saved.mean, saved.invstd],
            running,
            None,
        );
        Ok(())
    }

    /// [`train`](Self::train) with `y` written over `x`.
    ///
    /// # Errors
    /// As [`train`](Self::train); the tensor is argument `"x"`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, SavedMut, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: Some(&[1.0]) };
    /// let mut x = [2.0, 4.0];
    /// let (mut mean, mut invstd) = ([0.0], [0.0]);
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// bn.train_in_place(&mut x, Shape::rows(2, 1), saved, None)?;
    /// assert_eq!((x, mean, invstd), ([0.0, 2.0], [3.0], [1.0]));
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn train_in_place(
        &self,
        x: &mut [f32],
        shape: Shape,
        saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        let len = self.check_train(shape, SAVED, [saved.mean, saved.invstd], running.as_deref())?;
        check_len("x", x.len(), len)?;
        self.train_kernel(
            Centered,
            [&[]],
            x,
            shape,
            [saved.mean, saved.invstd],
            running,
            None,
        );
        Ok(())
    }

    /// Checks a train call; the saved statistics are `saved` (named `names`).
    pub(crate) fn check_train(
        &self,
        shape: Shape,
        names: [&'static str; 2],
        saved: [&[f32]; 2],
        running: Option<&Running<'_>>,
    ) -> Result<usize, Error> {
        let len = shape.len()?;
        self.check(shape.channels)?;
        for (name, saved) in names.into_iter().zip(saved) {
            check_len(name, saved.len(), shape.channels)?;
        }
        let m = shape.per_channel()?;
        let needed = match running {
            Some(r) => r.check(shape.channels)?,
            None => 1,
        };
        if m < needed {
            return Err(Error::TooFewValues { needed, actual: m });
        }
        Ok(len)
    }

    /// `y = M(x, …)` with the train constants `[mean, scale, shift]` of every
    /// channel, from its batch statistics; writes the saved statistics and updates
    /// `running`. With `renorm`, Batch Renormalization's `r` and `d` (from `running`
    /// before its update) enter the constants and are written to its slices. An empty
    /// `ins[0]` is `y` itself (in place).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn train_kernel<M: Map<I, 3> + Copy, const I: usize>(
        &self,
        m: M,
        ins: [&[f32]; I],
        y: &mut [f32],
        shape: Shape,
        saved: [&mut [f32]; 2],
        running: Option<&mut Running<'_>>,
        renorm: Option<(Renorm, [&mut [f32]; 2])>,
    ) {
        self.train_kernel_with(m, ins, y, shape, saved, running, renorm, None);
    }

    /// [`train_kernel`](Self::train_kernel), with the statistics of every channel
    /// either reduced from the tensor (`global` None) or given (`global`: the merged
    /// moments of a larger batch, one per channel, of which this tensor is a part).
    /// Given or reduced, they take the same path from there on: the distributed and
    /// parallel train are this function. `running`, when given, is updated once and
    /// counts one update.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn train_kernel_with<M: Map<I, 3> + Copy, const I: usize>(
        &self,
        m: M,
        ins: [&[f32]; I],
        y: &mut [f32],
        shape: Shape,
        saved: [&mut [f32]; 2],
        mut running: Option<&mut Running<'_>>,
        renorm: Option<(Renorm, [&mut [f32]; 2])>,
        global: Option<&[Moments]>,
    ) {
        let walk = Walk::new(shape);
        let args = (m, ins, y, saved, running.as_deref_mut(), renorm, global);
        by_cap!(walk, B => self.train_bands::<M, I, B>(&walk, args));
        if let Some(r) = running {
            r.advance();
        }
    }

    /// [`train_kernel_with`](Self::train_kernel_with) with per-channel arrays of `B`.
    #[allow(clippy::type_complexity)]
    // Its arrays in a frame of its own (see `by_cap`).
    #[cfg_attr(target_pointer_width = "64", inline(never))]
    fn train_bands<M: Map<I, 3> + Copy, const I: usize, const B: usize>(
        &self,
        walk: &Walk,
        (m, ins, y, [save_mean, save_invstd], mut running, mut renorm, global): (
            M,
            [&[f32]; I],
            &mut [f32],
            [&mut [f32]; 2],
            Option<&mut Running<'_>>,
            Option<(Renorm, [&mut [f32]; 2])>,
            Option<&[Moments]>,
        ),
    ) {
        // Of the update before this one's (checked in `check_train`).
        let factor = running.as_ref().map_or(0.0, |r| r.factor());
        for band in walk.bands(1) {
            // Channels-first: the band's channels are normalized right after their
            // statistics, while they are cached.
            let mut stats = [Moments::EMPTY; B];
            match global {
                Some(global) => {
                    for (st, g) in stats.iter_mut().zip(band.of(global)) {
                        *st = *g;
                    }
                }
                None => {
                    let x = if ins[0].is_empty() { &*y } else { ins[0] };
                    band_moments::<B>(
                        walk,
                        band,
                        x,
                        stats.get_mut(..band.channels).unwrap_or(&mut []),
                    );
                }
            }
            // [mean, scale, shift] of every channel
            let mut k = [[0.0; B]; 3];
            let invstd =
                self.invstds::<B>(band.channels, |i| stats.get(i).map_or(1.0, Moments::var));
            for (i, (st, invstd)) in stats.iter().zip(invstd).enumerate().take(band.channels) {
                let c = band.first + i;
                let var = st.var();
                let mut s = self.gamma(c) * invstd;
                let mut beta = self.beta(c);
                if let (Some((rn, [r_out, d_out])), Some(run)) = (renorm.as_mut(), running.as_ref())
                {
                    let (r, d) =
                        rn.correction(st.mean, var, at(run.mean, c), at(run.var, c), self.eps);
                    beta += self.gamma(c) * d;
                    s *= r;
                    put(r_out, c, r as f32);
                    put(d_out, c, d as f32);
                }
                let mu = st.mean as f32;
                // The part of the mean that f32 `mu` misses goes into the shift, so
                // `(x − mu)·scale + shift` is as exact as if the mean were f64.
                let shift = (beta - (st.mean - f64::from(mu)) * s) as f32;
                for (k, v) in k.iter_mut().zip([mu, s as f32, shift]) {
                    put(k, i, v);
                }
                put(save_mean, c, mu);
                put(save_invstd, c, invstd as f32);
                if let Some(r) = running.as_mut() {
                    // The count of the channel's moments: this tensor's `m`, or the
                    // global batch's when the moments were merged elsewhere.
                    r.update(c, factor, st.mean, var, st.count as f64);
                }
            }
            engine::map(m, walk, band, ins, y, [&k[0], &k[1], &k[2]]);
        }
    }
}

/// f64 arithmetic on one value or on several lanes at once, for [`eval_affine`].
pub(crate) trait F64s:
    Copy
    + core::ops::Add<Output = Self>
    + core::ops::Sub<Output = Self>
    + core::ops::Mul<Output = Self>
    + core::ops::Div<Output = Self>
{
    /// The correctly rounded square root.
    fn sqrt(self) -> Self;
}

impl F64s for f64 {
    fn sqrt(self) -> f64 {
        libm::sqrt(self)
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64"))]
impl F64s for wide::f64x4 {
    fn sqrt(self) -> wide::f64x4 {
        wide::f64x4::sqrt(self)
    }
}

/// Eval-mode batch norm as one affine map per channel, `BN(x) = x·scale + shift`:
///
/// `scale = γ/√(var + eps)`, `shift = β − mean·scale`,
///
/// in f64 from the f32 parameters and running statistics. The one place that computes
/// it: [`BatchNorm::eval`] (four channels at a time) and the fold
/// ([`EvalBn`](crate::fold::EvalBn), one channel at a time) call it, and since every
/// operation is correctly rounded, both get the same bits.
#[inline(always)]
pub(crate) fn eval_affine<V: F64s>(gamma: V, beta: V, mean: V, var: V, eps: V) -> [V; 2] {
    let scale = gamma / (var + eps).sqrt();
    [scale, beta - mean * scale]
}
