// Footprint firmware body, shared by the Cortex-M4F and AArch64 footprint binaries
// (src/bin/fp_*.rs, one per `Uses`). What is linked in:
//   none:     only the runtime (baseline);
//   eval:     the eval forward alone (inference firmware);
//   moments:  moments and their merge;
//   train:    train (running statistics) and train_in_place;
//   backward: backward and backward_eval;
//   fused:    eval_fused, train_fused, backward_fused, backward_eval_fused, each with
//             ReLU and Add + ReLU;
//   renorm:   train_renorm and backward_renorm;
//   fold:     fold::into_preceding and fold::into_following;
//   rownorm:  LayerNorm and RmsNorm: forward, forward_in_place, backward;
//   groupnorm: GroupNorm and InstanceNorm (with running statistics): forward,
//             forward_in_place, backward;
//   clip:     clip_grad_value, clip_grad_norm (L2 or max, by a run-time choice) and
//             total_norm;
//   bn:       every batch-norm entry point: eval, moments, train, backward, fused,
//             renorm and fold as above, and eval_in_place;
//   all:      every public entry point (all of the above).
// Shapes, data and the optional arguments go through `black_box`, so every layout path
// of each kernel stays in the binary (as in firmware that learns its shapes at run
// time). Returns whether every call returned Ok.

use batchnorm::fold::{self, EvalBn, Layer};
use batchnorm::{
    clip_grad_norm, clip_grad_value, moments, total_norm, BatchNorm, Fusion, FusionGrad, GradNorm,
    Grads, GroupNorm, InstanceNorm, LayerNorm, Moments, Momentum, NonFinite, Renorm, RenormSaved,
    RenormSavedMut, RmsNorm, Rows, Running, RunningStats, Saved, SavedMut, Shape,
};
use core::hint::black_box;

const C: usize = 16;
const N: usize = 4 * 16 * C;

#[derive(Clone, Copy, PartialEq)]
#[allow(dead_code)]
pub enum Uses {
    Nothing,
    Eval,
    Moments,
    Train,
    Backward,
    Fused,
    Renorm,
    Fold,
    RowNorms,
    GroupNorms,
    Clip,
    BatchNorms,
    Everything,
}

/// The tensors and per-channel vectors the calls share.
struct T {
    x: [f32; N],
    y: [f32; N],
    z: [f32; N],
    dx: [f32; N],
    /// γ, β, running var, running mean.
    p: [[f32; C]; 4],
    shape: Shape,
}

#[inline(never)]
pub fn body(uses: Uses) -> bool {
    let mut t = T {
        x: [0.5; N],
        y: [0.0; N],
        z: [0.25; N],
        dx: [0.0; N],
        p: [[1.0; C], [0.0; C], [1.0; C], [0.0; C]],
        shape: Shape::channels_first(4, C, 16),
    };
    black_box(&mut t);
    let all = uses == Uses::Everything;
    let bn_all = all || uses == Uses::BatchNorms;
    let mut ok = true;
    if uses == Uses::Eval || bn_all {
        ok &= eval(&mut t);
    }
    if uses == Uses::Moments || bn_all {
        ok &= moments_merged(&t);
    }
    if uses == Uses::Train || bn_all {
        ok &= train(&mut t);
    }
    if uses == Uses::Backward || bn_all {
        ok &= backward(&mut t);
    }
    if uses == Uses::Fused || bn_all {
        ok &= fused(&mut t);
    }
    if uses == Uses::Renorm || bn_all {
        ok &= renorm(&mut t);
    }
    if uses == Uses::Fold || bn_all {
        ok &= folds(&t);
    }
    if uses == Uses::RowNorms || all {
        ok &= row_norms(&mut t);
    }
    if uses == Uses::GroupNorms || all {
        ok &= group_norms(&mut t);
    }
    if uses == Uses::Clip || all {
        ok &= clip(&mut t);
    }
    if bn_all {
        let T { y, p, shape, .. } = &mut t;
        ok &= bn(p)
            .eval_in_place(
                y,
                *shape,
                RunningStats {
                    mean: &p[3],
                    var: &p[2],
                },
            )
            .is_ok();
    }
    black_box(&t);
    ok
}

fn bn(p: &[[f32; C]; 4]) -> BatchNorm<'_> {
    BatchNorm {
        eps: black_box(1e-5),
        gamma: Some(&p[0]),
        beta: Some(&p[1]),
    }
}

fn grads<'a>(dx: &'a mut [f32], dg: &'a mut [f32], db: &'a mut [f32]) -> Grads<'a> {
    Grads {
        dx,
        dgamma: black_box(Some(dg)),
        dbeta: black_box(Some(db)),
    }
}

fn running<'a>(mean: &'a mut [f32], var: &'a mut [f32]) -> Running<'a> {
    Running::new(mean, var, black_box(Momentum::Exponential(0.1)))
}

fn eval(t: &mut T) -> bool {
    let T { x, y, p, shape, .. } = t;
    bn(p)
        .eval(
            x,
            y,
            *shape,
            RunningStats {
                mean: &p[3],
                var: &p[2],
            },
        )
        .is_ok()
}

fn moments_merged(t: &T) -> bool {
    let half = Shape {
        batch: 2,
        ..t.shape
    };
    let mut parts = [Moments::EMPTY; C];
    let mut parts2 = [Moments::EMPTY; C];
    let mut ok = moments(&t.x[..N / 2], half, &mut parts).is_ok();
    ok &= moments(&t.x[N / 2..], half, &mut parts2).is_ok();
    for (a, b) in parts.iter_mut().zip(parts2) {
        *a = a.merge(b);
    }
    black_box(&parts);
    ok
}

fn train(t: &mut T) -> bool {
    let T { x, y, p, shape, .. } = t;
    let (mut sm, mut si) = ([0.0f32; C], [0.0f32; C]);
    let (mut rm, mut rv) = ([0.0f32; C], [1.0f32; C]);
    let bn = bn(p);
    let mut run = running(&mut rm, &mut rv);
    let mut ok = bn
        .train(
            x,
            y,
            *shape,
            SavedMut {
                mean: &mut sm,
                invstd: &mut si,
            },
            Some(&mut run),
        )
        .is_ok();
    ok &= bn
        .train_in_place(
            y,
            *shape,
            SavedMut {
                mean: &mut sm,
                invstd: &mut si,
            },
            black_box(None),
        )
        .is_ok();
    black_box((&sm, &si, &rm, &rv));
    ok
}

fn backward(t: &mut T) -> bool {
    let T {
        x, y, dx, p, shape, ..
    } = t;
    let (mut dg, mut db) = ([0.0f32; C], [0.0f32; C]);
    let bn = bn(p);
    let (sm, si) = (&p[3], &p[2]);
    let mut ok = bn
        .backward(
            x,
            y,
            *shape,
            Saved {
                mean: sm,
                invstd: si,
            },
            grads(dx, &mut dg, &mut db),
        )
        .is_ok();
    ok &= bn
        .backward_eval(
            x,
            y,
            *shape,
            RunningStats { mean: sm, var: si },
            grads(dx, &mut dg, &mut db),
        )
        .is_ok();
    black_box((&dg, &db));
    ok
}

fn fused(t: &mut T) -> bool {
    let T {
        x,
        y,
        z,
        dx,
        p,
        shape,
    } = t;
    let sh = *shape;
    let bn = bn(p);
    let (rm, rv) = (&p[3], &p[2]);
    let (mut sm, mut si) = ([0.0f32; C], [0.0f32; C]);
    let (mut rmean, mut rvar) = ([0.0f32; C], [1.0f32; C]);
    let (mut dg, mut db) = ([0.0f32; C], [0.0f32; C]);
    let mut dz = [0.0f32; N];
    let mut ok = bn
        .eval_fused(x, y, sh, Fusion::Relu, RunningStats { mean: rm, var: rv })
        .is_ok();
    ok &= bn
        .eval_fused(
            x,
            y,
            sh,
            Fusion::AddRelu { z },
            RunningStats { mean: rm, var: rv },
        )
        .is_ok();
    ok &= bn
        .train_fused(
            x,
            y,
            sh,
            Fusion::Relu,
            SavedMut {
                mean: &mut sm,
                invstd: &mut si,
            },
            black_box(None),
        )
        .is_ok();
    let mut run = running(&mut rmean, &mut rvar);
    ok &= bn
        .train_fused(
            x,
            y,
            sh,
            Fusion::AddRelu { z },
            SavedMut {
                mean: &mut sm,
                invstd: &mut si,
            },
            Some(&mut run),
        )
        .is_ok();
    let g = grads(dx, &mut dg, &mut db);
    ok &= bn
        .backward_fused(
            x,
            y,
            z,
            sh,
            FusionGrad::Relu,
            Saved {
                mean: &sm,
                invstd: &si,
            },
            g,
        )
        .is_ok();
    let g = grads(dx, &mut dg, &mut db);
    let through = FusionGrad::AddRelu { dz: &mut dz };
    ok &= bn
        .backward_fused(
            x,
            y,
            z,
            sh,
            through,
            Saved {
                mean: &sm,
                invstd: &si,
            },
            g,
        )
        .is_ok();
    let g = grads(dx, &mut dg, &mut db);
    ok &= bn
        .backward_eval_fused(
            x,
            y,
            z,
            sh,
            FusionGrad::Relu,
            RunningStats { mean: rm, var: rv },
            g,
        )
        .is_ok();
    let g = grads(dx, &mut dg, &mut db);
    let through = FusionGrad::AddRelu { dz: &mut dz };
    ok &= bn
        .backward_eval_fused(x, y, z, sh, through, RunningStats { mean: rm, var: rv }, g)
        .is_ok();
    black_box((&sm, &si, &rmean, &rvar, &dg, &db, &dz));
    ok
}

fn renorm(t: &mut T) -> bool {
    let T {
        x, y, dx, p, shape, ..
    } = t;
    let bn = bn(p);
    let (mut mean, mut invstd, mut r, mut d) = ([0.0f32; C], [0.0f32; C], [0.0f32; C], [0.0f32; C]);
    let (mut rm, mut rv) = ([0.0f32; C], [1.0f32; C]);
    let (mut dg, mut db) = ([0.0f32; C], [0.0f32; C]);
    let limits = black_box(Renorm {
        rmax: 3.0,
        dmax: 5.0,
    });
    let saved = RenormSavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
        r: &mut r,
        d: &mut d,
    };
    let mut ok = bn
        .train_renorm(x, y, *shape, limits, saved, &mut running(&mut rm, &mut rv))
        .is_ok();
    let saved = RenormSaved {
        mean: &mean,
        invstd: &invstd,
        r: &r,
        d: &d,
    };
    ok &= bn
        .backward_renorm(x, y, *shape, saved, grads(dx, &mut dg, &mut db))
        .is_ok();
    black_box((&rm, &rv, &dg, &db));
    ok
}

/// Folding, with the layer's layout and sizes known only at run time.
fn folds(t: &T) -> bool {
    let p = &t.p;
    let fbn = EvalBn::new(
        BatchNorm {
            eps: black_box(1e-5),
            gamma: Some(&p[0]),
            beta: Some(&p[1]),
        },
        RunningStats {
            mean: &p[3],
            var: &p[2],
        },
    );
    let layer = black_box(Layer::linear(C, C));
    let (mut w, mut b, mut pad) = ([0.25f32; C * C], [0.0f32; C], [0.0f32; C]);
    let mut ok = fold::into_preceding(&fbn, layer, &mut w, &mut b).is_ok();
    ok &= fold::into_following(&fbn, layer, &mut w, &mut b, Some(&mut pad)).is_ok();
    black_box((&w, &b, &pad));
    ok
}

/// Layer and RMS norm over rows of `S = N / 4` values (γ, β of `S` values: `x`'s first
/// ones), the row count known only at run time.
fn row_norms(t: &mut T) -> bool {
    let T { x, y, z, dx, .. } = t;
    const S: usize = N / 4;
    let rows = black_box(Rows::new(4, S));
    let (gamma, beta) = (&z[..S], &z[S..2 * S]);
    let (mut mean, mut invstd) = ([0.0f32; 4], [0.0f32; 4]);
    let (mut dg, mut db) = ([0.0f32; S], [0.0f32; S]);
    let ln = LayerNorm {
        eps: black_box(1e-5),
        gamma: black_box(Some(gamma)),
        beta: black_box(Some(beta)),
    };
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    let mut ok = ln.forward(x, y, rows, saved).is_ok();
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    ok &= ln.forward_in_place(y, rows, saved).is_ok();
    let saved = Saved {
        mean: &mean,
        invstd: &invstd,
    };
    ok &= ln
        .backward(x, y, rows, saved, grads(dx, &mut dg, &mut db))
        .is_ok();
    let rms = RmsNorm {
        eps: black_box(1e-5),
        gamma: black_box(Some(gamma)),
    };
    ok &= rms.forward(x, y, rows, &mut invstd).is_ok();
    ok &= rms.forward_in_place(y, rows, &mut invstd).is_ok();
    ok &= rms
        .backward(x, y, rows, &invstd, grads(dx, &mut dg, &mut db))
        .is_ok();
    black_box((&mean, &invstd, &dg, &db));
    ok
}

/// Group norm (4 groups) and instance norm (with running statistics) on the shape, its
/// layout and the group count known only at run time.
fn group_norms(t: &mut T) -> bool {
    let T {
        x, y, dx, p, shape, ..
    } = t;
    let sh = *shape;
    const U: usize = 4 * C;
    let (mut mean, mut invstd) = ([0.0f32; U], [0.0f32; U]);
    let (mut rm, mut rv) = ([0.0f32; C], [1.0f32; C]);
    let (mut dg, mut db) = ([0.0f32; C], [0.0f32; C]);
    let gn = GroupNorm {
        groups: black_box(4),
        eps: black_box(1e-5),
        gamma: black_box(Some(&p[0])),
        beta: black_box(Some(&p[1])),
    };
    let g = sh.batch * gn.groups;
    let saved = SavedMut {
        mean: &mut mean[..g],
        invstd: &mut invstd[..g],
    };
    let mut ok = gn.forward(x, y, sh, saved).is_ok();
    let saved = SavedMut {
        mean: &mut mean[..g],
        invstd: &mut invstd[..g],
    };
    ok &= gn.forward_in_place(y, sh, saved).is_ok();
    let saved = Saved {
        mean: &mean[..g],
        invstd: &invstd[..g],
    };
    ok &= gn
        .backward(x, y, sh, saved, grads(dx, &mut dg, &mut db))
        .is_ok();
    let inorm = InstanceNorm {
        eps: black_box(1e-5),
        gamma: black_box(Some(&p[0])),
        beta: black_box(Some(&p[1])),
    };
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    ok &= inorm
        .forward(x, y, sh, saved, Some(&mut running(&mut rm, &mut rv)))
        .is_ok();
    let saved = SavedMut {
        mean: &mut mean,
        invstd: &mut invstd,
    };
    ok &= inorm
        .forward_in_place(y, sh, saved, black_box(None))
        .is_ok();
    let saved = Saved {
        mean: &mean,
        invstd: &invstd,
    };
    ok &= inorm
        .backward(x, y, sh, saved, grads(dx, &mut dg, &mut db))
        .is_ok();
    black_box((&mean, &invstd, &rm, &rv, &dg, &db));
    ok
}

/// Clipping of three gradient slices, the norm and the non-finite policy chosen at
/// run time.
fn clip(t: &mut T) -> bool {
    let T { dx, z, p, .. } = t;
    let [gamma, beta, ..] = p;
    let mut ok = clip_grad_value(&mut [&mut dx[..], &mut gamma[..]], black_box(0.5)).is_ok();
    let norm = black_box(GradNorm::L2);
    let nonfinite = black_box(NonFinite::Error);
    let grads: &mut [&mut [f32]] = &mut [&mut dx[..], &mut gamma[..], &mut beta[..]];
    ok &= clip_grad_norm(grads, black_box(1.0), norm, nonfinite).is_ok();
    let max = total_norm(&[&z[..], &beta[..]], black_box(GradNorm::Max));
    black_box(max);
    ok
}
