//! A short tour of the kernels (the full training demo replaces this).
use batchnorm::{moments, BatchNorm, Grads, Moments, Momentum, Running, Shape};

fn main() -> Result<(), batchnorm::Error> {
    let shape = Shape::channels_first(4, 2, 3);
    let x: Vec<f32> = (0..24).map(|i| (i % 7) as f32 + 1e4).collect();
    let mut parts = [Moments::EMPTY; 2];
    moments(&x, shape, &mut parts)?;
    println!("moments: {parts:?}");
    let bn = BatchNorm {
        eps: 1e-5,
        gamma: Some(&[1.0, 2.0]),
        beta: Some(&[0.0, 1.0]),
    };
    let (mut y, mut mean, mut invstd) = (vec![0.0; 24], [0.0; 2], [0.0; 2]);
    let (mut rm, mut rv) = ([0.0; 2], [1.0; 2]);
    let running = Running {
        mean: &mut rm,
        var: &mut rv,
        momentum: Momentum::Exponential(0.1),
    };
    bn.train(&x, &mut y, shape, &mut mean, &mut invstd, Some(running))?;
    println!(
        "train: y[..6] = {:?}, mean = {mean:?}, invstd = {invstd:?}",
        &y[..6]
    );
    let mut dx = vec![0.0; 24];
    bn.backward(
        &y,
        &x,
        shape,
        &mean,
        &invstd,
        Grads {
            dx: &mut dx,
            dgamma: None,
            dbeta: None,
        },
    )?;
    bn.eval(&x, &mut y, shape, &rm, &rv)?;
    println!(
        "eval with running mean {rm:?}, var {rv:?}: y[..3] = {:?}",
        &y[..3]
    );
    Ok(())
}
