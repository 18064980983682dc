//! Batch norm fused with what follows it in a network: a ReLU, or the residual Add
//! and ReLU of a ResNet block. One pass over the tensor instead of two or three, with
//! the results of the unfused PyTorch composition.

use crate::backward::{Grads, Through};
use crate::error::{check_len, Error};
use crate::forward::{BatchNorm, RUNNING, SAVED};
use crate::kernels::{AffineAddRelu, AffineRelu, CenteredAddRelu, CenteredRelu};
use crate::running::{Running, RunningStats};
use crate::saved::{Saved, SavedMut};
use crate::shape::Shape;

/// What a fused forward applies to batch norm's output `bn`.
///
/// | variant | `y =` | PyTorch |
/// |---|---|---|
/// | [`Relu`](Fusion::Relu) | `relu(bn)` | `F.relu(bn(x))` |
/// | [`AddRelu`](Fusion::AddRelu) | `relu(bn + z)` | `F.relu(bn(x) + z)`, the residual of a ResNet block |
///
/// `relu` is `torch.relu`: negative values become +0, NaN and −0 stay.
///
/// ```
/// let z = [0.0f32; 8];
/// let residual = batchnorm::Fusion::AddRelu { z: &z };
/// # let _ = (residual, batchnorm::Fusion::Relu);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fusion<'a> {
    /// `y = relu(bn)`.
    Relu,
    /// `y = relu(bn + z)`, with `z` of the tensor's shape and layout.
    AddRelu {
        /// The residual, one value per element.
        z: &'a [f32],
    },
}

/// The backward counterpart of [`Fusion`]: which fused forward produced `y`.
///
/// Both mask the incoming gradient by the output: `g` is 0 where `y ≤ 0` and `dy`
/// elsewhere, a NaN `y` included (PyTorch's `threshold_backward(dy, y, 0)`); then they
/// run batch norm's backward on `g`;
/// [`AddRelu`](FusionGrad::AddRelu) also writes the residual's gradient `dz = g`.
///
/// ```
/// let mut dz = [0.0f32; 8];
/// let grad = batchnorm::FusionGrad::AddRelu { dz: &mut dz };
/// # let _ = (grad, batchnorm::FusionGrad::Relu);
/// ```
#[derive(Debug)]
pub enum FusionGrad<'a> {
    /// After [`Fusion::Relu`].
    Relu,
    /// After [`Fusion::AddRelu`]: `dz` receives ∂L/∂z, one value per element.
    AddRelu {
        /// ∂L/∂z.
        dz: &'a mut [f32],
    },
}

impl Fusion<'_> {
    fn check(&self, len: usize) -> Result<(), Error> {
        match self {
            Fusion::Relu => Ok(()),
            Fusion::AddRelu { z } => check_len("z", z.len(), len),
        }
    }
}

impl<'a> FusionGrad<'a> {
    fn check(&self, len: usize) -> Result<(), Error> {
        match self {
            FusionGrad::Relu => Ok(()),
            FusionGrad::AddRelu { dz } => check_len("dz", dz.len(), len),
        }
    }

    fn through<'b>(&'b mut self, y: &'b [f32]) -> Through<'b> {
        match self {
            FusionGrad::Relu => Through::Relu { y },
            FusionGrad::AddRelu { dz } => Through::AddRelu { y, dz },
        }
    }
}

impl BatchNorm<'_> {
    /// [`eval`](Self::eval) fused with `fusion`: `y = relu(bn(x))` or
    /// `y = relu(bn(x) + z)`, one multiply-add, (an add) and a ReLU per element.
    ///
    /// # Errors
    /// As [`eval`](Self::eval), and [`Error::Length`] when `z` does not hold
    /// `batch·channels·spatial` values. Nothing is written on error.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Fusion, RunningStats, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let (x, z) = ([1.0, 3.0, 5.0], [0.5, 0.5, 0.5]);
    /// let stats = RunningStats { mean: &[3.0], var: &[4.0] };
    /// let mut y = [0.0; 3];
    /// bn.eval_fused(&x, &mut y, Shape::rows(3, 1), Fusion::Relu, stats)?;
    /// assert_eq!(y, [0.0, 0.0, 1.0]);
    /// bn.eval_fused(&x, &mut y, Shape::rows(3, 1), Fusion::AddRelu { z: &z }, stats)?;
    /// assert_eq!(y, [0.0, 0.5, 1.5]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn eval_fused(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        fusion: Fusion<'_>,
        stats: RunningStats<'_>,
    ) -> Result<(), Error> {
        let len = self.check_eval(shape, stats)?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        fusion.check(len)?;
        match fusion {
            Fusion::Relu => self.eval_kernel(AffineRelu, [x], y, shape, stats),
            Fusion::AddRelu { z } => self.eval_kernel(AffineAddRelu, [x, z], y, shape, stats),
        }
        Ok(())
    }

    /// [`train`](Self::train) fused with `fusion`: the statistics, saved values and
    /// running statistics of `train`, and `y = relu(bn(x))` or `y = relu(bn(x) + z)`
    /// written in the same elementwise pass.
    ///
    /// # Errors
    /// As [`train`](Self::train), and [`Error::Length`] when `z` does not hold
    /// `batch·channels·spatial` values. Nothing is written on error.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Fusion, SavedMut, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let x = [1.0, 3.0];                   // mean 2, var 1: bn(x) = [−1, 1]
    /// let (mut y, mut mean, mut invstd) = ([0.0; 2], [0.0], [0.0]);
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// bn.train_fused(&x, &mut y, Shape::rows(2, 1), Fusion::Relu, saved, None)?;
    /// assert_eq!((y, mean, invstd), ([0.0, 1.0], [2.0], [1.0]));
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn train_fused(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        fusion: Fusion<'_>,
        saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        let len = self.check_train(shape, SAVED, [saved.mean, saved.invstd], running.as_deref())?;
        check_len("x", x.len(), len)?;
        check_len("y", y.len(), len)?;
        fusion.check(len)?;
        let saved = [saved.mean, saved.invstd];
        match fusion {
            Fusion::Relu => self.train_kernel(CenteredRelu, [x], y, shape, saved, running, None),
            Fusion::AddRelu { z } => {
                self.train_kernel(CenteredAddRelu, [x, z], y, shape, saved, running, None)
            }
        }
        Ok(())
    }

    /// Backward pass of [`train_fused`](Self::train_fused), from its input `x`, the
    /// gradient `dy` of its output and that output `y`: `g` (0 where `y ≤ 0`, else
    /// `dy`), then [`backward`](Self::backward) on `g`, in the same two passes (the
    /// mask costs a read of `y`, not a pass of its own). With [`FusionGrad::AddRelu`]
    /// the residual's gradient `dz = g` is written in the first pass, and the second
    /// reads it instead of `dy` and `y`.
    ///
    /// # Errors
    /// As [`backward`](Self::backward), and [`Error::Length`] when `y` or `dz` does
    /// not hold `batch·channels·spatial` values. Nothing is written on error.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, FusionGrad, Grads, Saved, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let (x, y) = ([1.0, 3.0], [0.0, 1.0]);  // y = relu(x̂), x̂ = [−1, 1]
    /// let dy = [5.0, 1.0];                    // the masked gradient is [0, 1]
    /// let saved = Saved { mean: &[2.0], invstd: &[1.0] };
    /// let (mut dx, mut dg, mut db) = ([0.0; 2], [0.0], [0.0]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    /// bn.backward_fused(&x, &dy, &y, Shape::rows(2, 1), FusionGrad::Relu, saved, grads)?;
    /// assert_eq!((db, dg), ([1.0], [1.0]));
    /// assert_eq!(dx, [0.0, 0.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn backward_fused(
        &self,
        x: &[f32],
        dy: &[f32],
        y: &[f32],
        shape: Shape,
        mut fusion: FusionGrad<'_>,
        saved: Saved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        let saved = [saved.mean, saved.invstd];
        self.check_backward(dy, x, shape, SAVED, saved, &grads)?;
        check_len("y", y.len(), dy.len())?;
        fusion.check(dy.len())?;
        self.backward_kernel(fusion.through(y), dy, x, shape, saved, grads, None);
        Ok(())
    }

    /// Backward pass of [`eval_fused`](Self::eval_fused) (the statistics are
    /// constants): `g` (0 where `y ≤ 0`, else `dy`), `dx = g·γ/√(running_var + eps)`, `dγ = Σg·x̂`,
    /// `dβ = Σg`, and `dz = g` with [`FusionGrad::AddRelu`]. `x` is read only when
    /// `dgamma` or `dbeta` is asked for.
    ///
    /// # Errors
    /// As [`backward_eval`](Self::backward_eval), and [`Error::Length`] when `y` or
    /// `dz` does not hold `batch·channels·spatial` values. Nothing is written on error.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, FusionGrad, Grads, RunningStats, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: Some(&[3.0]), beta: None };
    /// let (x, y, dy) = ([1.0, 5.0], [0.0, 3.0], [1.0, 2.0]);
    /// let stats = RunningStats { mean: &[3.0], var: &[4.0] };
    /// let (mut dx, mut dz) = ([0.0; 2], [0.0; 2]);
    /// let grads = Grads { dx: &mut dx, dgamma: None, dbeta: None };
    /// let fusion = FusionGrad::AddRelu { dz: &mut dz };
    /// bn.backward_eval_fused(&x, &dy, &y, Shape::rows(2, 1), fusion, stats, grads)?;
    /// assert_eq!((dx, dz), ([0.0, 3.0], [0.0, 2.0])); // dx = dz·3/2
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn backward_eval_fused(
        &self,
        x: &[f32],
        dy: &[f32],
        y: &[f32],
        shape: Shape,
        mut fusion: FusionGrad<'_>,
        stats: RunningStats<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        let stats = [stats.mean, stats.var];
        self.check_backward(dy, x, shape, RUNNING, stats, &grads)?;
        check_len("y", y.len(), dy.len())?;
        fusion.check(dy.len())?;
        self.backward_eval_kernel(fusion.through(y), dy, x, shape, stats, grads);
        Ok(())
    }
}
