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
//! | [`WeightLayout`] | shape | flat index | used by |
//! |---|---|---|---|
//! | [`Oihw`](WeightLayout::Oihw) | `[O][Ig][K]` | `(o·Ig + q)·K + k` | PyTorch/ONNX `Conv`, `nn.Linear` / `Gemm(transB=1)` `[out][in]` |
//! | [`Ohwi`](WeightLayout::Ohwi) | `[O][K][Ig]` | `(o·K + k)·Ig + q` | TFLite `CONV_2D` |
//! | [`Hwio`](WeightLayout::Hwio) | `[K][Ig][O]` | `(k·Ig + q)·O + o` | TensorFlow/Keras `Conv`, `Dense` / `MatMul` `[in][out]`, TFLite `DEPTHWISE_CONV_2D` (`G = I`) |
//! | [`Iohw`](WeightLayout::Iohw) | `[I][Og][K]` | `(i·Og + p)·K + k` | PyTorch/ONNX `ConvTranspose` |
//!
//! Stride and dilation do not matter for folding. Depthwise convolution is `G = I`,
//! with any channel multiplier `Og`.
//!
//! # Errors and panics
//!
//! Every argument is checked before any data is touched, so on `Err` nothing was
//! written. Nothing here panics or allocates; NaN and ±inf in the inputs propagate as
//! IEEE arithmetic says.

use crate::error::{check_eps, check_len, Error};

/// The eval-mode batch norm to fold: its running statistics, affine parameters and eps.
///
/// All slices hold one value per channel of the BN layer: `out_channels` of the layer
/// for [`into_preceding`], `in_channels` for [`into_following`].
/// `scale_c = γ_c/√(running_var_c + eps)` and `shift_c = β_c − running_mean_c·scale_c`,
/// computed in f64.
///
/// ```
/// use batchnorm::fold::EvalBn;
///
/// // PyTorch: BatchNorm2d(2, affine=False) with its buffers
/// let bn = EvalBn {
///     running_mean: &[0.5, -1.0],
///     running_var: &[1.0, 4.0],
///     gamma: None, // 1
///     beta: None,  // 0
///     eps: 1e-5,
/// };
/// assert_eq!(bn.running_mean.len(), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalBn<'a> {
    /// `running_mean_c`.
    pub running_mean: &'a [f32],
    /// `running_var_c` (PyTorch's `running_var`, Keras' `moving_variance`).
    pub running_var: &'a [f32],
    /// γ_c; `None` means 1 (PyTorch `affine=False`).
    pub gamma: Option<&'a [f32]>,
    /// β_c; `None` means 0.
    pub beta: Option<&'a [f32]>,
    /// Added to the variance; finite and ≥ 0.
    pub eps: f32,
}

/// How a weight tensor is laid out in its flat slice. `k…` stands for all kernel dims
/// (none, `L`, `H, W`, `D, H, W`, …), flattened row-major into one index `k < K`;
/// see the [module docs](self) for the notation.
///
/// ```
/// use batchnorm::fold::{self, EvalBn, Layer};
///
/// // One 2 → 3 linear layer, stored [out][in] (PyTorch) and [in][out] (Keras).
/// let mut out_in = [1.0, 2.0,  // output 0
///                   3.0, 4.0,  // output 1
///                   5.0, 6.0]; // output 2
/// let mut in_out = [1.0, 3.0, 5.0,  // input 0
///                   2.0, 4.0, 6.0]; // input 1
/// let (mut b1, mut b2) = ([0.0; 3], [0.0; 3]);
/// let bn = EvalBn {
///     running_mean: &[0.0; 3],
///     running_var: &[1.0; 3],
///     gamma: Some(&[1.0, 2.0, -1.0]),
///     beta: None,
///     eps: 0.0,
/// };
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
/// The weight slice has `out_channels · (in_channels/groups) · kernel` values, laid out
/// as [`layout`](Layer::layout) says; the bias has `out_channels`. Nothing is checked
/// when a `Layer` is built: the fold functions check it against the slices.
///
/// ```
/// use batchnorm::fold::{Layer, WeightLayout};
///
/// // PyTorch Conv3d(8, 16, kernel_size=3, groups=4): weight [16][2][3][3][3]
/// let conv3d = Layer {
///     layout: WeightLayout::Oihw,
///     in_channels: 8,
///     out_channels: 16,
///     groups: 4,
///     kernel: 3 * 3 * 3,
/// };
/// // TFLite DEPTHWISE_CONV_2D, 32 channels, multiplier 2: weight [1][3][3][64]
/// let depthwise = Layer {
///     layout: WeightLayout::Hwio,
///     in_channels: 32,
///     out_channels: 64,
///     groups: 32,
///     kernel: 3 * 3,
/// };
/// // PyTorch ConvTranspose2d(8, 6, kernel_size=2, groups=2): weight [8][3][2][2]
/// let transposed = Layer {
///     layout: WeightLayout::Iohw,
///     in_channels: 8,
///     out_channels: 6,
///     groups: 2,
///     kernel: 2 * 2,
/// };
/// # let _ = (conv3d, depthwise, transposed);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

impl Layer {
    /// A linear layer with weight `[out][in]`: `W[o][i]` at `o·in_features + i`
    /// (PyTorch `nn.Linear(in_features, out_features)`, ONNX `Gemm` with `transB=1`).
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
        Layer {
            layout: WeightLayout::Oihw,
            in_channels: in_features,
            out_channels: out_features,
            groups: 1,
            kernel: 1,
        }
    }

    /// A linear layer with weight `[in][out]`: `W[i][o]` at `i·out_features + o`
    /// (Keras `Dense` kernel, ONNX `MatMul`).
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
        Layer {
            layout: WeightLayout::Hwio,
            in_channels: in_features,
            out_channels: out_features,
            groups: 1,
            kernel: 1,
        }
    }

    /// Checks groups and sizes, and returns the strides of the layout.
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
        // `groups` is not 0 (checked above); `max` lets the compiler see it at
        // opt-level "s" too, which keeps a panic path out of the build.
        let (out_g, in_g, kernel) = (
            self.out_channels / groups.max(1),
            self.in_channels / groups.max(1),
            self.kernel,
        );
        let per_group = mul(mul(out_g, in_g)?, kernel)?;
        let len = mul(per_group, groups)?;
        let (sg, sp, sq, sk) = match self.layout {
            WeightLayout::Oihw => (per_group, mul(in_g, kernel)?, kernel, 1),
            WeightLayout::Ohwi => (per_group, mul(kernel, in_g)?, 1, in_g),
            WeightLayout::Hwio => (out_g, 1, self.out_channels, mul(in_g, self.out_channels)?),
            WeightLayout::Iohw => (per_group, kernel, mul(out_g, kernel)?, 1),
        };
        Ok(Geometry {
            groups,
            out_g,
            in_g,
            kernel,
            len,
            sg,
            sp,
            sq,
            sk,
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
///
/// // nn.Linear(3, 2) followed by BatchNorm1d(2)
/// let mut weight = [1.0, 2.0, 3.0,  // output 0
///                   4.0, 5.0, 6.0]; // output 1
/// let mut bias = [0.5, -0.5];
/// let bn = EvalBn {
///     running_mean: &[1.0, 2.0],
///     running_var: &[3.0, 0.0],
///     gamma: Some(&[2.0, -1.0]),
///     beta: Some(&[0.25, 0.0]),
///     eps: 1.0,
/// }; // scale = [2/√4, −1/√1] = [1, −1]
/// fold::into_preceding(&bn, Layer::linear(3, 2), &mut weight, &mut bias)?;
/// assert_eq!(weight, [1.0, 2.0, 3.0, -4.0, -5.0, -6.0]);
/// assert_eq!(bias, [(0.5 - 1.0) * 1.0 + 0.25, (-0.5 - 2.0) * -1.0]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
///
/// # Errors
/// Nothing is written when any of these is returned:
/// - [`Error::Parameter`] if `bn.eps` is not finite and ≥ 0;
/// - [`Error::Groups`] if `layer.groups` is 0 or does not divide `in_channels` or
///   `out_channels`;
/// - [`Error::Overflow`] (`"weight"`) if the weight's size does not fit in `usize`;
/// - [`Error::Length`] if `weight` is not `out_channels·(in_channels/groups)·kernel`
///   long, or `bias`, `running_mean`, `running_var`, `gamma`, `beta` not `out_channels`.
pub fn into_preceding(
    bn: &EvalBn<'_>,
    layer: Layer,
    weight: &mut [f32],
    bias: &mut [f32],
) -> Result<(), Error> {
    check_eps(bn.eps)?;
    let geo = layer.geometry()?;
    check_len("weight", weight.len(), geo.len)?;
    check_len("bias", bias.len(), layer.out_channels)?;
    bn.check(layer.out_channels)?;

    for (o, b) in bias.iter_mut().enumerate() {
        let (scale, _) = bn.scale_shift(o);
        let shifted = f64::from(*b) - bn.mean(o);
        *b = (shifted * scale + bn.beta(o)) as f32;
    }
    // One tile of output channels at a time: each scale is computed once (no sqrt per
    // weight), and where output channels are adjacent (HWIO) the inner loop is contiguous.
    for g in 0..geo.groups {
        for p0 in (0..geo.out_g).step_by(TILE) {
            let n = TILE.min(geo.out_g - p0);
            let mut scale = [0.0; TILE];
            for (t, s) in scale[..n].iter_mut().enumerate() {
                *s = bn.scale_shift(g * geo.out_g + p0 + t).0;
            }
            let tile = g * geo.sg + p0 * geo.sp;
            for q in 0..geo.in_g {
                for k in 0..geo.kernel {
                    let at = tile + q * geo.sq + k * geo.sk;
                    for (t, &s) in scale[..n].iter().enumerate() {
                        // In range by `geometry`; `get_mut` keeps a panic path out of
                        // the build.
                        if let Some(w) = weight.get_mut(at + t * geo.sp) {
                            *w = (f64::from(*w) * s) as f32;
                        }
                    }
                }
            }
        }
    }
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
/// use batchnorm::fold::{self, EvalBn, Layer, WeightLayout};
///
/// // BatchNorm1d(2) followed by Conv1d(2, 1, kernel_size=2, padding=1, bias=False)
/// let conv = Layer {
///     layout: WeightLayout::Oihw,
///     in_channels: 2,
///     out_channels: 1,
///     groups: 1,
///     kernel: 2,
/// };
/// let mut weight = [1.0, 2.0,  // W[0][0][k]
///                   3.0, 4.0]; // W[0][1][k]
/// let mut bias = [0.0]; // no bias: b = 0
/// let mut pad = [f32::NAN; 2];
/// let bn = EvalBn {
///     running_mean: &[1.0, -1.0],
///     running_var: &[3.0, 0.0],
///     gamma: Some(&[2.0, -1.0]),
///     beta: Some(&[0.5, 0.0]),
///     eps: 1.0,
/// }; // scale = [1, −1], shift = [0.5 − 1, 0 − 1] = [−0.5, −1]
/// fold::into_following(&bn, conv, &mut weight, &mut bias, Some(&mut pad))?;
/// assert_eq!(weight, [1.0, 2.0, -3.0, -4.0]);
/// assert_eq!(bias, [(1.0 + 2.0) * -0.5 + (3.0 + 4.0) * -1.0]);
/// assert_eq!(pad, [0.5, -1.0]); // the folded conv pads channel 0 with 0.5, channel 1 with −1
///
/// // γ = 0 maps every input to β: no padding value maps to 0.
/// let dead = EvalBn { gamma: Some(&[0.0, 1.0]), ..bn };
/// let err = fold::into_following(&dead, conv, &mut weight, &mut bias, Some(&mut pad));
/// assert_eq!(err, Err(batchnorm::Error::ZeroScale { channel: 0 }));
/// # Ok::<(), batchnorm::Error>(())
/// ```
///
/// # Errors
/// Nothing is written when any of these is returned:
/// - [`Error::Parameter`] if `bn.eps` is not finite and ≥ 0;
/// - [`Error::Groups`] if `layer.groups` is 0 or does not divide `in_channels` or
///   `out_channels`;
/// - [`Error::Overflow`] (`"weight"`) if the weight's size does not fit in `usize`;
/// - [`Error::Length`] if `weight` is not `out_channels·(in_channels/groups)·kernel`
///   long, `bias` not `out_channels`, or `running_mean`, `running_var`, `gamma`,
///   `beta`, `pad` not `in_channels`;
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
    check_eps(bn.eps)?;
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
            *v = (bn.mean(i) - bn.beta(i) / scale) as f32;
        }
    }
    // Tiles of outputs × inputs: the bias sums of a tile of outputs stay in `acc` (f64,
    // no allocation) while the inputs' scale and shift are computed once per tile.
    for g in 0..geo.groups {
        for p0 in (0..geo.out_g).step_by(TILE) {
            let n = TILE.min(geo.out_g - p0);
            let mut acc = [0.0f64; TILE];
            for q0 in (0..geo.in_g).step_by(TILE) {
                let m = TILE.min(geo.in_g - q0);
                let (mut scale, mut shift) = ([0.0; TILE], [0.0; TILE]);
                for (t, (sc, sh)) in scale[..m].iter_mut().zip(&mut shift[..m]).enumerate() {
                    (*sc, *sh) = bn.scale_shift(g * geo.in_g + q0 + t);
                }
                let tile = g * geo.sg + p0 * geo.sp + q0 * geo.sq;
                for (q, (&sc, &sh)) in scale[..m].iter().zip(&shift[..m]).enumerate() {
                    for k in 0..geo.kernel {
                        let at = tile + q * geo.sq + k * geo.sk;
                        for (t, a) in acc[..n].iter_mut().enumerate() {
                            // In range by `geometry` (as above).
                            if let Some(w) = weight.get_mut(at + t * geo.sp) {
                                let v = f64::from(*w);
                                *a += v * sh;
                                *w = (v * sc) as f32;
                            }
                        }
                    }
                }
            }
            for (t, a) in acc[..n].iter().enumerate() {
                if let Some(b) = bias.get_mut(g * geo.out_g + p0 + t) {
                    *b = (f64::from(*b) + a) as f32;
                }
            }
        }
    }
    Ok(())
}

/// Channels per tile. 32 f64 constants (or accumulators) per side stay in L1, and 32
/// neighbouring channels cover whole cache lines in the layouts where they are adjacent.
const TILE: usize = 32;

/// A checked [`Layer`]: the weight joining output `g·out_g + p` to input `g·in_g + q`
/// at kernel position `k` is at `g·sg + p·sp + q·sq + k·sk`, below `len`.
struct Geometry {
    groups: usize,
    out_g: usize,
    in_g: usize,
    kernel: usize,
    len: usize,
    sg: usize,
    sp: usize,
    sq: usize,
    sk: usize,
}

impl EvalBn<'_> {
    /// Checks every per-channel slice against `channels`.
    fn check(&self, channels: usize) -> Result<(), Error> {
        check_len("running_mean", self.running_mean.len(), channels)?;
        check_len("running_var", self.running_var.len(), channels)?;
        if let Some(gamma) = self.gamma {
            check_len("gamma", gamma.len(), channels)?;
        }
        if let Some(beta) = self.beta {
            check_len("beta", beta.len(), channels)?;
        }
        Ok(())
    }

    // `c` is below the checked channel count in every call: the fallbacks of `get`
    // are never taken, and keep a panic path out of the build.

    /// β_c in f64 (0 when absent).
    fn beta(&self, c: usize) -> f64 {
        f64::from(self.beta.and_then(|b| b.get(c).copied()).unwrap_or(0.0))
    }

    /// running_mean_c in f64.
    fn mean(&self, c: usize) -> f64 {
        f64::from(self.running_mean.get(c).copied().unwrap_or(0.0))
    }

    /// `(scale_c, shift_c)` in f64.
    fn scale_shift(&self, c: usize) -> (f64, f64) {
        let gamma = f64::from(self.gamma.and_then(|g| g.get(c).copied()).unwrap_or(1.0));
        let var = f64::from(self.running_var.get(c).copied().unwrap_or(0.0)) + f64::from(self.eps);
        let scale = gamma / libm::sqrt(var);
        (scale, self.beta(c) - self.mean(c) * scale)
    }
}
