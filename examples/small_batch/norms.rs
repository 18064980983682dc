//! The layers the `small_batch` demo puts where the `mlp` demo has BN: Batch
//! Renormalization ([`BatchRenorm`], with the paper's schedule of its limits), and
//! group and layer norm ([`PerSample`]). Every one is a call into `batchnorm`
//! (`BatchNorm::train_renorm`/`backward_renorm`/`eval`, `GroupNorm::forward`/`backward`,
//! `LayerNorm::forward`/`backward`); the example owns the buffers.

use batchnorm::{
    BatchNorm, Error, Grads, GroupNorm, LayerNorm, Momentum, Renorm, RenormSaved, RenormSavedMut,
    Rows, Running, RunningStats, Saved, SavedMut, Shape,
};

use crate::linear::Param;
use crate::net::{Mode, Normalize, EPS};

/// The limits of Batch Renormalization's corrections over a run of `steps` train
/// steps. Ioffe (2017, §4) keeps `rmax = 1`, `dmax = 0` (plain BN) for the first 5000
/// steps, then relaxes them to reach `rmax = 3` at 40k steps and `dmax = 5` at 25k.
/// Here those milestones keep their ratios and the last one (40k) falls at
/// [`RELAXED_AT`] of the run: plain BN for the first 1/16 of the steps, `dmax` at 5
/// from 5/16 on, `rmax` at 3 from half-way on; linear in between.
#[derive(Clone, Copy)]
pub struct Schedule {
    pub steps: usize,
}

/// The update rate of the running statistics, of BN and Batch Renormalization alike:
/// Ioffe's (2017, §4) "relatively fast" 0.01, not PyTorch's 0.1. Batch
/// Renormalization normalizes by the running statistics during training too, so at
/// small batches it needs them averaged over many batches.
pub const MOMENTUM: Momentum = Momentum::Exponential(0.01);

/// The fraction of a run at which the limits are fully relaxed (the paper's 40k steps).
pub const RELAXED_AT: f64 = 0.5;

impl Schedule {
    /// The limits at train step `step`.
    pub fn at(self, step: usize) -> Renorm {
        // The paper's step, in thousands, that this step corresponds to.
        let k = 40.0 * step as f64 / (RELAXED_AT * self.steps.max(1) as f64);
        let ramp = |from: f64, to: f64| ((k - from) / (to - from)).clamp(0.0, 1.0);
        Renorm {
            rmax: (1.0 + 2.0 * ramp(5.0, 40.0)) as f32,
            dmax: (5.0 * ramp(5.0, 25.0)) as f32,
        }
    }
}

/// Batch Renormalization over `[batch][features]`: γ, β, running statistics (updated
/// as BN's, at [`MOMENTUM`]), and what the train forward saves for backward.
#[derive(Clone)]
pub struct BatchRenorm {
    gamma: Param,
    beta: Param,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    /// Saved by the last train forward: batch mean, 1/σ_B, r, d.
    mean: Vec<f32>,
    invstd: Vec<f32>,
    r: Vec<f32>,
    d: Vec<f32>,
    schedule: Schedule,
    /// Train forwards so far: where in the schedule the layer is. A clone continues
    /// from the same step (the finite-difference check relies on it).
    step: usize,
}

impl BatchRenorm {
    /// γ = 1, β = 0, running mean 0 and variance 1, as BN starts.
    pub fn new(features: usize, schedule: Schedule) -> Self {
        let (ones, zeros) = (vec![1.0; features], vec![0.0; features]);
        BatchRenorm {
            gamma: Param::new(ones.clone()),
            beta: Param::new(zeros.clone()),
            running_mean: zeros.clone(),
            running_var: ones,
            mean: zeros.clone(),
            invstd: zeros.clone(),
            r: zeros.clone(),
            d: zeros,
            schedule,
            step: 0,
        }
    }

    fn shape(&self, x: &[f32]) -> Shape {
        let features = self.running_mean.len();
        Shape::rows(x.len() / features, features)
    }
}

impl Normalize for BatchRenorm {
    /// Train: the batch statistics corrected by r and d towards the running ones, with
    /// this step's limits. Eval: the running statistics, as BN is deployed.
    fn forward(&mut self, x: &[f32], y: &mut Vec<f32>, mode: Mode) -> Result<(), Error> {
        let shape = self.shape(x);
        y.resize(x.len(), 0.0);
        let bn = BatchNorm {
            eps: EPS,
            gamma: Some(&self.gamma.value),
            beta: Some(&self.beta.value),
        };
        match mode {
            Mode::Train => {
                let limits = self.schedule.at(self.step);
                self.step += 1;
                let saved = RenormSavedMut {
                    mean: &mut self.mean,
                    invstd: &mut self.invstd,
                    r: &mut self.r,
                    d: &mut self.d,
                };
                let mut running =
                    Running::new(&mut self.running_mean, &mut self.running_var, MOMENTUM);
                bn.train_renorm(x, y, shape, limits, saved, &mut running)
            }
            Mode::Eval => bn.eval(
                x,
                y,
                shape,
                RunningStats {
                    mean: &self.running_mean,
                    var: &self.running_var,
                },
            ),
        }
    }

    /// The paper's backward: r and d are constants (no gradient flows through them).
    fn backward(&mut self, dy: &[f32], x: &[f32], dx: &mut Vec<f32>) -> Result<(), Error> {
        let shape = self.shape(x);
        dx.resize(x.len(), 0.0);
        let bn = BatchNorm {
            eps: EPS,
            gamma: Some(&self.gamma.value),
            beta: Some(&self.beta.value),
        };
        let saved = RenormSaved {
            mean: &self.mean,
            invstd: &self.invstd,
            r: &self.r,
            d: &self.d,
        };
        let grads = Grads {
            dx,
            dgamma: Some(&mut self.gamma.grad),
            dbeta: Some(&mut self.beta.grad),
        };
        bn.backward_renorm(x, dy, shape, saved, grads)
    }

    fn params(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }
}

/// Which statistics per sample.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Group norm: `groups` groups of consecutive features.
    Group { groups: usize },
    /// Layer norm: all the features of the sample.
    Layer,
}

/// Group or layer norm over `[batch][features]`: every sample normalized by its own
/// statistics, the same computation in training and in deployment; γ and β per
/// feature.
#[derive(Clone)]
pub struct PerSample {
    kind: Kind,
    gamma: Param,
    beta: Param,
    /// `[batch][groups]` (one group for layer norm), saved by the last train forward.
    mean: Vec<f32>,
    invstd: Vec<f32>,
    /// What an eval forward writes, so that it leaves the train forward's state alone.
    eval_mean: Vec<f32>,
    eval_invstd: Vec<f32>,
}

impl PerSample {
    /// γ = 1, β = 0, as PyTorch's `nn.GroupNorm` and `nn.LayerNorm` start.
    pub fn new(features: usize, kind: Kind) -> Self {
        PerSample {
            kind,
            gamma: Param::new(vec![1.0; features]),
            beta: Param::new(vec![0.0; features]),
            mean: Vec::new(),
            invstd: Vec::new(),
            eval_mean: Vec::new(),
            eval_invstd: Vec::new(),
        }
    }

    fn groups(&self) -> usize {
        match self.kind {
            Kind::Group { groups } => groups,
            Kind::Layer => 1,
        }
    }
}

impl Normalize for PerSample {
    fn forward(&mut self, x: &[f32], y: &mut Vec<f32>, mode: Mode) -> Result<(), Error> {
        let features = self.gamma.value.len();
        let batch = x.len() / features;
        let stats = batch * self.groups();
        y.resize(x.len(), 0.0);
        let (mean, invstd) = match mode {
            Mode::Train => (&mut self.mean, &mut self.invstd),
            Mode::Eval => (&mut self.eval_mean, &mut self.eval_invstd),
        };
        mean.resize(stats, 0.0);
        invstd.resize(stats, 0.0);
        let saved = SavedMut { mean, invstd };
        let (gamma, beta) = (Some(&self.gamma.value[..]), Some(&self.beta.value[..]));
        match self.kind {
            Kind::Group { groups } => {
                let gn = GroupNorm {
                    groups,
                    eps: EPS,
                    gamma,
                    beta,
                };
                gn.forward(x, y, Shape::rows(batch, features), saved)
            }
            Kind::Layer => {
                let ln = LayerNorm {
                    eps: EPS,
                    gamma,
                    beta,
                };
                ln.forward(x, y, Rows::new(batch, features), saved)
            }
        }
    }

    fn backward(&mut self, dy: &[f32], x: &[f32], dx: &mut Vec<f32>) -> Result<(), Error> {
        let features = self.gamma.value.len();
        let batch = x.len() / features;
        dx.resize(x.len(), 0.0);
        let saved = Saved {
            mean: &self.mean,
            invstd: &self.invstd,
        };
        let grads = Grads {
            dx,
            dgamma: Some(&mut self.gamma.grad),
            dbeta: Some(&mut self.beta.grad),
        };
        let (gamma, beta) = (Some(&self.gamma.value[..]), Some(&self.beta.value[..]));
        match self.kind {
            Kind::Group { groups } => {
                let gn = GroupNorm {
                    groups,
                    eps: EPS,
                    gamma,
                    beta,
                };
                gn.backward(x, dy, Shape::rows(batch, features), saved, grads)
            }
            Kind::Layer => {
                let ln = LayerNorm {
                    eps: EPS,
                    gamma,
                    beta,
                };
                ln.backward(x, dy, Rows::new(batch, features), saved, grads)
            }
        }
    }

    fn params(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Rng;
    use crate::net::Mlp;

    /// Every parameter tensor's gradient (first and last element) against central
    /// differences of the mean loss on one batch; the linear biases before a norm
    /// that removes their effect are skipped where `skip` says so.
    fn check_gradients<N: Normalize>(net: &Mlp<N>, skip: &[usize]) -> usize {
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..16).map(|_| rng.normal() as f32).collect();
        let labels = [0, 1, 2, 1, 0, 2, 2, 1];
        let mean_loss = |net: &mut Mlp<N>| net.gradients(&x, &labels).unwrap().loss / 8.0;
        let mut analytic_net = net.clone();
        mean_loss(&mut analytic_net);
        let analytic = analytic_net.params();
        assert_eq!(
            analytic.len(),
            2 * 4 + 2,
            "W, b, γ, β per hidden layer; output"
        );
        let mut checked = 0;
        for (t, tensor) in analytic.iter().enumerate() {
            if skip.contains(&t) {
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
        checked
    }

    fn network<N: Normalize>(norm: impl FnMut(usize) -> Option<N>) -> Mlp<N> {
        Mlp::with_norm(2, &[6, 4], 3, norm, &mut Rng::new(11))
    }

    /// A renorm layer 3/16 into a run, where the limits are rmax ≈ 1.14 and dmax
    /// 0.625, with running statistics (mean 20, variance 100) far from any batch's
    /// here: every unit's r and d sit at their limits, not at BN's 1 and 0.
    fn clipped_renorm(features: usize) -> BatchRenorm {
        let mut layer = BatchRenorm::new(features, Schedule { steps: 1600 });
        layer.step = 150;
        layer.running_mean.fill(20.0);
        layer.running_var.fill(100.0);
        layer
    }

    /// Batch Renormalization's backward treats r and d as constants, which is the
    /// loss's true gradient where they are clipped, so the check runs there
    /// ([`clipped_renorm`]); the first test shows that they are.
    #[test]
    fn renorm_corrections_are_clipped_in_the_gradient_check() {
        let limits = Schedule { steps: 1600 }.at(150);
        assert!((limits.rmax - 8.0 / 7.0).abs() < 1e-6 && limits.dmax == 0.625);
        let mut layer = clipped_renorm(3);
        let x = [
            0.3, -2.0, 5.0, -1.2, 1.0, 2.5, 4.0, 0.1, -6.0, 0.7, -0.4, 3.0,
        ];
        layer.forward(&x, &mut Vec::new(), Mode::Train).unwrap();
        assert!(layer
            .r
            .iter()
            .all(|&r| (r - 1.0 / limits.rmax).abs() < 1e-6));
        assert!(layer.d.iter().all(|&d| d == -limits.dmax), "{:?}", layer.d);
    }

    #[test]
    fn renorm_gradients_match_finite_differences() {
        let net = network(|w| Some(clipped_renorm(w)));
        // Linear biases before a batch norm have gradient 0: skip them.
        assert_eq!(check_gradients(&net, &[1, 5]), 16);
    }

    #[test]
    fn group_and_layer_norm_gradients_match_finite_differences() {
        for kind in [Kind::Group { groups: 2 }, Kind::Layer] {
            let net = network(|w| Some(PerSample::new(w, kind)));
            assert_eq!(check_gradients(&net, &[]), 20, "{kind:?}");
        }
    }

    /// Layer norm over a sample's features is group norm with one group: two kernels,
    /// one answer. Two groups give another.
    #[test]
    fn layer_norm_is_group_norm_with_one_group() {
        let x: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 - 3.0).collect();
        let run = |kind| {
            let mut layer = PerSample::new(8, kind);
            layer.gamma.value = (0..8).map(|i| 0.5 + i as f32 / 8.0).collect();
            layer.beta.value = (0..8).map(|i| i as f32 / 4.0 - 1.0).collect();
            let mut y = Vec::new();
            layer.forward(&x, &mut y, Mode::Train).unwrap();
            y
        };
        let (layer, one, two) = (
            run(Kind::Layer),
            run(Kind::Group { groups: 1 }),
            run(Kind::Group { groups: 2 }),
        );
        let max_diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        };
        assert!(max_diff(&layer, &one) < 1e-5);
        assert!(max_diff(&layer, &two) > 1e-2);
    }

    #[test]
    fn schedule_starts_as_batch_norm_and_relaxes_to_the_papers_limits() {
        let s = Schedule { steps: 1600 };
        assert_eq!(
            s.at(0),
            Renorm {
                rmax: 1.0,
                dmax: 0.0
            }
        );
        assert_eq!(
            s.at(100),
            Renorm {
                rmax: 1.0,
                dmax: 0.0
            }
        ); // 1/16 of the run
        assert_eq!(s.at(500).dmax, 5.0); // 5/16
        assert!(s.at(500).rmax > 1.0 && s.at(500).rmax < 3.0);
        assert_eq!(
            s.at(800),
            Renorm {
                rmax: 3.0,
                dmax: 5.0
            }
        ); // half-way
        assert_eq!(
            s.at(1599),
            Renorm {
                rmax: 3.0,
                dmax: 5.0
            }
        );
    }
}
