//! `no_std` SIMD f32 kernels for batch normalization and its neighbours, over flat
//! slices the caller owns: nothing allocates, nothing is `unsafe`, nothing panics, and
//! every entry point returns `Result<_, `[`Error`]`>`. The semantics are PyTorch's; the
//! [mapping table](#from-pytorch-onnx-keras-and-flax) gives the ONNX, Keras and Flax
//! names and conventions beside them.
//!
//! # Tensors
//!
//! A tensor is `batch × channels × spatial` f32 values in one slice, described by a
//! [`Shape`]: channels-first ([`Shape::nchw`], [`Shape::ncl`], [`Shape::ncdhw`]:
//! element `(n, c, s)` at `(n·C + c)·S + s`) or channels-last ([`Shape::nhwc`],
//! [`Shape::nlc`], [`Shape::ndhwc`]: at `(n·S + s)·C + c`), or `[N, C]` rows
//! ([`Shape::nc`]). Batch norm reduces every channel over `m = batch·spatial` values.
//!
//! # Operations
//!
//! Every item linked below has a runnable example, and every function that can fail an
//! `# Errors` section.
//!
//! ## Moments
//!
//! [`moments`]: per channel, in one read of `x`, the [`Moments`] `count`, `mean` and
//! `m2 = Σ(x − mean)²` (in f64; [`Moments::var`] is `m2/count`,
//! [`Moments::unbiased_var`] `m2/(count − 1)`). Moments of disjoint parts merge
//! exactly with [`Moments::merge`], so chunks, threads and machines can each reduce a
//! part.
//!
//! ```
//! use batchnorm::{moments, Moments, Shape};
//!
//! let x = [1.0, 10.0, 3.0, 30.0]; // [N 2, C 2]
//! let mut stats = [Moments::EMPTY; 2];
//! moments(&x, Shape::nc(2, 2), &mut stats)?;
//! assert_eq!((stats[1].mean, stats[1].var()), (20.0, 100.0));
//! # Ok::<(), batchnorm::Error>(())
//! ```
//!
//! ## Eval forward
//!
//! [`BatchNorm::eval`] (and [`BatchNorm::eval_in_place`]): with the running statistics,
//! `y = (x − running_mean)/√(running_var + eps)·γ + β`, computed as one per-channel
//! `scale` and `shift` (in f64, rounded once) and one multiply-add per element.
//! [`BatchNorm`] holds `eps` and the optional `γ` (`gamma`) and `β` (`beta`): `None`
//! is PyTorch's `affine=False` (γ = 1, β = 0).
//!
//! ## Train forward and running statistics
//!
//! [`BatchNorm::train`] (and [`BatchNorm::train_in_place`]): with the batch's own
//! statistics, `y = (x − mean)·invstd·γ + β`, `invstd = 1/√(var + eps)` with the biased
//! variance; it saves `mean` and `invstd` per channel for the backward pass (what
//! PyTorch's `native_batch_norm` returns). Given [`Running`] statistics it also updates
//! them: `running_mean ← (1 − f)·running_mean + f·mean`,
//! `running_var ← (1 − f)·running_var + f·var·c` with [`Correction::Unbiased`]
//! `c = m/(m − 1)` (PyTorch's; needs `m ≥ 2`) or [`Correction::Biased`] `c = 1` (ONNX's,
//! Flax's, Keras 3's), and the factor `f` from [`Momentum`]:
//! [`Exponential(f)`](Momentum::Exponential), or [`Cumulative`](Momentum::Cumulative)
//! (PyTorch's `momentum=None`: `f = 1/t` at the `t`-th update, `t` counted by
//! [`Running::batches_tracked`]). A training loop holds its [`Running`] by `&mut`
//! across steps.
//!
//! ## Backward
//!
//! [`BatchNorm::backward`]: the gradient of the train forward from its saved
//! statistics, with `x̂ = (x − mean)·invstd`: `dβ = Σdy`, `dγ = Σdy·x̂`,
//! `dx = γ·invstd·(dy − dβ/m − x̂·dγ/m)` (PyTorch's `native_batch_norm_backward`).
//! `mean` is the batch mean of `x` itself, exactly, whatever f32 rounding the saved
//! mean carries: the sums pass also adds up `Σ(x − saved mean)` (no extra read) and
//! corrects the mean by it, in f64, as the train forward does, so that dγ and dx are
//! as exact as with an f64 mean. The saved mean only serves as the shift of the sums
//! (one far from the batch mean costs about `1e-5·|saved mean − mean|·invstd` on
//! x̂). PyTorch's backward takes the f32 saved mean for the mean; the two differ by
//! exactly PyTorch's rounding error, `(saved mean − mean)·invstd·Σdy` on dγ. A
//! channel whose `x`, `dy` or statistics are not all finite is PyTorch's (x̂ from the
//! saved mean), its infinities and NaNs propagating per element.
//! [`BatchNorm::backward_eval`]: of the eval forward, whose statistics are constants:
//! `dx = dy·γ/√(running_var + eps)`. Both write [`Grads`]: `dx`, and `dγ`, `dβ` when
//! asked for (PyTorch's `output_mask`), also without γ and β.
//!
//! ## Fused BN + ReLU, BN + Add + ReLU
//!
//! [`BatchNorm::eval_fused`] and [`BatchNorm::train_fused`] apply a [`Fusion`] in the
//! normalization's own elementwise pass: [`Fusion::Relu`], `y = relu(bn(x))`, or
//! [`Fusion::AddRelu`], `y = relu(bn(x) + z)` (a ResNet block's residual), with the
//! statistics, saved and running values of `eval` and `train`. Their backward passes,
//! [`BatchNorm::backward_fused`] and [`BatchNorm::backward_eval_fused`], take the fused
//! output `y` (as PyTorch's ReLU backward does: one more read, no mask to store) and a
//! [`FusionGrad`]: `g = dy` where `y > 0` or `y` is NaN, else 0, then batch norm's
//! backward on `g`; [`FusionGrad::AddRelu`] also writes `dz = g`. `relu` keeps NaN and
//! −0, as `torch.relu`.
//!
//! ## Batch Renormalization
//!
//! [`BatchNorm::train_renorm`] (Ioffe 2017) corrects the batch statistics towards the
//! running ones: `r = clip(σ_B/σ, 1/rmax, rmax)`, `d = clip((μ_B − μ)/σ, −dmax, dmax)`
//! from the running statistics before their update, `y = γ·(x̂·r + d) + β`, with the
//! limits in [`Renorm`] and the saved values in [`RenormSavedMut`] (mean, invstd, r, d).
//! [`BatchNorm::backward_renorm`] treats `r` and `d` as constants:
//! `dx = γ·r·invstd·(dy − Σdy/m − x̂·Σdy·x̂/m)`, `dγ = r·Σdy·x̂ + d·Σdy`, `dβ = Σdy`.
//! `Renorm { rmax: 1.0, dmax: 0.0 }` is plain batch norm; the paper relaxes the limits
//! to about 3 and 5 over training; `f32::INFINITY` does not clip.
//!
//! ## Folding into convolution and linear weights
//!
//! In eval mode BN is `x·scale + shift` per channel, so an inference engine can remove
//! it at load time: [`fold::into_preceding`] rewrites the layer before it
//! (`W'[o, …] = W[o, …]·scale_o`, `b'_o = (b_o − mean_o)·scale_o + β_o`) and
//! [`fold::into_following`] the layer after it (`W'[o, i, …] = W[o, i, …]·scale_i`,
//! `b'_o = b_o + Σ W[o, i, …]·shift_i`, and the values a zero-padded convolution must pad
//! with). Both work in place on the caller's slices, in f64 (every folded value rounded
//! once). [`fold::EvalBn`] is the batch norm to fold and [`fold::Layer`] the weight's
//! layout, built from the dims ([`Layer::conv2d`](fold::Layer::conv2d),
//! [`Layer::linear`](fold::Layer::linear), transposed, depthwise, TensorFlow's and
//! TFLite's layouts: the [`fold`] module's table). Grouped transposed convolutions
//! fold right, where PyTorch's `fuse_conv_bn_weights(transpose=True)` scales dim 1
//! (`out/groups` wide) by all `out` scales: an error, or a silently mis-shaped weight
//! when `out/groups = 1` (`tests/fold_golden.rs` records both).
//!
//! ## Layer, RMS, group and instance norm
//!
//! On the same engine, with the same guarantees; each saves its statistics in a
//! [`SavedMut`] (mean and invstd per row, group or instance) that its backward reads as
//! [`Saved`], and the backward writes [`Grads`]:
//!
//! - [`LayerNorm`] over [`Rows`] (`rows × len`, `len` the product of PyTorch's
//!   `normalized_shape`): `y = (x − mean)/√(var + eps)·γ + β` per row, γ and β per
//!   position;
//! - [`RmsNorm`]: `y = x/√(mean(x²) + eps)·γ` per row; [`RmsNorm::DTYPE_EPS`] is
//!   PyTorch's `eps=None`. One deviation from PyTorch: a row that holds an infinity (and
//!   no NaN) comes out all NaN, where PyTorch gives 0 for its finite values;
//! - [`GroupNorm`]: per sample and group of `C/groups` channels, then per-channel γ, β;
//!   both layouts;
//! - [`InstanceNorm`]: per sample and channel, with optional running statistics.
//!
//! ## Gradient clipping
//!
//! [`clip_grad_value`] clamps every value of several gradient slices to
//! `[−clip, clip]`; [`clip_grad_norm`] scales them all by
//! `min(1, max_norm/(total + 1e-6))`, with the total [`GradNorm`] (L2 or max) over all
//! slices computed without overflow or underflow, and [`NonFinite`] choosing what a
//! NaN or infinite total does; [`total_norm`] only measures.
//!
//! ```
//! use batchnorm::{clip_grad_norm, total_norm, GradNorm, NonFinite};
//!
//! let (mut w, mut b) = ([3.0, 0.0], [4.0]);
//! assert_eq!(total_norm(&[&w, &b], GradNorm::L2), 5.0);
//! clip_grad_norm(&mut [&mut w, &mut b], 1.0, GradNorm::L2, NonFinite::Error)?;
//! assert!((total_norm(&[&w, &b], GradNorm::L2) - 1.0).abs() < 1e-6);
//! # Ok::<(), batchnorm::Error>(())
//! ```
//!
//! ## All cores
//!
//! [`parallel`] (feature `rayon`, which links `std`): `moments`, `train`, `eval`,
//! `backward` and `backward_eval` on the current rayon thread pool, with the arguments
//! and errors of the one-core functions, and the same bits whatever the number of
//! threads.
//!
#![cfg_attr(feature = "rayon", doc = "[`parallel`]: crate::parallel")]
#![cfg_attr(
    not(feature = "rayon"),
    doc = "[`parallel`]: https://docs.rs/batchnorm/latest/batchnorm/parallel/"
)]
//!
//! ## Across processes
//!
//! [`distributed`]: the train forward and backward split around a reduction the caller
//! does across ranks (SyncBatchNorm): local [`moments`], merged with [`Moments::merge`],
//! then [`BatchNorm::train_with_moments`]; local [`distributed::backward_sums`], merged
//! with [`distributed::BackwardSums::merge`], then [`BatchNorm::backward_with_sums`].
//! Over one part the halves give [`BatchNorm::train`] and [`BatchNorm::backward`] bit
//! for bit. The repository's
//! [`integrations/mpi`](https://github.com/batchnorm-rs/batchnorm/tree/main/integrations/mpi)
//! is `SyncBatchNorm` over MPI.
//!
//! # Errors, never panics
//!
//! Every entry point checks every argument before it touches data and returns an
//! [`Error`] naming the argument and the rule broken: [`Error::Length`] (expected and
//! given lengths), [`Error::Overflow`] (a shape product beyond `usize`),
//! [`Error::Parameter`] (`eps` must be finite and ≥ 0, an exponential momentum finite
//! and in `[0, 1]`), [`Error::TooFewValues`] (the train forward needs `m ≥ 1`, and
//! `m ≥ 2` when it updates running statistics), [`Error::Groups`], [`Error::ZeroScale`],
//! [`Error::NonFiniteNorm`]. **On `Err` nothing has been written**: outputs, running
//! statistics and in-place tensors are as they were (the tests snapshot every buffer
//! and the guard cells around it). No public function panics on
//! any input (the repository's fuzz targets hold it to that). NaN and ±inf in the data
//! are not errors: they propagate as IEEE arithmetic says (in the train forward, to
//! their channel). The behaviour on degenerate inputs (empty shapes, constant
//! channels, `eps = 0`, momentum 0 and 1) is tabled in
//! [Accuracy and edge cases](https://github.com/batchnorm-rs/batchnorm/blob/main/docs/accuracy.md#edge-cases).
//!
//! # From PyTorch, ONNX, Keras and Flax
//!
//! | operation | here | PyTorch | ONNX | Keras | Flax (`flax.linen`) |
//! |---|---|---|---|---|---|
//! | moments | [`moments`] | `torch.var_mean(x, dims, correction=0)` | — | `keras.ops.moments` | `jnp.mean`, `jnp.var` |
//! | eval forward | [`BatchNorm::eval`] | `F.batch_norm(.., training=False)`, `BatchNorm1d/2d/3d` in `.eval()` | `BatchNormalization` | `BatchNormalization`, `training=False` | `BatchNorm(use_running_average=True)` |
//! | train forward | [`BatchNorm::train`] | `F.batch_norm(.., training=True)`, `torch.native_batch_norm` | `BatchNormalization`, `training_mode=1` | `BatchNormalization`, `training=True` | `BatchNorm(use_running_average=False)` |
//! | backward | [`BatchNorm::backward`], [`BatchNorm::backward_eval`] | `native_batch_norm_backward` | — | autodiff | autodiff |
//! | BN + ReLU, BN + Add + ReLU | [`BatchNorm::train_fused`], [`BatchNorm::eval_fused`] | `F.relu(F.batch_norm(..))`, `F.relu(F.batch_norm(..) + z)` | `BatchNormalization` → (`Add` →) `Relu` | — | — |
//! | Batch Renormalization | [`BatchNorm::train_renorm`] | — | — | `BatchNormalization(renorm=True, renorm_clipping=..)` (tf.keras 2) | — |
//! | folding | [`fold::into_preceding`], [`fold::into_following`] | `torch.nn.utils.fusion.fuse_conv_bn_eval`, `fuse_linear_bn_eval` | (a graph optimization of the runtime) | (the TFLite converter's) | — |
//! | layer norm | [`LayerNorm`] | `F.layer_norm`, `nn.LayerNorm` | `LayerNormalization` | `LayerNormalization` | `LayerNorm` |
//! | RMS norm | [`RmsNorm`] | `F.rms_norm`, `nn.RMSNorm` | `RMSNormalization` (opset 23) | `RMSNormalization` | `RMSNorm` |
//! | group norm | [`GroupNorm`] | `F.group_norm`, `nn.GroupNorm` | `GroupNormalization` (opset 21) | `GroupNormalization` | `GroupNorm` |
//! | instance norm | [`InstanceNorm`] | `F.instance_norm`, `nn.InstanceNorm1d/2d/3d` | `InstanceNormalization` | `GroupNormalization(groups=-1)` | `InstanceNorm` |
//! | clipping | [`clip_grad_value`], [`clip_grad_norm`], [`total_norm`] | `clip_grad_value_`, `clip_grad_norm_`, `get_total_norm` | — | optimizer `clipvalue`, `global_clipnorm` | `optax.clip`, `optax.clip_by_global_norm` |
//! | synchronized BN | [`distributed`] | `nn.SyncBatchNorm` | — | `BatchNormalization(synchronized=True)` | `BatchNorm(axis_name=..)` |
//!
//! Batch norm's conventions:
//!
//! | | here | PyTorch | ONNX | Keras | Flax |
//! |---|---|---|---|---|---|
//! | γ, β | [`BatchNorm`]`::{gamma, beta}`, `None` = 1, 0 | `weight`, `bias`; `affine=False` | `scale`, `B` | `gamma`, `beta`; `scale=False`, `center=False` | `scale`, `bias`; `use_scale`, `use_bias` |
//! | running statistics | [`Running`]`::{mean, var}` | `running_mean`, `running_var` | `input_mean`, `input_var` → `running_mean`, `running_var` | `moving_mean`, `moving_variance` | `batch_stats`: `mean`, `var` |
//! | momentum `m` | [`Momentum::Exponential`]`(f)`: `new = (1 − f)·old + f·batch` | `momentum=m` (0.1) → `Exponential(m)`; `momentum=None` → [`Momentum::Cumulative`] | `momentum=m` (0.9) → `Exponential(1 − m)` | `momentum=m` (0.99) → `Exponential(1 − m)` | `momentum=m` (0.99) → `Exponential(1 − m)` |
//! | running variance | [`Running::correction`]: [`Correction::Unbiased`] `var·m/(m − 1)` or [`Correction::Biased`] `var` | unbiased | biased (`training_mode=1`) | biased¹ | biased |
//! | eps (default) | [`BatchNorm::eps`] (no default) | `eps=1e-5` | `epsilon=1e-5` | `epsilon=1e-3` | `epsilon=1e-5` |
//! | channel axis | the [`Shape`]'s layout | dim 1 (NCHW; `channels_last` memory is NHWC) | 1 (NCHW) | `axis=-1` (NHWC) | `axis=-1` (NHWC) |
//!
//! ¹ Keras 3 (`keras.ops.moments`); TensorFlow's fused kernel, which tf.keras 2 uses
//! where it can (4-D inputs), keeps the unbiased one.
//!
//! The neighbours: `len` of [`Rows`] is the product of the normalized dims (PyTorch's
//! `normalized_shape`; ONNX's dims from `axis` on, default `axis=-1`). For ONNX's
//! `stash_type=1` (f32 statistics) ours are computed in f64 from the f32 inputs and
//! saved as f32: they are ONNX's `Mean` and `InvStdDev` outputs. Default eps:
//!
//! | | PyTorch | ONNX | Keras | Flax |
//! |---|---|---|---|---|
//! | [`LayerNorm`] | `1e-5` | `1e-5` | `1e-3` | `1e-6` |
//! | [`RmsNorm`] | `None`: [`RmsNorm::DTYPE_EPS`] | `1e-5` | `1e-6` | `1e-6` |
//! | [`GroupNorm`] | `1e-5` | `1e-5` | `1e-3` | `1e-6` |
//! | [`InstanceNorm`] | `1e-5` | `1e-5` | `1e-3` (`GroupNormalization`) | `1e-6` |
//!
//! # More
//!
//! In the repository: [the demonstrations](https://github.com/batchnorm-rs/batchnorm/blob/main/docs/demonstration.md)
//! (a network with and without BN, why BN works, small batches),
//! [performance](https://github.com/batchnorm-rs/batchnorm/blob/main/docs/performance.md),
//! [accuracy and edge cases](https://github.com/batchnorm-rs/batchnorm/blob/main/docs/accuracy.md),
//! [embedded use](https://github.com/batchnorm-rs/batchnorm/blob/main/docs/embedded.md),
//! [scaling out](https://github.com/batchnorm-rs/batchnorm/blob/main/docs/scaling.md),
//! [tests and checks](https://github.com/batchnorm-rs/batchnorm/blob/main/docs/testing.md).
#![no_std]
#![forbid(unsafe_code)]
#![forbid(missing_docs)]

mod backward;
mod clip;
pub mod distributed;
mod engine;
mod error;
pub mod fold;
mod forward;
mod fused;
mod group_norm;
mod kernels;
mod lanes;
mod layer_norm;
mod moments;
#[cfg(feature = "rayon")]
pub mod parallel;
mod renorm;
mod running;
mod saved;
mod shape;

pub use backward::Grads;
pub use clip::{clip_grad_norm, clip_grad_value, total_norm, GradNorm, NonFinite};
pub use error::Error;
pub use forward::BatchNorm;
pub use fused::{Fusion, FusionGrad};
pub use group_norm::{GroupNorm, InstanceNorm};
pub use layer_norm::{LayerNorm, RmsNorm, Rows};
pub use moments::{moments, Moments};
pub use renorm::{Renorm, RenormSaved, RenormSavedMut};
pub use running::{Correction, Momentum, Running, RunningStats};
pub use saved::{Saved, SavedMut};
pub use shape::{Layout, Shape};

/// The README's example, compiled and run by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
