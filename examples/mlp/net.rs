//! The network: `[Linear → (norm) → tanh] × depth → Linear → softmax cross-entropy`.
//!
//! Everything batch norm does — the train forward with running statistics, the eval
//! forward, the backward pass to x, γ and β, the fold into the linear layer — is a
//! call into `batchnorm`; the example only owns the buffers and the SGD update of γ
//! and β.
//!
//! The norm is anything that implements [`Normalize`]; this demo uses BN ([`Norm`]),
//! and the `why_bn` demo, which shares this file, plugs in its own layers.

use batchnorm::fold::{self, EvalBn, Layer};
use batchnorm::{BatchNorm, Error, Grads, Momentum, Running, RunningStats, Saved, SavedMut, Shape};

use crate::data::Rng;
use crate::linear::{Linear, Param};

/// PyTorch's defaults for `nn.BatchNorm1d` (the `small_batch` demo's layers use its eps).
pub const EPS: f32 = 1e-5;
const MOMENTUM: Momentum = Momentum::Exponential(0.1);

/// Train: batch statistics, running statistics updated, state kept for backward.
/// Eval: the running statistics, as at inference.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// What a hidden layer normalizes its pre-activations with, over `[batch][features]`.
pub trait Normalize: Clone {
    /// `y` from `x`; in [`Mode::Train`] also whatever the backward pass needs.
    fn forward(&mut self, x: &[f32], y: &mut Vec<f32>, mode: Mode) -> Result<(), Error>;

    /// `dx` from `dy = ∂L/∂y` and the last train forward's input `x`; keeps the
    /// gradients of the parameters.
    fn backward(&mut self, dy: &[f32], x: &[f32], dx: &mut Vec<f32>) -> Result<(), Error>;

    /// The trainable parameters, in a fixed order (the SGD step walks them).
    fn params(&mut self) -> Vec<&mut Param>;
}

/// One batch-norm layer over `[batch][features]` activations: its parameters, its
/// running statistics, and what the train forward saves for the backward pass.
#[derive(Clone)]
pub struct Norm {
    gamma: Param,
    beta: Param,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    save_mean: Vec<f32>,
    save_invstd: Vec<f32>,
    momentum: Momentum,
    /// The running statistics' update count, kept across steps with them.
    batches_tracked: u64,
}

impl Norm {
    /// γ = 1, β = 0, running mean 0 and variance 1, as PyTorch starts.
    pub fn new(features: usize) -> Self {
        Self::with_momentum(features, MOMENTUM)
    }

    /// [`new`](Self::new) with another update rate of the running statistics.
    pub fn with_momentum(features: usize, momentum: Momentum) -> Self {
        let (ones, zeros) = (vec![1.0; features], vec![0.0; features]);
        Norm {
            gamma: Param::new(ones.clone()),
            beta: Param::new(zeros.clone()),
            running_mean: zeros.clone(),
            running_var: ones,
            save_mean: zeros.clone(),
            save_invstd: zeros,
            momentum,
            batches_tracked: 0,
        }
    }

    fn shape(&self, x: &[f32]) -> Shape {
        let features = self.running_mean.len();
        Shape::rows(x.len() / features, features)
    }

    /// This layer in eval mode, as the fold reads it.
    fn eval_bn(&self) -> EvalBn<'_> {
        EvalBn::new(
            BatchNorm {
                eps: EPS,
                gamma: Some(&self.gamma.value),
                beta: Some(&self.beta.value),
            },
            RunningStats {
                mean: &self.running_mean,
                var: &self.running_var,
            },
        )
    }
}

impl Normalize for Norm {
    fn forward(&mut self, x: &[f32], y: &mut Vec<f32>, mode: Mode) -> Result<(), Error> {
        let shape = self.shape(x);
        y.resize(x.len(), 0.0);
        let bn = batch_norm(&self.gamma.value, &self.beta.value);
        match mode {
            Mode::Train => {
                let mut running = Running {
                    batches_tracked: self.batches_tracked,
                    ..Running::new(&mut self.running_mean, &mut self.running_var, self.momentum)
                };
                let saved = SavedMut {
                    mean: &mut self.save_mean,
                    invstd: &mut self.save_invstd,
                };
                bn.train(x, y, shape, saved, Some(&mut running))?;
                self.batches_tracked = running.batches_tracked;
                Ok(())
            }
            Mode::Eval => bn.eval(x, y, shape, self.eval_bn().stats),
        }
    }

    /// `dx`, and ∂γ, ∂β kept for [`step`](Self::step), from the last train forward.
    fn backward(&mut self, dy: &[f32], x: &[f32], dx: &mut Vec<f32>) -> Result<(), Error> {
        let shape = self.shape(x);
        dx.resize(x.len(), 0.0);
        let bn = batch_norm(&self.gamma.value, &self.beta.value);
        let grads = Grads {
            dx,
            dgamma: Some(&mut self.gamma.grad),
            dbeta: Some(&mut self.beta.grad),
        };
        let saved = Saved {
            mean: &self.save_mean,
            invstd: &self.save_invstd,
        };
        bn.backward(x, dy, shape, saved, grads)
    }

    fn params(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }
}

/// The crate's layer with γ and β. A free function, not a method of `Norm`, so that
/// it borrows only γ and β while the caller writes the statistics and gradients.
fn batch_norm<'a>(gamma: &'a [f32], beta: &'a [f32]) -> BatchNorm<'a> {
    BatchNorm {
        eps: EPS,
        gamma: Some(gamma),
        beta: Some(beta),
    }
}

/// `Linear → (norm) → tanh`, with its activations kept for the backward pass.
#[derive(Clone)]
struct Hidden<N> {
    linear: Linear,
    norm: Option<N>,
    /// Linear output, the input of BN.
    pre: Vec<f32>,
    /// BN output (unused without BN), the input of tanh.
    normed: Vec<f32>,
    /// tanh output.
    act: Vec<f32>,
    /// Gradient scratch: ∂L/∂(tanh input), ∂L/∂(BN input).
    dnormed: Vec<f32>,
    dpre: Vec<f32>,
}

impl<N: Normalize> Hidden<N> {
    /// `x → Linear → (BN) → tanh`, keeping every intermediate for the backward pass.
    fn forward(&mut self, x: &[f32], mode: Mode) -> Result<(), Error> {
        self.linear.forward(x, &mut self.pre);
        let z = match &mut self.norm {
            Some(norm) => {
                norm.forward(&self.pre, &mut self.normed, mode)?;
                &self.normed
            }
            None => &self.pre,
        };
        self.act.clear();
        self.act.extend(z.iter().map(|z| z.tanh()));
        Ok(())
    }

    /// From `dact = ∂L/∂act` back through tanh, BN and the linear layer; writes ∂L/∂x
    /// into `dx` when given.
    fn backward(
        &mut self,
        x: &[f32],
        dact: &[f32],
        dx: Option<&mut Vec<f32>>,
    ) -> Result<(), Error> {
        // tanh' = 1 − tanh²
        self.dnormed.clear();
        let dtanh = dact.iter().zip(&self.act).map(|(d, a)| d * (1.0 - a * a));
        self.dnormed.extend(dtanh);
        let dpre = match &mut self.norm {
            Some(norm) => {
                norm.backward(&self.dnormed, &self.pre, &mut self.dpre)?;
                &self.dpre
            }
            None => &self.dnormed,
        };
        self.linear.backward(x, dpre, dx);
        Ok(())
    }

    fn step(&mut self, lr: f32) {
        self.linear.step(lr);
        if let Some(norm) = &mut self.norm {
            norm.params().into_iter().for_each(|p| p.step(lr));
        }
    }

    /// The fraction of the last forward's tanh outputs that are saturated,
    /// |tanh| > 0.99, where tanh' < 0.02: the unit passes almost no gradient.
    fn saturation(&self) -> f64 {
        let saturated = self.act.iter().filter(|a| a.abs() > 0.99).count();
        saturated as f64 / self.act.len() as f64
    }
}

/// Loss and correct predictions of one forward pass.
#[derive(Clone, Copy, Default)]
pub struct Score {
    /// Summed (not averaged) cross-entropy.
    pub loss: f64,
    pub correct: usize,
}

/// The network, with `N` after every hidden linear layer (or nothing).
#[derive(Clone)]
pub struct Mlp<N = Norm> {
    hidden: Vec<Hidden<N>>,
    out: Linear,
    logits: Vec<f32>,
    /// ∂L/∂logits, then ∂L/∂act of each hidden layer, going down.
    grad: Vec<f32>,
    grad_below: Vec<f32>,
}

impl Mlp {
    /// `inputs → widths[0] → … → classes`, BN after every hidden linear layer if
    /// `batch_norm`. The same `rng` state gives the same weights with and without BN.
    ///
    /// The linear layers keep their bias also before BN, where it is redundant (BN
    /// subtracts the batch mean, so ∂L/∂b is 0 up to rounding and b stays ≈ 0): the
    /// two networks then differ in BN alone, and the fold has a bias to absorb BN's
    /// shift.
    pub fn new(
        inputs: usize,
        widths: &[usize],
        classes: usize,
        batch_norm: bool,
        rng: &mut Rng,
    ) -> Self {
        Self::with_norm(
            inputs,
            widths,
            classes,
            |w| batch_norm.then(|| Norm::new(w)),
            rng,
        )
    }

    /// The same network in eval mode with every BN folded into the linear layer
    /// before it (`batchnorm::fold`): `Linear' → tanh`, no BN left.
    pub fn folded(&self) -> Result<Mlp, Error> {
        let mut net = self.clone();
        for h in &mut net.hidden {
            if let Some(norm) = h.norm.take() {
                let linear = &mut h.linear;
                let layer = Layer::linear(linear.inputs, linear.outputs); // weight [out][in]
                let (weight, bias) = (&mut linear.weight.value, &mut linear.bias.value);
                fold::into_preceding(&norm.eval_bn(), layer, weight, bias)?;
            }
        }
        Ok(net)
    }
}

impl<N: Normalize> Mlp<N> {
    /// `inputs → widths[0] → … → classes` with `norm(width)` after every hidden
    /// linear layer. The weights depend on `rng` alone, not on the norm.
    pub fn with_norm(
        inputs: usize,
        widths: &[usize],
        classes: usize,
        mut norm: impl FnMut(usize) -> Option<N>,
        rng: &mut Rng,
    ) -> Self {
        let mut fan_in = inputs;
        let mut hidden = Vec::new();
        for &width in widths {
            hidden.push(Hidden {
                linear: Linear::new(fan_in, width, rng),
                norm: norm(width),
                pre: Vec::new(),
                normed: Vec::new(),
                act: Vec::new(),
                dnormed: Vec::new(),
                dpre: Vec::new(),
            });
            fan_in = width;
        }
        Mlp {
            hidden,
            out: Linear::new(fan_in, classes, rng),
            logits: Vec::new(),
            grad: Vec::new(),
            grad_below: Vec::new(),
        }
    }

    /// Per hidden layer, the fraction of saturated tanh units in the last forward.
    pub fn saturation(&self) -> Vec<f64> {
        self.hidden.iter().map(Hidden::saturation).collect()
    }

    /// Per hidden layer, its tanh outputs `[batch][width]` in the last forward.
    pub fn activations(&self) -> Vec<&[f32]> {
        self.hidden.iter().map(|h| &h.act[..]).collect()
    }

    /// Every trainable tensor, in a fixed order: per hidden layer its weight, bias
    /// and norm parameters, then the output layer's weight and bias.
    pub fn params(&mut self) -> Vec<&mut Param> {
        let mut params = Vec::new();
        for h in &mut self.hidden {
            params.extend([&mut h.linear.weight, &mut h.linear.bias]);
            if let Some(norm) = &mut h.norm {
                params.extend(norm.params());
            }
        }
        params.extend([&mut self.out.weight, &mut self.out.bias]);
        params
    }

    /// The logits of the points `x` (`[n][inputs]`).
    pub fn forward(&mut self, x: &[f32], mode: Mode) -> Result<&[f32], Error> {
        for i in 0..self.hidden.len() {
            let (below, rest) = self.hidden.split_at_mut(i);
            let input = below.last().map_or(x, |h| &h.act[..]);
            rest[0].forward(input, mode)?;
        }
        let input = self.hidden.last().map_or(x, |h| &h.act[..]);
        self.out.forward(input, &mut self.logits);
        Ok(&self.logits)
    }

    /// One step of mini-batch SGD on the batch (`x`, `labels`): forward in train mode,
    /// softmax cross-entropy averaged over the batch, backward, update.
    pub fn train_step(&mut self, x: &[f32], labels: &[usize], lr: f32) -> Result<Score, Error> {
        let score = self.gradients(x, labels)?;
        self.out.step(lr);
        for h in &mut self.hidden {
            h.step(lr);
        }
        Ok(score)
    }

    /// Forward in train mode and backward: every layer keeps the gradient of the mean
    /// cross-entropy over the batch with respect to its parameters.
    pub fn gradients(&mut self, x: &[f32], labels: &[usize]) -> Result<Score, Error> {
        self.forward(x, Mode::Train)?;
        let score = softmax_cross_entropy(&self.logits, labels, Some(&mut self.grad));
        let last = self.hidden.last().map_or(x, |h| &h.act[..]);
        self.out
            .backward(last, &self.grad, Some(&mut self.grad_below));
        std::mem::swap(&mut self.grad, &mut self.grad_below);
        for i in (0..self.hidden.len()).rev() {
            let (below, rest) = self.hidden.split_at_mut(i);
            let input = below.last().map_or(x, |h| &h.act[..]);
            let dx = (i > 0).then_some(&mut self.grad_below);
            rest[0].backward(input, &self.grad, dx)?;
            std::mem::swap(&mut self.grad, &mut self.grad_below);
        }
        Ok(score)
    }

    /// Loss and accuracy in eval mode (BN with its running statistics).
    pub fn evaluate(&mut self, x: &[f32], labels: &[usize]) -> Result<Score, Error> {
        let logits = self.forward(x, Mode::Eval)?;
        Ok(softmax_cross_entropy(logits, labels, None))
    }
}

/// Summed cross-entropy of softmax(logits) against `labels`, and the number of
/// correct argmax predictions. With `grad`, also the gradient of the *mean* loss,
/// ∂L/∂logits = (softmax − one-hot)/batch.
fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[usize],
    mut grad: Option<&mut Vec<f32>>,
) -> Score {
    let (batch, classes) = (labels.len(), logits.len() / labels.len());
    if let Some(grad) = grad.as_deref_mut() {
        grad.resize(logits.len(), 0.0);
    }
    let mut score = Score::default();
    for (n, (row, &label)) in logits.chunks_exact(classes).zip(labels).enumerate() {
        // Shifted by the max so that exp cannot overflow, however large the logits grow.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp = |v: f32| f64::from(v - max).exp();
        let sum: f64 = row.iter().map(|&v| exp(v)).sum();
        score.loss += sum.ln() - f64::from(row[label] - max);
        score.correct += usize::from(argmax(row) == label);
        if let Some(grad) = grad.as_deref_mut() {
            let grad_row = &mut grad[n * classes..][..classes];
            for (i, (g, &v)) in grad_row.iter_mut().zip(row).enumerate() {
                let target = if i == label { 1.0 } else { 0.0 };
                *g = ((exp(v) / sum - target) / batch as f64) as f32;
            }
        }
    }
    score
}

/// The index of the largest value (the first, on ties).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Picks one parameter tensor of a network.
    type Pick = fn(&mut Mlp) -> &mut Param;

    /// The analytic gradients — through the crate's BN backward where there is BN —
    /// against central differences of the loss. The loss is computed in f32, so the
    /// tolerance is loose; a wrong formula is off by far more.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(1);
        let x: Vec<f32> = (0..16).map(|_| rng.normal() as f32).collect();
        let labels = [0, 1, 2, 1, 0, 2, 2, 1];
        let mut picks: Vec<(Pick, usize)> = vec![
            (|n| &mut n.hidden[0].linear.weight, 3),
            (|n| &mut n.hidden[1].linear.weight, 7),
            (|n| &mut n.out.weight, 4),
            (|n| &mut n.out.bias, 1),
        ];
        for batch_norm in [false, true] {
            if batch_norm {
                picks.push((|n| &mut n.hidden[0].norm.as_mut().unwrap().gamma, 2));
                picks.push((|n| &mut n.hidden[1].norm.as_mut().unwrap().beta, 4));
            }
            let mut net = Mlp::new(2, &[6, 5], 3, batch_norm, &mut rng);
            let mean_loss = |net: &mut Mlp| net.gradients(&x, &labels).unwrap().loss / 8.0;
            mean_loss(&mut net);
            for &(pick, i) in &picks {
                let analytic = f64::from(pick(&mut net).grad[i]);
                let h = 1e-2;
                let loss_at = |delta: f32| {
                    let mut probe = net.clone();
                    pick(&mut probe).value[i] += delta;
                    mean_loss(&mut probe)
                };
                let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * f64::from(h));
                assert!(
                    (analytic - numeric).abs() <= 1e-3 + 2e-2 * numeric.abs(),
                    "BN {batch_norm}: analytic {analytic}, numeric {numeric}"
                );
            }
        }
    }
}
