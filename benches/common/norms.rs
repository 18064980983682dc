//! Batch norm's neighbours in the benches: our layer, RMS, group and instance norm
//! calls, and the plain scalar loops they are compared with (two passes per row or
//! group, f32 accumulators, constants hoisted, as `scalar_baseline.rs` writes batch
//! norm's).

use batchnorm::{
    Grads, GroupNorm, InstanceNorm, LayerNorm, Layout, RmsNorm, Rows, Saved, SavedMut,
};

use super::{Kernel, Norm, Work, EPS};

/// Our call of a neighbour kernel.
pub fn run(w: &mut Work, kernel: Kernel) -> Result<(), batchnorm::Error> {
    let rows = Rows::new(w.case.batch, w.case.channels * w.case.spatial);
    let (gamma, beta) = (Some(&w.gamma[..]), Some(&w.beta[..]));
    let saved = SavedMut {
        mean: &mut w.unit_mean,
        invstd: &mut w.unit_invstd,
    };
    let grads = Grads {
        dx: &mut w.out,
        dgamma: Some(&mut w.dgamma),
        dbeta: Some(&mut w.dbeta),
    };
    let groups = match w.case.norm {
        Norm::Group(g) => g,
        _ => w.case.channels,
    };
    let gn = GroupNorm {
        groups,
        eps: EPS,
        gamma,
        beta,
    };
    let inorm = InstanceNorm {
        eps: EPS,
        gamma,
        beta,
    };
    let ln = LayerNorm {
        eps: EPS,
        gamma,
        beta,
    };
    let rms = RmsNorm { eps: EPS, gamma };
    let (x, dy, shape) = (&w.x[..], &w.dy[..], w.shape);
    match kernel {
        Kernel::LayerNorm => ln.forward(x, grads.dx, rows, saved),
        Kernel::LayerNormBackward => ln.backward(x, dy, rows, saved_ref(saved), grads),
        Kernel::RmsNorm => rms.forward(x, grads.dx, rows, saved.invstd),
        Kernel::RmsNormBackward => rms.backward(x, dy, rows, saved.invstd, grads),
        Kernel::GroupNorm => gn.forward(x, grads.dx, shape, saved),
        Kernel::GroupNormBackward => gn.backward(x, dy, shape, saved_ref(saved), grads),
        Kernel::InstanceNorm => inorm.forward(x, grads.dx, shape, saved, None),
        Kernel::InstanceNormBackward => inorm.backward(x, dy, shape, saved_ref(saved), grads),
        _ => unreachable!("{kernel:?} is batch norm's"),
    }
}

fn saved_ref(s: SavedMut<'_>) -> Saved<'_> {
    Saved {
        mean: s.mean,
        invstd: s.invstd,
    }
}

/// The plain scalar loops of a neighbour kernel.
pub fn scalar(w: &mut Work, kernel: Kernel) {
    let (n, c, s) = (w.case.batch, w.case.channels, w.case.spatial);
    let last = w.layout == Layout::ChannelsLast;
    let groups = match w.case.norm {
        Norm::Group(g) => g,
        _ => c,
    };
    let g = Groups {
        n,
        c,
        s,
        groups,
        last,
    };
    let (x, dy) = (&w.x[..], &w.dy[..]);
    let (mean, invstd) = (&mut w.unit_mean[..], &mut w.unit_invstd[..]);
    let (gamma, beta) = (&w.gamma[..], &w.beta[..]);
    match kernel {
        Kernel::LayerNorm => rows_forward(x, &mut w.out, c * s, gamma, beta, mean, invstd, false),
        Kernel::RmsNorm => rows_forward(x, &mut w.out, c * s, gamma, beta, mean, invstd, true),
        Kernel::LayerNormBackward | Kernel::RmsNormBackward => {
            let rms = kernel == Kernel::RmsNormBackward;
            let (dg, db) = (&mut w.dgamma[..], &mut w.dbeta[..]);
            rows_backward(x, dy, &mut w.out, c * s, gamma, mean, invstd, dg, db, rms)
        }
        Kernel::GroupNorm | Kernel::InstanceNorm => {
            group_forward(x, &mut w.out, g, gamma, beta, mean, invstd)
        }
        Kernel::GroupNormBackward | Kernel::InstanceNormBackward => {
            let (dg, db) = (&mut w.dgamma[..], &mut w.dbeta[..]);
            group_backward(x, dy, &mut w.out, g, gamma, mean, invstd, dg, db)
        }
        _ => unreachable!("{kernel:?} is batch norm's"),
    }
}

/// Layer norm (or RMS norm: no centering, no β) of rows of `len`, two passes a row.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn rows_forward(
    x: &[f32],
    y: &mut [f32],
    len: usize,
    gamma: &[f32],
    beta: &[f32],
    mean: &mut [f32],
    invstd: &mut [f32],
    rms: bool,
) {
    let m = len as f32;
    for (r, (xr, yr)) in x.chunks_exact(len).zip(y.chunks_exact_mut(len)).enumerate() {
        let mu = if rms { 0.0 } else { xr.iter().sum::<f32>() / m };
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<f32>() / m;
        let inv = 1.0 / (var + EPS).sqrt();
        (mean[r], invstd[r]) = (mu, inv);
        if rms {
            for ((yv, &xv), &g) in yr.iter_mut().zip(xr).zip(gamma) {
                *yv = xv * inv * g;
            }
        } else {
            for (((yv, &xv), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                *yv = (xv - mu) * inv * g + b;
            }
        }
    }
}

/// The backward of [`rows_forward`]: per row Σg, Σg·x̂ (g = dy·γ), then dx; dγ, dβ
/// accumulate per position over the rows.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn rows_backward(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    len: usize,
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    rms: bool,
) {
    let m = len as f32;
    dgamma.fill(0.0);
    dbeta.fill(0.0);
    let rows = x.chunks_exact(len).zip(dy.chunks_exact(len));
    for (r, ((xr, dyr), dxr)) in rows.zip(dx.chunks_exact_mut(len)).enumerate() {
        let (mu, inv) = (mean[r], invstd[r]);
        let (mut sg, mut sgx) = (0.0f32, 0.0f32);
        for ((&xv, &d), &g) in xr.iter().zip(dyr).zip(gamma) {
            let xh = (xv - mu) * inv;
            sg += d * g;
            sgx += d * g * xh;
        }
        let (a, b) = (if rms { 0.0 } else { sg / m }, sgx / m);
        for (j, ((&xv, &d), dxv)) in xr.iter().zip(dyr).zip(dxr.iter_mut()).enumerate() {
            let xh = (xv - mu) * inv;
            *dxv = inv * (d * gamma[j] - a - xh * b);
            dgamma[j] += d * xh;
            dbeta[j] += d;
        }
    }
}

/// Group norm's shape in the scalar loops.
#[derive(Clone, Copy)]
struct Groups {
    n: usize,
    c: usize,
    s: usize,
    groups: usize,
    last: bool,
}

impl Groups {
    /// The flat index of (n, c, s).
    #[inline(always)]
    fn at(&self, n: usize, c: usize, s: usize) -> usize {
        if self.last {
            (n * self.s + s) * self.c + c
        } else {
            (n * self.c + c) * self.s + s
        }
    }

    /// Calls `f(c, index)` for every value of group `g` of sample `n`, in memory order.
    #[inline(always)]
    fn each(&self, n: usize, g: usize, mut f: impl FnMut(usize, usize)) {
        let per = self.c / self.groups;
        let cs = g * per..(g + 1) * per;
        if self.last {
            for s in 0..self.s {
                for c in cs.clone() {
                    f(c, self.at(n, c, s));
                }
            }
        } else {
            for c in cs {
                for s in 0..self.s {
                    f(c, self.at(n, c, s));
                }
            }
        }
    }
}

/// Group (instance) norm forward: two passes per (sample, group), then the affine.
#[inline(never)]
fn group_forward(
    x: &[f32],
    y: &mut [f32],
    g: Groups,
    gamma: &[f32],
    beta: &[f32],
    mean: &mut [f32],
    invstd: &mut [f32],
) {
    let m = (g.c / g.groups * g.s) as f32;
    for n in 0..g.n {
        for k in 0..g.groups {
            let mut sum = 0.0f32;
            g.each(n, k, |_, i| sum += x[i]);
            let mu = sum / m;
            let mut sq = 0.0f32;
            g.each(n, k, |_, i| sq += (x[i] - mu) * (x[i] - mu));
            let inv = 1.0 / (sq / m + EPS).sqrt();
            (mean[n * g.groups + k], invstd[n * g.groups + k]) = (mu, inv);
            g.each(n, k, |c, i| y[i] = (x[i] - mu) * (inv * gamma[c]) + beta[c]);
        }
    }
}

/// Group (instance) norm backward: per (sample, group) the per-channel sums folded
/// with γ, then dx; dγ, dβ over the batch.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn group_backward(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    g: Groups,
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let m = (g.c / g.groups * g.s) as f32;
    dgamma.fill(0.0);
    dbeta.fill(0.0);
    for n in 0..g.n {
        for k in 0..g.groups {
            let (mu, inv) = (mean[n * g.groups + k], invstd[n * g.groups + k]);
            let (mut sg, mut sgx) = (0.0f32, 0.0f32);
            g.each(n, k, |c, i| {
                let xh = (x[i] - mu) * inv;
                sg += dy[i] * gamma[c];
                sgx += dy[i] * gamma[c] * xh;
                dgamma[c] += dy[i] * xh;
                dbeta[c] += dy[i];
            });
            let (a, b) = (sg / m, sgx / m);
            g.each(n, k, |c, i| {
                let xh = (x[i] - mu) * inv;
                dx[i] = inv * (dy[i] * gamma[c] - a - xh * b);
            });
        }
    }
}
