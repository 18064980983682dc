//! Every public entry point of `batchnorm`, one wrapper each. run.sh links each
//! wrapper on its own, at opt-level 3 and "s", for x86-64, Cortex-M4F and AArch64,
//! and fails naming the wrapper when a panic is still reachable from it.
//!
//! # Adding an entry point
//! Add one `fn pf_<what>(<its arguments>) -> <its result> { <the call> }` inside
//! `entry_points!` below, in the section of its module, `fn` first on its line:
//! - name it `pf_` + the path users write (`BatchNorm::eval` is `pf_batchnorm_eval`);
//!   run.sh finds wrappers by that prefix, so nothing else needs to change;
//! - take every argument of the call as a wrapper argument, the receiver and any
//!   enum included (`fusion: Fusion<'_>`, not `Fusion::Relu`), so that the proof
//!   covers every value a caller can pass; constants would let the optimiser delete
//!   the paths a caller's other values take;
//! - return the call's result as it is.
//!
//! Every new public function or method needs one: the other norms (LayerNorm,
//! GroupNorm, InstanceNorm, RMSNorm), gradient clipping, the distributed and parallel
//! entry points. If run.sh then reports it, it prints the panic sites (with Debian's
//! `llvm`): make each index provably in range, or go through `get` with a fallback the
//! checked arguments never take (see `src/engine/` for both).
//!
//! A public generic function needs one wrapper per instantiation users get (one per
//! element type, say). A `const fn` needs a wrapper too: it also runs at run time.
//! Trait implementations users call (`Default`, say) count; `Display` cannot pass (see
//! the end of this file).

use batchnorm::fold::{self, EvalBn, Layer};
use batchnorm::{
    BatchNorm, Error, Fusion, FusionGrad, Grads, Moments, Renorm, RenormSaved, Running, Shape,
};

entry_points! {
    // ---------------------------------------------------------------- shape
    fn pf_shape_channels_first(batch: usize, channels: usize, spatial: usize) -> Shape {
        Shape::channels_first(batch, channels, spatial)
    }
    fn pf_shape_channels_last(batch: usize, channels: usize, spatial: usize) -> Shape {
        Shape::channels_last(batch, channels, spatial)
    }
    fn pf_shape_rows(batch: usize, channels: usize) -> Shape {
        Shape::rows(batch, channels)
    }
    fn pf_shape_len(shape: &Shape) -> Result<usize, Error> {
        shape.len()
    }
    fn pf_shape_per_channel(shape: &Shape) -> Result<usize, Error> {
        shape.per_channel()
    }

    // ---------------------------------------------------------------- moments
    fn pf_moments(x: &[f32], shape: Shape, out: &mut [Moments]) -> Result<(), Error> {
        batchnorm::moments(x, shape, out)
    }
    fn pf_moments_of(xs: &[f32]) -> Moments {
        Moments::of(xs)
    }
    fn pf_moments_merge(a: Moments, b: Moments) -> Moments {
        a.merge(b)
    }
    fn pf_moments_var(m: &Moments) -> f64 {
        m.var()
    }
    fn pf_moments_unbiased_var(m: &Moments) -> f64 {
        m.unbiased_var()
    }
    fn pf_moments_default() -> Moments {
        Moments::default()
    }

    // ---------------------------------------------------------------- forward
    fn pf_batchnorm_eval(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, running_mean: &[f32],
        running_var: &[f32],
    ) -> Result<(), Error> {
        bn.eval(x, y, shape, running_mean, running_var)
    }
    fn pf_batchnorm_eval_in_place(
        bn: &BatchNorm<'_>, x: &mut [f32], shape: Shape, running_mean: &[f32], running_var: &[f32],
    ) -> Result<(), Error> {
        bn.eval_in_place(x, shape, running_mean, running_var)
    }
    fn pf_batchnorm_train(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, save_mean: &mut [f32],
        save_invstd: &mut [f32], running: Option<Running<'_>>,
    ) -> Result<(), Error> {
        bn.train(x, y, shape, save_mean, save_invstd, running)
    }
    fn pf_batchnorm_train_in_place(
        bn: &BatchNorm<'_>, x: &mut [f32], shape: Shape, save_mean: &mut [f32],
        save_invstd: &mut [f32], running: Option<Running<'_>>,
    ) -> Result<(), Error> {
        bn.train_in_place(x, shape, save_mean, save_invstd, running)
    }

    // ---------------------------------------------------------------- backward
    fn pf_batchnorm_backward(
        bn: &BatchNorm<'_>, dy: &[f32], x: &[f32], shape: Shape, save_mean: &[f32],
        save_invstd: &[f32], grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward(dy, x, shape, save_mean, save_invstd, grads)
    }
    fn pf_batchnorm_backward_eval(
        bn: &BatchNorm<'_>, dy: &[f32], x: &[f32], shape: Shape, running_mean: &[f32],
        running_var: &[f32], grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_eval(dy, x, shape, running_mean, running_var, grads)
    }

    // ---------------------------------------------------------------- fused
    fn pf_batchnorm_eval_fused(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, fusion: Fusion<'_>,
        running_mean: &[f32], running_var: &[f32],
    ) -> Result<(), Error> {
        bn.eval_fused(x, y, shape, fusion, running_mean, running_var)
    }
    fn pf_batchnorm_train_fused(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, fusion: Fusion<'_>,
        save_mean: &mut [f32], save_invstd: &mut [f32], running: Option<Running<'_>>,
    ) -> Result<(), Error> {
        bn.train_fused(x, y, shape, fusion, save_mean, save_invstd, running)
    }
    fn pf_batchnorm_backward_fused(
        bn: &BatchNorm<'_>, dy: &[f32], x: &[f32], y: &[f32], shape: Shape,
        fusion: FusionGrad<'_>, save_mean: &[f32], save_invstd: &[f32], grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_fused(dy, x, y, shape, fusion, save_mean, save_invstd, grads)
    }
    fn pf_batchnorm_backward_eval_fused(
        bn: &BatchNorm<'_>, dy: &[f32], x: &[f32], y: &[f32], shape: Shape,
        fusion: FusionGrad<'_>, running_mean: &[f32], running_var: &[f32], grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_eval_fused(dy, x, y, shape, fusion, running_mean, running_var, grads)
    }

    // ---------------------------------------------------------------- renorm
    fn pf_batchnorm_train_renorm(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, renorm: Renorm,
        saved: RenormSaved<'_>, running: Running<'_>,
    ) -> Result<(), Error> {
        bn.train_renorm(x, y, shape, renorm, saved, running)
    }
    fn pf_batchnorm_backward_renorm(
        bn: &BatchNorm<'_>, dy: &[f32], x: &[f32], shape: Shape, saved: &RenormSaved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_renorm(dy, x, shape, saved, grads)
    }

    // ---------------------------------------------------------------- fold
    fn pf_fold_layer_linear(in_features: usize, out_features: usize) -> Layer {
        Layer::linear(in_features, out_features)
    }
    fn pf_fold_layer_linear_in_out(in_features: usize, out_features: usize) -> Layer {
        Layer::linear_in_out(in_features, out_features)
    }
    fn pf_fold_into_preceding(
        bn: &EvalBn<'_>, layer: Layer, weight: &mut [f32], bias: &mut [f32],
    ) -> Result<(), Error> {
        fold::into_preceding(bn, layer, weight, bias)
    }
    fn pf_fold_into_following(
        bn: &EvalBn<'_>, layer: Layer, weight: &mut [f32], bias: &mut [f32],
        pad: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        fold::into_following(bn, layer, weight, bias, pad)
    }
}

// Not listed: `Display` (and the derived `Debug`) of `Error` and the other types. They
// format through `core::fmt`, whose float formatting (`Error::Parameter` holds an
// f32) keeps assertions the optimiser cannot remove, inside core; integer and string
// formatting alone link without a panic path. The kernels never format.
