//! Running statistics: what a train forward updates, what eval normalizes with.

use crate::error::{check_len, Error};

/// How running statistics follow the batch statistics:
/// `running ← (1 − f)·running + f·batch` with a factor `f` per update.
///
/// | framework | its momentum `m` | here |
/// |---|---|---|
/// | PyTorch `BatchNorm*d(momentum=m)` (default 0.1) | weight of the batch | `Exponential(m)` |
/// | PyTorch `momentum=None` | cumulative average | `Cumulative` |
/// | Keras / TensorFlow `BatchNormalization(momentum=m)` (default 0.99) | weight of the running value | `Exponential(1 − m)` |
/// | ONNX `BatchNormalization` (`momentum` attribute, default 0.9) | weight of the running value | `Exponential(1 − m)` |
/// | Flax `nn.BatchNorm(momentum=m)` (default 0.99) | weight of the running value | `Exponential(1 − m)` |
///
/// ONNX, Keras 3 and Flax also update the running variance with the *biased* batch
/// variance: pair them with [`Correction::Biased`](crate::Correction) (PyTorch's is
/// unbiased, the default of [`Running::new`]; so is TensorFlow's fused kernel, which
/// tf.keras 2 uses for 4-D inputs).
///
/// ```
/// use batchnorm::Momentum;
///
/// let pytorch_default = Momentum::Exponential(0.1);
/// let keras_default = Momentum::Exponential(1.0 - 0.99); // Keras counts the other way
/// let onnx_default = Momentum::Exponential(1.0 - 0.9);   // so does ONNX
/// let cumulative = Momentum::Cumulative; // PyTorch's momentum=None
/// assert_ne!(pytorch_default, cumulative);
/// # let _ = (keras_default, onnx_default);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Momentum {
    /// `f` = this value, finite and in `[0, 1]`: PyTorch's `momentum` (default 0.1).
    /// Keras', TensorFlow's, ONNX's and Flax's `momentum` is `1 −` this value.
    Exponential(f32),
    /// A cumulative average, PyTorch's `momentum=None`: `f = 1/(t + 1)` with `t` the
    /// updates made before this one, [`Running::batches_tracked`] (PyTorch's
    /// `num_batches_tracked` before its increment). The first update (`t = 0`) takes
    /// the batch statistics as they are.
    Cumulative,
}

impl Momentum {
    /// `Err` for an exponential factor that is not finite and in `[0, 1]`.
    pub(crate) fn check(self) -> Result<(), Error> {
        match self {
            Momentum::Exponential(f) if !(f.is_finite() && (0.0..=1.0).contains(&f)) => {
                Err(Error::Parameter {
                    arg: "momentum",
                    value: f,
                })
            }
            _ => Ok(()),
        }
    }

    /// The factor `f` of the update after `batches_tracked` updates, in f64.
    pub(crate) fn factor(self, batches_tracked: u64) -> f64 {
        match self {
            Momentum::Exponential(f) => f64::from(f),
            Momentum::Cumulative => 1.0 / (batches_tracked as f64 + 1.0),
        }
    }
}

/// Which batch variance the running variance is fed with, over the
/// `m = batch·spatial` values of a channel.
///
/// | variant | batch variance | used by | needs |
/// |---|---|---|---|
/// | [`Unbiased`](Self::Unbiased) | `Σ(x − mean)²/(m − 1)` | PyTorch (`BatchNorm*d`, `InstanceNorm*d`) | `m ≥ 2` |
/// | [`Biased`](Self::Biased) | `Σ(x − mean)²/m` | ONNX `BatchNormalization` (`training_mode=1`), Keras 3 (`keras.ops.moments`), Flax | `m ≥ 1` |
///
/// The normalization itself always uses the biased variance, as every framework does.
///
/// ```
/// use batchnorm::{Correction, Momentum, Running};
///
/// let (mut mean, mut var) = ([0.0f32; 4], [1.0f32; 4]);
/// // ONNX BatchNormalization(momentum=0.9), training mode
/// let onnx = Running::new(&mut mean, &mut var, Momentum::Exponential(1.0 - 0.9))
///     .with_correction(Correction::Biased);
/// assert_eq!(onnx.correction, Correction::Biased);
/// assert_eq!(Correction::default(), Correction::Unbiased); // PyTorch's
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Correction {
    /// `var·m/(m − 1)` (Bessel's correction), as PyTorch keeps.
    #[default]
    Unbiased,
    /// `var` as the batch was normalized with, as ONNX, Keras 3 and Flax keep.
    Biased,
}

impl Correction {
    /// The fewest values per channel an update needs.
    pub(crate) fn needed(self) -> usize {
        match self {
            Correction::Unbiased => 2,
            Correction::Biased => 1,
        }
    }

    /// The batch variance the running variance is fed with, from the biased `var`
    /// over `count` values.
    pub(crate) fn batch_var(self, var: f64, count: f64) -> f64 {
        match self {
            Correction::Unbiased => var * count / (count - 1.0),
            Correction::Biased => var,
        }
    }
}

/// Running statistics that a train forward updates in place, one mean and one
/// variance per channel, with the `m = batch·spatial` values of each channel:
///
/// `mean ← (1 − f)·mean + f·batch_mean`,
/// `var ← (1 − f)·var + f·batch_var`,
///
/// with `f` from [`momentum`](Self::momentum) and `batch_var` from
/// [`correction`](Self::correction) (`var·m/(m − 1)` by default, as PyTorch). Every
/// update adds 1 to [`batches_tracked`](Self::batches_tracked) (saturating), PyTorch's
/// `num_batches_tracked`, whichever the momentum. Keep one `Running` across the steps
/// of a training loop and lend it as `Some(&mut running)`; [`stats`](Self::stats)
/// lends its statistics to eval.
///
/// | PyTorch `BatchNorm2d(c, momentum=m)` | ONNX / Keras / Flax `momentum=m` |
/// |---|---|
/// | `Running::new(mean, var, Momentum::Exponential(m))` | `Running::new(mean, var, Momentum::Exponential(1.0 - m)).with_correction(Correction::Biased)` |
///
/// ```
/// use batchnorm::{BatchNorm, Momentum, Running, SavedMut, Shape};
///
/// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
/// let (mut rm, mut rv) = ([0.0f32], [1.0f32]);
/// let mut running = Running::new(&mut rm, &mut rv, Momentum::Cumulative);
/// let (mut y, mut mean, mut invstd) = ([0.0; 2], [0.0], [0.0]);
/// for x in [[1.0, 3.0], [5.0, 7.0]] {
///     let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
///     bn.train(&x, &mut y, Shape::nc(2, 1), saved, Some(&mut running))?;
/// }
/// assert_eq!(running.batches_tracked, 2);
/// assert_eq!(running.stats().mean, &[4.0]); // (2 + 6)/2: the cumulative average
/// assert_eq!(running.stats().var, &[2.0]);  // unbiased variances 2 and 2
/// # Ok::<(), batchnorm::Error>(())
/// ```
#[derive(Debug)]
pub struct Running<'a> {
    /// Running mean, one per channel (PyTorch's `running_mean`, Keras' `moving_mean`,
    /// ONNX's `input_mean` / `running_mean`).
    pub mean: &'a mut [f32],
    /// Running variance, one per channel (PyTorch's `running_var`, Keras'
    /// `moving_variance`, ONNX's `input_var` / `running_var`).
    pub var: &'a mut [f32],
    /// How far each update moves them.
    pub momentum: Momentum,
    /// Which batch variance updates `var`.
    pub correction: Correction,
    /// Updates made so far (PyTorch's `num_batches_tracked`); every update adds 1,
    /// saturating at `u64::MAX`. [`Momentum::Cumulative`] reads it.
    pub batches_tracked: u64,
}

impl<'a> Running<'a> {
    /// Running statistics with PyTorch's unbiased variance and no updates made yet.
    ///
    /// ```
    /// use batchnorm::{Correction, Momentum, Running};
    ///
    /// let (mut mean, mut var) = ([0.0f32; 16], [1.0f32; 16]);
    /// let running = Running::new(&mut mean, &mut var, Momentum::Exponential(0.1));
    /// assert_eq!((running.correction, running.batches_tracked), (Correction::Unbiased, 0));
    /// ```
    pub fn new(mean: &'a mut [f32], var: &'a mut [f32], momentum: Momentum) -> Running<'a> {
        Running {
            mean,
            var,
            momentum,
            correction: Correction::Unbiased,
            batches_tracked: 0,
        }
    }

    /// The same, with `correction` for the running variance.
    ///
    /// ```
    /// use batchnorm::{Correction, Momentum, Running};
    ///
    /// let (mut mean, mut var) = ([0.0f32; 2], [1.0f32; 2]);
    /// let flax = Running::new(&mut mean, &mut var, Momentum::Exponential(1.0 - 0.99))
    ///     .with_correction(Correction::Biased);
    /// assert_eq!(flax.correction, Correction::Biased);
    /// ```
    pub fn with_correction(self, correction: Correction) -> Running<'a> {
        Running { correction, ..self }
    }

    /// The running statistics, read-only, for [`BatchNorm::eval`](crate::BatchNorm::eval)
    /// and the fold.
    ///
    /// ```
    /// use batchnorm::{Momentum, Running};
    ///
    /// let (mut mean, mut var) = ([0.5f32], [2.0f32]);
    /// let running = Running::new(&mut mean, &mut var, Momentum::Exponential(0.1));
    /// assert_eq!(running.stats().var, &[2.0]);
    /// ```
    pub fn stats(&self) -> RunningStats<'_> {
        RunningStats {
            mean: self.mean,
            var: self.var,
        }
    }

    /// Checks the momentum and the lengths against `channels`; returns the fewest
    /// values per channel an update needs.
    pub(crate) fn check(&self, channels: usize) -> Result<usize, Error> {
        self.momentum.check()?;
        check_len("running_mean", self.mean.len(), channels)?;
        check_len("running_var", self.var.len(), channels)?;
        Ok(self.correction.needed())
    }

    /// The factor `f` of this update.
    pub(crate) fn factor(&self) -> f64 {
        self.momentum.factor(self.batches_tracked)
    }

    /// Moves channel `c` towards the batch's `mean` and biased `var` over `count`
    /// values, by `factor`.
    pub(crate) fn update(&mut self, c: usize, factor: f64, mean: f64, var: f64, count: f64) {
        let var = self.correction.batch_var(var, count);
        if let (Some(rm), Some(rv)) = (self.mean.get_mut(c), self.var.get_mut(c)) {
            *rm = ((1.0 - factor) * f64::from(*rm) + factor * mean) as f32;
            *rv = ((1.0 - factor) * f64::from(*rv) + factor * var) as f32;
        }
    }

    /// Counts one update.
    pub(crate) fn advance(&mut self) {
        self.batches_tracked = self.batches_tracked.saturating_add(1);
    }
}

/// Running statistics as eval reads them: the mean and variance of every channel
/// (PyTorch's `running_mean`, `running_var`; Keras' `moving_mean`,
/// `moving_variance`; ONNX's `input_mean`, `input_var`). [`Running::stats`] lends a
/// [`Running`]'s.
///
/// ```
/// use batchnorm::{BatchNorm, RunningStats, Shape};
///
/// let stats = RunningStats { mean: &[2.0], var: &[4.0] };
/// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
/// let mut y = [0.0; 2];
/// bn.eval(&[0.0, 4.0], &mut y, Shape::nc(2, 1), stats)?;
/// assert_eq!(y, [-1.0, 1.0]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunningStats<'a> {
    /// The running mean of each channel.
    pub mean: &'a [f32],
    /// The running variance of each channel.
    pub var: &'a [f32],
}

impl RunningStats<'_> {
    /// Checks both lengths against `channels`.
    pub(crate) fn check(&self, channels: usize) -> Result<(), Error> {
        check_len("running_mean", self.mean.len(), channels)?;
        check_len("running_var", self.var.len(), channels)
    }
}
