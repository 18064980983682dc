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

use batchnorm::distributed::{self, BackwardSums};
use batchnorm::fold::{self, EvalBn, Layer};
use batchnorm::{
    BatchNorm, Correction, Error, Fusion, FusionGrad, GradNorm, Grads, GroupNorm, InstanceNorm,
    LayerNorm, Momentum, Moments, NonFinite, Renorm, RenormSaved, RenormSavedMut, RmsNorm, Rows,
    Running, RunningStats, Saved, SavedMut, Shape,
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
    fn pf_shape_nc(n: usize, c: usize) -> Shape {
        Shape::nc(n, c)
    }
    fn pf_shape_ncl(n: usize, c: usize, l: usize) -> Shape {
        Shape::ncl(n, c, l)
    }
    fn pf_shape_nlc(n: usize, l: usize, c: usize) -> Shape {
        Shape::nlc(n, l, c)
    }
    fn pf_shape_nchw(n: usize, c: usize, h: usize, w: usize) -> Shape {
        Shape::nchw(n, c, h, w)
    }
    fn pf_shape_nhwc(n: usize, h: usize, w: usize, c: usize) -> Shape {
        Shape::nhwc(n, h, w, c)
    }
    fn pf_shape_ncdhw(n: usize, c: usize, d: usize, h: usize, w: usize) -> Shape {
        Shape::ncdhw(n, c, d, h, w)
    }
    fn pf_shape_ndhwc(n: usize, d: usize, h: usize, w: usize, c: usize) -> Shape {
        Shape::ndhwc(n, d, h, w, c)
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

    // ---------------------------------------------------------------- running, saved
    fn pf_running_new<'a>(mean: &'a mut [f32], var: &'a mut [f32], momentum: Momentum) -> Running<'a> {
        Running::new(mean, var, momentum)
    }
    fn pf_running_with_correction<'a>(running: Running<'a>, correction: Correction) -> Running<'a> {
        running.with_correction(correction)
    }
    fn pf_running_stats<'a>(running: &'a Running<'_>) -> RunningStats<'a> {
        running.stats()
    }
    fn pf_saved_mut_as_saved<'a>(saved: &'a SavedMut<'_>) -> Saved<'a> {
        saved.as_saved()
    }
    fn pf_renorm_saved_mut_as_saved<'a>(saved: &'a RenormSavedMut<'_>) -> RenormSaved<'a> {
        saved.as_saved()
    }

    // ---------------------------------------------------------------- forward
    fn pf_batchnorm_eval(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, stats: RunningStats<'_>,
    ) -> Result<(), Error> {
        bn.eval(x, y, shape, stats)
    }
    fn pf_batchnorm_eval_in_place(
        bn: &BatchNorm<'_>, x: &mut [f32], shape: Shape, stats: RunningStats<'_>,
    ) -> Result<(), Error> {
        bn.eval_in_place(x, shape, stats)
    }
    fn pf_batchnorm_train(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        bn.train(x, y, shape, saved, running)
    }
    fn pf_batchnorm_train_in_place(
        bn: &BatchNorm<'_>, x: &mut [f32], shape: Shape, saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        bn.train_in_place(x, shape, saved, running)
    }

    // ---------------------------------------------------------------- backward
    fn pf_batchnorm_backward(
        bn: &BatchNorm<'_>, x: &[f32], dy: &[f32], shape: Shape, saved: Saved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward(x, dy, shape, saved, grads)
    }
    fn pf_batchnorm_backward_eval(
        bn: &BatchNorm<'_>, x: &[f32], dy: &[f32], shape: Shape, stats: RunningStats<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_eval(x, dy, shape, stats, grads)
    }

    // ---------------------------------------------------------------- fused
    fn pf_batchnorm_eval_fused(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, fusion: Fusion<'_>,
        stats: RunningStats<'_>,
    ) -> Result<(), Error> {
        bn.eval_fused(x, y, shape, fusion, stats)
    }
    fn pf_batchnorm_train_fused(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, fusion: Fusion<'_>,
        saved: SavedMut<'_>, running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        bn.train_fused(x, y, shape, fusion, saved, running)
    }
    fn pf_batchnorm_backward_fused(
        bn: &BatchNorm<'_>, x: &[f32], dy: &[f32], y: &[f32], shape: Shape,
        fusion: FusionGrad<'_>, saved: Saved<'_>, grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_fused(x, dy, y, shape, fusion, saved, grads)
    }
    fn pf_batchnorm_backward_eval_fused(
        bn: &BatchNorm<'_>, x: &[f32], dy: &[f32], y: &[f32], shape: Shape,
        fusion: FusionGrad<'_>, stats: RunningStats<'_>, grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_eval_fused(x, dy, y, shape, fusion, stats, grads)
    }

    // ---------------------------------------------------------------- renorm
    fn pf_batchnorm_train_renorm(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, renorm: Renorm,
        saved: RenormSavedMut<'_>, running: &mut Running<'_>,
    ) -> Result<(), Error> {
        bn.train_renorm(x, y, shape, renorm, saved, running)
    }
    fn pf_batchnorm_backward_renorm(
        bn: &BatchNorm<'_>, x: &[f32], dy: &[f32], shape: Shape, saved: RenormSaved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_renorm(x, dy, shape, saved, grads)
    }

    // ---------------------------------------------------------------- distributed
    fn pf_distributed_backward_sums_merge(a: BackwardSums, b: BackwardSums) -> BackwardSums {
        a.merge(b)
    }
    fn pf_distributed_backward_sums(
        x: &[f32], dy: &[f32], shape: Shape, save_mean: &[f32], out: &mut [BackwardSums],
    ) -> Result<(), Error> {
        distributed::backward_sums(x, dy, shape, save_mean, out)
    }
    fn pf_batchnorm_train_with_moments(
        bn: &BatchNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, global: &[Moments],
        saved: SavedMut<'_>, running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        bn.train_with_moments(x, y, shape, global, saved, running)
    }
    fn pf_batchnorm_check_train_part(
        bn: &BatchNorm<'_>, x: &[f32], y: &[f32], shape: Shape, saved: Saved<'_>,
        running: Option<&Running<'_>>,
    ) -> Result<(), Error> {
        bn.check_train_part(x, y, shape, saved, running)
    }
    fn pf_batchnorm_check_backward_part(
        bn: &BatchNorm<'_>, x: &[f32], dy: &[f32], shape: Shape, saved: Saved<'_>,
        grads: &Grads<'_>,
    ) -> Result<(), Error> {
        bn.check_backward_part(x, dy, shape, saved, grads)
    }
    fn pf_batchnorm_backward_with_sums(
        bn: &BatchNorm<'_>, x: &[f32], dy: &[f32], shape: Shape, saved: Saved<'_>,
        global: &[BackwardSums], count: u64, grads: Grads<'_>,
    ) -> Result<(), Error> {
        bn.backward_with_sums(x, dy, shape, saved, global, count, grads)
    }

    // ---------------------------------------------------------------- row norms
    fn pf_rows_new(rows: usize, len: usize) -> Rows {
        Rows::new(rows, len)
    }
    fn pf_rows_count(rows: &Rows) -> Result<usize, Error> {
        rows.count()
    }
    fn pf_layernorm_forward(
        ln: &LayerNorm<'_>, x: &[f32], y: &mut [f32], rows: Rows, saved: SavedMut<'_>,
    ) -> Result<(), Error> {
        ln.forward(x, y, rows, saved)
    }
    fn pf_layernorm_forward_in_place(
        ln: &LayerNorm<'_>, x: &mut [f32], rows: Rows, saved: SavedMut<'_>,
    ) -> Result<(), Error> {
        ln.forward_in_place(x, rows, saved)
    }
    fn pf_layernorm_backward(
        ln: &LayerNorm<'_>, x: &[f32], dy: &[f32], rows: Rows, saved: Saved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        ln.backward(x, dy, rows, saved, grads)
    }
    fn pf_rmsnorm_forward(
        rms: &RmsNorm<'_>, x: &[f32], y: &mut [f32], rows: Rows, invstd: &mut [f32],
    ) -> Result<(), Error> {
        rms.forward(x, y, rows, invstd)
    }
    fn pf_rmsnorm_forward_in_place(
        rms: &RmsNorm<'_>, x: &mut [f32], rows: Rows, invstd: &mut [f32],
    ) -> Result<(), Error> {
        rms.forward_in_place(x, rows, invstd)
    }
    fn pf_rmsnorm_backward(
        rms: &RmsNorm<'_>, x: &[f32], dy: &[f32], rows: Rows, invstd: &[f32], grads: Grads<'_>,
    ) -> Result<(), Error> {
        rms.backward(x, dy, rows, invstd, grads)
    }

    // ---------------------------------------------------------------- group norms
    fn pf_groupnorm_forward(
        gn: &GroupNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, saved: SavedMut<'_>,
    ) -> Result<(), Error> {
        gn.forward(x, y, shape, saved)
    }
    fn pf_groupnorm_forward_in_place(
        gn: &GroupNorm<'_>, x: &mut [f32], shape: Shape, saved: SavedMut<'_>,
    ) -> Result<(), Error> {
        gn.forward_in_place(x, shape, saved)
    }
    fn pf_groupnorm_backward(
        gn: &GroupNorm<'_>, x: &[f32], dy: &[f32], shape: Shape, saved: Saved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        gn.backward(x, dy, shape, saved, grads)
    }
    fn pf_instancenorm_forward(
        inorm: &InstanceNorm<'_>, x: &[f32], y: &mut [f32], shape: Shape, saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        inorm.forward(x, y, shape, saved, running)
    }
    fn pf_instancenorm_forward_in_place(
        inorm: &InstanceNorm<'_>, x: &mut [f32], shape: Shape, saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        inorm.forward_in_place(x, shape, saved, running)
    }
    fn pf_instancenorm_backward(
        inorm: &InstanceNorm<'_>, x: &[f32], dy: &[f32], shape: Shape, saved: Saved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        inorm.backward(x, dy, shape, saved, grads)
    }

    // ---------------------------------------------------------------- clipping
    fn pf_clip_grad_value(grads: &mut [&mut [f32]], clip_value: f32) -> Result<(), Error> {
        batchnorm::clip_grad_value(grads, clip_value)
    }
    fn pf_total_norm(grads: &[&[f32]], norm: GradNorm) -> f32 {
        batchnorm::total_norm(grads, norm)
    }
    fn pf_clip_grad_norm(
        grads: &mut [&mut [f32]], max_norm: f32, norm: GradNorm, nonfinite: NonFinite,
    ) -> Result<f32, Error> {
        batchnorm::clip_grad_norm(grads, max_norm, norm, nonfinite)
    }

    // ---------------------------------------------------------------- fold
    fn pf_fold_evalbn_new<'a>(bn: BatchNorm<'a>, stats: RunningStats<'a>) -> EvalBn<'a> {
        EvalBn::new(bn, stats)
    }
    fn pf_fold_layer_linear(in_features: usize, out_features: usize) -> Layer {
        Layer::linear(in_features, out_features)
    }
    fn pf_fold_layer_linear_in_out(in_features: usize, out_features: usize) -> Layer {
        Layer::linear_in_out(in_features, out_features)
    }
    fn pf_fold_layer_conv1d(in_channels: usize, out_channels: usize, kernel_size: usize) -> Layer {
        Layer::conv1d(in_channels, out_channels, kernel_size)
    }
    fn pf_fold_layer_conv2d(in_channels: usize, out_channels: usize, kernel_size: [usize; 2]) -> Layer {
        Layer::conv2d(in_channels, out_channels, kernel_size)
    }
    fn pf_fold_layer_conv3d(in_channels: usize, out_channels: usize, kernel_size: [usize; 3]) -> Layer {
        Layer::conv3d(in_channels, out_channels, kernel_size)
    }
    fn pf_fold_layer_conv(in_channels: usize, out_channels: usize, kernel_shape: &[usize]) -> Layer {
        Layer::conv(in_channels, out_channels, kernel_shape)
    }
    fn pf_fold_layer_depthwise(channels: usize, multiplier: usize, kernel_shape: &[usize]) -> Layer {
        Layer::depthwise(channels, multiplier, kernel_shape)
    }
    fn pf_fold_layer_conv_transpose1d(in_channels: usize, out_channels: usize, kernel_size: usize) -> Layer {
        Layer::conv_transpose1d(in_channels, out_channels, kernel_size)
    }
    fn pf_fold_layer_conv_transpose2d(
        in_channels: usize, out_channels: usize, kernel_size: [usize; 2],
    ) -> Layer {
        Layer::conv_transpose2d(in_channels, out_channels, kernel_size)
    }
    fn pf_fold_layer_conv_transpose3d(
        in_channels: usize, out_channels: usize, kernel_size: [usize; 3],
    ) -> Layer {
        Layer::conv_transpose3d(in_channels, out_channels, kernel_size)
    }
    fn pf_fold_layer_conv_transpose(
        in_channels: usize, out_channels: usize, kernel_shape: &[usize],
    ) -> Layer {
        Layer::conv_transpose(in_channels, out_channels, kernel_shape)
    }
    fn pf_fold_layer_conv_hwio(in_channels: usize, out_channels: usize, kernel_shape: &[usize]) -> Layer {
        Layer::conv_hwio(in_channels, out_channels, kernel_shape)
    }
    fn pf_fold_layer_conv_ohwi(in_channels: usize, out_channels: usize, kernel_shape: &[usize]) -> Layer {
        Layer::conv_ohwi(in_channels, out_channels, kernel_shape)
    }
    fn pf_fold_layer_depthwise_hwio(channels: usize, multiplier: usize, kernel_shape: &[usize]) -> Layer {
        Layer::depthwise_hwio(channels, multiplier, kernel_shape)
    }
    fn pf_fold_layer_grouped(layer: Layer, groups: usize) -> Layer {
        layer.grouped(groups)
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
