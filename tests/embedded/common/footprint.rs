// Footprint firmware body, shared by the Cortex-M4F and AArch64 footprint binaries.
// `FP_ALL` selects what is linked in:
//   none: only the runtime (baseline);
//   eval: the eval forward alone (inference firmware);
//   all:  every public kernel family.
// Shapes and data go through `black_box`, so every layout path of each kernel stays in
// the binary (as in firmware that learns its shapes at run time). Returns whether
// every call returned Ok.

use batchnorm::{moments, BatchNorm, Grads, Moments, Momentum, Running, Shape};
use core::hint::black_box;

const C: usize = 16;
const N: usize = 4 * 16 * C;

#[derive(Clone, Copy, PartialEq)]
#[allow(dead_code)]
pub enum Uses {
    Nothing,
    Eval,
    Everything,
}

#[inline(never)]
pub fn body(uses: Uses) -> bool {
    let mut x = [0.5f32; N];
    let mut y = [0.0f32; N];
    let mut dx = [0.0f32; N];
    let (mut p0, mut p1, mut p2, mut p3) = ([1.0f32; C], [0.0f32; C], [1.0f32; C], [0.0f32; C]);
    black_box((&mut x, &mut p0, &mut p1, &mut p2, &mut p3));
    let shape: Shape = black_box(Shape::channels_first(4, C, 16));
    let bn = BatchNorm {
        eps: black_box(1e-5),
        gamma: Some(&p0),
        beta: Some(&p1),
    };
    let mut ok = true;
    match uses {
        Uses::Nothing => {}
        Uses::Eval => {
            ok &= bn.eval(&x, &mut y, shape, &p3, &p2).is_ok();
        }
        Uses::Everything => {
            let mut parts = [Moments::EMPTY; C];
            let mut parts2 = [Moments::EMPTY; C];
            ok &= moments(&x[..N / 2], Shape { batch: 2, ..shape }, &mut parts).is_ok();
            ok &= moments(&x[N / 2..], Shape { batch: 2, ..shape }, &mut parts2).is_ok();
            for (a, b) in parts.iter_mut().zip(parts2) {
                *a = a.merge(b);
            }
            black_box(&parts);
            ok &= bn.eval(&x, &mut y, shape, &p3, &p2).is_ok();
            ok &= bn.eval_in_place(&mut y, shape, &p3, &p2).is_ok();
            let (mut sm, mut si) = ([0.0f32; C], [0.0f32; C]);
            let (mut rm, mut rv) = ([0.0f32; C], [1.0f32; C]);
            ok &= bn
                .train(
                    &x,
                    &mut y,
                    shape,
                    &mut sm,
                    &mut si,
                    Some(Running {
                        mean: &mut rm,
                        var: &mut rv,
                        momentum: black_box(Momentum::Exponential(0.1)),
                    }),
                )
                .is_ok();
            ok &= bn
                .train_in_place(&mut y, shape, &mut sm, &mut si, None)
                .is_ok();
            let (mut dg, mut db) = ([0.0f32; C], [0.0f32; C]);
            ok &= bn
                .backward(
                    &y,
                    &x,
                    shape,
                    &sm,
                    &si,
                    Grads {
                        dx: &mut dx,
                        dgamma: Some(&mut dg),
                        dbeta: Some(&mut db),
                    },
                )
                .is_ok();
            ok &= bn
                .backward_eval(
                    &y,
                    &x,
                    shape,
                    &rm,
                    &rv,
                    Grads {
                        dx: &mut dx,
                        dgamma: Some(&mut dg),
                        dbeta: Some(&mut db),
                    },
                )
                .is_ok();
            black_box((&rm, &rv, &dg, &db));
            // Folding, with the layer's layout and sizes known only at run time.
            let fbn = batchnorm::fold::EvalBn {
                running_mean: &p3,
                running_var: &p2,
                gamma: Some(&p0),
                beta: Some(&p1),
                eps: black_box(1e-5),
            };
            let layer = black_box(batchnorm::fold::Layer::linear(C, C));
            let (mut w, mut b, mut pad) = ([0.25f32; C * C], [0.0f32; C], [0.0f32; C]);
            ok &= batchnorm::fold::into_preceding(&fbn, layer, &mut w, &mut b).is_ok();
            ok &= batchnorm::fold::into_following(&fbn, layer, &mut w, &mut b, Some(&mut pad))
                .is_ok();
            black_box((&w, &b, &pad));
        }
    }
    black_box((&y, &dx));
    ok
}
