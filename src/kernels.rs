//! Every kernel of the crate: what one vector's place computes, with the per-channel
//! constants `k` the entry points compute. The [`engine`](crate::engine) walks them
//! over a tensor.

use crate::engine::{Map, MapSum, Reduce};
use crate::lanes::V;

/// `max(v, 0)` as PyTorch's ReLU: negative values become +0, NaN and −0 stay.
#[inline(always)]
fn relu(v: V) -> V {
    v.simd_lt(V::ZERO).bitselect(V::ZERO, v)
}

/// 0 where the ReLU's output `y` is at most 0, else `dy` (PyTorch's
/// `threshold_backward(dy, y, 0)`: a NaN `y` lets `dy` through).
#[inline(always)]
fn relu_grad(dy: V, y: V) -> V {
    y.simd_le(V::ZERO).bitselect(V::ZERO, dy)
}

/// Moments around a shift: `Σd` and `Σd²` with `d = x − shift`; `k = [shift]`.
#[derive(Clone, Copy)]
pub(crate) struct Shifted;

impl Reduce<1, 1, 2> for Shifted {
    #[inline(always)]
    fn pad(k: &[V; 1]) -> [V; 1] {
        // x = shift adds 0 to both sums.
        [k[0]]
    }

    #[inline(always)]
    fn step(k: &[V; 1], [x]: [V; 1], acc: &mut [V; 2]) -> V {
        let d = x - k[0];
        acc[0] += d;
        acc[1] = d.mul_add(d, acc[1]);
        V::ZERO
    }
}

/// `y = x·scale + shift`; `k = [scale, shift]`: the eval forward.
#[derive(Clone, Copy)]
pub(crate) struct Affine;

impl Map<1, 2> for Affine {
    #[inline(always)]
    fn map(k: &[V; 2], [x]: [V; 1]) -> V {
        x.mul_add(k[0], k[1])
    }
}

/// `y = relu(x·scale + shift)`; `k = [scale, shift]`.
#[derive(Clone, Copy)]
pub(crate) struct AffineRelu;

impl Map<1, 2> for AffineRelu {
    #[inline(always)]
    fn map(k: &[V; 2], x: [V; 1]) -> V {
        relu(Affine::map(k, x))
    }
}

/// `y = relu(x·scale + shift + z)`; `k = [scale, shift]`.
#[derive(Clone, Copy)]
pub(crate) struct AffineAddRelu;

impl Map<2, 2> for AffineAddRelu {
    #[inline(always)]
    fn map(k: &[V; 2], [x, z]: [V; 2]) -> V {
        relu(Affine::map(k, [x]) + z)
    }
}

/// `y = (x − mean)·scale + shift`; `k = [mean, scale, shift]`. The train forward:
/// `mean` is the f32 batch mean and `shift` carries what f32 misses of it.
#[derive(Clone, Copy)]
pub(crate) struct Centered;

impl Map<1, 3> for Centered {
    #[inline(always)]
    fn map(k: &[V; 3], [x]: [V; 1]) -> V {
        (x - k[0]).mul_add(k[1], k[2])
    }
}

/// `relu` of [`Centered`].
#[derive(Clone, Copy)]
pub(crate) struct CenteredRelu;

impl Map<1, 3> for CenteredRelu {
    #[inline(always)]
    fn map(k: &[V; 3], x: [V; 1]) -> V {
        relu(Centered::map(k, x))
    }
}

/// `relu(Centered(x) + z)`.
#[derive(Clone, Copy)]
pub(crate) struct CenteredAddRelu;

impl Map<2, 3> for CenteredAddRelu {
    #[inline(always)]
    fn map(k: &[V; 3], [x, z]: [V; 2]) -> V {
        relu(Centered::map(k, [x]) + z)
    }
}

/// `Σdy` and `Σdy·(x − mean)` (the eval backward's sums, `A = 2`), and also
/// `Σ(x − mean)` (the train backward's, `A = 3`: what the f32 saved mean misses of
/// the batch mean); inputs `[dy, x]`, `k = [mean]`.
#[derive(Clone, Copy)]
pub(crate) struct GradSums;

impl Reduce<2, 1, 2> for GradSums {
    #[inline(always)]
    fn pad(k: &[V; 1]) -> [V; 2] {
        // dy = 0 and x = mean add nothing to either sum.
        [V::ZERO, k[0]]
    }

    #[inline(always)]
    fn step(k: &[V; 1], [dy, x]: [V; 2], acc: &mut [V; 2]) -> V {
        acc[0] += dy;
        acc[1] = dy.mul_add(x - k[0], acc[1]);
        V::ZERO
    }
}

impl Reduce<2, 1, 3> for GradSums {
    #[inline(always)]
    fn pad(k: &[V; 1]) -> [V; 2] {
        // dy = 0 and x = mean add nothing to any of the sums.
        [V::ZERO, k[0]]
    }

    #[inline(always)]
    fn step(k: &[V; 1], [dy, x]: [V; 2], acc: &mut [V; 3]) -> V {
        let d = x - k[0];
        acc[0] += dy;
        acc[1] = dy.mul_add(d, acc[1]);
        acc[2] += d;
        V::ZERO
    }
}

/// [`GradSums`] of `g` (0 where `y ≤ 0`, else `dy`), the gradient behind a ReLU whose
/// output is `y`;
/// inputs `[dy, y, x]`. Writes `g` when `OUT` (the residual's gradient of
/// BN + Add + ReLU).
#[derive(Clone, Copy)]
pub(crate) struct ReluGradSums<const OUT: bool>;

impl<const OUT: bool> Reduce<3, 1, 2> for ReluGradSums<OUT> {
    const WRITES: bool = OUT;

    #[inline(always)]
    fn pad(k: &[V; 1]) -> [V; 3] {
        [V::ZERO, V::ZERO, k[0]]
    }

    #[inline(always)]
    fn step(k: &[V; 1], [dy, y, x]: [V; 3], acc: &mut [V; 2]) -> V {
        let g = relu_grad(dy, y);
        GradSums::step(k, [g, x], acc);
        g
    }
}

/// `Σ(x − mean)` over every `x`, masked or not.
impl<const OUT: bool> Reduce<3, 1, 3> for ReluGradSums<OUT> {
    const WRITES: bool = OUT;

    #[inline(always)]
    fn pad(k: &[V; 1]) -> [V; 3] {
        [V::ZERO, V::ZERO, k[0]]
    }

    #[inline(always)]
    fn step(k: &[V; 1], [dy, y, x]: [V; 3], acc: &mut [V; 3]) -> V {
        let g = relu_grad(dy, y);
        GradSums::step(k, [g, x], acc);
        g
    }
}

/// `dx = (dy·k + (x − mean)·a + b)·p`, the train backward's input gradient; inputs
/// `[dy, x]`, `k = [k, mean, a, b, p]` (`p` a power of two that keeps the others in
/// f32's range).
#[derive(Clone, Copy)]
pub(crate) struct GradInput;

impl Map<2, 5> for GradInput {
    #[inline(always)]
    fn map(k: &[V; 5], [dy, x]: [V; 2]) -> V {
        dy.mul_add(k[0], (x - k[1]).mul_add(k[2], k[3])) * k[4]
    }
}

/// [`GradInput`] behind a ReLU: inputs `[dy, y, x]`.
#[derive(Clone, Copy)]
pub(crate) struct ReluGradInput;

impl Map<3, 5> for ReluGradInput {
    #[inline(always)]
    fn map(k: &[V; 5], [dy, y, x]: [V; 3]) -> V {
        GradInput::map(k, [relu_grad(dy, y), x])
    }
}

/// `dx = dy·scale`, the eval backward's input gradient; `k = [scale]`.
#[derive(Clone, Copy)]
pub(crate) struct Scale;

impl Map<1, 1> for Scale {
    #[inline(always)]
    fn map(k: &[V; 1], [dy]: [V; 1]) -> V {
        dy * k[0]
    }
}

/// [`GradSums`] that also writes the eval backward's `dx = dy·scale`; inputs
/// `[dy, x]`, `k = [mean, scale]`.
#[derive(Clone, Copy)]
pub(crate) struct ScaledGradSums;

impl Reduce<2, 2, 2> for ScaledGradSums {
    const WRITES: bool = true;

    #[inline(always)]
    fn pad(k: &[V; 2]) -> [V; 2] {
        <GradSums as Reduce<2, 1, 2>>::pad(&[k[0]])
    }

    #[inline(always)]
    fn step(k: &[V; 2], x: [V; 2], acc: &mut [V; 2]) -> V {
        GradSums::step(&[k[0]], x, acc);
        x[0] * k[1]
    }
}

/// [`ScaledGradSums`] behind a ReLU: inputs `[dy, y, x]`, `dx = g·scale`.
#[derive(Clone, Copy)]
pub(crate) struct ReluScaledGradSums;

impl Reduce<3, 2, 2> for ReluScaledGradSums {
    const WRITES: bool = true;

    #[inline(always)]
    fn pad(k: &[V; 2]) -> [V; 3] {
        <ReluGradSums<false> as Reduce<3, 1, 2>>::pad(&[k[0]])
    }

    #[inline(always)]
    fn step(k: &[V; 2], x: [V; 3], acc: &mut [V; 2]) -> V {
        ReluGradSums::<false>::step(&[k[0]], x, acc) * k[1]
    }
}

/// `dx = g·scale`, the eval backward behind a ReLU; inputs `[dy, y]`,
/// `k = [scale]`.
#[derive(Clone, Copy)]
pub(crate) struct ReluScale;

impl Map<2, 1> for ReluScale {
    #[inline(always)]
    fn map(k: &[V; 1], [dy, y]: [V; 2]) -> V {
        relu_grad(dy, y) * k[0]
    }
}

/// `dz = g`: the residual's gradient; inputs `[dy, y]`.
#[derive(Clone, Copy)]
pub(crate) struct ReluMask;

impl Map<2, 0> for ReluMask {
    #[inline(always)]
    fn map(_: &[V; 0], [dy, y]: [V; 2]) -> V {
        relu_grad(dy, y)
    }
}

/// `x̂·γ` with `x̂` as [`Centered`] computes it: a row norm's output with γ alone;
/// inputs `[x, γ]` (γ one row's worth, shared by every row), `k = [mean, invstd, fix]`.
#[derive(Clone, Copy)]
pub(crate) struct RowScale;

impl Map<2, 3> for RowScale {
    #[inline(always)]
    fn map(k: &[V; 3], [x, g]: [V; 2]) -> V {
        Centered::map(k, [x]) * g
    }
}

/// `x̂ + β`: a row norm's output with β alone; inputs `[x, β]`.
#[derive(Clone, Copy)]
pub(crate) struct RowShift;

impl Map<2, 3> for RowShift {
    #[inline(always)]
    fn map(k: &[V; 3], [x, b]: [V; 2]) -> V {
        Centered::map(k, [x]) + b
    }
}

/// `x̂·γ + β`: a row norm's output with γ and β; inputs `[x, γ, β]`.
#[derive(Clone, Copy)]
pub(crate) struct RowAffine;

impl Map<3, 3> for RowAffine {
    #[inline(always)]
    fn map(k: &[V; 3], [x, g, b]: [V; 3]) -> V {
        Centered::map(k, [x]).mul_add(g, b)
    }
}

/// A row norm's backward sums: `Σg` and `Σg·(x − mean)` with `g = dy·γ` (`dy` when
/// there is no γ). Inputs `[x, dy, γ]` or `[x, dy]`, `k = [mean, invstd]`.
#[derive(Clone, Copy)]
pub(crate) struct RowGradSums;

impl Reduce<2, 2, 2> for RowGradSums {
    #[inline(always)]
    fn pad(k: &[V; 2]) -> [V; 2] {
        // x = mean, dy = 0: both sums take 0, whatever invstd is.
        [k[0], V::ZERO]
    }

    #[inline(always)]
    fn step(k: &[V; 2], [x, g]: [V; 2], acc: &mut [V; 2]) -> V {
        acc[0] += g;
        acc[1] = g.mul_add(x - k[0], acc[1]);
        V::ZERO
    }
}

impl Reduce<3, 2, 2> for RowGradSums {
    #[inline(always)]
    fn pad(k: &[V; 2]) -> [V; 3] {
        [k[0], V::ZERO, V::ZERO]
    }

    #[inline(always)]
    fn step(k: &[V; 2], [x, dy, g]: [V; 3], acc: &mut [V; 2]) -> V {
        RowGradSums::step(k, [x, dy * g], acc)
    }
}

/// A row norm's input gradient, adding to dβ and dγ of each position:
/// `dx = (g·k + (x − mean)·a + b)·p` with `g = dy·γ` (or `dy`), and `Σdy`, `Σdy·x̂`
/// with `x̂ = (x − mean)·invstd`. Inputs `[x, dy, γ]` or `[x, dy]`,
/// `k = [mean, invstd, k, a, b, p]` (`p` a power of two that keeps the others in
/// f32's range).
#[derive(Clone, Copy)]
pub(crate) struct RowGradInput;

impl RowGradInput {
    #[inline(always)]
    fn grad(k: &[V; 6], x: V, dy: V, g: V, acc: &mut [V; 2]) -> V {
        let d = x - k[0];
        acc[0] += dy;
        acc[1] = dy.mul_add(d * k[1], acc[1]);
        g.mul_add(k[2], d.mul_add(k[3], k[4])) * k[5]
    }
}

impl MapSum<2, 6, 2> for RowGradInput {
    #[inline(always)]
    fn pad(k: &[V; 6]) -> [V; 2] {
        // x = mean, dy = 0: both sums take 0.
        [k[0], V::ZERO]
    }

    #[inline(always)]
    fn map(k: &[V; 6], [x, dy]: [V; 2], acc: &mut [V; 2]) -> V {
        RowGradInput::grad(k, x, dy, dy, acc)
    }
}

impl MapSum<3, 6, 2> for RowGradInput {
    #[inline(always)]
    fn pad(k: &[V; 6]) -> [V; 3] {
        [k[0], V::ZERO, V::ZERO]
    }

    #[inline(always)]
    fn map(k: &[V; 6], [x, dy, g]: [V; 3], acc: &mut [V; 2]) -> V {
        RowGradInput::grad(k, x, dy, dy * g, acc)
    }
}

/// `Σ(x·scale)²`; `k = [scale]`, a power of two that keeps the squares in f32's
/// range (gradient clipping's L2 norm).
#[derive(Clone, Copy)]
pub(crate) struct SumSquares;

impl Reduce<1, 1, 1> for SumSquares {
    #[inline(always)]
    fn pad(_: &[V; 1]) -> [V; 1] {
        [V::ZERO]
    }

    #[inline(always)]
    fn step(k: &[V; 1], [x]: [V; 1], acc: &mut [V; 1]) -> V {
        let v = x * k[0];
        acc[0] = v.mul_add(v, acc[0]);
        V::ZERO
    }
}

/// `clamp(x, lo, hi)` as PyTorch's: NaN stays NaN; `k = [lo, hi]`.
#[derive(Clone, Copy)]
pub(crate) struct Clamp;

impl Map<1, 2> for Clamp {
    #[inline(always)]
    fn map(k: &[V; 2], [x]: [V; 1]) -> V {
        let x = x.simd_lt(k[0]).bitselect(k[0], x);
        x.simd_gt(k[1]).bitselect(k[1], x)
    }
}
