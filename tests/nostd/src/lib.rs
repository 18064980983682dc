//! Calls every public entry point of `batchnorm` from a `#![no_std]` staticlib.
#![no_std]

use batchnorm::{clip_grad_norm, clip_grad_value, fold, moments, total_norm, BatchNorm, Fusion, FusionGrad, GradNorm, Grads, GroupNorm, InstanceNorm, LayerNorm, Correction, Momentum, Moments, NonFinite, Renorm, RenormSaved, RenormSavedMut, RmsNorm, Rows, Running, RunningStats, Saved, SavedMut, Shape};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Runs every kernel once on a small tensor; returns the number of calls that failed.
#[no_mangle]
pub extern "C" fn batchnorm_nostd_check() -> u32 {
    let shape = Shape::channels_last(2, 3, 4);
    let mut x = [0.0f32; 24];
    for (i, v) in x.iter_mut().enumerate() {
        *v = i as f32 * 0.25;
    }
    let (gamma, beta) = ([1.0f32, 2.0, 3.0], [0.5f32, 0.0, -0.5]);
    let bn = BatchNorm { eps: 1e-5, gamma: Some(&gamma), beta: Some(&beta) };
    let (mut y, mut dx) = ([0.0f32; 24], [0.0f32; 24]);
    let (mut mean, mut invstd, mut rm, mut rv) = ([0.0f32; 3], [0.0f32; 3], [0.0f32; 3], [1.0f32; 3]);
    let (mut dg, mut db) = ([0.0f32; 3], [0.0f32; 3]);
    let mut parts = [Moments::EMPTY; 3];
    let mut failures = 0;
    let mut count = |r: Result<(), batchnorm::Error>| failures += u32::from(r.is_err());
    count(moments(&x, shape, &mut parts));
    let _ = parts[0].merge(parts[1]).var();
    count(bn.eval(&x, &mut y, shape, RunningStats { mean: &rm, var: &rv }));
    count(bn.eval_in_place(&mut y, shape, RunningStats { mean: &rm, var: &rv }));
    let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(0.1));
    count(bn.train(&x, &mut y, shape, SavedMut { mean: &mut mean, invstd: &mut invstd }, Some(&mut running)));
    count(bn.train_in_place(&mut y, shape, SavedMut { mean: &mut mean, invstd: &mut invstd }, None));
    let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    count(bn.backward(&x, &y, shape, Saved { mean: &mean, invstd: &invstd }, grads));
    let grads = Grads { dx: &mut dx, dgamma: None, dbeta: Some(&mut db) };
    count(bn.backward_eval(&x, &y, shape, RunningStats { mean: &rm, var: &rv }, grads));
    // Fused BN + ReLU, BN + Add + ReLU, and Batch Renormalization.
    let (mut z, mut dz) = ([0.25f32; 24], [0.0f32; 24]);
    count(bn.eval_fused(&x, &mut y, shape, Fusion::AddRelu { z: &z }, RunningStats { mean: &rm, var: &rv }));
    count(bn.train_fused(&x, &mut z, shape, Fusion::Relu, SavedMut { mean: &mut mean, invstd: &mut invstd }, None));
    let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: None };
    count(bn.backward_fused(&x, &y, &z, shape, FusionGrad::Relu, Saved { mean: &mean, invstd: &invstd }, grads));
    let grads = Grads { dx: &mut dx, dgamma: None, dbeta: Some(&mut db) };
    count(bn.backward_eval_fused(&x, &y, &z, shape, FusionGrad::AddRelu { dz: &mut dz }, RunningStats { mean: &rm, var: &rv }, grads));
    let (mut r, mut d) = ([0.0f32; 3], [0.0f32; 3]);
    let saved = RenormSavedMut { mean: &mut mean, invstd: &mut invstd, r: &mut r, d: &mut d };
    let mut running = Running::new(&mut rm, &mut rv, Momentum::Exponential(0.1));
    let renorm = Renorm { rmax: 3.0, dmax: 5.0 };
    count(bn.train_renorm(&x, &mut y, shape, renorm, saved, &mut running));
    let saved = RenormSaved { mean: &mean, invstd: &invstd, r: &r, d: &d };
    let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    count(bn.backward_renorm(&x, &y, shape, saved, grads));
    // Folding: a grouped 1-D conv [out 4][in/groups 1][k 2] beside a 4- (after) or 2-channel (before) BN.
    let conv = fold::Layer::conv1d(2, 4, 2).grouped(2);
    let (mut w, mut b, mut pad) = ([0.5f32; 8], [0.0f32; 4], [0.0f32; 2]);
    let after = fold::EvalBn::new(BatchNorm { eps: 1e-5, gamma: None, beta: None }, RunningStats { mean: &[0.1; 4], var: &[2.0; 4] });
    count(fold::into_preceding(&after, conv, &mut w, &mut b));
    let before = fold::EvalBn::new(BatchNorm { eps: 1e-5, gamma: Some(&gamma[..2]), beta: Some(&beta[..2]) }, RunningStats { mean: &rm[..2], var: &rv[..2] });
    count(fold::into_following(&before, conv, &mut w, &mut b, Some(&mut pad)));
    // Batch norm's neighbours: layer and RMS norm over rows of 12 (γ, β of 12), group
    // norm in 3 groups (of one channel), instance norm with running statistics.
    let rows = Rows::new(2, 12);
    let (mut mean2, mut invstd2) = ([0.0f32; 2], [0.0f32; 2]);
    let (mut dg12, mut db12) = ([0.0f32; 12], [0.0f32; 12]);
    let ln = LayerNorm { eps: 1e-5, gamma: Some(&x[..12]), beta: Some(&x[12..]) };
    count(ln.forward(&x, &mut y, rows, SavedMut { mean: &mut mean2, invstd: &mut invstd2 }));
    count(ln.forward_in_place(&mut y, rows, SavedMut { mean: &mut mean2, invstd: &mut invstd2 }));
    let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg12), dbeta: Some(&mut db12) };
    count(ln.backward(&x, &y, rows, Saved { mean: &mean2, invstd: &invstd2 }, grads));
    let rms = RmsNorm { eps: RmsNorm::DTYPE_EPS, gamma: Some(&x[..12]) };
    count(rms.forward(&x, &mut y, rows, &mut invstd2));
    count(rms.forward_in_place(&mut y, rows, &mut invstd2));
    let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg12), dbeta: None };
    count(rms.backward(&x, &y, rows, &invstd2, grads));
    let (mut mean6, mut invstd6) = ([0.0f32; 6], [0.0f32; 6]);
    let gn = GroupNorm { groups: 3, eps: 1e-5, gamma: Some(&gamma), beta: Some(&beta) };
    count(gn.forward(&x, &mut y, shape, SavedMut { mean: &mut mean6, invstd: &mut invstd6 }));
    count(gn.forward_in_place(&mut y, shape, SavedMut { mean: &mut mean6, invstd: &mut invstd6 }));
    let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    count(gn.backward(&x, &y, shape, Saved { mean: &mean6, invstd: &invstd6 }, grads));
    let inorm = InstanceNorm { eps: 1e-5, gamma: None, beta: Some(&beta) };
    let running = Running::new(&mut rm, &mut rv, Momentum::Cumulative).with_correction(Correction::Biased);
    let mut running = Running { batches_tracked: 2, ..running };
    count(inorm.forward(&x, &mut y, shape, SavedMut { mean: &mut mean6, invstd: &mut invstd6 }, Some(&mut running)));
    count(bn.eval(&x, &mut y, shape, running.stats()));
    count(inorm.forward_in_place(&mut y, shape, SavedMut { mean: &mut mean6, invstd: &mut invstd6 }, None));
    let grads = Grads { dx: &mut dx, dgamma: None, dbeta: Some(&mut db) };
    count(inorm.backward(&x, &y, shape, Saved { mean: &mean6, invstd: &invstd6 }, grads));
    // Gradient clipping over two slices.
    count(clip_grad_value(&mut [&mut dx, &mut dg], 0.5));
    let _ = total_norm(&[&dx, &dg], GradNorm::Max);
    count(clip_grad_norm(&mut [&mut dx, &mut dg], 1.0, GradNorm::L2, NonFinite::Scale).map(|_| ()));
    failures
}
