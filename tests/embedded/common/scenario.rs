// Runs every kernel family of batchnorm once on one case, with γ and β given: the
// computation both the firmware and the host tool (which writes expected.rs) perform.

use crate::data::{Case, Inputs, EPS, MAX_C, MAX_LEN, MOMENTUM};
use batchnorm::{moments, BatchNorm, Error, Grads, Moments, Momentum, Running};

/// Everything the kernels produce for one case.
pub struct Outputs {
    pub moments: [Moments; MAX_C],
    /// train: y, saved statistics, running statistics after an exponential update.
    pub y_train: [f32; MAX_LEN],
    pub save_mean: [f32; MAX_C],
    pub save_invstd: [f32; MAX_C],
    pub running_mean: [f32; MAX_C],
    pub running_var: [f32; MAX_C],
    /// eval forward with the case's running statistics.
    pub y_eval: [f32; MAX_LEN],
    /// train-mode backward from the saved statistics.
    pub dx: [f32; MAX_LEN],
    pub dgamma: [f32; MAX_C],
    pub dbeta: [f32; MAX_C],
    /// eval-mode backward from the case's running statistics.
    pub dx_eval: [f32; MAX_LEN],
    pub dgamma_eval: [f32; MAX_C],
    pub dbeta_eval: [f32; MAX_C],
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs {
            moments: [Moments::EMPTY; MAX_C],
            y_train: [0.0; MAX_LEN],
            save_mean: [0.0; MAX_C],
            save_invstd: [0.0; MAX_C],
            running_mean: [0.0; MAX_C],
            running_var: [0.0; MAX_C],
            y_eval: [0.0; MAX_LEN],
            dx: [0.0; MAX_LEN],
            dgamma: [0.0; MAX_C],
            dbeta: [0.0; MAX_C],
            dx_eval: [0.0; MAX_LEN],
            dgamma_eval: [0.0; MAX_C],
            dbeta_eval: [0.0; MAX_C],
        }
    }
}

/// Which kernel call failed, and how.
pub type Failed = (&'static str, Error);

pub fn run(case: &Case, inp: &Inputs, o: &mut Outputs) -> Result<(), Failed> {
    let sh = case.shape;
    let n = crate::data::len(case);
    let c = sh.channels;
    let (x, dy) = (&inp.x[..n], &inp.dy[..n]);
    let (rm, rv) = (&inp.running_mean[..c], &inp.running_var[..c]);
    let bn = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..c]),
        beta: Some(&inp.beta[..c]),
    };

    moments(x, sh, &mut o.moments[..c]).map_err(|e| ("moments", e))?;

    o.running_mean[..c].copy_from_slice(rm);
    o.running_var[..c].copy_from_slice(rv);
    bn.train(
        x,
        &mut o.y_train[..n],
        sh,
        &mut o.save_mean[..c],
        &mut o.save_invstd[..c],
        Some(Running {
            mean: &mut o.running_mean[..c],
            var: &mut o.running_var[..c],
            momentum: Momentum::Exponential(MOMENTUM),
        }),
    )
    .map_err(|e| ("train", e))?;

    bn.eval(x, &mut o.y_eval[..n], sh, rm, rv)
        .map_err(|e| ("eval", e))?;

    bn.backward(
        dy,
        x,
        sh,
        &o.save_mean[..c],
        &o.save_invstd[..c],
        Grads {
            dx: &mut o.dx[..n],
            dgamma: Some(&mut o.dgamma[..c]),
            dbeta: Some(&mut o.dbeta[..c]),
        },
    )
    .map_err(|e| ("backward", e))?;

    bn.backward_eval(
        dy,
        x,
        sh,
        rm,
        rv,
        Grads {
            dx: &mut o.dx_eval[..n],
            dgamma: Some(&mut o.dgamma_eval[..c]),
            dbeta: Some(&mut o.dbeta_eval[..c]),
        },
    )
    .map_err(|e| ("backward_eval", e))?;
    Ok(())
}

/// A value the host records in expected.rs and the firmware compares with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum What {
    Mean,
    Var,
    SaveMean,
    SaveInvstd,
    TrainY,
    RunningMean,
    RunningVar,
    EvalY,
    Dx,
    Dgamma,
    Dbeta,
    DxEval,
    DgammaEval,
    DbetaEval,
    FoldWeight,
    FoldBias,
    FoldPad,
}

impl Outputs {
    pub fn get(&self, what: What, i: usize) -> f64 {
        match what {
            What::Mean => self.moments[i].mean,
            What::Var => self.moments[i].var(),
            What::SaveMean => self.save_mean[i] as f64,
            What::SaveInvstd => self.save_invstd[i] as f64,
            What::TrainY => self.y_train[i] as f64,
            What::RunningMean => self.running_mean[i] as f64,
            What::RunningVar => self.running_var[i] as f64,
            What::EvalY => self.y_eval[i] as f64,
            What::Dx => self.dx[i] as f64,
            What::Dgamma => self.dgamma[i] as f64,
            What::Dbeta => self.dbeta[i] as f64,
            What::DxEval => self.dx_eval[i] as f64,
            What::DgammaEval => self.dgamma_eval[i] as f64,
            What::DbetaEval => self.dbeta_eval[i] as f64,
            _ => f64::NAN,
        }
    }
}

/// A value computed on the host by the crate (and checked there against f64), that the
/// firmware must reproduce within `tol`.
pub struct Expected {
    pub case: &'static str,
    pub what: What,
    pub index: usize,
    pub value: f64,
    pub tol: f64,
}

// ---- folding --------------------------------------------------------------------------

use crate::data::{FoldCase, FoldInputs, FOLD_MAX_C, FOLD_MAX_W};
use batchnorm::fold::{self, EvalBn};

/// Folded weight and bias (and, for BN before a layer, the pad values).
pub struct FoldOutputs {
    pub weight: [f32; FOLD_MAX_W],
    pub bias: [f32; FOLD_MAX_C],
    pub pad: [f32; FOLD_MAX_C],
}

impl FoldOutputs {
    pub fn get(&self, what: What, i: usize) -> f64 {
        match what {
            What::FoldWeight => self.weight[i] as f64,
            What::FoldBias => self.bias[i] as f64,
            _ => self.pad[i] as f64,
        }
    }
}

pub fn run_fold(case: &FoldCase, inp: &FoldInputs) -> Result<FoldOutputs, Failed> {
    let l = case.layer;
    let nw = crate::data::weight_len(l);
    let nc = if case.bn_after {
        l.out_channels
    } else {
        l.in_channels
    };
    let bn = EvalBn {
        running_mean: &inp.running_mean[..nc],
        running_var: &inp.running_var[..nc],
        gamma: Some(&inp.gamma[..nc]),
        beta: Some(&inp.beta[..nc]),
        eps: EPS,
    };
    let mut o = FoldOutputs {
        weight: inp.weight,
        bias: inp.bias,
        pad: [0.0; FOLD_MAX_C],
    };
    if case.bn_after {
        fold::into_preceding(&bn, l, &mut o.weight[..nw], &mut o.bias[..l.out_channels])
            .map_err(|e| ("fold::into_preceding", e))?;
    } else {
        fold::into_following(
            &bn,
            l,
            &mut o.weight[..nw],
            &mut o.bias[..l.out_channels],
            Some(&mut o.pad[..nc]),
        )
        .map_err(|e| ("fold::into_following", e))?;
    }
    Ok(o)
}
