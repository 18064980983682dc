//! "Noisy" batch norm (Santurkar et al. 2018, §2.1): BN followed by a random affine
//! map that changes at every training step, so that the distribution each unit feeds
//! forward keeps moving (a deliberate, large internal covariate shift).
//!
//! At every train forward, for every unit `j`, a new shift `μⱼ ~ U(−m, m)` and scale
//! `sⱼ ~ U(1, s_max)` are drawn ([`Noise`]) and the layer outputs `sⱼ·BN(x)ⱼ + μⱼ`: a
//! non-zero mean and a non-unit variance, different at every step. In eval mode it
//! applies the noise's expectation (`s = (1 + s_max)/2`, `μ = 0`), as dropout does.

use batchnorm::Error;

use crate::data::Rng;
use crate::linear::Param;
use crate::net::{Mode, Norm, Normalize};

/// How much noise: the shift is drawn from U(−mean, mean), the scale from U(1, scale).
#[derive(Clone, Copy)]
pub struct Noise {
    pub mean: f64,
    pub scale: f64,
}

impl Noise {
    /// The scale applied in eval mode: the mean of U(1, scale).
    pub fn eval_scale(self) -> f64 {
        0.5 * (1.0 + self.scale)
    }
}

#[derive(Clone)]
pub struct NoisyNorm {
    bn: Norm,
    noise: Noise,
    /// The noise of train step `t` comes from the generator seeded `seed + t`, so a
    /// clone of the layer draws the same noise as the original (the finite-difference
    /// check relies on it) and the run is deterministic.
    seed: u64,
    steps: u64,
    scale: Vec<f32>,
    shift: Vec<f32>,
    /// BN's output, and the gradient with respect to it.
    normed: Vec<f32>,
    dnormed: Vec<f32>,
}

impl NoisyNorm {
    pub fn new(features: usize, noise: Noise, seed: u64) -> Self {
        NoisyNorm {
            bn: Norm::new(features),
            noise,
            seed,
            steps: 0,
            scale: vec![1.0; features],
            shift: vec![0.0; features],
            normed: Vec::new(),
            dnormed: Vec::new(),
        }
    }

    fn draw(&mut self) {
        let mut rng = Rng::new(self.seed.wrapping_add(self.steps));
        self.steps += 1;
        let Noise { mean, scale } = self.noise;
        for (s, m) in self.scale.iter_mut().zip(&mut self.shift) {
            *s = (1.0 + (scale - 1.0) * rng.uniform()) as f32;
            *m = (mean * (2.0 * rng.uniform() - 1.0)) as f32;
        }
    }
}

impl Normalize for NoisyNorm {
    fn forward(&mut self, x: &[f32], y: &mut Vec<f32>, mode: Mode) -> Result<(), Error> {
        self.bn.forward(x, &mut self.normed, mode)?;
        match mode {
            Mode::Train => self.draw(),
            Mode::Eval => {
                self.scale.fill(self.noise.eval_scale() as f32);
                self.shift.fill(0.0);
            }
        }
        let width = self.scale.len();
        y.clear();
        for row in self.normed.chunks_exact(width) {
            let noisy = row.iter().zip(&self.scale).zip(&self.shift);
            y.extend(noisy.map(|((z, s), m)| s * z + m));
        }
        Ok(())
    }

    /// ∂L/∂BN(x) = s·∂L/∂y with the scale of the last forward, then BN's backward.
    fn backward(&mut self, dy: &[f32], x: &[f32], dx: &mut Vec<f32>) -> Result<(), Error> {
        let width = self.scale.len();
        self.dnormed.clear();
        for row in dy.chunks_exact(width) {
            let scaled = row.iter().zip(&self.scale).map(|(d, s)| d * s);
            self.dnormed.extend(scaled);
        }
        self.bn.backward(&self.dnormed, x, dx)
    }

    fn params(&mut self) -> Vec<&mut Param> {
        self.bn.params()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Mlp;

    /// The analytic gradients of a network with noisy BN — the noise's backward and
    /// then the crate's BN backward — against central differences of the loss, with
    /// the noise of the step held fixed (every probe is a clone of the same state, so
    /// it draws the same noise). Checks every parameter tensor: the hidden layers'
    /// weights, γ and β, and the output layer.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..16).map(|_| rng.normal() as f32).collect();
        let labels = [0, 1, 2, 1, 0, 2, 2, 1];
        let mut seed = 100;
        let net = Mlp::with_norm(
            2,
            &[6, 5],
            3,
            |w| {
                seed += 1000;
                let noise = Noise {
                    mean: 1.0,
                    scale: 2.0,
                };
                Some(NoisyNorm::new(w, noise, seed))
            },
            &mut rng,
        );
        let mean_loss = |net: &mut Mlp<NoisyNorm>| net.gradients(&x, &labels).unwrap().loss / 8.0;
        let mut analytic_net = net.clone();
        mean_loss(&mut analytic_net);
        let analytic = analytic_net.params();
        let tensors = analytic.len();
        assert_eq!(
            tensors,
            2 * 4 + 2,
            "weight, bias, γ, β per hidden layer; output layer"
        );
        let mut checked = 0;
        for (t, tensor) in analytic.iter().enumerate() {
            // Linear biases before BN have gradient 0 (BN removes the mean): skip them.
            if t == 1 || t == 5 {
                continue;
            }
            for i in [0, tensor.value.len() - 1] {
                let h = 1e-2;
                let loss_at = |delta: f32| {
                    let mut probe = net.clone();
                    probe.params()[t].value[i] += delta;
                    mean_loss(&mut probe)
                };
                let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * f64::from(h));
                let g = f64::from(tensor.grad[i]);
                assert!(
                    (g - numeric).abs() <= 1e-3 + 2e-2 * numeric.abs(),
                    "tensor {t}, element {i}: analytic {g}, numeric {numeric}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 16);

        // The noise is really there: the same weights with plain BN get other gradients.
        let mut rng = Rng::new(3);
        for _ in 0..16 {
            let _ = rng.normal(); // the draws of x above
        }
        let mut plain = Mlp::with_norm(2, &[6, 5], 3, |w| Some(Norm::new(w)), &mut rng);
        plain.gradients(&x, &labels).unwrap();
        let plain_grad = plain.params()[0].grad.clone();
        let noisy_grad = &analytic[0].grad;
        let differ = noisy_grad
            .iter()
            .zip(&plain_grad)
            .any(|(a, b)| (a - b).abs() > 1e-3);
        assert!(
            differ,
            "noisy BN's gradients equal plain BN's: no noise applied"
        );
    }
}
