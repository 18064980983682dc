//! A fully connected layer in plain loops: `y = x·Wᵀ + b`, with the weights `[out][in]`
//! as PyTorch's `nn.Linear` keeps them and the activations `[batch][features]`.
//!
//! All three products (forward, ∂W, ∂x) are written so that the innermost loop walks
//! contiguous memory of every operand, which is what lets the compiler vectorize them.

use crate::data::Rng;

/// A trainable tensor and the gradient of the last backward pass.
#[derive(Clone)]
pub struct Param {
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
}

impl Param {
    pub fn new(value: Vec<f32>) -> Self {
        let grad = vec![0.0; value.len()];
        Param { value, grad }
    }

    /// One step of plain SGD: `value ← value − lr·grad`.
    pub fn step(&mut self, lr: f32) {
        for (p, g) in self.value.iter_mut().zip(&self.grad) {
            *p -= lr * g;
        }
    }
}

#[derive(Clone)]
pub struct Linear {
    pub inputs: usize,
    pub outputs: usize,
    /// `[outputs][inputs]`.
    pub weight: Param,
    /// One per output.
    pub bias: Param,
}

impl Linear {
    /// Glorot normal weights, the initialization Glorot and Bengio (2010) derived for
    /// tanh networks (std √(2/(in + out))), and a zero bias.
    pub fn new(inputs: usize, outputs: usize, rng: &mut Rng) -> Self {
        let std = (2.0 / (inputs + outputs) as f64).sqrt();
        Linear {
            inputs,
            outputs,
            weight: Param::new(
                (0..inputs * outputs)
                    .map(|_| (std * rng.normal()) as f32)
                    .collect(),
            ),
            bias: Param::new(vec![0.0; outputs]),
        }
    }

    /// `y[n][o] = b[o] + Σᵢ x[n][i]·W[o][i]`: every output is the dot product of two
    /// contiguous rows, `x[n]` and `W[o]`.
    pub fn forward(&self, x: &[f32], y: &mut Vec<f32>) {
        let batch = x.len() / self.inputs;
        y.resize(batch * self.outputs, 0.0);
        for (x_row, y_row) in x
            .chunks_exact(self.inputs)
            .zip(y.chunks_exact_mut(self.outputs))
        {
            let weight_rows = self.weight.value.chunks_exact(self.inputs);
            for ((y, w_row), b) in y_row.iter_mut().zip(weight_rows).zip(&self.bias.value) {
                *y = b + dot(x_row, w_row);
            }
        }
    }

    /// Gradients from the forward input `x` and `dy = ∂L/∂y`: `∂W = dyᵀ·x`,
    /// `∂b = Σₙ dy[n]`, and `∂x = dy·W` into `dx` when asked for (the first layer's
    /// input is data, nobody needs its gradient).
    ///
    /// Both products are sums of scaled rows (`W[o] += dy[n][o]·x[n]`,
    /// `dx[n] += dy[n][o]·W[o]`): the i-k-j loop order.
    pub fn backward(&mut self, x: &[f32], dy: &[f32], dx: Option<&mut Vec<f32>>) {
        self.weight.grad.fill(0.0);
        self.bias.grad.fill(0.0);
        for (x_row, dy_row) in x
            .chunks_exact(self.inputs)
            .zip(dy.chunks_exact(self.outputs))
        {
            let dweight_rows = self.weight.grad.chunks_exact_mut(self.inputs);
            for ((&g, dw_row), db) in dy_row.iter().zip(dweight_rows).zip(&mut self.bias.grad) {
                *db += g;
                axpy(g, x_row, dw_row);
            }
        }
        if let Some(dx) = dx {
            dx.clear();
            dx.resize(x.len(), 0.0);
            for (dx_row, dy_row) in dx
                .chunks_exact_mut(self.inputs)
                .zip(dy.chunks_exact(self.outputs))
            {
                for (&g, w_row) in dy_row
                    .iter()
                    .zip(self.weight.value.chunks_exact(self.inputs))
                {
                    axpy(g, w_row, dx_row);
                }
            }
        }
    }

    pub fn step(&mut self, lr: f32) {
        self.weight.step(lr);
        self.bias.step(lr);
    }
}

/// Dot product with eight independent partial sums. The compiler must not reorder one
/// f32 sum (that would change its rounding), but eight independent sums it maps onto
/// SIMD lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(a, b)| a * b)
        .sum();
    let mut acc = [0.0f32; 8];
    for (a, b) in a8.zip(b8) {
        for ((acc, a), b) in acc.iter_mut().zip(a).zip(b) {
            *acc += a * b;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a·x`.
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}
