//! Batch Renormalization (Ioffe, 2017): batch norm that corrects the batch statistics
//! towards the running ones, so that small or non-i.i.d. batches train as they infer.

use crate::backward::{Grads, Through};
use crate::error::{check_len, Error};
use crate::forward::BatchNorm;
use crate::kernels::Centered;
use crate::running::Running;
use crate::shape::Shape;

/// The clipping limits of Batch Renormalization's corrections, per step:
///
/// `r = clip(σ_B/σ, 1/rmax, rmax)`, `d = clip((μ_B − μ)/σ, −dmax, dmax)`, with the
/// batch's `μ_B`, `σ_B = √(var_B + eps)` and the running `μ`, `σ = √(running_var + eps)`
/// before this step's update. The paper's schedule starts at `rmax = 1`, `dmax = 0`
/// (plain batch norm) and relaxes them to about 3 and 5; `f32::INFINITY` means no
/// clipping.
///
/// ```
/// let plain_bn = batchnorm::Renorm { rmax: 1.0, dmax: 0.0 };
/// let relaxed = batchnorm::Renorm { rmax: 3.0, dmax: 5.0 };
/// # let _ = (plain_bn, relaxed);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Renorm {
    /// Limit of `r` (and of `1/r`): at least 1.
    pub rmax: f32,
    /// Limit of `|d|`: at least 0.
    pub dmax: f32,
}

/// Where [`BatchNorm::train_renorm`] writes what its backward pass needs, one value
/// per channel each: the batch mean, `invstd = 1/σ_B`, and the corrections `r`, `d`.
/// [`as_saved`](Self::as_saved) lends them to [`BatchNorm::backward_renorm`].
///
/// ```
/// let (mut mean, mut invstd, mut r, mut d) = ([0.0f32; 4], [0.0f32; 4], [1.0f32; 4], [0.0f32; 4]);
/// let saved = batchnorm::RenormSavedMut { mean: &mut mean, invstd: &mut invstd, r: &mut r, d: &mut d };
/// assert_eq!(saved.as_saved().r, &[1.0; 4]);
/// ```
#[derive(Debug)]
pub struct RenormSavedMut<'a> {
    /// The batch mean `μ_B`.
    pub mean: &'a mut [f32],
    /// `1/√(var_B + eps)`, with the biased batch variance.
    pub invstd: &'a mut [f32],
    /// The scale correction `r`.
    pub r: &'a mut [f32],
    /// The shift correction `d`.
    pub d: &'a mut [f32],
}

/// What [`BatchNorm::train_renorm`] saved ([`RenormSavedMut`]), as
/// [`BatchNorm::backward_renorm`] reads it.
///
/// ```
/// let saved = batchnorm::RenormSaved { mean: &[2.0], invstd: &[1.0], r: &[0.5], d: &[0.25] };
/// assert_eq!(saved.d, &[0.25]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RenormSaved<'a> {
    /// The batch mean `μ_B`.
    pub mean: &'a [f32],
    /// `1/√(var_B + eps)`, with the biased batch variance.
    pub invstd: &'a [f32],
    /// The scale correction `r`.
    pub r: &'a [f32],
    /// The shift correction `d`.
    pub d: &'a [f32],
}

impl RenormSavedMut<'_> {
    /// The same values, read-only.
    ///
    /// ```
    /// let (mut mean, mut invstd, mut r, mut d) = ([0.0f32], [1.0f32], [1.0f32], [0.0f32]);
    /// let saved = batchnorm::RenormSavedMut { mean: &mut mean, invstd: &mut invstd, r: &mut r, d: &mut d };
    /// assert_eq!(saved.as_saved().invstd, &[1.0]);
    /// ```
    pub fn as_saved(&self) -> RenormSaved<'_> {
        RenormSaved {
            mean: self.mean,
            invstd: self.invstd,
            r: self.r,
            d: self.d,
        }
    }
}

impl Renorm {
    fn check(&self) -> Result<(), Error> {
        if self.rmax.is_nan() || self.rmax < 1.0 {
            return Err(Error::Parameter {
                arg: "rmax",
                value: self.rmax,
            });
        }
        if self.dmax.is_nan() || self.dmax < 0.0 {
            return Err(Error::Parameter {
                arg: "dmax",
                value: self.dmax,
            });
        }
        Ok(())
    }

    /// `(r, d)` of a channel with batch mean and (biased) variance `mean`, `var` and
    /// running statistics `rm`, `rv`.
    pub(crate) fn correction(&self, mean: f64, var: f64, rm: f32, rv: f32, eps: f32) -> (f64, f64) {
        let sigma = libm::sqrt(f64::from(rv) + f64::from(eps));
        let (rmax, dmax) = (f64::from(self.rmax), f64::from(self.dmax));
        let r = clip(libm::sqrt(var + f64::from(eps)) / sigma, 1.0 / rmax, rmax);
        let d = clip((mean - f64::from(rm)) / sigma, -dmax, dmax);
        (r, d)
    }
}

/// `v` within `[lo, hi]`; NaN stays NaN, except in a range of one point (`rmax = 1`,
/// `dmax = 0`: plain batch norm, also where `σ = 0` makes the ratio undefined).
fn clip(v: f64, lo: f64, hi: f64) -> f64 {
    if lo == hi || v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

impl BatchNorm<'_> {
    /// Train forward of Batch Renormalization: `y = γ·(x̂·r + d) + β` with the batch's
    /// `x̂ = (x − μ_B)/σ_B` and the corrections `r`, `d` of [`Renorm`] from the running
    /// statistics before this step; then `running` is updated exactly as
    /// [`train`](Self::train) does (and counts the update). Per element the cost is
    /// that of `train`: `r` and `d` fold into the per-channel scale and shift.
    ///
    /// With `rmax = 1` and `dmax = 0`, `r = 1` and `d = 0`: plain batch norm. At
    /// inference, use [`eval`](Self::eval) with the running statistics, as for batch norm.
    ///
    /// # Errors
    /// As [`train`](Self::train) with `running` given (the tensor is `"x"` and `"y"`,
    /// the saved statistics `"saved.mean"`, `"saved.invstd"`, `"saved.r"`,
    /// `"saved.d"`), and [`Error::Parameter`] for an `rmax` below 1 or NaN or a
    /// `dmax` below 0 or NaN. Nothing is written on error.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Momentum, Renorm, RenormSavedMut, Running, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let x = [1.0, 3.0, 5.0, 7.0];            // one channel: mean 4, σ_B = √5
    /// let (mut rm, mut rv) = ([2.0], [20.0]);  // σ = √20 = 2·σ_B
    /// let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(0.1));
    /// let (mut mean, mut invstd, mut r, mut d) = ([0.0], [0.0], [0.0], [0.0]);
    /// let mut y = [0.0; 4];
    /// let saved = RenormSavedMut { mean: &mut mean, invstd: &mut invstd, r: &mut r, d: &mut d };
    /// let renorm = Renorm { rmax: 3.0, dmax: 5.0 };
    /// bn.train_renorm(&x, &mut y, Shape::rows(4, 1), renorm, saved, &mut running)?;
    /// assert_eq!(running.batches_tracked, 1);
    /// assert!((running.mean[0] - 2.2).abs() < 1e-6);           // 0.9·2 + 0.1·4
    /// assert_eq!(r, [0.5]);                                   // σ_B/σ
    /// assert!((d[0] - 2.0 / 20.0f32.sqrt()).abs() < 1e-6);    // (4 − 2)/σ
    /// assert!((y[0] - (-3.0 / 5.0f32.sqrt() * 0.5 + d[0])).abs() < 1e-6);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn train_renorm(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        renorm: Renorm,
        saved: RenormSavedMut<'_>,
        running: &mut Running<'_>,
    ) -> Result<(), Error> {
        renorm.check()?;
        let len = self.check_train(
            shape,
            ["saved.mean", "saved.invstd"],
            [saved.mean, saved.invstd],
            Some(&*running),
        )?;
        check_len("saved.r", saved.r.len(), shape.channels)?;
        check_len("saved.d", saved.d.len(), shape.channels)?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        let RenormSavedMut { mean, invstd, r, d } = saved;
        self.train_kernel(
            Centered,
            [x],
            y,
            shape,
            [mean, invstd],
            Some(running),
            Some((renorm, [r, d])),
        );
        Ok(())
    }

    /// Backward pass of [`train_renorm`](Self::train_renorm), with `r` and `d`
    /// constants as the paper has them: with `x̂ = (x − mean)·invstd`, `mean` the
    /// batch mean of `x` itself, exactly, as in [`backward`](Self::backward),
    ///
    /// `dβ = Σdy`, `dγ = Σdy·(x̂·r + d)`, `dx = γ·r·invstd·(dy − Σdy/m − x̂·Σdy·x̂/m)`.
    ///
    /// # Errors
    /// As [`backward`](Self::backward); the saved statistics are `"saved.mean"`,
    /// `"saved.invstd"`, `"saved.r"` and `"saved.d"`. Nothing is written on error.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Grads, RenormSaved, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let (x, dy) = ([1.0, 3.0], [1.0, 0.0]);  // x̂ = [−1, 1]
    /// let saved = RenormSaved { mean: &[2.0], invstd: &[1.0], r: &[0.5], d: &[0.25] };
    /// let (mut dx, mut dg, mut db) = ([0.0; 2], [0.0], [0.0]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    /// bn.backward_renorm(&x, &dy, Shape::rows(2, 1), saved, grads)?;
    /// assert_eq!((db, dg), ([1.0], [-0.5 + 0.25])); // r·Σdy·x̂ + d·Σdy
    /// assert_eq!(dx, [0.0, 0.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn backward_renorm(
        &self,
        x: &[f32],
        dy: &[f32],
        shape: Shape,
        saved: RenormSaved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        self.check_backward(
            dy,
            x,
            shape,
            ["saved.mean", "saved.invstd"],
            [saved.mean, saved.invstd],
            &grads,
        )?;
        check_len("saved.r", saved.r.len(), shape.channels)?;
        check_len("saved.d", saved.d.len(), shape.channels)?;
        self.backward_kernel(
            Through::Bn,
            dy,
            x,
            shape,
            [saved.mean, saved.invstd],
            grads,
            Some([saved.r, saved.d]),
        );
        Ok(())
    }
}
