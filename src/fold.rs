//! Folding eval-mode batch norm into the weights of the layer beside it.
//!
//! An inference engine removes a batch-norm layer at load time by rewriting the
//! weights of its neighbour. In eval mode BN is one affine map per channel,
//!
//! ```text
//! BN(x)_c = x_c·scale_c + shift_c,   scale_c = γ_c/√(running_var_c + eps),
//!                                    shift_c = β_c − running_mean_c·scale_c,
//! ```
//!
//! (γ absent = 1, β absent = 0), computed here in f64 from the f32 inputs, so every
//! folded weight and bias is the f64 result rounded once to f32.
//!
//! | BN sits | function | folded weights | folded bias |
//! |---|---|---|---|
//! | after the layer (`conv → BN → ReLU`) | [`into_preceding`] | `W'[o, i, k] = W[o, i, k]·scale_o` | `b'_o = (b_o − mean_o)·scale_o + β_o` |
//! | before the layer | [`into_following`] | `W'[o, i, k] = W[o, i, k]·scale_i` | `b'_o = b_o + Σ_{i, k} W[o, i, k]·shift_i` |
//!
//! Both rewrite the caller's weight and bias slices in place. A layer without a bias
//! still gets one: pass a zero-filled slice of length `out_channels` (`b = 0`), which
//! receives `b'`.
//!
//! Folding BN into a *following* convolution that pads with zeros is exact only if the
//! engine pads channel `c` with `pad_c = −shift_c/scale_c` instead (the value BN maps to
//! 0); [`into_following`] writes those values. Reflect, replicate and circular padding
//! copy input values, which BN maps like any other, so those folds are exact as they are.
//!
//! # Weight layouts
//!
//! A [`Layer`] describes the weight tensor: `O = out_channels`, `I = in_channels`,
//! `G = groups`, `Og = O/G`, `Ig = I/G`, and `K` = the product of the kernel dims
//! (1 for a linear layer, `L`, `H·W`, `D·H·W`, …). The weight that joins output channel
//! `o = g·Og + p` to input channel `i = g·Ig + q` (both in group `g`) at kernel position
//! `k` (row-major over the kernel dims, e.g. `k = kh·KW + kw`) lives at
//!
//! | [`WeightLayout`] | shape | flat index | used by | [`Layer`] constructors |
//! |---|---|---|---|---|
//! | [`Oihw`](WeightLayout::Oihw) | `[O][Ig][K]` | `(o·Ig + q)·K + k` | PyTorch/ONNX `Conv`, `nn.Linear` / `Gemm(transB=1)` `[out][in]` | [`conv1d`](Layer::conv1d), [`conv2d`](Layer::conv2d), [`conv3d`](Layer::conv3d), [`conv`](Layer::conv), [`depthwise`](Layer::depthwise), [`linear`](Layer::linear) |
//! | [`Ohwi`](WeightLayout::Ohwi) | `[O][K][Ig]` | `(o·K + k)·Ig + q` | TFLite `CONV_2D` | [`conv_ohwi`](Layer::conv_ohwi) |
//! | [`Hwio`](WeightLayout::Hwio) | `[K][Ig][O]` | `(k·Ig + q)·O + o` | TensorFlow/Keras `Conv`, `Dense` / `MatMul` `[in][out]`, TFLite `DEPTHWISE_CONV_2D` (`G = I`) | [`conv_hwio`](Layer::conv_hwio), [`depthwise_hwio`](Layer::depthwise_hwio), [`linear_in_out`](Layer::linear_in_out) |
//! | [`Iohw`](WeightLayout::Iohw) | `[I][Og][K]` | `(i·Og + p)·K + k` | PyTorch/ONNX `ConvTranspose` | [`conv_transpose1d`](Layer::conv_transpose1d), [`…2d`](Layer::conv_transpose2d), [`…3d`](Layer::conv_transpose3d), [`conv_transpose`](Layer::conv_transpose) |
//!
//! Any of them [`grouped(g)`](Layer::grouped) for `G = g`.
//!
//! Stride and dilation do not matter for folding. Depthwise convolution is `G = I`,
//! with any channel multiplier `Og`.
//!
//! # Errors and panics
//!
//! Every argument is checked before any data is touched, so on `Err` nothing was
//! written. Nothing here panics or allocates; NaN and ±inf in the inputs propagate as
//! IEEE arithmetic says.
//!
//! # Speed
//!
//! The weights are walked in memory order, in segments of up to 128 values (4096 along
//! the rows of HWIO, 128 on bare-metal targets), with the per-channel constants of a
//! segment computed once per tile of channels into a stack buffer (3 KiB; 32 KiB for
//! HWIO on hosted targets, which keeps rows of up to 4096 outputs whole), never per
//! weight: one f64 product per weight, as in a plain loop (`benches/fold.rs` compares
//! the two on whole networks in every layout).

use core::slice::SliceIndex;

use crate::engine::at;
use crate::error::{check_eps, check_len, Error};
use crate::forward::{eval_affine, BatchNorm};
use crate::running::RunningStats;

/// The eval-mode batch norm to fold: the layer ([`BatchNorm`]: γ, β, eps) and its
/// running statistics ([`RunningStats`]).
///
/// All slices hold one value per channel of the BN layer: `out_channels` of the layer
/// for [`into_preceding`], `in_channels` for [`into_following`].
/// `scale_c = γ_c/√(running_var_c + eps)` and `shift_c = β_c − running_mean_c·scale_c`,
/// computed in f64 by the code [`BatchNorm::eval`] uses, so a folded layer and an
/// evaluated one get the same constants.
///
/// ```
/// use batchnorm::fold::EvalBn;
/// use batchnorm::{BatchNorm, Momentum, Running, RunningStats};
///
/// // PyTorch: BatchNorm2d(2, affine=False) with its buffers
/// let bn = BatchNorm { eps: 1e-5, gamma: None, beta: None };
/// let folded = EvalBn::new(bn, RunningStats { mean: &[0.5, -1.0], var: &[1.0, 4.0] });
/// assert_eq!(folded.stats.mean.len(), 2);
///
/// // After training: the statistics a `Running` kept, lent for as long as `EvalBn` lives.
/// let (mut mean, mut var) = ([0.0f32; 2], [1.0f32; 2]);
/// let running = Running::new(&mut mean, &mut var, Momentum::Exponential(0.1));
/// let folded = EvalBn::new(bn, running.stats());
/// assert_eq!(folded.stats.var, &[1.0, 1.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalBn<'a> {
    /// γ_c (`None` means 1, PyTorch `affine=False`), β_c (`None` means 0) and eps
    /// (finite and ≥ 0).
    pub bn: BatchNorm<'a>,
    /// `running_mean_c` and `running_var_c` (PyTorch's `running_mean`, `running_var`;
    /// Keras' `moving_mean`, `moving_variance`).
    pub stats: RunningStats<'a>,
}

impl<'a> EvalBn<'a> {
    /// The layer `bn` in eval mode with the running statistics `stats`.
    ///
    /// ```
    /// use batchnorm::{fold::EvalBn, BatchNorm, RunningStats};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: Some(&[2.0]), beta: None };
    /// let folded = EvalBn::new(bn, RunningStats { mean: &[1.0], var: &[4.0] });
    /// assert_eq!(folded.bn.gamma, Some(&[2.0][..]));
    /// ```
    pub const fn new(bn: BatchNorm<'a>, stats: RunningStats<'a>) -> EvalBn<'a> {
        EvalBn { bn, stats }
    }
}

/// How a weight tensor is laid out in its flat slice. `k…` stands for all kernel dims
/// (none, `L`, `H, W`, `D, H, W`, …), flattened row-major into one index `k < K`;
/// see the [module docs](self) for the notation.
///
/// ```
/// use batchnorm::fold::{self, EvalBn, Layer};
/// use batchnorm::{BatchNorm, RunningStats};
///
/// // One 2 → 3 linear layer, stored [out][in] (PyTorch) and [in][out] (Keras).
/// let mut out_in = [1.0, 2.0,  // output 0
///                   3.0, 4.0,  // output 1
///                   5.0, 6.0]; // output 2
/// let mut in_out = [1.0, 3.0, 5.0,  // input 0
///                   2.0, 4.0, 6.0]; // input 1
/// let (mut b1, mut b2) = ([0.0; 3], [0.0; 3]);
/// let bn = EvalBn::new(
///     BatchNorm { eps: 0.0, gamma: Some(&[1.0, 2.0, -1.0]), beta: None },
///     RunningStats { mean: &[0.0; 3], var: &[1.0; 3] },
/// );
/// fold::into_preceding(&bn, Layer::linear(2, 3), &mut out_in, &mut b1)?;
/// fold::into_preceding(&bn, Layer::linear_in_out(2, 3), &mut in_out, &mut b2)?;
/// assert_eq!(out_in, [1.0, 2.0, 6.0, 8.0, -5.0, -6.0]);
/// assert_eq!(in_out, [1.0, 6.0, -5.0, 2.0, 8.0, -6.0]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WeightLayout {
    /// `[out][in/groups][k…]`: `W[o][q][k]` at `(o·Ig + q)·K + k`. PyTorch and ONNX
    /// convolutions; a linear layer's `[out][in]` (PyTorch `nn.Linear`) with `K = 1`.
    Oihw,
    /// `[out][k…][in/groups]`: `W[o][k][q]` at `(o·K + k)·Ig + q` (OHWI, TFLite).
    Ohwi,
    /// `[k…][in/groups][out]`: `W[k][q][o]` at `(k·Ig + q)·O + o` (HWIO, TensorFlow);
    /// a linear layer's `[in][out]` (Keras `Dense`, ONNX `MatMul`) with `K = 1`.
    Hwio,
    /// Transposed convolution `[in][out/groups][k…]`: `W[i][p][k]` at
    /// `(i·Og + p)·K + k`, where output channel `o = g·Og + p` reads input channel
    /// `i = g·Ig + q` (PyTorch and ONNX `ConvTranspose`).
    Iohw,
}

/// The weight tensor of a linear or convolution layer: its layout and sizes.
///
/// Build it with the constructor named after the layer, from the dims you have, so
/// that nobody multiplies kernel sizes by hand and a transposed convolution cannot be
/// declared as a plain one (both hold `in·out/groups·K` weights, so no length check
/// could tell them apart):
///
/// | layer | constructor | weight |
/// |---|---|---|
/// | PyTorch `nn.Linear(in, out)`, ONNX `Gemm(transB=1)` | [`linear(in, out)`](Layer::linear) | `[out][in]` |
/// | Keras `Dense`, ONNX `MatMul` | [`linear_in_out(in, out)`](Layer::linear_in_out) | `[in][out]` |
/// | PyTorch `Conv1d/2d/3d`, ONNX `Conv` | [`conv1d`](Layer::conv1d), [`conv2d`](Layer::conv2d), [`conv3d`](Layer::conv3d), [`conv`](Layer::conv) (any rank) | `[out][in/groups][k…]` |
/// | depthwise (`groups = in`, `out = in·multiplier`) | [`depthwise(channels, multiplier, kernel)`](Layer::depthwise) | `[in·mult][1][k…]` |
/// | PyTorch `ConvTranspose1d/2d/3d`, ONNX `ConvTranspose` | [`conv_transpose1d`](Layer::conv_transpose1d), [`…2d`](Layer::conv_transpose2d), [`…3d`](Layer::conv_transpose3d), [`conv_transpose`](Layer::conv_transpose) | `[in][out/groups][k…]` |
/// | TensorFlow/Keras `Conv1D/2D/3D` | [`conv_hwio`](Layer::conv_hwio) | `[k…][in/groups][out]` |
/// | TFLite `CONV_2D` | [`conv_ohwi`](Layer::conv_ohwi) | `[out][k…][in/groups]` |
/// | Keras `DepthwiseConv2D`, TFLite `DEPTHWISE_CONV_2D` | [`depthwise_hwio`](Layer::depthwise_hwio) | `[k…][in][mult]` |
///
/// and [`grouped(groups)`](Layer::grouped) on any of them for a grouped layer
/// (PyTorch's `groups=`). The fields stay readable (and writable, deliberately); the
/// struct is `#[non_exhaustive]`, so outside this crate it is only built by these
/// constructors.
///
/// Nothing is checked when a `Layer` is built (the constructors are `const fn` and never
/// fail): the fold functions check it against the slices. Products of dims (the kernel
/// size, `channels·multiplier`) saturate at `usize::MAX`; no slice is that long, so a
/// layer whose size overflows is refused with [`Error::Overflow`] or [`Error::Length`],
/// never folded.
///
/// ```
/// use batchnorm::fold::{Layer, WeightLayout};
///
/// // PyTorch Conv3d(8, 16, kernel_size=3, groups=4): weight [16][2][3][3][3]
/// let conv3d = Layer::conv3d(8, 16, [3, 3, 3]).grouped(4);
/// assert_eq!((conv3d.groups, conv3d.kernel), (4, 27));
/// // TFLite DEPTHWISE_CONV_2D, 32 channels, multiplier 2: weight [1][3][3][64]
/// let depthwise = Layer::depthwise_hwio(32, 2, &[3, 3]);
/// assert_eq!((depthwise.out_channels, depthwise.groups), (64, 32));
/// // PyTorch ConvTranspose2d(8, 6, kernel_size=2, groups=2): weight [8][3][2][2]
/// let transposed = Layer::conv_transpose2d(8, 6, [2, 2]).grouped(2);
/// assert_eq!(transposed.layout, WeightLayout::Iohw);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Layer {
    /// Where each weight lives in the flat slice.
    pub layout: WeightLayout,
    /// Input channels `I` (features, for a linear layer); for
    /// [`Iohw`](WeightLayout::Iohw) the weight's first dim.
    pub in_channels: usize,
    /// Output channels `O`: the length of the bias.
    pub out_channels: usize,
    /// Groups `G`; must divide both channel counts. 1 for a dense layer, `in_channels`
    /// for a depthwise convolution.
    pub groups: usize,
    /// `K`, the product of the kernel dims: 1 for a linear layer, `kh·kw` for 2-D.
    pub kernel: usize,
}

/// The product of `dims`, saturating at `usize::MAX` (the fold refuses that size).
const fn product(dims: &[usize]) -> usize {
    let mut p = 1usize;
    let mut i = 0;
    while i < dims.len() {
        p = p.saturating_mul(dims[i]);
        i += 1;
    }
    p
}

impl Layer {
    /// The one place that fills the fields.
    const fn new(
        layout: WeightLayout,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
    ) -> Layer {
        Layer {
            layout,
            in_channels,
            out_channels,
            groups: 1,
            kernel,
        }
    }

    /// A linear layer with weight `[out][in]`: `W[o][i]` at `o·in_features + i`
    /// (PyTorch `nn.Linear(in_features, out_features)`, ONNX `Gemm` with `transB=1`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::{Layer, WeightLayout};
    ///
    /// // nn.Linear(3, 2): weight [2][3]
    /// let layer = Layer::linear(3, 2);
    /// assert_eq!(layer.layout, WeightLayout::Oihw);
    /// assert_eq!((layer.in_channels, layer.out_channels, layer.groups, layer.kernel), (3, 2, 1, 1));
    /// ```
    pub const fn linear(in_features: usize, out_features: usize) -> Layer {
        Layer::new(WeightLayout::Oihw, in_features, out_features, 1)
    }

    /// A linear layer with weight `[in][out]`: `W[i][o]` at `i·out_features + o`
    /// (Keras `Dense` kernel, ONNX `MatMul`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::{Layer, WeightLayout};
    ///
    /// // keras.layers.Dense(2) on 3 features: kernel [3][2]
    /// let layer = Layer::linear_in_out(3, 2);
    /// assert_eq!(layer.layout, WeightLayout::Hwio);
    /// assert_eq!((layer.in_channels, layer.out_channels, layer.groups, layer.kernel), (3, 2, 1, 1));
    /// ```
    pub const fn linear_in_out(in_features: usize, out_features: usize) -> Layer {
        Layer::new(WeightLayout::Hwio, in_features, out_features, 1)
    }

    /// A 1-D convolution, weight `[out][in/groups][k]` (PyTorch
    /// `nn.Conv1d(in_channels, out_channels, kernel_size)`, ONNX `Conv`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::Layer;
    ///
    /// // nn.Conv1d(4, 8, kernel_size=5): weight [8][4][5]
    /// let layer = Layer::conv1d(4, 8, 5);
    /// assert_eq!((layer.in_channels, layer.out_channels, layer.kernel), (4, 8, 5));
    /// ```
    pub const fn conv1d(in_channels: usize, out_channels: usize, kernel_size: usize) -> Layer {
        Layer::conv(in_channels, out_channels, &[kernel_size])
    }

    /// A 2-D convolution, weight `[out][in/groups][kh][kw]` (PyTorch
    /// `nn.Conv2d(in_channels, out_channels, kernel_size=(kh, kw))`, ONNX `Conv`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::{Layer, WeightLayout};
    ///
    /// // nn.Conv2d(64, 128, kernel_size=3): weight [128][64][3][3]
    /// let layer = Layer::conv2d(64, 128, [3, 3]);
    /// assert_eq!((layer.layout, layer.groups, layer.kernel), (WeightLayout::Oihw, 1, 9));
    /// ```
    pub const fn conv2d(in_channels: usize, out_channels: usize, kernel_size: [usize; 2]) -> Layer {
        Layer::conv(in_channels, out_channels, &kernel_size)
    }

    /// A 3-D convolution, weight `[out][in/groups][kd][kh][kw]` (PyTorch
    /// `nn.Conv3d(in_channels, out_channels, kernel_size=(kd, kh, kw))`, ONNX `Conv`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::Layer;
    ///
    /// // nn.Conv3d(3, 16, kernel_size=(1, 3, 3)): weight [16][3][1][3][3]
    /// assert_eq!(Layer::conv3d(3, 16, [1, 3, 3]).kernel, 9);
    /// ```
    pub const fn conv3d(in_channels: usize, out_channels: usize, kernel_size: [usize; 3]) -> Layer {
        Layer::conv(in_channels, out_channels, &kernel_size)
    }

    /// A convolution of any rank, weight `[out][in/groups][k…]` (ONNX `Conv`, whose
    /// weight is `[M][C/group][k1]…[kn]`): `kernel_shape` is the weight's dims after the
    /// first two.
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::Layer;
    ///
    /// // ONNX Conv, W of shape [32, 16, 3, 3], group = 2: C = 32 inputs
    /// let w_shape = [32, 16, 3, 3];
    /// let layer = Layer::conv(w_shape[1] * 2, w_shape[0], &w_shape[2..]).grouped(2);
    /// assert_eq!(layer, Layer::conv2d(32, 32, [3, 3]).grouped(2));
    /// ```
    pub const fn conv(in_channels: usize, out_channels: usize, kernel_shape: &[usize]) -> Layer {
        Layer::new(
            WeightLayout::Oihw,
            in_channels,
            out_channels,
            product(kernel_shape),
        )
    }

    /// A depthwise convolution: every input channel is its own group with `multiplier`
    /// outputs, so `groups = in = channels`, `out = channels·multiplier`, weight
    /// `[channels·multiplier][1][k…]` (PyTorch
    /// `nn.Conv2d(c, c * multiplier, kernel_size, groups=c)`, ONNX `Conv` with `group = C`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::Layer;
    ///
    /// // MobileNetV2's nn.Conv2d(144, 144, 3, groups=144): weight [144][1][3][3]
    /// let layer = Layer::depthwise(144, 1, &[3, 3]);
    /// assert_eq!(layer, Layer::conv2d(144, 144, [3, 3]).grouped(144));
    /// ```
    pub const fn depthwise(channels: usize, multiplier: usize, kernel_shape: &[usize]) -> Layer {
        Layer::conv(channels, channels.saturating_mul(multiplier), kernel_shape).grouped(channels)
    }

    /// A 1-D transposed convolution, weight `[in][out/groups][k]` (PyTorch
    /// `nn.ConvTranspose1d(in_channels, out_channels, kernel_size)`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::{Layer, WeightLayout};
    ///
    /// let layer = Layer::conv_transpose1d(8, 4, 3);
    /// assert_eq!((layer.layout, layer.kernel), (WeightLayout::Iohw, 3));
    /// ```
    pub const fn conv_transpose1d(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
    ) -> Layer {
        Layer::conv_transpose(in_channels, out_channels, &[kernel_size])
    }

    /// A 2-D transposed convolution, weight `[in][out/groups][kh][kw]` (PyTorch
    /// `nn.ConvTranspose2d(in_channels, out_channels, kernel_size=(kh, kw))`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::{Layer, WeightLayout};
    ///
    /// // nn.ConvTranspose2d(8, 6, kernel_size=2, groups=2): weight [8][3][2][2]
    /// let layer = Layer::conv_transpose2d(8, 6, [2, 2]).grouped(2);
    /// assert_eq!((layer.layout, layer.groups, layer.kernel), (WeightLayout::Iohw, 2, 4));
    /// ```
    pub const fn conv_transpose2d(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
    ) -> Layer {
        Layer::conv_transpose(in_channels, out_channels, &kernel_size)
    }

    /// A 3-D transposed convolution, weight `[in][out/groups][kd][kh][kw]` (PyTorch
    /// `nn.ConvTranspose3d(in_channels, out_channels, kernel_size=(kd, kh, kw))`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::Layer;
    ///
    /// assert_eq!(Layer::conv_transpose3d(4, 4, [2, 2, 2]).kernel, 8);
    /// ```
    pub const fn conv_transpose3d(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 3],
    ) -> Layer {
        Layer::conv_transpose(in_channels, out_channels, &kernel_size)
    }

    /// A transposed convolution of any rank, weight `[in][out/groups][k…]` (ONNX
    /// `ConvTranspose`, whose weight is `[C][M/group][k1]…[kn]`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::Layer;
    ///
    /// // ONNX ConvTranspose, W of shape [16, 4, 3, 3], group = 2: M = 8 outputs
    /// let w_shape = [16, 4, 3, 3];
    /// let layer = Layer::conv_transpose(w_shape[0], w_shape[1] * 2, &w_shape[2..]).grouped(2);
    /// assert_eq!(layer, Layer::conv_transpose2d(16, 8, [3, 3]).grouped(2));
    /// ```
    pub const fn conv_transpose(
        in_channels: usize,
        out_channels: usize,
        kernel_shape: &[usize],
    ) -> Layer {
        Layer::new(
            WeightLayout::Iohw,
            in_channels,
            out_channels,
            product(kernel_shape),
        )
    }

    /// A convolution with TensorFlow's kernel `[k…][in/groups][out]` (Keras
    /// `Conv1D/2D/3D`, `tf.nn.conv2d` filters `[kh][kw][in][out]`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::{Layer, WeightLayout};
    ///
    /// // keras.layers.Conv2D(64, 3) on 32 channels: kernel [3][3][32][64]
    /// let layer = Layer::conv_hwio(32, 64, &[3, 3]);
    /// assert_eq!((layer.layout, layer.kernel), (WeightLayout::Hwio, 9));
    /// ```
    pub const fn conv_hwio(
        in_channels: usize,
        out_channels: usize,
        kernel_shape: &[usize],
    ) -> Layer {
        Layer::new(
            WeightLayout::Hwio,
            in_channels,
            out_channels,
            product(kernel_shape),
        )
    }

    /// A convolution with TFLite's filter `[out][k…][in/groups]` (`CONV_2D`:
    /// `[out][kh][kw][in]`).
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::{Layer, WeightLayout};
    ///
    /// let layer = Layer::conv_ohwi(32, 64, &[3, 3]);
    /// assert_eq!((layer.layout, layer.kernel), (WeightLayout::Ohwi, 9));
    /// ```
    pub const fn conv_ohwi(
        in_channels: usize,
        out_channels: usize,
        kernel_shape: &[usize],
    ) -> Layer {
        Layer::new(
            WeightLayout::Ohwi,
            in_channels,
            out_channels,
            product(kernel_shape),
        )
    }

    /// A depthwise convolution with TensorFlow's kernel `[k…][channels][multiplier]`
    /// (Keras `DepthwiseConv2D`; TFLite `DEPTHWISE_CONV_2D`'s `[1][kh][kw][channels·multiplier]`
    /// is the same memory): output `o = c·multiplier + m` reads input `c`.
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::{Layer, WeightLayout};
    ///
    /// // keras.layers.DepthwiseConv2D(3, depth_multiplier=2) on 16 channels: [3][3][16][2]
    /// let layer = Layer::depthwise_hwio(16, 2, &[3, 3]);
    /// assert_eq!((layer.layout, layer.out_channels, layer.groups), (WeightLayout::Hwio, 32, 16));
    /// ```
    pub const fn depthwise_hwio(
        channels: usize,
        multiplier: usize,
        kernel_shape: &[usize],
    ) -> Layer {
        Layer::conv_hwio(channels, channels.saturating_mul(multiplier), kernel_shape)
            .grouped(channels)
    }

    /// The same layer with `groups` groups (PyTorch's `groups=`, ONNX's `group`): output
    /// channel `o = g·(out/groups) + p` reads the inputs `g·(in/groups) + q`. `groups`
    /// must divide both channel counts; the fold functions check it.
    ///
    /// # Errors
    /// None here; [`into_preceding`] and [`into_following`] check the layer.
    ///
    /// ```
    /// use batchnorm::fold::Layer;
    ///
    /// // ResNeXt's nn.Conv2d(128, 128, 3, groups=32): weight [128][4][3][3]
    /// let layer = Layer::conv2d(128, 128, [3, 3]).grouped(32);
    /// assert_eq!(layer.groups, 32);
    /// ```
    #[must_use]
    pub const fn grouped(self, groups: usize) -> Layer {
        Layer { groups, ..self }
    }

    /// Checks groups and sizes.
    fn geometry(self) -> Result<Geometry, Error> {
        let groups = self.groups;
        for (arg, channels) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ] {
            if groups == 0 || channels % groups != 0 {
                return Err(Error::Groups {
                    groups,
                    arg,
                    channels,
                });
            }
        }
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or(Error::Overflow { arg: "weight" });
        let (out_g, in_g, kernel) = (
            // `groups` ≥ 1 (checked above); `max` shows the compiler so.
            self.out_channels / groups.max(1),
            self.in_channels / groups.max(1),
            self.kernel,
        );
        let len = mul(mul(mul(out_g, in_g)?, kernel)?, groups)?;
        // [O][K][Ig] with Ig = 1 or K = 1 is the same memory as [O][Ig][K].
        let layout = match self.layout {
            WeightLayout::Ohwi if in_g == 1 || kernel == 1 => WeightLayout::Oihw,
            layout => layout,
        };
        Ok(Geometry {
            layout,
            groups,
            out_g,
            in_g,
            kernel,
            len,
        })
    }
}

/// Folds a batch norm that comes *after* a layer into that layer's weights and bias.
///
/// With `scale_o = γ_o/√(running_var_o + eps)` (f64), for every layout (see
/// [`WeightLayout`] for where `W[o, i, k]` lives):
///
/// ```text
/// W'[o, i, k] = W[o, i, k]·scale_o
/// b'_o        = (b_o − running_mean_o)·scale_o + β_o
/// ```
///
/// so that `layer'(x) = BN(layer(x))` exactly in real arithmetic, for any padding,
/// stride and dilation. For [`Iohw`](WeightLayout::Iohw) (transposed convolution)
/// output channel `o = g·Og + p` is the weights `W[g·Ig + q][p][k]` for all `q, k`.
///
/// `bn` has `layer.out_channels` channels. `bias` is the layer's bias, `out_channels`
/// long, and is overwritten with `b'`; if the layer had none, pass zeros (`b = 0`).
///
/// ```
/// use batchnorm::fold::{self, EvalBn, Layer};
/// use batchnorm::{BatchNorm, RunningStats};
///
/// // nn.Linear(3, 2) followed by BatchNorm1d(2)
/// let mut weight = [1.0, 2.0, 3.0,  // output 0
///                   4.0, 5.0, 6.0]; // output 1
/// let mut bias = [0.5, -0.5];
/// let bn = EvalBn::new(
///     BatchNorm { eps: 1.0, gamma: Some(&[2.0, -1.0]), beta: Some(&[0.25, 0.0]) },
///     RunningStats { mean: &[1.0, 2.0], var: &[3.0, 0.0] },
/// ); // scale = [2/√4, −1/√1] = [1, −1]
/// fold::into_preceding(&bn, Layer::linear(3, 2), &mut weight, &mut bias)?;
/// assert_eq!(weight, [1.0, 2.0, 3.0, -4.0, -5.0, -6.0]);
/// assert_eq!(bias, [(0.5 - 1.0) * 1.0 + 0.25, (-0.5 - 2.0) * -1.0]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
///
/// # Errors
/// Nothing is written when any of these is returned:
/// - [`Error::Parameter`] if `bn.bn.eps` is not finite and ≥ 0;
/// - [`Error::Groups`] if `layer.groups` is 0 or does not divide `in_channels` or
///   `out_channels`;
/// - [`Error::Overflow`] (`"weight"`) if the weight's size does not fit in `usize`;
/// - [`Error::Length`] if `weight` is not `out_channels·(in_channels/groups)·kernel`
///   long, or `bias`, `stats.mean` (`"running_mean"`), `stats.var` (`"running_var"`),
///   `gamma`, `beta` not `out_channels`.
pub fn into_preceding(
    bn: &EvalBn<'_>,
    layer: Layer,
    weight: &mut [f32],
    bias: &mut [f32],
) -> Result<(), Error> {
    check_eps(bn.bn.eps)?;
    let geo = layer.geometry()?;
    check_len("weight", weight.len(), geo.len)?;
    check_len("bias", bias.len(), layer.out_channels)?;
    bn.check(layer.out_channels)?;

    for (o, b) in bias.iter_mut().enumerate() {
        let (scale, _) = bn.scale_shift(o);
        let shifted = f64::from(*b) - f64::from(at(bn.stats.mean, o));
        *b = (shifted * scale + bn.bn.beta(o)) as f32;
    }
    scale_weights(bn, &geo, weight);
    Ok(())
}

/// Folds a batch norm that comes *before* a layer into that layer's weights and bias.
///
/// With `scale_i = γ_i/√(running_var_i + eps)` and `shift_i = β_i − running_mean_i·scale_i`
/// (f64), for every layout (see [`WeightLayout`] for where `W[o, i, k]` lives; the sum
/// runs over the inputs `i` of `o`'s group and all kernel positions `k`, in f64):
///
/// ```text
/// W'[o, i, k] = W[o, i, k]·scale_i
/// b'_o        = b_o + Σ_{i, k} W[o, i, k]·shift_i
/// pad_i       = −shift_i/scale_i   (= running_mean_i − β_i/scale_i)
/// ```
///
/// `bn` has `layer.in_channels` channels. `bias` is the layer's bias, `out_channels`
/// long, and is overwritten with `b'`; if the layer had none, pass zeros (`b = 0`).
///
/// **Exactness.** For a linear layer, and a convolution without padding,
/// `layer'(x) = layer(BN(x))` exactly in real arithmetic: pass `pad: None`. A
/// convolution that pads with zeros sees zeros *after* BN; the folded one must pad input
/// channel `i` with `pad_i` instead (BN maps `pad_i` to 0): pass `Some(pad)` with
/// `in_channels` values to receive them. For a transposed convolution every input
/// position it reads outside `x` (the border, and for stride > 1 the holes between
/// samples) must hold `pad_i`; an engine that cannot fill the holes should not fold BN
/// into a strided transposed convolution. Reflect, replicate and circular padding need no
/// pad values.
///
/// ```
/// use batchnorm::fold::{self, EvalBn, Layer};
/// use batchnorm::{BatchNorm, RunningStats};
///
/// // BatchNorm1d(2) followed by Conv1d(2, 1, kernel_size=2, padding=1, bias=False)
/// let conv = Layer::conv1d(2, 1, 2);
/// let mut weight = [1.0, 2.0,  // W[0][0][k]
///                   3.0, 4.0]; // W[0][1][k]
/// let mut bias = [0.0]; // no bias: b = 0
/// let mut pad = [f32::NAN; 2];
/// let layer = BatchNorm { eps: 1.0, gamma: Some(&[2.0, -1.0]), beta: Some(&[0.5, 0.0]) };
/// let bn = EvalBn::new(layer, RunningStats { mean: &[1.0, -1.0], var: &[3.0, 0.0] });
/// // scale = [1, −1], shift = [0.5 − 1, 0 − 1] = [−0.5, −1]
/// fold::into_following(&bn, conv, &mut weight, &mut bias, Some(&mut pad))?;
/// assert_eq!(weight, [1.0, 2.0, -3.0, -4.0]);
/// assert_eq!(bias, [(1.0 + 2.0) * -0.5 + (3.0 + 4.0) * -1.0]);
/// assert_eq!(pad, [0.5, -1.0]); // the folded conv pads channel 0 with 0.5, channel 1 with −1
///
/// // γ = 0 maps every input to β: no padding value maps to 0.
/// let dead = EvalBn::new(BatchNorm { gamma: Some(&[0.0, 1.0]), ..layer }, bn.stats);
/// let err = fold::into_following(&dead, conv, &mut weight, &mut bias, Some(&mut pad));
/// assert_eq!(err, Err(batchnorm::Error::ZeroScale { channel: 0 }));
/// # Ok::<(), batchnorm::Error>(())
/// ```
///
/// # Errors
/// Nothing is written when any of these is returned:
/// - [`Error::Parameter`] if `bn.bn.eps` is not finite and ≥ 0;
/// - [`Error::Groups`] if `layer.groups` is 0 or does not divide `in_channels` or
///   `out_channels`;
/// - [`Error::Overflow`] (`"weight"`) if the weight's size does not fit in `usize`;
/// - [`Error::Length`] if `weight` is not `out_channels·(in_channels/groups)·kernel`
///   long, `bias` not `out_channels`, or `stats.mean` (`"running_mean"`), `stats.var`
///   (`"running_var"`), `gamma`, `beta`, `pad` not `in_channels`;
/// - [`Error::ZeroScale`] if `pad` is given and some `scale_i` is 0 (γ_i = 0, or an
///   infinite variance), so that no padding value makes the fold exact. Without `pad`
///   a zero scale folds fine.
pub fn into_following(
    bn: &EvalBn<'_>,
    layer: Layer,
    weight: &mut [f32],
    bias: &mut [f32],
    pad: Option<&mut [f32]>,
) -> Result<(), Error> {
    check_eps(bn.bn.eps)?;
    let geo = layer.geometry()?;
    check_len("weight", weight.len(), geo.len)?;
    check_len("bias", bias.len(), layer.out_channels)?;
    bn.check(layer.in_channels)?;
    if let Some(pad) = &pad {
        check_len("pad", pad.len(), layer.in_channels)?;
        if let Some(channel) = (0..layer.in_channels).find(|&i| bn.scale_shift(i).0 == 0.0) {
            return Err(Error::ZeroScale { channel });
        }
    }

    if let Some(pad) = pad {
        for (i, v) in pad.iter_mut().enumerate() {
            // mean − β/scale rather than −shift/scale: no cancellation inside shift.
            let scale = bn.scale_shift(i).0;
            *v = (f64::from(at(bn.stats.mean, i)) - bn.bn.beta(i) / scale) as f32;
        }
    }
    fold_weights(bn, &geo, weight, bias);
    Ok(())
}

/// f64 values per stack buffer: the channel constants of a tile (or the accumulators of
/// a tile of outputs), 1 KiB each, at most three at once. A segment of 128 weights is
/// 512 B of whole cache lines, and one square root serves at least 128 weights wherever
/// a channel has that many.
const TILE: usize = 128;

/// Output channels per segment of an HWIO row: the rows run across all outputs, so a
/// tile of outputs is a column of segments, one per row, and a row cut into segments is
/// read as several streams instead of one. 4096 outputs (a 32 KiB f64 buffer) keep the
/// rows of most layers whole; a grouped HWIO fold needs three buffers and uses 1024
/// (24 KiB). Bare-metal targets, whose stacks are small, keep 128.
const ROW: usize = if cfg!(target_os = "none") { 128 } else { 4096 };
/// [`ROW`] for the grouped HWIO fold.
const GROUPED_ROW: usize = if cfg!(target_os = "none") { 128 } else { 1024 };

/// A checked [`Layer`]: `len = groups·out_g·in_g·kernel` fits in `usize`, and `layout`
/// is the layer's, with OHWI of one input or one kernel position taken as OIHW (the
/// same memory).
struct Geometry {
    layout: WeightLayout,
    groups: usize,
    out_g: usize,
    in_g: usize,
    kernel: usize,
    len: usize,
}

// The weight loops. Each walks the weights in memory order within segments of at most
// `TILE` values (a whole row where a layout keeps one channel's weights together), with
// the per-channel constants of the segment in a stack buffer, computed once per tile,
// never per weight. Every folded weight is `(f64(w)·scale) as f32`, whichever loop
// computes it, so the layouts and tile sizes change nothing in the result. The bias sums
// of `into_following` are f64 sums in an order fixed by the geometry alone.
//
// `weight.len() == geo.len` (checked by the caller), and every index below is
// `< geo.len` by construction; a zero-sized weight returns first, so no chunk size is 0.

/// `W'[o, i, k] = W[o, i, k]·scale_o` for every layout.
fn scale_weights(bn: &EvalBn<'_>, geo: &Geometry, weight: &mut [f32]) {
    if geo.len == 0 {
        return;
    }
    let (out_g, in_g, kernel) = (geo.out_g, geo.in_g, geo.kernel);
    let out_n = geo.groups * out_g;
    let mut s = [0.0f64; TILE];
    match geo.layout {
        // [O][Ig][K], [O][K][Ig]: output channel o is one run of Ig·K weights.
        WeightLayout::Oihw | WeightLayout::Ohwi => {
            for (o, row) in weight.chunks_exact_mut((in_g * kernel).max(1)).enumerate() {
                scale_run(row, bn.scale(o));
            }
        }
        // [K][Ig][O]: every row runs across all output channels.
        WeightLayout::Hwio => {
            let mut s = [0.0f64; ROW];
            for o0 in (0..out_n).step_by(ROW) {
                let n = ROW.min(out_n - o0);
                for (t, v) in part_mut(&mut s, ..n).iter_mut().enumerate() {
                    *v = bn.scale(o0 + t);
                }
                for row in weight.chunks_exact_mut(out_n.max(1)) {
                    scale_each(part_mut(row, o0..o0 + n), part(&s, ..n));
                }
            }
        }
        // [G][Ig][Og][K]: input channel g·Ig + q holds a run of K weights per output p;
        // the runs of a tile of outputs repeat for every input of the group.
        _ => {
            let per_input = out_g * kernel;
            for (g, group) in weight
                .chunks_exact_mut((in_g * per_input).max(1))
                .enumerate()
            {
                if kernel > TILE {
                    for input in group.chunks_exact_mut(per_input.max(1)) {
                        for (p, run) in input.chunks_exact_mut(kernel.max(1)).enumerate() {
                            scale_run(run, bn.scale(g * out_g + p));
                        }
                    }
                    continue;
                }
                let per = TILE / kernel.max(1);
                for p0 in (0..out_g).step_by(per.max(1)) {
                    let n = per.min(out_g - p0);
                    for (t, run) in part_mut(&mut s, ..n * kernel)
                        .chunks_exact_mut(kernel.max(1))
                        .enumerate()
                    {
                        run.fill(bn.scale(g * out_g + p0 + t));
                    }
                    for input in group.chunks_exact_mut(per_input.max(1)) {
                        scale_each(
                            part_mut(input, p0 * kernel..(p0 + n) * kernel),
                            part(&s, ..n * kernel),
                        );
                    }
                }
            }
        }
    }
}

/// `W'[o, i, k] = W[o, i, k]·scale_i` and `b'_o = b_o + Σ_{i, k} W[o, i, k]·shift_i`
/// for every layout.
fn fold_weights(bn: &EvalBn<'_>, geo: &Geometry, weight: &mut [f32], bias: &mut [f32]) {
    if geo.len == 0 {
        return;
    }
    let (out_g, in_g, kernel) = (geo.out_g, geo.in_g, geo.kernel);
    let out_n = geo.groups * out_g;
    let (mut sc, mut sh, mut acc) = ([0.0f64; TILE], [0.0f64; TILE], [0.0f64; TILE]);
    let add = |b: &mut f32, a: f64| *b = (f64::from(*b) + a) as f32;
    match geo.layout {
        // [O][Ig][K], [O][K][Ig]: output o is a row of Ig·K weights, and its bias one dot
        // product of the row with the shifts of its inputs.
        WeightLayout::Oihw | WeightLayout::Ohwi => {
            let row_len = in_g * kernel;
            let ohwi = geo.layout == WeightLayout::Ohwi;
            if !ohwi && (in_g == 1 || kernel > TILE) {
                // Runs of K weights with one input each (depthwise: a whole row).
                let rows = weight.chunks_exact_mut(row_len.max(1)).zip(bias.iter_mut());
                for (o, (row, b)) in rows.enumerate() {
                    let mut sum = 0.0;
                    for (q, run) in row.chunks_exact_mut(kernel.max(1)).enumerate() {
                        let (scale, shift) = bn.scale_shift(o / out_g.max(1) * in_g + q);
                        sum += fold_run_dot(run, scale, shift);
                    }
                    add(b, sum);
                }
                return;
            }
            // The constants of a tile of inputs, laid out as a segment of the row is
            // (each repeated K times in OIHW; once, for each of the K runs, in OHWI),
            // serve every output of the group: tiles of outputs × tiles of inputs.
            let (rep, per) = if ohwi {
                (1, TILE)
            } else {
                (kernel, TILE / kernel.max(1))
            };
            for (g, group) in weight
                .chunks_exact_mut((out_g * row_len).max(1))
                .enumerate()
            {
                for p0 in (0..out_g).step_by(TILE) {
                    let n = TILE.min(out_g - p0);
                    part_mut(&mut acc, ..n).fill(0.0);
                    for q0 in (0..in_g).step_by(per.max(1)) {
                        let m = per.min(in_g - q0);
                        for t in 0..m {
                            let (scale, shift) = bn.scale_shift(g * in_g + q0 + t);
                            part_mut(&mut sc, t * rep..(t + 1) * rep).fill(scale);
                            part_mut(&mut sh, t * rep..(t + 1) * rep).fill(shift);
                        }
                        let seg = m * rep;
                        let (sc, sh) = (part(&sc, ..seg), part(&sh, ..seg));
                        let rows = part_mut(group, p0 * row_len..(p0 + n) * row_len)
                            .chunks_exact_mut(row_len.max(1));
                        for (a, row) in part_mut(&mut acc, ..n).iter_mut().zip(rows) {
                            if ohwi {
                                // The same inputs in each of the K runs of Ig.
                                for run in row.chunks_exact_mut(in_g.max(1)) {
                                    *a += fold_each_dot(part_mut(run, q0..q0 + m), sc, sh);
                                }
                            } else {
                                *a += fold_each_dot(
                                    part_mut(row, q0 * kernel..q0 * kernel + seg),
                                    sc,
                                    sh,
                                );
                            }
                        }
                    }
                    let first = g * out_g + p0;
                    for (b, &a) in part_mut(bias, first..first + n)
                        .iter_mut()
                        .zip(part(&acc, ..n))
                    {
                        add(b, a);
                    }
                }
            }
        }
        // [K][Ig][O]: row (k, q) runs across the outputs; output o = g·Og + p reads input
        // g·Ig + q. The bias sums of a tile of outputs accumulate across the rows.
        WeightLayout::Hwio if geo.groups != 1 => fold_hwio_grouped(bn, geo, weight, bias),
        WeightLayout::Hwio => {
            let mut acc = [0.0f64; ROW];
            for o0 in (0..out_n).step_by(ROW) {
                let n = ROW.min(out_n - o0);
                part_mut(&mut acc, ..n).fill(0.0);
                // One input per row: the constants of a tile of inputs, then its rows.
                for q0 in (0..in_g).step_by(TILE) {
                    let m = TILE.min(in_g - q0);
                    for t in 0..m {
                        (sc[t], sh[t]) = bn.scale_shift(q0 + t);
                    }
                    for k in 0..kernel {
                        let first = (k * in_g + q0) * out_n;
                        let rows = part_mut(weight, first..first + m * out_n)
                            .chunks_exact_mut(out_n.max(1));
                        for ((row, &scale), &shift) in rows.zip(part(&sc, ..m)).zip(part(&sh, ..m))
                        {
                            fold_run_axpy(
                                part_mut(row, o0..o0 + n),
                                scale,
                                shift,
                                part_mut(&mut acc, ..n),
                            );
                        }
                    }
                }
                for (b, &a) in part_mut(bias, o0..o0 + n).iter_mut().zip(part(&acc, ..n)) {
                    add(b, a);
                }
            }
        }
        // [G][Ig][Og][K]: input i = g·Ig + q scales its whole block of Og·K weights; the
        // bias sums of a tile of outputs accumulate per weight position, then over K.
        _ => {
            let per_input = out_g * kernel;
            for (g, group) in weight
                .chunks_exact_mut((in_g * per_input).max(1))
                .enumerate()
            {
                let bias = part_mut(bias, g * out_g..(g + 1) * out_g);
                if kernel > TILE {
                    for p0 in (0..out_g).step_by(TILE) {
                        let n = TILE.min(out_g - p0);
                        part_mut(&mut acc, ..n).fill(0.0);
                        for (q, input) in group.chunks_exact_mut(per_input.max(1)).enumerate() {
                            let (scale, shift) = bn.scale_shift(g * in_g + q);
                            let runs = part_mut(input, p0 * kernel..(p0 + n) * kernel)
                                .chunks_exact_mut(kernel.max(1));
                            for (a, run) in part_mut(&mut acc, ..n).iter_mut().zip(runs) {
                                *a += fold_run_dot(run, scale, shift);
                            }
                        }
                        for (b, &a) in part_mut(bias, p0..p0 + n).iter_mut().zip(part(&acc, ..n)) {
                            add(b, a);
                        }
                    }
                    continue;
                }
                let per = TILE / kernel.max(1);
                for p0 in (0..out_g).step_by(per.max(1)) {
                    let n = per.min(out_g - p0);
                    let seg = n * kernel;
                    part_mut(&mut acc, ..seg).fill(0.0);
                    for (q, input) in group.chunks_exact_mut(per_input.max(1)).enumerate() {
                        let (scale, shift) = bn.scale_shift(g * in_g + q);
                        let span = part_mut(input, p0 * kernel..p0 * kernel + seg);
                        fold_run_axpy(span, scale, shift, part_mut(&mut acc, ..seg));
                    }
                    for (b, sums) in part_mut(bias, p0..p0 + n)
                        .iter_mut()
                        .zip(part_mut(&mut acc, ..seg).chunks_exact(kernel.max(1)))
                    {
                        add(b, sums.iter().sum());
                    }
                }
            }
        }
    }
}

/// [`fold_weights`] for a grouped HWIO layer, in its own stack frame: its three
/// buffers and the dense path's one are never live together.
#[inline(never)]
fn fold_hwio_grouped(bn: &EvalBn<'_>, geo: &Geometry, weight: &mut [f32], bias: &mut [f32]) {
    let (out_g, in_g, kernel) = (geo.out_g, geo.in_g, geo.kernel);
    let out_n = geo.groups * out_g;
    let mut sc = [0.0f64; GROUPED_ROW];
    let mut sh = [0.0f64; GROUPED_ROW];
    let mut acc = [0.0f64; GROUPED_ROW];
    for o0 in (0..out_n).step_by(GROUPED_ROW) {
        let n = GROUPED_ROW.min(out_n - o0);
        part_mut(&mut acc, ..n).fill(0.0);
        // Per q, the constants of the inputs g·Ig + q for each output of the tile (one
        // per group), for the K rows of that q.
        for q in 0..in_g {
            let mut t = 0;
            while t < n {
                let g = (o0 + t) / out_g.max(1);
                let end = n.min((g + 1) * out_g - o0);
                let (scale, shift) = bn.scale_shift(g * in_g + q);
                part_mut(&mut sc, t..end).fill(scale);
                part_mut(&mut sh, t..end).fill(shift);
                t = end;
            }
            for k in 0..kernel {
                let first = (k * in_g + q) * out_n;
                let row = part_mut(weight, first..first + out_n);
                fold_each_axpy(
                    part_mut(row, o0..o0 + n),
                    part(&sc, ..n),
                    part(&sh, ..n),
                    part_mut(&mut acc, ..n),
                );
            }
        }
        for (b, &a) in part_mut(bias, o0..o0 + n).iter_mut().zip(part(&acc, ..n)) {
            *b = (f64::from(*b) + a) as f32;
        }
    }
}

/// `xs[r]`, empty out of range (where no geometry reaches): the weight loops cut
/// through these, so that no unprovable cut leaves a panic path.
fn part<T, R: SliceIndex<[T], Output = [T]>>(xs: &[T], r: R) -> &[T] {
    xs.get(r).unwrap_or_default()
}

/// [`part`] of a mutable slice.
fn part_mut<T, R: SliceIndex<[T], Output = [T]>>(xs: &mut [T], r: R) -> &mut [T] {
    xs.get_mut(r).unwrap_or_default()
}

/// `w ← w·s` over a run with one scale.
fn scale_run(run: &mut [f32], s: f64) {
    for w in run {
        *w = (f64::from(*w) * s) as f32;
    }
}

/// `w_j ← w_j·s_j`.
fn scale_each(seg: &mut [f32], s: &[f64]) {
    for (w, &s) in seg.iter_mut().zip(s) {
        *w = (f64::from(*w) * s) as f32;
    }
}

/// `acc_j += w_j·shift`, `w_j ← w_j·scale`.
fn fold_run_axpy(seg: &mut [f32], scale: f64, shift: f64, acc: &mut [f64]) {
    for (w, a) in seg.iter_mut().zip(acc) {
        let v = f64::from(*w);
        *a += v * shift;
        *w = (v * scale) as f32;
    }
}

/// `acc_j += w_j·shift_j`, `w_j ← w_j·scale_j`.
fn fold_each_axpy(seg: &mut [f32], scale: &[f64], shift: &[f64], acc: &mut [f64]) {
    for (((w, a), &sc), &sh) in seg.iter_mut().zip(acc).zip(scale).zip(shift) {
        let v = f64::from(*w);
        *a += v * sh;
        *w = (v * sc) as f32;
    }
}

/// Independent partial sums of a dot product: the adds of one chain would wait on each
/// other's latency. Combined in a fixed order, so the result depends on the length only.
const LANES: usize = 8;

/// `Σ_j w_j·shift`, `w_j ← w_j·scale`.
fn fold_run_dot(run: &mut [f32], scale: f64, shift: f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = run.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (w, a) in chunk.iter_mut().zip(&mut acc) {
            let v = f64::from(*w);
            *a += v * shift;
            *w = (v * scale) as f32;
        }
    }
    for (w, a) in chunks.into_remainder().iter_mut().zip(&mut acc) {
        let v = f64::from(*w);
        *a += v * shift;
        *w = (v * scale) as f32;
    }
    combine(acc)
}

/// `Σ_j w_j·shift_j`, `w_j ← w_j·scale_j`.
fn fold_each_dot(seg: &mut [f32], scale: &[f64], shift: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = seg.chunks_exact_mut(LANES);
    let mut scales = scale.chunks_exact(LANES);
    let mut shifts = shift.chunks_exact(LANES);
    for ((chunk, sc), sh) in (&mut chunks).zip(&mut scales).zip(&mut shifts) {
        fold_each_axpy(chunk, sc, sh, &mut acc);
    }
    let tail = chunks.into_remainder();
    fold_each_axpy(tail, scales.remainder(), shifts.remainder(), &mut acc);
    combine(acc)
}

/// The partial sums, pairwise.
fn combine(a: [f64; LANES]) -> f64 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

impl EvalBn<'_> {
    /// Checks every per-channel slice against `channels`.
    fn check(&self, channels: usize) -> Result<(), Error> {
        self.stats.check(channels)?;
        self.bn.check(channels)
    }

    /// `scale_c` in f64. `c` is below the checked channel count.
    fn scale(&self, c: usize) -> f64 {
        self.scale_shift(c).0
    }

    /// `(scale_c, shift_c)` in f64, by [`eval_affine`] as [`BatchNorm::eval`] computes
    /// them. `c` is below the checked channel count.
    fn scale_shift(&self, c: usize) -> (f64, f64) {
        let at = |xs: &[f32]| xs.get(c).map_or(0.0, |&v| f64::from(v));
        let (mean, var, eps) = (at(self.stats.mean), at(self.stats.var), self.bn.eps);
        let [scale, shift] =
            eval_affine(self.bn.gamma(c), self.bn.beta(c), mean, var, f64::from(eps));
        (scale, shift)
    }
}
