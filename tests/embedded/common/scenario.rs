// Runs every kernel family of batchnorm once on one case, with γ and β given: the
// computation both the firmware and the host tool (which writes expected.rs) perform.
// The fused and renorm backward passes start from what their forward passes wrote.

use crate::data::{Case, Inputs, DMAX, EPS, MAX_C, MAX_LEN, MOMENTUM, RMAX};
use batchnorm::{
    moments, BatchNorm, Error, Fusion, FusionGrad, Grads, Moments, Momentum, Renorm, RenormSaved,
    RenormSavedMut, Running, RunningStats,
};

/// Batch Renormalization's limits of the cases.
pub const RENORM: Renorm = Renorm {
    rmax: RMAX,
    dmax: DMAX,
};

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
    /// eval_fused: relu(bn(x)) and relu(bn(x) + z).
    pub y_eval_relu: [f32; MAX_LEN],
    pub y_eval_add_relu: [f32; MAX_LEN],
    /// train_fused relu(bn(x) + z), its statistics and running statistics (exponential).
    pub y_train_add_relu: [f32; MAX_LEN],
    pub fused_save_mean: [f32; MAX_C],
    pub fused_save_invstd: [f32; MAX_C],
    pub fused_running_mean: [f32; MAX_C],
    pub fused_running_var: [f32; MAX_C],
    /// backward_fused (Add + ReLU) from train_fused's y and statistics.
    pub dx_fused: [f32; MAX_LEN],
    pub dz_fused: [f32; MAX_LEN],
    pub dgamma_fused: [f32; MAX_C],
    pub dbeta_fused: [f32; MAX_C],
    /// backward_eval_fused (ReLU) from eval_fused's relu output.
    pub dx_eval_fused: [f32; MAX_LEN],
    pub dgamma_eval_fused: [f32; MAX_C],
    pub dbeta_eval_fused: [f32; MAX_C],
    /// train_renorm with RENORM: y, the saved statistics and corrections, running
    /// statistics (exponential).
    pub y_renorm: [f32; MAX_LEN],
    pub renorm_mean: [f32; MAX_C],
    pub renorm_invstd: [f32; MAX_C],
    pub renorm_r: [f32; MAX_C],
    pub renorm_d: [f32; MAX_C],
    pub renorm_running_mean: [f32; MAX_C],
    pub renorm_running_var: [f32; MAX_C],
    /// backward_renorm from train_renorm's saved values.
    pub dx_renorm: [f32; MAX_LEN],
    pub dgamma_renorm: [f32; MAX_C],
    pub dbeta_renorm: [f32; MAX_C],
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
            y_eval_relu: [0.0; MAX_LEN],
            y_eval_add_relu: [0.0; MAX_LEN],
            y_train_add_relu: [0.0; MAX_LEN],
            fused_save_mean: [0.0; MAX_C],
            fused_save_invstd: [0.0; MAX_C],
            fused_running_mean: [0.0; MAX_C],
            fused_running_var: [0.0; MAX_C],
            dx_fused: [0.0; MAX_LEN],
            dz_fused: [0.0; MAX_LEN],
            dgamma_fused: [0.0; MAX_C],
            dbeta_fused: [0.0; MAX_C],
            dx_eval_fused: [0.0; MAX_LEN],
            dgamma_eval_fused: [0.0; MAX_C],
            dbeta_eval_fused: [0.0; MAX_C],
            y_renorm: [0.0; MAX_LEN],
            renorm_mean: [0.0; MAX_C],
            renorm_invstd: [0.0; MAX_C],
            renorm_r: [0.0; MAX_C],
            renorm_d: [0.0; MAX_C],
            renorm_running_mean: [0.0; MAX_C],
            renorm_running_var: [0.0; MAX_C],
            dx_renorm: [0.0; MAX_LEN],
            dgamma_renorm: [0.0; MAX_C],
            dbeta_renorm: [0.0; MAX_C],
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
        SavedMut {
            mean: &mut o.save_mean[..c],
            invstd: &mut o.save_invstd[..c],
        },
        Some(&mut Running::new(
            &mut o.running_mean[..c],
            &mut o.running_var[..c],
            Momentum::Exponential(MOMENTUM),
        )),
    )
    .map_err(|e| ("train", e))?;

    bn.eval(
        x,
        &mut o.y_eval[..n],
        sh,
        RunningStats { mean: rm, var: rv },
    )
    .map_err(|e| ("eval", e))?;

    bn.backward(
        x,
        dy,
        sh,
        Saved {
            mean: &o.save_mean[..c],
            invstd: &o.save_invstd[..c],
        },
        Grads {
            dx: &mut o.dx[..n],
            dgamma: Some(&mut o.dgamma[..c]),
            dbeta: Some(&mut o.dbeta[..c]),
        },
    )
    .map_err(|e| ("backward", e))?;

    bn.backward_eval(
        x,
        dy,
        sh,
        RunningStats { mean: rm, var: rv },
        Grads {
            dx: &mut o.dx_eval[..n],
            dgamma: Some(&mut o.dgamma_eval[..c]),
            dbeta: Some(&mut o.dbeta_eval[..c]),
        },
    )
    .map_err(|e| ("backward_eval", e))?;

    // ---- fused BN + ReLU, BN + Add + ReLU
    let z = &inp.z[..n];
    bn.eval_fused(
        x,
        &mut o.y_eval_relu[..n],
        sh,
        Fusion::Relu,
        RunningStats { mean: rm, var: rv },
    )
    .map_err(|e| ("eval_fused ReLU", e))?;
    bn.eval_fused(
        x,
        &mut o.y_eval_add_relu[..n],
        sh,
        Fusion::AddRelu { z },
        RunningStats { mean: rm, var: rv },
    )
    .map_err(|e| ("eval_fused Add+ReLU", e))?;
    o.fused_running_mean[..c].copy_from_slice(rm);
    o.fused_running_var[..c].copy_from_slice(rv);
    bn.train_fused(
        x,
        &mut o.y_train_add_relu[..n],
        sh,
        Fusion::AddRelu { z },
        SavedMut {
            mean: &mut o.fused_save_mean[..c],
            invstd: &mut o.fused_save_invstd[..c],
        },
        Some(&mut Running::new(
            &mut o.fused_running_mean[..c],
            &mut o.fused_running_var[..c],
            Momentum::Exponential(MOMENTUM),
        )),
    )
    .map_err(|e| ("train_fused Add+ReLU", e))?;
    bn.backward_fused(
        x,
        dy,
        &o.y_train_add_relu[..n],
        sh,
        FusionGrad::AddRelu {
            dz: &mut o.dz_fused[..n],
        },
        Saved {
            mean: &o.fused_save_mean[..c],
            invstd: &o.fused_save_invstd[..c],
        },
        Grads {
            dx: &mut o.dx_fused[..n],
            dgamma: Some(&mut o.dgamma_fused[..c]),
            dbeta: Some(&mut o.dbeta_fused[..c]),
        },
    )
    .map_err(|e| ("backward_fused Add+ReLU", e))?;
    bn.backward_eval_fused(
        x,
        dy,
        &o.y_eval_relu[..n],
        sh,
        FusionGrad::Relu,
        RunningStats { mean: rm, var: rv },
        Grads {
            dx: &mut o.dx_eval_fused[..n],
            dgamma: Some(&mut o.dgamma_eval_fused[..c]),
            dbeta: Some(&mut o.dbeta_eval_fused[..c]),
        },
    )
    .map_err(|e| ("backward_eval_fused ReLU", e))?;

    // ---- Batch Renormalization
    o.renorm_running_mean[..c].copy_from_slice(rm);
    o.renorm_running_var[..c].copy_from_slice(rv);
    bn.train_renorm(
        x,
        &mut o.y_renorm[..n],
        sh,
        RENORM,
        RenormSavedMut {
            mean: &mut o.renorm_mean[..c],
            invstd: &mut o.renorm_invstd[..c],
            r: &mut o.renorm_r[..c],
            d: &mut o.renorm_d[..c],
        },
        &mut Running::new(
            &mut o.renorm_running_mean[..c],
            &mut o.renorm_running_var[..c],
            Momentum::Exponential(MOMENTUM),
        ),
    )
    .map_err(|e| ("train_renorm", e))?;
    let saved = RenormSaved {
        mean: &o.renorm_mean[..c],
        invstd: &o.renorm_invstd[..c],
        r: &o.renorm_r[..c],
        d: &o.renorm_d[..c],
    };
    bn.backward_renorm(
        x,
        dy,
        sh,
        saved,
        Grads {
            dx: &mut o.dx_renorm[..n],
            dgamma: Some(&mut o.dgamma_renorm[..c]),
            dbeta: Some(&mut o.dbeta_renorm[..c]),
        },
    )
    .map_err(|e| ("backward_renorm", e))?;
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
    EvalReluY,
    EvalAddReluY,
    TrainAddReluY,
    DxFused,
    Dz,
    DgammaFused,
    DbetaFused,
    DxEvalFused,
    DgammaEvalFused,
    DbetaEvalFused,
    RenormY,
    RenormR,
    RenormD,
    DxRenorm,
    DgammaRenorm,
    DbetaRenorm,
    FoldWeight,
    FoldBias,
    FoldPad,
    // Batch norm's neighbours (`NormOutputs`) and gradient clipping (`ClipOutputs`).
    NormY,
    NormMean,
    NormInvstd,
    NormRunningMean,
    NormRunningVar,
    NormDx,
    NormDgamma,
    NormDbeta,
    ClipValue,
    ClipTotalL2,
    ClipTotalMax,
    ClipNormL2,
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
            What::EvalReluY => self.y_eval_relu[i] as f64,
            What::EvalAddReluY => self.y_eval_add_relu[i] as f64,
            What::TrainAddReluY => self.y_train_add_relu[i] as f64,
            What::DxFused => self.dx_fused[i] as f64,
            What::Dz => self.dz_fused[i] as f64,
            What::DgammaFused => self.dgamma_fused[i] as f64,
            What::DbetaFused => self.dbeta_fused[i] as f64,
            What::DxEvalFused => self.dx_eval_fused[i] as f64,
            What::DgammaEvalFused => self.dgamma_eval_fused[i] as f64,
            What::DbetaEvalFused => self.dbeta_eval_fused[i] as f64,
            What::RenormY => self.y_renorm[i] as f64,
            What::RenormR => self.renorm_r[i] as f64,
            What::RenormD => self.renorm_d[i] as f64,
            What::DxRenorm => self.dx_renorm[i] as f64,
            What::DgammaRenorm => self.dgamma_renorm[i] as f64,
            What::DbetaRenorm => self.dbeta_renorm[i] as f64,
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
    let bn = EvalBn::new(
        BatchNorm {
            eps: EPS,
            gamma: Some(&inp.gamma[..nc]),
            beta: Some(&inp.beta[..nc]),
        },
        RunningStats {
            mean: &inp.running_mean[..nc],
            var: &inp.running_var[..nc],
        },
    );
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

// ---- batch norm's neighbours ------------------------------------------------------------

use crate::data::{NormCase, NormInputs, NormOp, MAX_UNITS};
use batchnorm::{GroupNorm, InstanceNorm, LayerNorm, RmsNorm, Rows, Saved, SavedMut};

/// What one norm case's forward (with γ and β) and backward (from the forward's saved
/// statistics) produce.
pub struct NormOutputs {
    pub y: [f32; MAX_LEN],
    /// Per unit; RMS norm writes no mean (left 0).
    pub mean: [f32; MAX_UNITS],
    pub invstd: [f32; MAX_UNITS],
    /// Instance norm's running statistics after an exponential update from the case's.
    pub running_mean: [f32; MAX_C],
    pub running_var: [f32; MAX_C],
    pub dx: [f32; MAX_LEN],
    pub dgamma: [f32; MAX_LEN],
    pub dbeta: [f32; MAX_LEN],
}

impl NormOutputs {
    pub fn new() -> NormOutputs {
        NormOutputs {
            y: [0.0; MAX_LEN],
            mean: [0.0; MAX_UNITS],
            invstd: [0.0; MAX_UNITS],
            running_mean: [0.0; MAX_C],
            running_var: [0.0; MAX_C],
            dx: [0.0; MAX_LEN],
            dgamma: [0.0; MAX_LEN],
            dbeta: [0.0; MAX_LEN],
        }
    }

    pub fn get(&self, what: What, i: usize) -> f64 {
        let v = match what {
            What::NormY => self.y[i],
            What::NormMean => self.mean[i],
            What::NormInvstd => self.invstd[i],
            What::NormRunningMean => self.running_mean[i],
            What::NormRunningVar => self.running_var[i],
            What::NormDx => self.dx[i],
            What::NormDgamma => self.dgamma[i],
            What::NormDbeta => self.dbeta[i],
            _ => f32::NAN,
        };
        v as f64
    }
}

/// A norm case's op with γ and β (`affine`) or without, as one call signature: forward
/// (`x` empty: in place over `y`), and backward.
pub struct Norm<'a> {
    pub case: &'a NormCase,
    pub gamma: Option<&'a [f32]>,
    pub beta: Option<&'a [f32]>,
}

impl<'a> Norm<'a> {
    pub fn new(case: &'a NormCase, inp: &'a NormInputs, affine: bool) -> Norm<'a> {
        let p = case.params();
        Norm {
            case,
            gamma: affine.then(|| &inp.gamma[..p]),
            beta: (affine && case.op != NormOp::Rms).then(|| &inp.beta[..p]),
        }
    }

    fn rows(&self) -> Rows {
        let sh = self.case.data.shape;
        Rows::new(sh.batch, sh.channels * sh.spatial)
    }

    /// The forward; `running` is used by instance norm only.
    pub fn forward(
        &self,
        x: &[f32],
        y: &mut [f32],
        saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<(), Error> {
        let (eps, gamma, beta) = (EPS, self.gamma, self.beta);
        let sh = self.case.data.shape;
        let in_place = x.is_empty();
        match self.case.op {
            NormOp::Layer => {
                let ln = LayerNorm { eps, gamma, beta };
                match in_place {
                    true => ln.forward_in_place(y, self.rows(), saved),
                    false => ln.forward(x, y, self.rows(), saved),
                }
            }
            NormOp::Rms => {
                let rms = RmsNorm { eps, gamma };
                match in_place {
                    true => rms.forward_in_place(y, self.rows(), saved.invstd),
                    false => rms.forward(x, y, self.rows(), saved.invstd),
                }
            }
            NormOp::Group(groups) => {
                let gn = GroupNorm {
                    groups,
                    eps,
                    gamma,
                    beta,
                };
                match in_place {
                    true => gn.forward_in_place(y, sh, saved),
                    false => gn.forward(x, y, sh, saved),
                }
            }
            NormOp::Instance => {
                let inorm = InstanceNorm { eps, gamma, beta };
                match in_place {
                    true => inorm.forward_in_place(y, sh, saved, running),
                    false => inorm.forward(x, y, sh, saved, running),
                }
            }
        }
    }

    pub fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        saved: Saved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        let (eps, gamma, beta) = (EPS, self.gamma, self.beta);
        let sh = self.case.data.shape;
        match self.case.op {
            NormOp::Layer => {
                LayerNorm { eps, gamma, beta }.backward(x, dy, self.rows(), saved, grads)
            }
            NormOp::Rms => RmsNorm { eps, gamma }.backward(x, dy, self.rows(), saved.invstd, grads),
            NormOp::Group(groups) => GroupNorm {
                groups,
                eps,
                gamma,
                beta,
            }
            .backward(x, dy, sh, saved, grads),
            NormOp::Instance => InstanceNorm { eps, gamma, beta }.backward(x, dy, sh, saved, grads),
        }
    }
}

/// Runs a norm case with γ and β: forward (instance norm: with running statistics
/// when it can), then backward from what it saved, with dγ and dβ.
pub fn run_norm(case: &NormCase, inp: &NormInputs, o: &mut NormOutputs) -> Result<(), Failed> {
    let sh = case.data.shape;
    let n = crate::data::len_of(sh);
    let (c, u, p) = (sh.channels, case.units(), case.params());
    let norm = Norm::new(case, inp, true);
    let x = &inp.t.x[..n];
    o.running_mean[..c].copy_from_slice(&inp.t.running_mean[..c]);
    o.running_var[..c].copy_from_slice(&inp.t.running_var[..c]);
    let mut running = case.running().then(|| {
        Running::new(
            &mut o.running_mean[..c],
            &mut o.running_var[..c],
            Momentum::Exponential(MOMENTUM),
        )
    });
    let saved = SavedMut {
        mean: &mut o.mean[..u],
        invstd: &mut o.invstd[..u],
    };
    norm.forward(x, &mut o.y[..n], saved, running.as_mut())
        .map_err(|e| ("norm forward", e))?;
    let saved = Saved {
        mean: &o.mean[..u],
        invstd: &o.invstd[..u],
    };
    let grads = Grads {
        dx: &mut o.dx[..n],
        dgamma: Some(&mut o.dgamma[..p]),
        dbeta: Some(&mut o.dbeta[..p]),
    };
    norm.backward(x, &inp.t.dy[..n], saved, grads)
        .map_err(|e| ("norm backward", e))
}

// ---- gradient clipping ----------------------------------------------------------------

use crate::data::{ClipCase, ClipInputs, CLIP_SLICES};
use batchnorm::{clip_grad_norm, clip_grad_value, total_norm, GradNorm, NonFinite};

/// A clipping case's results: the slices after `clip_grad_value(0.5)` and after
/// `clip_grad_norm(max_norm, L2)`, and the totals (`total_norm` L2 and max).
pub struct ClipOutputs {
    pub value: ClipInputs,
    pub norm: ClipInputs,
    pub total_l2: f32,
    pub total_max: f32,
    /// What `clip_grad_norm` returned.
    pub returned: f32,
}

/// `clip_grad_value`'s bound in the cases.
pub const CLIP_VALUE: f32 = 0.5;

/// The case's slices as `clip_grad_norm` takes them.
pub fn slices<'a>(case: &ClipCase, g: &'a mut ClipInputs) -> [&'a mut [f32]; CLIP_SLICES] {
    let [a, b, c] = &mut g.g;
    [
        &mut a[..case.lens[0]],
        &mut b[..case.lens[1]],
        &mut c[..case.lens[2]],
    ]
}

impl ClipOutputs {
    /// Value `i` of the slices laid end to end.
    pub fn get(&self, case: &ClipCase, what: What, i: usize) -> f64 {
        let at = |g: &ClipInputs| {
            let mut i = i;
            for (k, &len) in case.lens.iter().enumerate() {
                if i < len {
                    return g.g[k][i] as f64;
                }
                i -= len;
            }
            f64::NAN
        };
        match what {
            What::ClipValue => at(&self.value),
            What::ClipNormL2 => at(&self.norm),
            What::ClipTotalL2 => self.total_l2 as f64,
            What::ClipTotalMax => self.total_max as f64,
            _ => f64::NAN,
        }
    }
}

pub fn run_clip(case: &ClipCase, inp: &ClipInputs) -> Result<ClipOutputs, Failed> {
    let mut value = inp.clone();
    clip_grad_value(&mut slices(case, &mut value), CLIP_VALUE)
        .map_err(|e| ("clip_grad_value", e))?;
    let mut norm = inp.clone();
    let s = slices(case, &mut norm);
    let totals = [&*s[0], &*s[1], &*s[2]];
    let total_l2 = total_norm(&totals, GradNorm::L2);
    let total_max = total_norm(&totals, GradNorm::Max);
    let returned = clip_grad_norm(
        &mut slices(case, &mut norm),
        case.max_norm,
        GradNorm::L2,
        NonFinite::Error,
    )
    .map_err(|e| ("clip_grad_norm", e))?;
    Ok(ClipOutputs {
        value,
        norm,
        total_l2,
        total_max,
        returned,
    })
}
