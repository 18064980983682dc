//! The layer: eval and train forward.

use crate::engine::{self, Band, Map, Walk, MAX_BAND, SMALL};
use crate::error::{check_eps, check_len, Error};
use crate::kernels::{Affine, Centered};
use crate::moments::{band_moments, Moments};
use crate::renorm::Renorm;
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
/// ```
/// use batchnorm::{BatchNorm, Shape};
///
/// let gamma = [2.0, 1.0];
/// let bn = BatchNorm { eps: 0.0, gamma: Some(&gamma), beta: None };
/// let x = [1.0, 10.0, 3.0, 30.0]; // [batch 2][channels 2]
/// let mut y = [0.0; 4];
/// bn.eval(&x, &mut y, Shape::rows(2, 2), &[2.0, 20.0], &[1.0, 100.0])?;
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

/// How running statistics follow the batch statistics:
/// `running ← (1 − f)·running + f·batch` with a factor `f` per update.
///
/// ```
/// use batchnorm::Momentum;
///
/// let pytorch_default = Momentum::Exponential(0.1);
/// let keras_default = Momentum::Exponential(1.0 - 0.99); // Keras counts the other way
/// let cumulative = Momentum::Cumulative { batches_tracked: 0 }; // first update: f = 1
/// # let _ = (pytorch_default, keras_default, cumulative);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Momentum {
    /// `f` = this value, finite and in `[0, 1]`: PyTorch's `momentum` (default 0.1).
    /// Keras' and TensorFlow's `momentum` is `1 −` this value.
    Exponential(f32),
    /// A cumulative average, PyTorch's `momentum=None`: `f = 1/(batches_tracked + 1)`,
    /// where `batches_tracked` counts the updates made before this one (PyTorch's
    /// `num_batches_tracked` before its increment). The caller increments it.
    Cumulative {
        /// Updates made so far.
        batches_tracked: u64,
    },
}

impl Momentum {
    /// The factor `f` of this update, in f64.
    pub(crate) fn factor(self) -> Result<f64, Error> {
        match self {
            Momentum::Exponential(f) if f.is_finite() && (0.0..=1.0).contains(&f) => {
                Ok(f64::from(f))
            }
            Momentum::Exponential(f) => Err(Error::Parameter {
                arg: "momentum",
                value: f,
            }),
            Momentum::Cumulative { batches_tracked } => Ok(1.0 / (batches_tracked as f64 + 1.0)),
        }
    }
}

/// Running statistics that a train forward updates in place:
/// `mean ← (1 − f)·mean + f·batch_mean`,
/// `var ← (1 − f)·var + f·batch_var·m/(m − 1)` (the unbiased batch variance, as
/// PyTorch keeps), with `m = batch·spatial` and `f` from [`Momentum`].
///
/// ```
/// use batchnorm::{Momentum, Running};
///
/// let (mut mean, mut var) = ([0.0f32; 16], [1.0f32; 16]);
/// let running = Running { mean: &mut mean, var: &mut var, momentum: Momentum::Exponential(0.1) };
/// # let _ = running;
/// ```
#[derive(Debug)]
pub struct Running<'a> {
    /// Running mean, one per channel.
    pub mean: &'a mut [f32],
    /// Running (unbiased) variance, one per channel.
    pub var: &'a mut [f32],
    /// How far each update moves them.
    pub momentum: Momentum,
}

/// The saved statistics as the train calls name them, for errors.
pub(crate) const SAVED: [&str; 2] = ["save_mean", "save_invstd"];

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

    /// Eval forward: `y = (x − running_mean)/√(running_var + eps)·γ + β`.
    ///
    /// Per channel, `scale = γ/√(running_var + eps)` and
    /// `shift = β − running_mean·scale` are computed once in f64; each element then
    /// costs one multiply-add, `y = x·scale + shift`. NaN and infinities in `x` stay in
    /// their own element.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `x` or `y` does not hold `batch·channels·spatial`
    ///   values, or `running_mean`, `running_var`, `gamma` or `beta` not `channels`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Shape};
    ///
    /// let bn = BatchNorm { eps: 1e-5, gamma: None, beta: Some(&[0.5, -0.5]) };
    /// let shape = Shape::channels_last(1, 2, 3); // NHWC, H·W = 3
    /// let x = [1.0, 5.0, 2.0, 6.0, 3.0, 7.0];
    /// let mut y = [0.0; 6];
    /// bn.eval(&x, &mut y, shape, &[2.0, 6.0], &[1.0, 1.0])?;
    /// let expect = [-0.5, -1.5, 0.5, -0.5, 1.5, 0.5];
    /// assert!(y.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-4));
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn eval(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        running_mean: &[f32],
        running_var: &[f32],
    ) -> Result<(), Error> {
        let len = self.check_eval(shape, running_mean, running_var)?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        self.eval_kernel(Affine, [x], y, shape, running_mean, running_var);
        Ok(())
    }

    /// [`eval`](Self::eval) with `y` written over `x`.
    ///
    /// # Errors
    /// As [`eval`](Self::eval); the tensor is argument `"x"`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let mut x = [3.0, 5.0, 7.0];
    /// bn.eval_in_place(&mut x, Shape::rows(3, 1), &[5.0], &[4.0])?;
    /// assert_eq!(x, [-1.0, 0.0, 1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn eval_in_place(
        &self,
        x: &mut [f32],
        shape: Shape,
        running_mean: &[f32],
        running_var: &[f32],
    ) -> Result<(), Error> {
        let len = self.check_eval(shape, running_mean, running_var)?;
        check_len("x", x.len(), len)?;
        self.eval_kernel(Affine, [&[]], x, shape, running_mean, running_var);
        Ok(())
    }

    pub(crate) fn check_eval(
        &self,
        shape: Shape,
        mean: &[f32],
        var: &[f32],
    ) -> Result<usize, Error> {
        let len = shape.len()?;
        self.check(shape.channels)?;
        check_len("running_mean", mean.len(), shape.channels)?;
        check_len("running_var", var.len(), shape.channels)?;
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
        mean: &[f32],
        var: &[f32],
    ) {
        let walk = Walk::new(shape);
        if walk.small() {
            self.eval_bands::<M, I, SMALL>(m, &walk, ins, y, mean, var)
        } else {
            self.eval_bands::<M, I, MAX_BAND>(m, &walk, ins, y, mean, var)
        }
    }

    /// [`eval_kernel`](Self::eval_kernel) with per-channel arrays of `B`.
    fn eval_bands<M: Map<I, 2> + Copy, const I: usize, const B: usize>(
        &self,
        m: M,
        walk: &Walk,
        ins: [&[f32]; I],
        y: &mut [f32],
        mean: &[f32],
        var: &[f32],
    ) {
        for band in walk.bands(0) {
            let [scale, shift] = self.eval_consts::<B>(band, mean, var);
            engine::map(m, walk, band, ins, y, [&scale, &shift]);
        }
    }

    /// `[scale, shift]` of the eval forward for the channels of `band`:
    /// `scale = γ/√(var + eps)`, `shift = β − mean·scale`, in f64, four channels at a
    /// time where there is SIMD.
    fn eval_consts<const B: usize>(&self, band: Band, mean: &[f32], var: &[f32]) -> [[f32; B]; 2] {
        let at = |xs: &[f32], i: usize, none: f64| {
            xs.get(band.first + i).map_or(none, |&v| f64::from(v))
        };
        let of = |xs: Option<&[f32]>, i: usize, none: f64| xs.map_or(none, |xs| at(xs, i, none));
        let invstd = self.invstds::<B>(band.channels, |i| at(var, i, 1.0));
        let [mut scale, mut shift] = [[0.0; B]; 2];
        #[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64"))]
        {
            use wide::f64x4;
            fn lanes(q: usize, f: impl Fn(usize) -> f64) -> f64x4 {
                f64x4::new(core::array::from_fn(|l| f(4 * q + l)))
            }
            let quads = scale.as_chunks_mut::<4>().0.iter_mut();
            let quads = quads
                .zip(shift.as_chunks_mut::<4>().0)
                .zip(invstd.as_chunks::<4>().0);
            for (q, ((scale, shift), inv)) in quads.enumerate().take(band.channels.div_ceil(4)) {
                let s = lanes(q, |i| of(self.gamma, i, 1.0)) * f64x4::new(*inv);
                let b = lanes(q, |i| of(self.beta, i, 0.0)) - lanes(q, |i| at(mean, i, 0.0)) * s;
                *scale = s.to_array().map(|v| v as f32);
                *shift = b.to_array().map(|v| v as f32);
            }
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
        for (i, invstd) in invstd.iter().enumerate().take(band.channels) {
            let s = of(self.gamma, i, 1.0) * invstd;
            scale[i] = s as f32;
            shift[i] = (of(self.beta, i, 0.0) - at(mean, i, 0.0) * s) as f32;
        }
        [scale, shift]
    }

    /// Train forward: normalizes with the batch statistics of each channel,
    /// `y = (x − mean)·invstd·γ + β`, `invstd = 1/√(var + eps)`, with `var` the biased
    /// variance over the `m = batch·spatial` values of the channel.
    ///
    /// Writes `save_mean` (the batch mean) and `save_invstd` (`invstd`) for the
    /// backward pass, as PyTorch's `native_batch_norm` returns them, and updates
    /// `running` when given (see [`Running`]). Statistics come from one read of `x`
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
    /// Checked before anything is written:
    /// - [`Error::Parameter`] for an `eps` that is negative, NaN or infinite, or an
    ///   exponential momentum outside `[0, 1]` (argument `"momentum"`);
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `x` or `y` does not hold `batch·channels·spatial`
    ///   values, or `save_mean`, `save_invstd`, `gamma`, `beta`, `running_mean`
    ///   (`running.mean`) or `running_var` (`running.var`) not `channels`;
    /// - [`Error::TooFewValues`] when `batch·spatial` is 0 (no mean exists), or below 2
    ///   with `running` given (the unbiased variance needs two values).
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Momentum, Running, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let x = [1.0, 3.0, 5.0, 7.0]; // NCHW: batch 2, 1 channel, 2 positions
    /// let (mut y, mut mean, mut invstd) = ([0.0; 4], [0.0], [0.0]);
    /// let (mut rm, mut rv) = ([0.0], [1.0]);
    /// let running = Running { mean: &mut rm, var: &mut rv, momentum: Momentum::Exponential(0.1) };
    /// bn.train(&x, &mut y, Shape::channels_first(2, 1, 2), &mut mean, &mut invstd, Some(running))?;
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
        save_mean: &mut [f32],
        save_invstd: &mut [f32],
        running: Option<Running<'_>>,
    ) -> Result<(), Error> {
        let len = self.check_train(shape, SAVED, [save_mean, save_invstd], &running)?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        self.train_kernel(
            Centered,
            [x],
            y,
            shape,
            [save_mean, save_invstd],
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
    /// use batchnorm::{BatchNorm, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: Some(&[1.0]) };
    /// let mut x = [2.0, 4.0];
    /// let (mut mean, mut invstd) = ([0.0], [0.0]);
    /// bn.train_in_place(&mut x, Shape::rows(2, 1), &mut mean, &mut invstd, None)?;
    /// assert_eq!((x, mean, invstd), ([0.0, 2.0], [3.0], [1.0]));
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn train_in_place(
        &self,
        x: &mut [f32],
        shape: Shape,
        save_mean: &mut [f32],
        save_invstd: &mut [f32],
        running: Option<Running<'_>>,
    ) -> Result<(), Error> {
        let len = self.check_train(shape, SAVED, [save_mean, save_invstd], &running)?;
        check_len("x", x.len(), len)?;
        self.train_kernel(
            Centered,
            [&[]],
            x,
            shape,
            [save_mean, save_invstd],
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
        running: &Option<Running<'_>>,
    ) -> Result<usize, Error> {
        let len = shape.len()?;
        self.check(shape.channels)?;
        for (name, saved) in names.into_iter().zip(saved) {
            check_len(name, saved.len(), shape.channels)?;
        }
        let m = shape.per_channel()?;
        let needed = match running {
            Some(r) => {
                r.momentum.factor()?;
                check_len("running_mean", r.mean.len(), shape.channels)?;
                check_len("running_var", r.var.len(), shape.channels)?;
                2
            }
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
        running: Option<Running<'_>>,
        renorm: Option<(Renorm, [&mut [f32]; 2])>,
    ) {
        let walk = Walk::new(shape);
        let count = (shape.batch * shape.spatial) as f64;
        let args = (m, ins, y, saved, running, renorm);
        if walk.small() {
            self.train_bands::<M, I, SMALL>(&walk, count, args)
        } else {
            self.train_bands::<M, I, MAX_BAND>(&walk, count, args)
        }
    }

    /// [`train_kernel`](Self::train_kernel) with per-channel arrays of `B`.
    #[allow(clippy::type_complexity)]
    fn train_bands<M: Map<I, 3> + Copy, const I: usize, const B: usize>(
        &self,
        walk: &Walk,
        count: f64,
        (m, ins, y, [save_mean, save_invstd], mut running, mut renorm): (
            M,
            [&[f32]; I],
            &mut [f32],
            [&mut [f32]; 2],
            Option<Running<'_>>,
            Option<(Renorm, [&mut [f32]; 2])>,
        ),
    ) {
        // Validated in `check_train`.
        let factor = running
            .as_ref()
            .map_or(0.0, |r| r.momentum.factor().unwrap_or(0.0));
        for band in walk.bands(1) {
            // Channels-first: the band's channels are normalized right after their
            // statistics, while they are cached.
            let mut stats = [Moments::EMPTY; B];
            let x = if ins[0].is_empty() { &*y } else { ins[0] };
            let band_stats = stats.get_mut(..band.channels).unwrap_or(&mut []);
            band_moments::<B>(walk, band, x, band_stats);
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
                    let (rm, rv) = (at(run.mean, c), at(run.var, c));
                    let (r, d) = rn.correction(st.mean, var, rm, rv, self.eps);
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
                    let unbiased = var * count / (count - 1.0);
                    let (rm, rv) = (f64::from(at(r.mean, c)), f64::from(at(r.var, c)));
                    put(r.mean, c, ((1.0 - factor) * rm + factor * st.mean) as f32);
                    put(r.var, c, ((1.0 - factor) * rv + factor * unbiased) as f32);
                }
            }
            engine::map(m, walk, band, ins, y, [&k[0], &k[1], &k[2]]);
        }
    }
}

// Per-channel slices are checked against the shape before any of this runs, so `c` is
// always in range: `get` only keeps a panic path out of the build (see
// tests/panic_free/), where plain indexing would leave one the compiler cannot remove.

/// `xs[c]` (0 if out of range, which a checked call never is).
fn at(xs: &[f32], c: usize) -> f32 {
    xs.get(c).copied().unwrap_or(0.0)
}

/// `xs[c] = v` (nothing if out of range, which a checked call never is).
fn put(xs: &mut [f32], c: usize, v: f32) {
    if let Some(x) = xs.get_mut(c) {
        *x = v;
    }
}
