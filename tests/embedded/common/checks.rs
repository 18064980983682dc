// The self-check both firmwares run: every public kernel family of batchnorm on the
// cases of data.rs, against the f64 reference of reference.rs computed here and the
// host values of expected.rs; then the error paths, NaN propagation, and the stack
// each kernel family needs. One line per check; the caller prints PASS or FAIL.
//
// Included by tests/embedded/{cortex-m4f,aarch64}/src/main.rs as modules `data`,
// `reference`, `scenario`, `expected`, `stack` and `checks` at the crate root.

use core::fmt::{self, Write};

use crate::data::{self, Case, Inputs, BATCHES_TRACKED, CASES, EPS, MAX_C, MAX_LEN, MOMENTUM};
use crate::expected::EXPECTED;
use crate::reference::{masked, Acc, Factor, Oracle, Reference};
use crate::scenario::{self, Outputs, What, RENORM};
use crate::stack;
use batchnorm::{
    moments, BatchNorm, Error, Fusion, FusionGrad, Grads, Moments, Momentum, Renorm, RenormSaved,
    RenormSavedMut, Running, RunningStats, Shape,
};

/// Relative tolerance against the f64 reference, in units of the output's magnitude
/// (sum of the absolute values of its terms): f32 rounding stays far below it.
pub const RTOL: f64 = 1e-5;

pub struct Checker<'w, W: Write> {
    out: &'w mut W,
    pub passed: u32,
    pub failed: u32,
}

impl<'w, W: Write> Checker<'w, W> {
    pub fn new(out: &'w mut W) -> Self {
        Checker {
            out,
            passed: 0,
            failed: 0,
        }
    }

    pub fn line(&mut self, ok: bool, name: &str, case: &str, detail: fmt::Arguments) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let _ = writeln!(
            self.out,
            "{} {:<30} {:<20} {}",
            if ok { "ok  " } else { "FAIL" },
            name,
            case,
            detail
        );
    }

    fn acc(&mut self, name: &str, case: &str, a: &Acc) {
        if a.ok() {
            self.line(
                true,
                name,
                case,
                format_args!("{:>4} values, worst {:.1e}·mag", a.compared, a.worst),
            );
        } else {
            self.line(
                false,
                name,
                case,
                format_args!(
                    "{} of {} values off; worst at {}: got {:e}, want {:e} ({:.1e}·mag, tol {:.0e})",
                    a.bad, a.compared, a.worst_at, a.worst_got, a.worst_want, a.worst, a.rtol
                ),
            );
        }
    }

    fn note(&mut self, args: fmt::Arguments) {
        let _ = writeln!(self.out, "{}", args);
    }
}

/// Runs everything; returns the number of failed checks.
pub fn run<W: Write>(out: &mut W) -> u32 {
    let mut ck = Checker::new(out);
    for case in CASES {
        check_case(&mut ck, case);
    }
    check_errors(&mut ck);
    check_nan(&mut ck);
    check_fold(&mut ck);
    check_neighbours(&mut ck);
    report_stack(&mut ck);
    let (p, f) = (ck.passed, ck.failed);
    ck.note(format_args!("{} passed, {} failed", p, f));
    f
}

fn compare(r: &Reference, inp: &Inputs, what: What, got: &[f32], factor: Factor, acc: &mut Acc) {
    for (i, &g) in got.iter().enumerate() {
        let (want, mag) = r.want(inp, what, i, factor);
        acc.add(i, g as f64, want, mag);
    }
}

fn compare_oracle(or: &Oracle, inp: &Inputs, what: What, got: &[f32], acc: &mut Acc) {
    for (i, &g) in got.iter().enumerate() {
        let (want, mag) = or.want(inp, what, i, EXP);
        acc.add(i, g as f64, want, mag);
    }
}

fn bits_eq(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// `torch.relu` in f32: negative values become +0, NaN and −0 stay.
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// Whether `fused` holds the bits of PyTorch's unfused composition `relu(bn + z)`
/// (`z` empty: `relu(bn)`), NaNs compared as NaN.
fn composed(fused: &[f32], bn: &[f32], z: &[f32]) -> bool {
    fused.iter().zip(bn).enumerate().all(|(i, (&f, &b))| {
        let want = relu(if z.is_empty() { b } else { b + z[i] });
        f.to_bits() == want.to_bits() || (f.is_nan() && want.is_nan())
    })
}

/// An accuracy line that also requires `same` (bit-level agreement with another call,
/// described by `what`).
fn acc_and<W: Write>(
    ck: &mut Checker<W>,
    label: &str,
    case: &str,
    a: &Acc,
    same: bool,
    what: &str,
) {
    if same {
        ck.acc(label, case, a);
    } else {
        ck.line(false, label, case, format_args!("differs from {}", what));
    }
}

const EXP: Factor = Factor::Exponential(MOMENTUM as f64);

fn check_case<W: Write>(ck: &mut Checker<W>, case: &Case) {
    let name = case.name;
    let sh = case.shape;
    let n = data::len(case);
    let c = sh.channels;
    let m = data::m(case);
    let inp = Inputs::new(case);
    let mut o = Outputs::new();
    if let Err((kernel, e)) = scenario::run(case, &inp, &mut o) {
        ck.line(false, kernel, name, format_args!("returned Err({:?})", e));
        return;
    }
    let r = Reference::new(case, &inp, true, &o.save_mean[..c], &o.save_invstd[..c]);
    let plain_ref = Reference::new(case, &inp, false, &o.save_mean[..c], &o.save_invstd[..c]);
    let x = &inp.x[..n];
    let (rm, rv) = (&inp.running_mean[..c], &inp.running_var[..c]);
    let bn = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..c]),
        beta: Some(&inp.beta[..c]),
    };
    let plain = BatchNorm {
        eps: EPS,
        gamma: None,
        beta: None,
    };

    // ---- moments + merge
    {
        let mut a = Acc::new(RTOL);
        let mut counts_ok = true;
        for ch in 0..c {
            let mo = o.moments[ch];
            counts_ok &= mo.count == m as u64;
            let (w, mag) = r.want(&inp, What::Mean, ch, EXP);
            a.add(ch, mo.mean, w, mag);
            let (w, mag) = r.want(&inp, What::Var, ch, EXP);
            a.add(ch, mo.var(), w, mag);
        }
        if counts_ok {
            ck.acc("moments mean,var", name, &a);
        } else {
            ck.line(
                false,
                "moments mean,var",
                name,
                format_args!("count is not m = {}", m),
            );
        }
    }
    {
        // Two chunks of the batch (contiguous in both layouts), reduced apart and merged.
        let mut a = Acc::new(RTOL);
        let mut ok = true;
        let mut detail_err: Option<Error> = None;
        let n1 = sh.batch / 2;
        let mut merged = [Moments::EMPTY; MAX_C];
        if n1 > 0 {
            let split = n1 * c * sh.spatial;
            let sa = Shape { batch: n1, ..sh };
            let sb = Shape {
                batch: sh.batch - n1,
                ..sh
            };
            let mut pa = [Moments::EMPTY; MAX_C];
            let mut pb = [Moments::EMPTY; MAX_C];
            if let Err(e) = moments(&x[..split], sa, &mut pa[..c]) {
                detail_err = Some(e);
            }
            if let Err(e) = moments(&x[split..], sb, &mut pb[..c]) {
                detail_err = Some(e);
            }
            for ch in 0..c {
                merged[ch] = pa[ch].merge(pb[ch]);
            }
        } else {
            // batch 1: no split along the batch; only merge with EMPTY on both sides.
            merged[..c].copy_from_slice(&o.moments[..c]);
        }
        for (ch, &mo) in merged.iter().enumerate().take(c) {
            ok &= mo.count == m as u64;
            ok &= mo.merge(Moments::EMPTY) == mo && Moments::EMPTY.merge(mo) == mo;
            let (w, mag) = r.want(&inp, What::Mean, ch, EXP);
            a.add(ch, mo.mean, w, mag);
            let (w, mag) = r.want(&inp, What::Var, ch, EXP);
            a.add(ch, mo.var(), w, mag);
            // unbiased_var = m2/(m-1)
            let (w, mag) = r.want(&inp, What::Var, ch, EXP);
            let k = m as f64 / (m as f64 - 1.0);
            a.add(ch, mo.unbiased_var(), w * k, mag * k);
        }
        let label = if n1 > 0 {
            "moments 2 chunks + merge"
        } else {
            "moments merge EMPTY"
        };
        if let Some(e) = detail_err {
            ck.line(false, label, name, format_args!("returned Err({:?})", e));
        } else if !ok {
            ck.line(
                false,
                label,
                name,
                format_args!("count wrong or merge with EMPTY is not the identity"),
            );
        } else {
            ck.acc(label, name, &a);
        }
    }

    // ---- train forward (γ, β; exponential running update)
    {
        let mut a = Acc::new(RTOL);
        compare(&r, &inp, What::TrainY, &o.y_train[..n], EXP, &mut a);
        ck.acc("train y", name, &a);
        let mut a = Acc::new(RTOL);
        compare(&r, &inp, What::SaveMean, &o.save_mean[..c], EXP, &mut a);
        compare(&r, &inp, What::SaveInvstd, &o.save_invstd[..c], EXP, &mut a);
        ck.acc("train save_mean,invstd", name, &a);
        let mut a = Acc::new(RTOL);
        compare(
            &r,
            &inp,
            What::RunningMean,
            &o.running_mean[..c],
            EXP,
            &mut a,
        );
        compare(&r, &inp, What::RunningVar, &o.running_var[..c], EXP, &mut a);
        ck.acc("train running (exp 0.1)", name, &a);
    }
    // train_in_place, affine=false, cumulative momentum
    {
        let mut y = [0.0f32; MAX_LEN];
        y[..n].copy_from_slice(x);
        let (mut sm, mut si) = ([0.0f32; MAX_C], [0.0f32; MAX_C]);
        let mut rmean = [0.0f32; MAX_C];
        let mut rvar = [0.0f32; MAX_C];
        rmean[..c].copy_from_slice(rm);
        rvar[..c].copy_from_slice(rv);
        let res = plain.train_in_place(
            &mut y[..n],
            sh,
            SavedMut {
                mean: &mut sm[..c],
                invstd: &mut si[..c],
            },
            Some(&mut Running {
                batches_tracked: BATCHES_TRACKED,
                ..Running::new(&mut rmean[..c], &mut rvar[..c], Momentum::Cumulative)
            }),
        );
        let label = "train_in_place affine=off";
        match res {
            Err(e) => ck.line(false, label, name, format_args!("returned Err({:?})", e)),
            Ok(()) => {
                let cum = Factor::Cumulative(BATCHES_TRACKED);
                let mut a = Acc::new(RTOL);
                compare(&plain_ref, &inp, What::TrainY, &y[..n], cum, &mut a);
                compare(
                    &plain_ref,
                    &inp,
                    What::RunningMean,
                    &rmean[..c],
                    cum,
                    &mut a,
                );
                compare(&plain_ref, &inp, What::RunningVar, &rvar[..c], cum, &mut a);
                if !bits_eq(&sm[..c], &o.save_mean[..c]) || !bits_eq(&si[..c], &o.save_invstd[..c])
                {
                    ck.line(
                        false,
                        label,
                        name,
                        format_args!("saved statistics differ from train's"),
                    );
                } else {
                    ck.acc(label, name, &a);
                }
            }
        }
    }

    // ---- eval forward
    {
        let mut a = Acc::new(RTOL);
        compare(&r, &inp, What::EvalY, &o.y_eval[..n], EXP, &mut a);
        ck.acc("eval y", name, &a);

        let mut y = [0.0f32; MAX_LEN];
        y[..n].copy_from_slice(x);
        match bn.eval_in_place(&mut y[..n], sh, RunningStats { mean: rm, var: rv }) {
            Err(e) => ck.line(
                false,
                "eval_in_place",
                name,
                format_args!("returned Err({:?})", e),
            ),
            Ok(()) => {
                let same = bits_eq(&y[..n], &o.y_eval[..n]);
                ck.line(
                    same,
                    "eval_in_place",
                    name,
                    format_args!(
                        "{}",
                        if same {
                            "bit-identical to eval"
                        } else {
                            "differs from eval"
                        }
                    ),
                );
            }
        }

        match plain.eval(x, &mut y[..n], sh, RunningStats { mean: rm, var: rv }) {
            Err(e) => ck.line(
                false,
                "eval affine=off",
                name,
                format_args!("returned Err({:?})", e),
            ),
            Ok(()) => {
                let mut a = Acc::new(RTOL);
                compare(&plain_ref, &inp, What::EvalY, &y[..n], EXP, &mut a);
                ck.acc("eval affine=off", name, &a);
            }
        }
    }

    // ---- backward (train mode), from the saved statistics
    {
        let mut a = Acc::new(RTOL);
        compare(&r, &inp, What::Dx, &o.dx[..n], EXP, &mut a);
        compare(&r, &inp, What::Dgamma, &o.dgamma[..c], EXP, &mut a);
        compare(&r, &inp, What::Dbeta, &o.dbeta[..c], EXP, &mut a);
        ck.acc("backward dx,dgamma,dbeta", name, &a);

        let mut dx = [0.0f32; MAX_LEN];
        let res = plain.backward(
            x,
            &inp.dy[..n],
            sh,
            Saved {
                mean: &o.save_mean[..c],
                invstd: &o.save_invstd[..c],
            },
            Grads {
                dx: &mut dx[..n],
                dgamma: None,
                dbeta: None,
            },
        );
        match res {
            Err(e) => ck.line(
                false,
                "backward affine=off dx",
                name,
                format_args!("returned Err({:?})", e),
            ),
            Ok(()) => {
                let mut a = Acc::new(RTOL);
                compare(&plain_ref, &inp, What::Dx, &dx[..n], EXP, &mut a);
                ck.acc("backward affine=off dx", name, &a);
            }
        }
    }

    // ---- backward (eval mode), from the running statistics
    {
        let mut a = Acc::new(RTOL);
        compare(&r, &inp, What::DxEval, &o.dx_eval[..n], EXP, &mut a);
        compare(&r, &inp, What::DgammaEval, &o.dgamma_eval[..c], EXP, &mut a);
        compare(&r, &inp, What::DbetaEval, &o.dbeta_eval[..c], EXP, &mut a);
        ck.acc("backward_eval dx,dg,db", name, &a);

        let mut dx = [0.0f32; MAX_LEN];
        let mut db = [0.0f32; MAX_C];
        let res = plain.backward_eval(
            x,
            &inp.dy[..n],
            sh,
            RunningStats { mean: rm, var: rv },
            Grads {
                dx: &mut dx[..n],
                dgamma: None,
                dbeta: Some(&mut db[..c]),
            },
        );
        match res {
            Err(e) => ck.line(
                false,
                "backward_eval affine=off",
                name,
                format_args!("returned Err({:?})", e),
            ),
            Ok(()) => {
                let mut a = Acc::new(RTOL);
                compare(&plain_ref, &inp, What::DxEval, &dx[..n], EXP, &mut a);
                compare(&plain_ref, &inp, What::DbetaEval, &db[..c], EXP, &mut a);
                ck.acc("backward_eval affine=off", name, &a);
            }
        }
    }

    check_fused(ck, case, &inp, &o);
    check_renorm(ck, case, &inp, &o);

    // ---- fixed values computed on the host (expected.rs)
    {
        let mut count = 0;
        let mut bad = 0;
        let mut worst = 0.0f64;
        for e in EXPECTED.iter().filter(|e| e.case == name) {
            count += 1;
            let got = o.get(e.what, e.index);
            let d = (got - e.value).abs();
            let rel = if e.tol > 0.0 {
                d / e.tol
            } else if d == 0.0 {
                0.0
            } else {
                f64::INFINITY
            };
            let within = d <= e.tol; // false for NaN
            if !within {
                bad += 1;
                ck.note(format_args!(
                    "     {:?}[{}]: got {:e}, host {:e}, tol {:e}",
                    e.what, e.index, got, e.value, e.tol
                ));
            }
            if rel > worst {
                worst = rel;
            }
        }
        ck.line(
            bad == 0 && count > 0,
            "host values",
            name,
            format_args!(
                "{} of {} match, worst |got-host| = {:.1e}·tol",
                count - bad,
                count,
                worst
            ),
        );
    }
}

// ---- fused BN + ReLU and BN + Add + ReLU: against the reference (the backward passes
// against that of the plain ones on dy masked by the forward's output), and bit for bit
// against the unfused composition PyTorch runs: relu(bn(x) + z) in f32 after the plain
// forward; the plain backward on the masked dy (the engine keeps one accumulation order
// for every kernel), and dz = the masked dy.
fn check_fused<W: Write>(ck: &mut Checker<W>, case: &Case, inp: &Inputs, o: &Outputs) {
    let name = case.name;
    let sh = case.shape;
    let n = data::len(case);
    let c = sh.channels;
    let (x, dy, z) = (&inp.x[..n], &inp.dy[..n], &inp.z[..n]);
    let (rm, rv) = (&inp.running_mean[..c], &inp.running_var[..c]);
    let or = Oracle::new(case, inp, o);
    let bn = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..c]),
        beta: Some(&inp.beta[..c]),
    };
    let plain = BatchNorm {
        eps: EPS,
        gamma: None,
        beta: None,
    };

    let mut a = Acc::new(RTOL);
    compare_oracle(&or, inp, What::EvalReluY, &o.y_eval_relu[..n], &mut a);
    let same = composed(&o.y_eval_relu[..n], &o.y_eval[..n], &[]);
    acc_and(ck, "eval_fused ReLU", name, &a, same, "relu(eval)");

    let mut a = Acc::new(RTOL);
    compare_oracle(
        &or,
        inp,
        What::EvalAddReluY,
        &o.y_eval_add_relu[..n],
        &mut a,
    );
    let same = composed(&o.y_eval_add_relu[..n], &o.y_eval[..n], z);
    acc_and(ck, "eval_fused Add+ReLU", name, &a, same, "relu(eval + z)");

    let mut a = Acc::new(RTOL);
    compare_oracle(
        &or,
        inp,
        What::TrainAddReluY,
        &o.y_train_add_relu[..n],
        &mut a,
    );
    let same = composed(&o.y_train_add_relu[..n], &o.y_train[..n], z)
        && bits_eq(&o.fused_save_mean[..c], &o.save_mean[..c])
        && bits_eq(&o.fused_save_invstd[..c], &o.save_invstd[..c])
        && bits_eq(&o.fused_running_mean[..c], &o.running_mean[..c])
        && bits_eq(&o.fused_running_var[..c], &o.running_var[..c]);
    acc_and(
        ck,
        "train_fused Add+ReLU",
        name,
        &a,
        same,
        "relu(train + z) or train's statistics",
    );

    // ReLU, affine=off, no running statistics.
    {
        let mut y = [0.0f32; MAX_LEN];
        let (mut sm, mut si) = ([0.0f32; MAX_C], [0.0f32; MAX_C]);
        let label = "train_fused ReLU affine=off";
        match plain.train_fused(
            x,
            &mut y[..n],
            sh,
            Fusion::Relu,
            SavedMut {
                mean: &mut sm[..c],
                invstd: &mut si[..c],
            },
            None,
        ) {
            Err(e) => ck.line(false, label, name, format_args!("returned Err({:?})", e)),
            Ok(()) => {
                let pr = Reference::new(case, inp, false, &sm[..c], &si[..c]);
                let mut a = Acc::new(RTOL);
                for (i, &g) in y[..n].iter().enumerate() {
                    let (w, mag) = pr.want(inp, What::TrainY, i, EXP);
                    a.add(i, g as f64, if w < 0.0 { 0.0 } else { w }, mag);
                }
                let same =
                    bits_eq(&sm[..c], &o.save_mean[..c]) && bits_eq(&si[..c], &o.save_invstd[..c]);
                acc_and(ck, label, name, &a, same, "train's saved statistics");
            }
        }
    }

    // backward_fused (Add + ReLU) from train_fused's y.
    {
        let g = masked(inp, &o.y_train_add_relu[..n]);
        let mut a = Acc::new(RTOL);
        compare_oracle(&or, inp, What::DxFused, &o.dx_fused[..n], &mut a);
        compare_oracle(&or, inp, What::DgammaFused, &o.dgamma_fused[..c], &mut a);
        compare_oracle(&or, inp, What::DbetaFused, &o.dbeta_fused[..c], &mut a);
        compare_oracle(&or, inp, What::Dz, &o.dz_fused[..n], &mut a);
        let mut dx = [0.0f32; MAX_LEN];
        let (mut dg, mut db) = ([0.0f32; MAX_C], [0.0f32; MAX_C]);
        let r = bn.backward(
            x,
            &g.dy[..n],
            sh,
            Saved {
                mean: &o.fused_save_mean[..c],
                invstd: &o.fused_save_invstd[..c],
            },
            Grads {
                dx: &mut dx[..n],
                dgamma: Some(&mut dg[..c]),
                dbeta: Some(&mut db[..c]),
            },
        );
        let same = r.is_ok()
            && bits_eq(&dx[..n], &o.dx_fused[..n])
            && bits_eq(&dg[..c], &o.dgamma_fused[..c])
            && bits_eq(&db[..c], &o.dbeta_fused[..c])
            && bits_eq(&g.dy[..n], &o.dz_fused[..n]);
        acc_and(
            ck,
            "backward_fused Add+ReLU",
            name,
            &a,
            same,
            "backward on the masked dy, or dz",
        );
    }
    // backward_fused (ReLU), affine=off, no dγ, dβ: the same y.
    {
        let g = masked(inp, &o.y_train_add_relu[..n]);
        let label = "backward_fused ReLU affine=off";
        let mut dx = [0.0f32; MAX_LEN];
        let (sm, si) = (&o.save_mean[..c], &o.save_invstd[..c]);
        let r = plain.backward_fused(
            x,
            dy,
            &o.y_train_add_relu[..n],
            sh,
            FusionGrad::Relu,
            Saved {
                mean: sm,
                invstd: si,
            },
            Grads {
                dx: &mut dx[..n],
                dgamma: None,
                dbeta: None,
            },
        );
        match r {
            Ok(()) => {
                let pr = Reference::new(case, &g, false, sm, si);
                let mut a = Acc::new(RTOL);
                compare(&pr, &g, What::Dx, &dx[..n], EXP, &mut a);
                ck.acc(label, name, &a);
            }
            Err(e) => ck.line(false, label, name, format_args!("returned Err({:?})", e)),
        }
    }

    // backward_eval_fused (ReLU) from eval_fused's relu output.
    {
        let g = masked(inp, &o.y_eval_relu[..n]);
        let mut a = Acc::new(RTOL);
        compare_oracle(&or, inp, What::DxEvalFused, &o.dx_eval_fused[..n], &mut a);
        compare_oracle(
            &or,
            inp,
            What::DgammaEvalFused,
            &o.dgamma_eval_fused[..c],
            &mut a,
        );
        compare_oracle(
            &or,
            inp,
            What::DbetaEvalFused,
            &o.dbeta_eval_fused[..c],
            &mut a,
        );
        let mut dx = [0.0f32; MAX_LEN];
        let (mut dg, mut db) = ([0.0f32; MAX_C], [0.0f32; MAX_C]);
        let r = bn.backward_eval(
            x,
            &g.dy[..n],
            sh,
            RunningStats { mean: rm, var: rv },
            Grads {
                dx: &mut dx[..n],
                dgamma: Some(&mut dg[..c]),
                dbeta: Some(&mut db[..c]),
            },
        );
        let same = r.is_ok()
            && bits_eq(&dx[..n], &o.dx_eval_fused[..n])
            && bits_eq(&dg[..c], &o.dgamma_eval_fused[..c])
            && bits_eq(&db[..c], &o.dbeta_eval_fused[..c]);
        acc_and(
            ck,
            "backward_eval_fused ReLU",
            name,
            &a,
            same,
            "backward_eval on the masked dy",
        );
    }
    // backward_eval_fused (Add + ReLU) without dγ, dβ (x unread: dz and dx alone),
    // from eval_fused's Add + ReLU output.
    {
        let g = masked(inp, &o.y_eval_add_relu[..n]);
        let label = "backward_eval_fused Add+ReLU";
        let (mut dx, mut dz) = ([0.0f32; MAX_LEN], [0.0f32; MAX_LEN]);
        let r = bn.backward_eval_fused(
            x,
            dy,
            &o.y_eval_add_relu[..n],
            sh,
            FusionGrad::AddRelu { dz: &mut dz[..n] },
            RunningStats { mean: rm, var: rv },
            Grads {
                dx: &mut dx[..n],
                dgamma: None,
                dbeta: None,
            },
        );
        match r {
            Err(e) => ck.line(false, label, name, format_args!("returned Err({:?})", e)),
            Ok(()) => {
                let mut a = Acc::new(RTOL);
                compare(&or.plain, &g, What::DxEval, &dx[..n], EXP, &mut a);
                let same = bits_eq(&dz[..n], &g.dy[..n]);
                acc_and(ck, label, name, &a, same, "dz = dy masked by y");
            }
        }
    }
}

// ---- Batch Renormalization: against the reference (r, d from the f64 statistics and
// the running ones before the update); the statistics are train's, bit for bit; with
// rmax = 1, dmax = 0 it is plain batch norm.
fn check_renorm<W: Write>(ck: &mut Checker<W>, case: &Case, inp: &Inputs, o: &Outputs) {
    let name = case.name;
    let sh = case.shape;
    let n = data::len(case);
    let c = sh.channels;
    let x = &inp.x[..n];
    let (rm, rv) = (&inp.running_mean[..c], &inp.running_var[..c]);
    let or = Oracle::new(case, inp, o);
    let bn = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..c]),
        beta: Some(&inp.beta[..c]),
    };

    let mut a = Acc::new(RTOL);
    compare_oracle(&or, inp, What::RenormY, &o.y_renorm[..n], &mut a);
    ck.acc("train_renorm y", name, &a);

    let mut a = Acc::new(RTOL);
    compare_oracle(&or, inp, What::RenormR, &o.renorm_r[..c], &mut a);
    compare_oracle(&or, inp, What::RenormD, &o.renorm_d[..c], &mut a);
    let (rlim, dlim) = (RENORM.rmax, RENORM.dmax);
    let r_clipped = o.renorm_r[..c]
        .iter()
        .filter(|&&r| r == rlim || r == (1.0 / rlim as f64) as f32)
        .count();
    let d_clipped = o.renorm_d[..c].iter().filter(|&&d| d.abs() == dlim).count();
    if a.ok() {
        ck.line(
            true,
            "train_renorm r,d",
            name,
            format_args!(
                "{:>4} values, worst {:.1e}·mag; clipped r {}/{}, d {}/{}",
                a.compared, a.worst, r_clipped, c, d_clipped, c
            ),
        );
    } else {
        ck.acc("train_renorm r,d", name, &a);
    }

    let same = bits_eq(&o.renorm_mean[..c], &o.save_mean[..c])
        && bits_eq(&o.renorm_invstd[..c], &o.save_invstd[..c])
        && bits_eq(&o.renorm_running_mean[..c], &o.running_mean[..c])
        && bits_eq(&o.renorm_running_var[..c], &o.running_var[..c]);
    ck.line(
        same,
        "train_renorm stats = train's",
        name,
        format_args!(
            "{}",
            if same {
                "saved mean, invstd, running: bit-identical"
            } else {
                "differ"
            }
        ),
    );

    let mut a = Acc::new(RTOL);
    compare_oracle(&or, inp, What::DxRenorm, &o.dx_renorm[..n], &mut a);
    compare_oracle(&or, inp, What::DgammaRenorm, &o.dgamma_renorm[..c], &mut a);
    compare_oracle(&or, inp, What::DbetaRenorm, &o.dbeta_renorm[..c], &mut a);
    ck.acc("backward_renorm dx,dg,db", name, &a);

    // rmax = 1, dmax = 0: r = 1, d = 0 and train's output.
    {
        let mut y = [0.0f32; MAX_LEN];
        let (mut sm, mut si, mut r, mut d) = (
            [0.0f32; MAX_C],
            [0.0f32; MAX_C],
            [0.0f32; MAX_C],
            [0.0f32; MAX_C],
        );
        let (mut rmean, mut rvar) = ([0.0f32; MAX_C], [0.0f32; MAX_C]);
        rmean[..c].copy_from_slice(rm);
        rvar[..c].copy_from_slice(rv);
        let res = bn.train_renorm(
            x,
            &mut y[..n],
            sh,
            Renorm {
                rmax: 1.0,
                dmax: 0.0,
            },
            RenormSavedMut {
                mean: &mut sm[..c],
                invstd: &mut si[..c],
                r: &mut r[..c],
                d: &mut d[..c],
            },
            &mut Running::new(
                &mut rmean[..c],
                &mut rvar[..c],
                Momentum::Exponential(MOMENTUM),
            ),
        );
        let ok = res.is_ok()
            && r[..c].iter().all(|&r| r == 1.0)
            && d[..c].iter().all(|&d| d == 0.0)
            && y[..n].iter().zip(&o.y_train[..n]).all(|(a, b)| a == b);
        ck.line(
            ok,
            "train_renorm rmax 1, dmax 0",
            name,
            format_args!(
                "{}",
                if ok {
                    "r = 1, d = 0, y = train's"
                } else {
                    "not plain batch norm"
                }
            ),
        );
    }
}

// ---- error paths: Err with the right value, nothing written, no panic
fn check_errors<W: Write>(ck: &mut Checker<W>) {
    let case = &CASES[0];
    let inp = Inputs::new(case);
    let sh = case.shape;
    let n = data::len(case);
    let c = sh.channels;
    let x = &inp.x[..n];
    let (rm, rv) = (&inp.running_mean[..c], &inp.running_var[..c]);
    let bn = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..c]),
        beta: Some(&inp.beta[..c]),
    };
    const S: f32 = 7.25; // sentinel: must survive every failed call
    let untouched = |ys: &[f32]| ys.iter().all(|&v| v == S);

    let mut y = [S; MAX_LEN];
    let r = bn.eval(x, &mut y[..n - 1], sh, RunningStats { mean: rm, var: rv });
    let ok =
        r == Err(Error::Length {
            arg: "y",
            expected: n,
            actual: n - 1,
        }) && untouched(&y[..n]);
    ck.line(ok, "error eval short y", case.name, format_args!("{:?}", r));

    let short_gamma = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..c - 1]),
        beta: None,
    };
    let r = short_gamma.eval(x, &mut y[..n], sh, RunningStats { mean: rm, var: rv });
    let ok =
        r == Err(Error::Length {
            arg: "gamma",
            expected: c,
            actual: c - 1,
        }) && untouched(&y[..n]);
    ck.line(
        ok,
        "error eval short gamma",
        case.name,
        format_args!("{:?}", r),
    );

    let bad_eps = BatchNorm {
        eps: -1.0,
        gamma: None,
        beta: None,
    };
    let r = bad_eps.eval(x, &mut y[..n], sh, RunningStats { mean: rm, var: rv });
    let ok = matches!(r, Err(Error::Parameter { arg: "eps", .. })) && untouched(&y[..n]);
    ck.line(ok, "error eval eps -1", case.name, format_args!("{:?}", r));

    let nan_eps = BatchNorm {
        eps: f32::NAN,
        gamma: None,
        beta: None,
    };
    let r = nan_eps.eval(x, &mut y[..n], sh, RunningStats { mean: rm, var: rv });
    let ok = matches!(r, Err(Error::Parameter { arg: "eps", .. })) && untouched(&y[..n]);
    ck.line(ok, "error eval eps NaN", case.name, format_args!("{:?}", r));

    let (mut sm, mut si) = ([S; MAX_C], [S; MAX_C]);
    let (mut rmean, mut rvar) = ([S; MAX_C], [S; MAX_C]);
    let r = bn.train(
        x,
        &mut y[..n],
        sh,
        SavedMut {
            mean: &mut sm[..c],
            invstd: &mut si[..c],
        },
        Some(&mut Running::new(
            &mut rmean[..c],
            &mut rvar[..c],
            Momentum::Exponential(1.5),
        )),
    );
    let ok = matches!(
        r,
        Err(Error::Parameter {
            arg: "momentum",
            ..
        })
    ) && untouched(&y[..n])
        && untouched(&sm[..c])
        && untouched(&si[..c])
        && untouched(&rmean[..c])
        && untouched(&rvar[..c]);
    ck.line(
        ok,
        "error train momentum 1.5",
        case.name,
        format_args!("{:?}", r),
    );

    let bn3 = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..3]),
        beta: Some(&inp.beta[..3]),
    };
    let empty = Shape::channels_first(0, 3, 4);
    let r = bn3.train(
        &[],
        &mut [],
        empty,
        SavedMut {
            mean: &mut sm[..3],
            invstd: &mut si[..3],
        },
        None,
    );
    let ok =
        r == Err(Error::TooFewValues {
            needed: 1,
            actual: 0,
        }) && untouched(&sm[..3])
            && untouched(&si[..3]);
    ck.line(ok, "error train m=0", "cf 0x3x4", format_args!("{:?}", r));

    let one = Shape::rows(1, 3);
    let r = bn3.train(
        &x[..3],
        &mut y[..3],
        one,
        SavedMut {
            mean: &mut sm[..3],
            invstd: &mut si[..3],
        },
        Some(&mut Running::new(
            &mut rmean[..3],
            &mut rvar[..3],
            Momentum::Exponential(0.1),
        )),
    );
    let ok =
        r == Err(Error::TooFewValues {
            needed: 2,
            actual: 1,
        }) && untouched(&y[..3])
            && untouched(&sm[..3])
            && untouched(&rmean[..3])
            && untouched(&rvar[..3]);
    ck.line(
        ok,
        "error train running m=1",
        "rows 1x3",
        format_args!("{:?}", r),
    );

    let huge = Shape::channels_first(usize::MAX / 2, 3, 5);
    let mut parts = [Moments::EMPTY; 3];
    let r = moments(x, huge, &mut parts);
    let ok = matches!(r, Err(Error::Overflow { .. })) && parts.iter().all(|p| *p == Moments::EMPTY);
    ck.line(
        ok,
        "error moments overflow",
        "cf MAX/2x3x5",
        format_args!("{:?}", r),
    );

    let mut dx = [S; MAX_LEN];
    let mut dg = [S; MAX_C];
    let r = bn.backward(
        x,
        &inp.dy[..n],
        sh,
        Saved {
            mean: rm,
            invstd: rv,
        },
        Grads {
            dx: &mut dx[..n],
            dgamma: Some(&mut dg[..c + 1]),
            dbeta: None,
        },
    );
    let ok =
        r == Err(Error::Length {
            arg: "dgamma",
            expected: c,
            actual: c + 1,
        }) && untouched(&dx[..n])
            && untouched(&dg[..c + 1]);
    ck.line(
        ok,
        "error backward long dgamma",
        case.name,
        format_args!("{:?}", r),
    );

    // Fused and renorm: their own arguments.
    let z = &inp.z[..n];
    let r = bn.eval_fused(
        x,
        &mut y[..n],
        sh,
        Fusion::AddRelu { z: &z[..n - 1] },
        RunningStats { mean: rm, var: rv },
    );
    let ok =
        r == Err(Error::Length {
            arg: "z",
            expected: n,
            actual: n - 1,
        }) && untouched(&y[..n]);
    ck.line(
        ok,
        "error eval_fused short z",
        case.name,
        format_args!("{:?}", r),
    );

    let (mut sm, mut si) = ([S; MAX_C], [S; MAX_C]);
    let r = bn.train_fused(
        x,
        &mut y[..n],
        sh,
        Fusion::AddRelu { z: &inp.z[..n + 1] },
        SavedMut {
            mean: &mut sm[..c],
            invstd: &mut si[..c],
        },
        None,
    );
    let ok =
        r == Err(Error::Length {
            arg: "z",
            expected: n,
            actual: n + 1,
        }) && untouched(&y[..n])
            && untouched(&sm[..c])
            && untouched(&si[..c]);
    ck.line(
        ok,
        "error train_fused long z",
        case.name,
        format_args!("{:?}", r),
    );

    let mut dz = [S; MAX_LEN];
    let r = bn.backward_fused(
        x,
        &inp.dy[..n],
        &inp.z[..n - 1],
        sh,
        FusionGrad::AddRelu { dz: &mut dz[..n] },
        Saved {
            mean: rm,
            invstd: rv,
        },
        Grads {
            dx: &mut dx[..n],
            dgamma: None,
            dbeta: None,
        },
    );
    let ok =
        r == Err(Error::Length {
            arg: "y",
            expected: n,
            actual: n - 1,
        }) && untouched(&dx[..n])
            && untouched(&dz[..n]);
    ck.line(
        ok,
        "error backward_fused short y",
        case.name,
        format_args!("{:?}", r),
    );

    let r = bn.backward_eval_fused(
        x,
        &inp.dy[..n],
        z,
        sh,
        FusionGrad::AddRelu {
            dz: &mut dz[..n - 1],
        },
        RunningStats { mean: rm, var: rv },
        Grads {
            dx: &mut dx[..n],
            dgamma: Some(&mut dg[..c]),
            dbeta: None,
        },
    );
    let ok =
        r == Err(Error::Length {
            arg: "dz",
            expected: n,
            actual: n - 1,
        }) && untouched(&dx[..n])
            && untouched(&dz[..n])
            && untouched(&dg[..c]);
    ck.line(
        ok,
        "error backward_eval_fused short dz",
        case.name,
        format_args!("{:?}", r),
    );

    // train_renorm: the limits, then saved.r; nothing written, running untouched.
    for (limits, arg, short_r, label) in [
        (
            Renorm {
                rmax: 0.5,
                dmax: 1.0,
            },
            "rmax",
            false,
            "error train_renorm rmax 0.5",
        ),
        (
            Renorm {
                rmax: 3.0,
                dmax: f32::NAN,
            },
            "dmax",
            false,
            "error train_renorm dmax NaN",
        ),
        (
            Renorm {
                rmax: 3.0,
                dmax: 5.0,
            },
            "saved.r",
            true,
            "error train_renorm short r",
        ),
    ] {
        let (mut sm, mut si, mut sr, mut sd) = ([S; MAX_C], [S; MAX_C], [S; MAX_C], [S; MAX_C]);
        let (mut rmean, mut rvar) = ([S; MAX_C], [S; MAX_C]);
        let cr = if short_r { c - 1 } else { c };
        let r = bn.train_renorm(
            x,
            &mut y[..n],
            sh,
            limits,
            RenormSavedMut {
                mean: &mut sm[..c],
                invstd: &mut si[..c],
                r: &mut sr[..cr],
                d: &mut sd[..c],
            },
            &mut Running::new(&mut rmean[..c], &mut rvar[..c], Momentum::Exponential(0.1)),
        );
        let right = match r {
            Err(Error::Parameter { arg: a, .. }) => a == arg,
            Err(Error::Length {
                arg: a,
                expected,
                actual,
            }) => a == arg && expected == c && actual == c - 1,
            _ => false,
        };
        let ok = right
            && [
                &y[..n],
                &sm[..c],
                &si[..c],
                &sr[..c],
                &sd[..c],
                &rmean[..c],
                &rvar[..c],
            ]
            .iter()
            .all(|b| untouched(b));
        ck.line(ok, label, case.name, format_args!("{:?}", r));
    }

    let (sm, si, sr, sd) = (
        [1.0f32; MAX_C],
        [1.0f32; MAX_C],
        [1.0f32; MAX_C],
        [0.0f32; MAX_C],
    );
    let saved = RenormSaved {
        mean: &sm[..c],
        invstd: &si[..c],
        r: &sr[..c],
        d: &sd[..c - 1],
    };
    let r = bn.backward_renorm(
        x,
        &inp.dy[..n],
        sh,
        saved,
        Grads {
            dx: &mut dx[..n],
            dgamma: Some(&mut dg[..c]),
            dbeta: None,
        },
    );
    let ok =
        r == Err(Error::Length {
            arg: "saved.d",
            expected: c,
            actual: c - 1,
        }) && untouched(&dx[..n])
            && untouched(&dg[..c]);
    ck.line(
        ok,
        "error backward_renorm short d",
        case.name,
        format_args!("{:?}", r),
    );
}

// ---- NaN in the input: propagates as IEEE says, only where it should
fn check_nan<W: Write>(ck: &mut Checker<W>) {
    let case = &CASES[0];
    let sh = case.shape;
    let n = data::len(case);
    let c = sh.channels;
    let clean = Inputs::new(case);
    let mut inp = Inputs::new(case);
    let k = n / 2 + 1;
    let kc = crate::reference::channel_of(sh, k);
    inp.x[k] = f32::NAN;
    let bn = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..c]),
        beta: Some(&inp.beta[..c]),
    };
    let (rm, rv) = (&inp.running_mean[..c], &inp.running_var[..c]);

    let mut y0 = [0.0f32; MAX_LEN];
    let mut y1 = [0.0f32; MAX_LEN];
    let r0 = bn.eval(
        &clean.x[..n],
        &mut y0[..n],
        sh,
        RunningStats { mean: rm, var: rv },
    );
    let r1 = bn.eval(
        &inp.x[..n],
        &mut y1[..n],
        sh,
        RunningStats { mean: rm, var: rv },
    );
    let ok = r0.is_ok()
        && r1.is_ok()
        && (0..n).all(|i| {
            if i == k {
                y1[i].is_nan()
            } else {
                y1[i].to_bits() == y0[i].to_bits()
            }
        });
    ck.line(
        ok,
        "eval NaN propagation",
        case.name,
        format_args!("NaN at element {} only", k),
    );

    let (mut sm0, mut si0, mut sm1, mut si1) = (
        [0.0f32; MAX_C],
        [0.0f32; MAX_C],
        [0.0f32; MAX_C],
        [0.0f32; MAX_C],
    );
    let r0 = bn.train(
        &clean.x[..n],
        &mut y0[..n],
        sh,
        SavedMut {
            mean: &mut sm0[..c],
            invstd: &mut si0[..c],
        },
        None,
    );
    let r1 = bn.train(
        &inp.x[..n],
        &mut y1[..n],
        sh,
        SavedMut {
            mean: &mut sm1[..c],
            invstd: &mut si1[..c],
        },
        None,
    );
    let ok = r0.is_ok()
        && r1.is_ok()
        && (0..n).all(|i| {
            if crate::reference::channel_of(sh, i) == kc {
                y1[i].is_nan()
            } else {
                y1[i].to_bits() == y0[i].to_bits()
            }
        })
        && sm1[kc].is_nan()
        && (0..c).all(|ch| ch == kc || (sm1[ch] == sm0[ch] && si1[ch] == si0[ch]));
    ck.line(
        ok,
        "train NaN propagation",
        case.name,
        format_args!("NaN in channel {} only", kc),
    );

    // eval_fused: the NaN stays in its element (relu keeps NaN).
    let z = &inp.z[..n];
    let r0 = bn.eval_fused(
        &clean.x[..n],
        &mut y0[..n],
        sh,
        Fusion::AddRelu { z },
        RunningStats { mean: rm, var: rv },
    );
    let r1 = bn.eval_fused(
        &inp.x[..n],
        &mut y1[..n],
        sh,
        Fusion::AddRelu { z },
        RunningStats { mean: rm, var: rv },
    );
    let ok = r0.is_ok()
        && r1.is_ok()
        && (0..n).all(|i| {
            if i == k {
                y1[i].is_nan()
            } else {
                y1[i].to_bits() == y0[i].to_bits()
            }
        });
    ck.line(
        ok,
        "eval_fused NaN propagation",
        case.name,
        format_args!("NaN at element {} only", k),
    );

    // train_renorm: the NaN channel's output and statistics are NaN, the others as
    // without it.
    let out = |x: &[f32], y: &mut [f32], sm: &mut [f32], rmean: &mut [f32]| {
        let (mut si, mut sr, mut sd, mut rvar) = (
            [0.0f32; MAX_C],
            [0.0f32; MAX_C],
            [0.0f32; MAX_C],
            [0.0f32; MAX_C],
        );
        rmean[..c].copy_from_slice(rm);
        rvar[..c].copy_from_slice(rv);
        bn.train_renorm(
            x,
            y,
            sh,
            RENORM,
            RenormSavedMut {
                mean: &mut sm[..c],
                invstd: &mut si[..c],
                r: &mut sr[..c],
                d: &mut sd[..c],
            },
            &mut Running::new(
                &mut rmean[..c],
                &mut rvar[..c],
                Momentum::Exponential(MOMENTUM),
            ),
        )
    };
    let (mut rm0, mut rm1) = ([0.0f32; MAX_C], [0.0f32; MAX_C]);
    let r0 = out(&clean.x[..n], &mut y0[..n], &mut sm0, &mut rm0);
    let r1 = out(&inp.x[..n], &mut y1[..n], &mut sm1, &mut rm1);
    let ok = r0.is_ok()
        && r1.is_ok()
        && (0..n).all(|i| {
            if crate::reference::channel_of(sh, i) == kc {
                y1[i].is_nan()
            } else {
                y1[i].to_bits() == y0[i].to_bits()
            }
        })
        && sm1[kc].is_nan()
        && rm1[kc].is_nan()
        && (0..c).all(|ch| ch == kc || (sm1[ch] == sm0[ch] && rm1[ch] == rm0[ch]));
    ck.line(
        ok,
        "train_renorm NaN propagation",
        case.name,
        format_args!("NaN in channel {} only", kc),
    );
}

// ---- fold: formulas and end to end ----------------------------------------------------
// Per case: W', b' (and the pad values for BN before a layer) against the formulas in
// f64, then end to end: the folded layer's output against BN(layer(x)) (BN after) or
// layer(BN(x)) (BN before; a padded convolution pads with the returned values), all in
// f64 loops here; then the host values and the error paths.
fn check_fold<W: Write>(ck: &mut Checker<W>) {
    use crate::data::{weight_index, FoldInputs, FOLD_CASES, FOLD_LEN};
    use crate::reference::{fold_scale_shift, fold_want, input_of, layer_out, layer_out_len};
    use batchnorm::fold::{self, EvalBn, Layer};

    for case in FOLD_CASES {
        let l = case.layer;
        let ig = l.in_channels / l.groups;
        let inp = FoldInputs::new(case);
        let o = match scenario::run_fold(case, &inp) {
            Ok(o) => o,
            Err((kernel, e)) => {
                ck.line(
                    false,
                    kernel,
                    case.name,
                    format_args!("returned Err({:?})", e),
                );
                continue;
            }
        };
        let mut a = Acc::new(RTOL);
        for oc in 0..l.out_channels {
            for q in 0..ig {
                for k in 0..l.kernel {
                    let i = weight_index(l, oc, q, k);
                    let (w, mag) = fold_want(case, &inp, What::FoldWeight, oc, q, k);
                    a.add(i, o.weight[i] as f64, w, mag);
                }
            }
            let (w, mag) = fold_want(case, &inp, What::FoldBias, oc, 0, 0);
            a.add(oc, o.bias[oc] as f64, w, mag);
        }
        if !case.bn_after {
            for c in 0..l.in_channels {
                let (w, mag) = fold_want(case, &inp, What::FoldPad, c, 0, 0);
                a.add(c, o.pad[c] as f64, w, mag);
            }
        }
        let label = if case.bn_after {
            "fold into_preceding W',b'"
        } else {
            "fold into_following W',b',pad"
        };
        ck.acc(label, case.name, &a);

        // End to end.
        let mut a = Acc::new(RTOL);
        let x_at = |i: usize, j: usize| inp.x[i * FOLD_LEN + j] as f64;
        let none = |_: usize| 0.0;
        if case.bn_after {
            for oc in 0..l.out_channels {
                let (scale, _) = fold_scale_shift(&inp, oc);
                let (m, beta) = (inp.running_mean[oc] as f64, inp.beta[oc] as f64);
                for t in 0..layer_out_len(case, 0) {
                    let (y, ymag) = layer_out(case, &inp.weight, &inp.bias, &x_at, &none, 0, oc, t);
                    let want = (y - m) * scale + beta;
                    let mag = (ymag + m.abs()) * scale.abs() + beta.abs();
                    let (got, _) = layer_out(case, &o.weight, &o.bias, &x_at, &none, 0, oc, t);
                    a.add(oc, got, want, mag);
                }
            }
        } else {
            // A convolution pads by 1: the original pads BN(x) with 0, the folded one pads
            // x with the returned pad values. A linear layer (kernel 1) has no padding.
            let padding = if l.kernel > 1 { 1 } else { 0 };
            let bn_x = |i: usize, j: usize| {
                let (scale, shift) = fold_scale_shift(&inp, i);
                inp.x[i * FOLD_LEN + j] as f64 * scale + shift
            };
            let pad_at = |i: usize| o.pad[i] as f64;
            for oc in 0..l.out_channels {
                for t in 0..layer_out_len(case, padding) {
                    let (want, _) =
                        layer_out(case, &inp.weight, &inp.bias, &bn_x, &none, padding, oc, t);
                    let (got, _) =
                        layer_out(case, &o.weight, &o.bias, &x_at, &pad_at, padding, oc, t);
                    // magnitude: every term |W·scale·x| + |W·shift| + |b|
                    let mut mag = (inp.bias[oc] as f64).abs();
                    for q in 0..ig {
                        let i = input_of(case, oc, q);
                        let (scale, shift) = fold_scale_shift(&inp, i);
                        for k in 0..l.kernel {
                            let w = (inp.weight[weight_index(l, oc, q, k)] as f64).abs();
                            let j = t + k;
                            let xv = if j >= padding && j - padding < FOLD_LEN {
                                x_at(i, j - padding).abs()
                            } else {
                                (shift / scale).abs()
                            };
                            mag += w * (xv * scale.abs() + shift.abs());
                        }
                    }
                    a.add(oc, got, want, mag);
                }
            }
        }
        let label = if case.bn_after {
            "fold end to end BN(layer(x))"
        } else {
            "fold end to end layer(BN(x))"
        };
        ck.acc(label, case.name, &a);

        // Host values.
        let (mut count, mut bad, mut worst) = (0, 0, 0.0f64);
        for e in EXPECTED.iter().filter(|e| e.case == case.name) {
            count += 1;
            let got = o.get(e.what, e.index);
            let d = (got - e.value).abs();
            let within = d <= e.tol; // false for NaN
            if !within {
                bad += 1;
                ck.note(format_args!(
                    "     {:?}[{}]: got {:e}, host {:e}, tol {:e}",
                    e.what, e.index, got, e.value, e.tol
                ));
            }
            let rel = if e.tol > 0.0 {
                d / e.tol
            } else if d == 0.0 {
                0.0
            } else {
                f64::INFINITY
            };
            worst = if rel > worst { rel } else { worst };
        }
        ck.line(
            bad == 0 && count > 0,
            "fold host values",
            case.name,
            format_args!(
                "{} of {} match, worst |got-host| = {:.1e}·tol",
                count - bad,
                count,
                worst
            ),
        );
    }

    // Errors: nothing written.
    const S: f32 = 7.25;
    let case = &FOLD_CASES[5]; // before linear [o][i], 6 → 3
    let inp = FoldInputs::new(case);
    let l = case.layer;
    let nw = crate::data::weight_len(l);
    let mut gamma = [0.0f32; 8];
    gamma[..l.in_channels].copy_from_slice(&inp.gamma[..l.in_channels]);
    gamma[2] = 0.0;
    let bn = EvalBn::new(
        BatchNorm {
            eps: EPS,
            gamma: Some(&gamma[..l.in_channels]),
            beta: Some(&inp.beta[..l.in_channels]),
        },
        RunningStats {
            mean: &inp.running_mean[..l.in_channels],
            var: &inp.running_var[..l.in_channels],
        },
    );
    let (mut w, mut b, mut pad) = (inp.weight, inp.bias, [S; 8]);
    let r = fold::into_following(
        &bn,
        l,
        &mut w[..nw],
        &mut b[..l.out_channels],
        Some(&mut pad[..l.in_channels]),
    );
    let ok = r == Err(Error::ZeroScale { channel: 2 })
        && bits_eq(&w[..nw], &inp.weight[..nw])
        && bits_eq(&b, &inp.bias)
        && pad.iter().all(|&p| p == S);
    ck.line(
        ok,
        "fold error gamma 0 + pad",
        case.name,
        format_args!("{:?}", r),
    );
    // Without pad values, γ = 0 is fine: W'[., 2] = 0, b' gets W·β.
    let r = fold::into_following(&bn, l, &mut w[..nw], &mut b[..l.out_channels], None);
    ck.line(
        r.is_ok() && (0..l.out_channels).all(|o| w[o * l.in_channels + 2] == 0.0),
        "fold gamma 0, no pad",
        case.name,
        format_args!("{:?}", r),
    );

    let bad_groups = Layer::linear(6, 3).grouped(4);
    let (mut w, mut b) = (inp.weight, inp.bias);
    let r = fold::into_following(&bn, bad_groups, &mut w[..nw], &mut b[..3], None);
    let ok = matches!(r, Err(Error::Groups { groups: 4, .. }))
        && bits_eq(&w, &inp.weight)
        && bits_eq(&b, &inp.bias);
    ck.line(
        ok,
        "fold error groups 4 of 6",
        case.name,
        format_args!("{:?}", r),
    );

    let r = fold::into_following(&bn, l, &mut w[..nw - 1], &mut b[..3], None);
    let ok =
        r == Err(Error::Length {
            arg: "weight",
            expected: nw,
            actual: nw - 1,
        }) && bits_eq(&w, &inp.weight);
    ck.line(
        ok,
        "fold error short weight",
        case.name,
        format_args!("{:?}", r),
    );
}

// ---- stack each kernel family needs ---------------------------------------------
/// Kernel families `stack_of` measures.
const FAMILIES: usize = 15;

fn report_stack<W: Write>(ck: &mut Checker<W>) {
    let base = stack::baseline();
    ck.note(format_args!(
        "stack: bytes below the caller's stack pointer, high-water mark of painted stack \
         (an empty call reads {} B: resolution {} B)",
        base,
        stack::GUARD
    ));
    let mut worst_all = 0;
    ck.note(format_args!(
        "stack {:<30} {:>15} {:>15}",
        "kernel", "channels-first", "channels-last"
    ));
    for family in 0..FAMILIES {
        let (mut cf, mut cl) = (0, 0);
        let mut label = "";
        for case in CASES {
            let (l, used) = stack_of(family, case);
            label = l;
            // spatial 1 runs the channels-last path
            if case.shape.layout == batchnorm::Layout::ChannelsFirst && case.shape.spatial > 1 {
                cf = cf.max(used);
            } else {
                cl = cl.max(used);
            }
        }
        worst_all = worst_all.max(cf).max(cl);
        ck.note(format_args!(
            "stack {:<30} {:>13} B {:>13} B",
            label, cf, cl
        ));
    }
    for following in [false, true] {
        let (label, used) = stack_of_fold(following);
        worst_all = worst_all.max(used);
        ck.note(format_args!(
            "stack {:<30} {:>13} B {:>13}",
            label, used, "(weights)"
        ));
    }
    worst_all = worst_all.max(report_norm_stack(ck));
    let ok = worst_all < stack::DEPTH - 256;
    ck.line(
        ok,
        "stack measured",
        "all cases",
        format_args!("max {} B (painted {} B)", worst_all, stack::DEPTH),
    );
}

fn stack_of_fold(following: bool) -> (&'static str, usize) {
    use batchnorm::fold::{into_following, into_preceding, EvalBn};
    let fc = &crate::data::FOLD_CASES[if following { 7 } else { 1 }];
    let fi = crate::data::FoldInputs::new(fc);
    let l = fc.layer;
    let nc = if following {
        l.in_channels
    } else {
        l.out_channels
    };
    let (mut w, mut b, mut pad) = (fi.weight, fi.bias, [0.0f32; 8]);
    let nw = crate::data::weight_len(l);
    let bn = EvalBn::new(
        BatchNorm {
            eps: EPS,
            gamma: Some(&fi.gamma[..nc]),
            beta: Some(&fi.beta[..nc]),
        },
        RunningStats {
            mean: &fi.running_mean[..nc],
            var: &fi.running_var[..nc],
        },
    );
    let ob = l.out_channels;
    if following {
        let used = stack::used(|| {
            let _ = into_following(&bn, l, &mut w[..nw], &mut b[..ob], Some(&mut pad[..nc]));
        });
        ("fold::into_following", used)
    } else {
        let used = stack::used(|| {
            let _ = into_preceding(&bn, l, &mut w[..nw], &mut b[..ob]);
        });
        ("fold::into_preceding", used)
    }
}

fn stack_of(family: usize, case: &Case) -> (&'static str, usize) {
    let sh = case.shape;
    let n = data::len(case);
    let c = sh.channels;
    let inp = Inputs::new(case);
    let x = &inp.x[..n];
    let dy = &inp.dy[..n];
    let (rm, rv) = (&inp.running_mean[..c], &inp.running_var[..c]);
    let bn = BatchNorm {
        eps: EPS,
        gamma: Some(&inp.gamma[..c]),
        beta: Some(&inp.beta[..c]),
    };
    let z = &inp.z[..n];
    let mut y = [0.0f32; MAX_LEN];
    let mut dz = [0.0f32; MAX_LEN];
    let (mut a, mut b) = ([0.0f32; MAX_C], [0.0f32; MAX_C]);
    let (mut ra, mut rb) = ([1.0f32; MAX_C], [1.0f32; MAX_C]);
    let (mut r, mut d) = ([1.0f32; MAX_C], [0.0f32; MAX_C]);
    let mut parts = [Moments::EMPTY; MAX_C];
    match family {
        0 => (
            "moments",
            stack::used(|| {
                let _ = moments(x, sh, &mut parts[..c]);
            }),
        ),
        1 => (
            "eval",
            stack::used(|| {
                let _ = bn.eval(x, &mut y[..n], sh, RunningStats { mean: rm, var: rv });
            }),
        ),
        2 => (
            "eval_in_place",
            stack::used(|| {
                let _ = bn.eval_in_place(&mut y[..n], sh, RunningStats { mean: rm, var: rv });
            }),
        ),
        3 => (
            "train (no running stats)",
            stack::used(|| {
                let _ = bn.train(
                    x,
                    &mut y[..n],
                    sh,
                    SavedMut {
                        mean: &mut a[..c],
                        invstd: &mut b[..c],
                    },
                    None,
                );
            }),
        ),
        4 => (
            "train (running stats)",
            stack::used(|| {
                let _ = bn.train(
                    x,
                    &mut y[..n],
                    sh,
                    SavedMut {
                        mean: &mut a[..c],
                        invstd: &mut b[..c],
                    },
                    Some(&mut Running::new(
                        &mut ra[..c],
                        &mut rb[..c],
                        Momentum::Exponential(0.1),
                    )),
                );
            }),
        ),
        5 => ("train_in_place", {
            y[..n].copy_from_slice(x);
            stack::used(|| {
                let _ = bn.train_in_place(
                    &mut y[..n],
                    sh,
                    SavedMut {
                        mean: &mut a[..c],
                        invstd: &mut b[..c],
                    },
                    None,
                );
            })
        }),
        6 => (
            "backward",
            stack::used(|| {
                let _ = bn.backward(
                    x,
                    dy,
                    sh,
                    Saved {
                        mean: rm,
                        invstd: rv,
                    },
                    Grads {
                        dx: &mut y[..n],
                        dgamma: Some(&mut a[..c]),
                        dbeta: Some(&mut b[..c]),
                    },
                );
            }),
        ),
        7 => (
            "backward_eval",
            stack::used(|| {
                let _ = bn.backward_eval(
                    x,
                    dy,
                    sh,
                    RunningStats { mean: rm, var: rv },
                    Grads {
                        dx: &mut y[..n],
                        dgamma: Some(&mut a[..c]),
                        dbeta: Some(&mut b[..c]),
                    },
                );
            }),
        ),
        8 => (
            "eval_fused ReLU",
            stack::used(|| {
                let _ = bn.eval_fused(
                    x,
                    &mut y[..n],
                    sh,
                    Fusion::Relu,
                    RunningStats { mean: rm, var: rv },
                );
            }),
        ),
        9 => (
            "eval_fused Add+ReLU",
            stack::used(|| {
                let _ = bn.eval_fused(
                    x,
                    &mut y[..n],
                    sh,
                    Fusion::AddRelu { z },
                    RunningStats { mean: rm, var: rv },
                );
            }),
        ),
        10 => (
            "train_fused Add+ReLU (running)",
            stack::used(|| {
                let _ = bn.train_fused(
                    x,
                    &mut y[..n],
                    sh,
                    Fusion::AddRelu { z },
                    SavedMut {
                        mean: &mut a[..c],
                        invstd: &mut b[..c],
                    },
                    Some(&mut Running::new(
                        &mut ra[..c],
                        &mut rb[..c],
                        Momentum::Exponential(0.1),
                    )),
                );
            }),
        ),
        11 => (
            "backward_fused Add+ReLU",
            stack::used(|| {
                let _ = bn.backward_fused(
                    x,
                    dy,
                    z,
                    sh,
                    FusionGrad::AddRelu { dz: &mut dz[..n] },
                    Saved {
                        mean: rm,
                        invstd: rv,
                    },
                    Grads {
                        dx: &mut y[..n],
                        dgamma: Some(&mut a[..c]),
                        dbeta: Some(&mut b[..c]),
                    },
                );
            }),
        ),
        12 => (
            "backward_eval_fused ReLU",
            stack::used(|| {
                let _ = bn.backward_eval_fused(
                    x,
                    dy,
                    z,
                    sh,
                    FusionGrad::Relu,
                    RunningStats { mean: rm, var: rv },
                    Grads {
                        dx: &mut y[..n],
                        dgamma: Some(&mut a[..c]),
                        dbeta: Some(&mut b[..c]),
                    },
                );
            }),
        ),
        13 => (
            "train_renorm",
            stack::used(|| {
                let _ = bn.train_renorm(
                    x,
                    &mut y[..n],
                    sh,
                    RENORM,
                    RenormSavedMut {
                        mean: &mut a[..c],
                        invstd: &mut b[..c],
                        r: &mut r[..c],
                        d: &mut d[..c],
                    },
                    &mut Running::new(&mut ra[..c], &mut rb[..c], Momentum::Exponential(0.1)),
                );
            }),
        ),
        _ => {
            let saved = RenormSaved {
                mean: &ra[..c],
                invstd: &rb[..c],
                r: &r[..c],
                d: &d[..c],
            };
            (
                "backward_renorm",
                stack::used(|| {
                    let _ = bn.backward_renorm(
                        x,
                        dy,
                        sh,
                        saved,
                        Grads {
                            dx: &mut y[..n],
                            dgamma: Some(&mut a[..c]),
                            dbeta: Some(&mut b[..c]),
                        },
                    );
                }),
            )
        }
    }
}

// ---- batch norm's neighbours: layer, RMS, group and instance norm --------------------
// Per case: the forward with γ, β (instance norm: and running statistics) and its saved
// statistics against the f64 reference over the op's statistic units; in place
// bit for bit as the forward; the backward from the saved statistics; both again with
// γ, β off; then the host values.

use crate::data::{NormCase, NormInputs, NormOp, CLIP_CASES, NORM_CASES};
use crate::reference::NormRef;
use crate::scenario::{Norm, NormOutputs};
use batchnorm::{Saved, SavedMut};

fn op_label(op: NormOp) -> &'static str {
    match op {
        NormOp::Layer => "LayerNorm",
        NormOp::Rms => "RmsNorm",
        NormOp::Group(_) => "GroupNorm",
        NormOp::Instance => "InstanceNorm",
    }
}

/// A line for `label` with `acc`, after the label's op name.
fn norm_line<W: Write>(ck: &mut Checker<W>, case: &NormCase, what: &str, a: &Acc) {
    let mut label = Label::new();
    let _ = write!(label, "{} {}", op_label(case.op), what);
    ck.acc(label.as_str(), case.name, a);
}

/// A line name built at run time (no allocation).
struct Label {
    buf: [u8; 48],
    len: usize,
}

impl Label {
    fn new() -> Label {
        Label {
            buf: [0; 48],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Write for Label {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let b = s.as_bytes();
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        Ok(())
    }
}

fn compare_norm(r: &NormRef, inp: &NormInputs, what: What, got: &[f32], acc: &mut Acc) {
    for (i, &g) in got.iter().enumerate() {
        let (want, mag) = r.want(inp, what, i);
        acc.add(i, g as f64, want, mag);
    }
}

/// The host values of case `name` against `get(what, index)`.
fn host_values<W: Write>(ck: &mut Checker<W>, name: &str, get: &dyn Fn(What, usize) -> f64) {
    let (mut count, mut bad, mut worst) = (0, 0, 0.0f64);
    for e in EXPECTED.iter().filter(|e| e.case == name) {
        count += 1;
        let got = get(e.what, e.index);
        let d = (got - e.value).abs();
        let within = d <= e.tol; // false for NaN
        if !within {
            bad += 1;
            ck.note(format_args!(
                "     {:?}[{}]: got {:e}, host {:e}, tol {:e}",
                e.what, e.index, got, e.value, e.tol
            ));
        }
        let rel = if e.tol > 0.0 {
            d / e.tol
        } else if d == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        worst = if rel > worst { rel } else { worst };
    }
    ck.line(
        bad == 0 && count > 0,
        "host values",
        name,
        format_args!(
            "{} of {} match, worst |got-host| = {:.1e}·tol",
            count - bad,
            count,
            worst
        ),
    );
}

fn check_norm<W: Write>(ck: &mut Checker<W>, case: &NormCase) {
    let name = case.name;
    let sh = case.data.shape;
    let n = data::len_of(sh);
    let (c, u, p) = (sh.channels, case.units(), case.params());
    let inp = NormInputs::new(case);
    let mut o = NormOutputs::new();
    if let Err((kernel, e)) = scenario::run_norm(case, &inp, &mut o) {
        ck.line(false, kernel, name, format_args!("returned Err({:?})", e));
        return;
    }
    let rms = case.op == NormOp::Rms;
    let saved_mean = if rms { &[][..] } else { &o.mean[..u] };
    let r = NormRef::new(case, &inp, true, saved_mean, &o.invstd[..u]);
    let x = &inp.t.x[..n];

    let mut a = Acc::new(RTOL);
    compare_norm(&r, &inp, What::NormY, &o.y[..n], &mut a);
    norm_line(ck, case, "y", &a);

    let mut a = Acc::new(RTOL);
    if !rms {
        compare_norm(&r, &inp, What::NormMean, &o.mean[..u], &mut a);
    }
    compare_norm(&r, &inp, What::NormInvstd, &o.invstd[..u], &mut a);
    if case.running() {
        compare_norm(
            &r,
            &inp,
            What::NormRunningMean,
            &o.running_mean[..c],
            &mut a,
        );
        compare_norm(&r, &inp, What::NormRunningVar, &o.running_var[..c], &mut a);
    }
    let what = match (rms, case.running()) {
        (true, _) => "invstd",
        (false, false) => "mean,invstd",
        (false, true) => "mean,invstd,running",
    };
    norm_line(ck, case, what, &a);

    // In place, from the same input and running statistics: the forward's bits.
    {
        let norm = Norm::new(case, &inp, true);
        let mut y = [0.0f32; MAX_LEN];
        y[..n].copy_from_slice(x);
        let (mut sm, mut si) = (
            [0.0f32; crate::data::MAX_UNITS],
            [0.0f32; crate::data::MAX_UNITS],
        );
        let (mut rmean, mut rvar) = ([0.0f32; MAX_C], [0.0f32; MAX_C]);
        rmean[..c].copy_from_slice(&inp.t.running_mean[..c]);
        rvar[..c].copy_from_slice(&inp.t.running_var[..c]);
        let mut running = case.running().then(|| {
            Running::new(
                &mut rmean[..c],
                &mut rvar[..c],
                Momentum::Exponential(MOMENTUM),
            )
        });
        let saved = SavedMut {
            mean: &mut sm[..u],
            invstd: &mut si[..u],
        };
        let res = norm.forward(&[], &mut y[..n], saved, running.as_mut());
        let same = res.is_ok()
            && bits_eq(&y[..n], &o.y[..n])
            && bits_eq(&sm[..u], &o.mean[..u])
            && bits_eq(&si[..u], &o.invstd[..u])
            && bits_eq(&rmean[..c], &o.running_mean[..c])
            && bits_eq(&rvar[..c], &o.running_var[..c]);
        let mut label = Label::new();
        let _ = write!(label, "{} forward_in_place", op_label(case.op));
        ck.line(
            same,
            label.as_str(),
            name,
            format_args!(
                "{}",
                match (res, same) {
                    (Err(_), _) => "returned Err",
                    (Ok(()), true) => "bit-identical to forward",
                    (Ok(()), false) => "differs from forward",
                }
            ),
        );
    }

    let mut a = Acc::new(RTOL);
    compare_norm(&r, &inp, What::NormDx, &o.dx[..n], &mut a);
    compare_norm(&r, &inp, What::NormDgamma, &o.dgamma[..p], &mut a);
    compare_norm(&r, &inp, What::NormDbeta, &o.dbeta[..p], &mut a);
    norm_line(ck, case, "backward dx,dg,db", &a);

    // γ, β off; no running statistics; the backward without dγ, with dβ.
    {
        let plain = Norm::new(case, &inp, false);
        let mut y = [0.0f32; MAX_LEN];
        let (mut sm, mut si) = (
            [0.0f32; crate::data::MAX_UNITS],
            [0.0f32; crate::data::MAX_UNITS],
        );
        let saved = SavedMut {
            mean: &mut sm[..u],
            invstd: &mut si[..u],
        };
        let mut dx = [0.0f32; MAX_LEN];
        let mut db = [0.0f32; MAX_LEN];
        let res = plain.forward(x, &mut y[..n], saved, None).and_then(|()| {
            let saved = Saved {
                mean: &sm[..u],
                invstd: &si[..u],
            };
            let grads = Grads {
                dx: &mut dx[..n],
                dgamma: None,
                dbeta: Some(&mut db[..p]),
            };
            plain.backward(x, &inp.t.dy[..n], saved, grads)
        });
        match res {
            Err(e) => {
                let mut label = Label::new();
                let _ = write!(label, "{} affine=off", op_label(case.op));
                ck.line(
                    false,
                    label.as_str(),
                    name,
                    format_args!("returned Err({:?})", e),
                )
            }
            Ok(()) => {
                let sm_ = if rms { &[][..] } else { &sm[..u] };
                let pr = NormRef::new(case, &inp, false, sm_, &si[..u]);
                let mut a = Acc::new(RTOL);
                compare_norm(&pr, &inp, What::NormY, &y[..n], &mut a);
                compare_norm(&pr, &inp, What::NormDx, &dx[..n], &mut a);
                compare_norm(&pr, &inp, What::NormDbeta, &db[..p], &mut a);
                // The statistics do not depend on γ, β.
                if bits_eq(&sm[..u], &o.mean[..u]) && bits_eq(&si[..u], &o.invstd[..u]) {
                    norm_line(ck, case, "affine=off y,dx,db", &a);
                } else {
                    let mut label = Label::new();
                    let _ = write!(label, "{} affine=off", op_label(case.op));
                    ck.line(
                        false,
                        label.as_str(),
                        name,
                        format_args!("statistics differ"),
                    );
                }
            }
        }
    }

    host_values(ck, name, &|what, i| o.get(what, i));
}

// ---- gradient clipping: clip_grad_value bit for bit against a scalar clamp; total_norm
// and clip_grad_norm against f64 norms (L2, max), a bound above the norm that changes
// nothing; then the host values.
fn check_clip<W: Write>(ck: &mut Checker<W>, case: &crate::data::ClipCase) {
    use crate::reference::{clip_totals, clip_want};
    use crate::scenario::{slices, CLIP_VALUE};
    use batchnorm::{clip_grad_norm, total_norm, GradNorm, NonFinite};
    let name = case.name;
    let inp = crate::data::ClipInputs::new(case);
    let total: usize = case.lens.iter().sum();
    let o = match scenario::run_clip(case, &inp) {
        Ok(o) => o,
        Err((kernel, e)) => {
            ck.line(false, kernel, name, format_args!("returned Err({:?})", e));
            return;
        }
    };
    let same = (0..crate::data::CLIP_SLICES).all(|k| {
        let len = case.lens[k];
        o.value.g[k][..len]
            .iter()
            .zip(&inp.g[k][..len])
            .all(|(&v, &g)| {
                let want = g.clamp(-CLIP_VALUE, CLIP_VALUE);
                v.to_bits() == want.to_bits()
            })
            && o.value.g[k][len..].iter().all(|&v| v == 0.0)
    });
    ck.line(
        same,
        "clip_grad_value 0.5",
        name,
        format_args!(
            "{:>4} values {}",
            total,
            if same {
                "bit-identical to clamp"
            } else {
                "differ from clamp (or written past a slice)"
            }
        ),
    );

    let (l2, max) = clip_totals(case, &inp);
    let mut a = Acc::new(RTOL);
    a.add(0, o.total_l2 as f64, l2, l2);
    a.add(1, o.total_max as f64, max, max);
    a.add(2, o.returned as f64, l2, l2);
    ck.acc("total_norm L2,max", name, &a);

    let mut a = Acc::new(RTOL);
    for i in 0..total {
        let (want, mag) = clip_want(case, &inp, What::ClipNormL2, i, CLIP_VALUE);
        a.add(i, o.get(case, What::ClipNormL2, i), want, mag);
    }
    ck.acc("clip_grad_norm L2", name, &a);

    // Max norm, bound at half of max + 1e-6: a factor max_norm/(max + 1e-6) of about
    // 1/2 (a bound at half of max alone would scale the 1e-30 case below f32's range).
    let mut g = inp.clone();
    let bound = ((max + 1e-6) / 2.0) as f32;
    let res = clip_grad_norm(
        &mut slices(case, &mut g),
        bound,
        GradNorm::Max,
        NonFinite::Error,
    );
    let mut a = Acc::new(RTOL);
    a.add(0, res.map_or(f64::NAN, |t| t as f64), max, max);
    let f = bound as f64 / (max + 1e-6);
    for k in 0..crate::data::CLIP_SLICES {
        for (i, (&v, &g0)) in g.g[k][..case.lens[k]].iter().zip(&inp.g[k]).enumerate() {
            let want = g0 as f64 * if f < 1.0 { f } else { 1.0 };
            a.add(i, v as f64, want, want.abs());
        }
    }
    ck.acc("clip_grad_norm max", name, &a);

    // A bound above the norm + 1e-6: nothing changes.
    let mut g = inp.clone();
    let bound = ((l2 + 1e-6) * 2.0) as f32;
    let res = clip_grad_norm(
        &mut slices(case, &mut g),
        bound,
        GradNorm::L2,
        NonFinite::Error,
    );
    let ok = res.map(|t| t.to_bits()) == Ok(o.total_l2.to_bits())
        && (0..crate::data::CLIP_SLICES).all(|k| bits_eq(&g.g[k], &inp.g[k]));
    let s = slices(case, &mut g);
    let again = total_norm(&[&*s[0], &*s[1], &*s[2]], GradNorm::L2);
    ck.line(
        ok && again.to_bits() == o.total_l2.to_bits(),
        "clip_grad_norm above the norm",
        name,
        format_args!("{:?}", res),
    );

    host_values(ck, name, &|what, i| o.get(case, what, i));
}

// ---- the neighbours' and clipping's error paths: Err with the right value, nothing
// written; and NaN propagation.
fn check_norm_errors<W: Write>(ck: &mut Checker<W>) {
    use batchnorm::{
        clip_grad_norm, clip_grad_value, GradNorm, GroupNorm, InstanceNorm, LayerNorm, NonFinite,
        RmsNorm, Rows,
    };
    const S: f32 = 7.25;
    let untouched = |ys: &[f32]| ys.iter().all(|&v| v == S);
    let case = &CASES[0]; // cf 3x5x7
    let inp = Inputs::new(case);
    let sh = case.shape;
    let n = data::len(case);
    let c = sh.channels;
    let x = &inp.x[..n];
    let rows = Rows::new(sh.batch, c * sh.spatial);
    let (mut y, mut dx) = ([S; MAX_LEN], [S; MAX_LEN]);
    let (mut sm, mut si) = ([S; MAX_C], [S; MAX_C]);
    let (mut dg, mut db) = ([S; MAX_LEN], [S; MAX_LEN]);

    let ln = LayerNorm {
        eps: EPS,
        gamma: Some(&inp.x[..rows.len - 1]),
        beta: None,
    };
    let saved = SavedMut {
        mean: &mut sm[..3],
        invstd: &mut si[..3],
    };
    let r = ln.forward(x, &mut y[..n], rows, saved);
    let ok =
        r == Err(Error::Length {
            arg: "gamma",
            expected: rows.len,
            actual: rows.len - 1,
        }) && untouched(&y[..n])
            && untouched(&sm)
            && untouched(&si);
    ck.line(
        ok,
        "error LayerNorm short gamma",
        case.name,
        format_args!("{:?}", r),
    );

    let ln = LayerNorm {
        eps: f32::NAN,
        gamma: None,
        beta: None,
    };
    let saved = SavedMut {
        mean: &mut sm[..3],
        invstd: &mut si[..3],
    };
    let r = ln.forward_in_place(&mut y[..n], rows, saved);
    let ok = matches!(r, Err(Error::Parameter { arg: "eps", .. }))
        && untouched(&y[..n])
        && untouched(&sm);
    ck.line(
        ok,
        "error LayerNorm eps NaN",
        case.name,
        format_args!("{:?}", r),
    );

    let ln = LayerNorm {
        eps: EPS,
        gamma: None,
        beta: None,
    };
    let r = ln.forward(
        &[],
        &mut [],
        Rows::new(3, 0),
        SavedMut {
            mean: &mut sm[..3],
            invstd: &mut si[..3],
        },
    );
    let ok =
        r == Err(Error::TooFewValues {
            needed: 1,
            actual: 0,
        }) && untouched(&sm);
    ck.line(
        ok,
        "error LayerNorm rows of 0",
        "rows 3x0",
        format_args!("{:?}", r),
    );

    let grads = Grads {
        dx: &mut dx[..n],
        dgamma: Some(&mut dg[..rows.len + 1]),
        dbeta: Some(&mut db[..rows.len]),
    };
    let saved = Saved {
        mean: &inp.x[..3],
        invstd: &inp.x[..3],
    };
    let r = ln.backward(x, &inp.dy[..n], rows, saved, grads);
    let ok =
        r == Err(Error::Length {
            arg: "dgamma",
            expected: rows.len,
            actual: rows.len + 1,
        }) && untouched(&dx[..n])
            && untouched(&dg[..rows.len + 1])
            && untouched(&db[..rows.len]);
    ck.line(
        ok,
        "error LayerNorm backward dgamma",
        case.name,
        format_args!("{:?}", r),
    );

    let rms = RmsNorm {
        eps: EPS,
        gamma: None,
    };
    let r = rms.forward(x, &mut y[..n], rows, &mut si[..2]);
    let ok =
        r == Err(Error::Length {
            arg: "save_invstd",
            expected: 3,
            actual: 2,
        }) && untouched(&y[..n])
            && untouched(&si);
    ck.line(
        ok,
        "error RmsNorm short invstd",
        case.name,
        format_args!("{:?}", r),
    );

    for groups in [0, 2] {
        let gn = GroupNorm {
            groups,
            eps: EPS,
            gamma: None,
            beta: None,
        };
        let saved = SavedMut {
            mean: &mut sm[..3 * groups],
            invstd: &mut si[..3 * groups],
        };
        let r = gn.forward(x, &mut y[..n], sh, saved);
        let ok =
            r == Err(Error::Groups {
                groups,
                arg: "channels",
                channels: c,
            }) && untouched(&y[..n])
                && untouched(&sm);
        let label = if groups == 0 {
            "error GroupNorm 0 groups"
        } else {
            "error GroupNorm 2 groups of 5"
        };
        ck.line(ok, label, case.name, format_args!("{:?}", r));
    }

    let gn = GroupNorm {
        groups: 5,
        eps: EPS,
        gamma: Some(&inp.gamma[..c]),
        beta: None,
    };
    let saved = Saved {
        mean: &inp.x[..14],
        invstd: &inp.x[..15],
    };
    let grads = Grads {
        dx: &mut dx[..n],
        dgamma: Some(&mut dg[..c]),
        dbeta: None,
    };
    let r = gn.backward(x, &inp.dy[..n], sh, saved, grads);
    let ok =
        r == Err(Error::Length {
            arg: "save_mean",
            expected: 15,
            actual: 14,
        }) && untouched(&dx[..n])
            && untouched(&dg[..c]);
    ck.line(
        ok,
        "error GroupNorm backward mean",
        case.name,
        format_args!("{:?}", r),
    );

    let inorm = InstanceNorm {
        eps: EPS,
        gamma: None,
        beta: None,
    };
    for (shape, momentum, label) in [
        (
            sh,
            Momentum::Exponential(1.5),
            "error InstanceNorm momentum",
        ),
        (
            Shape::rows(15, 7),
            Momentum::Exponential(0.1),
            "error InstanceNorm spatial 1",
        ),
    ] {
        let u = shape.batch * shape.channels;
        let (mut rmean, mut rvar) = ([S; MAX_C], [S; MAX_C]);
        let mut running = Running::new(
            &mut rmean[..shape.channels],
            &mut rvar[..shape.channels],
            momentum,
        );
        let (mut sm, mut si) = ([S; 128], [S; 128]);
        let saved = SavedMut {
            mean: &mut sm[..u],
            invstd: &mut si[..u],
        };
        let r = inorm.forward(x, &mut y[..n], shape, saved, Some(&mut running));
        let right = match r {
            Err(Error::Parameter { arg, .. }) => arg == "momentum" && shape == sh,
            Err(Error::TooFewValues { needed, actual }) => (needed, actual) == (2, 1),
            _ => false,
        };
        let ok = right
            && untouched(&y[..n])
            && untouched(&sm)
            && untouched(&si)
            && untouched(&rmean)
            && untouched(&rvar);
        let at = if shape == sh { case.name } else { "rows 15x7" };
        ck.line(ok, label, at, format_args!("{:?}", r));
    }

    // Clipping.
    let mut g = [S; 8];
    for (v, label) in [
        (f32::NAN, "error clip_grad_value NaN"),
        (-1.0, "error clip_grad_value -1"),
    ] {
        let r = clip_grad_value(&mut [&mut g[..5]], v);
        let ok = matches!(
            r,
            Err(Error::Parameter {
                arg: "clip_value",
                ..
            })
        ) && untouched(&g);
        ck.line(ok, label, "8 values", format_args!("{:?}", r));
    }
    let r = clip_grad_norm(&mut [&mut g[..5]], -1.0, GradNorm::L2, NonFinite::Scale);
    let ok = matches!(
        r,
        Err(Error::Parameter {
            arg: "max_norm",
            ..
        })
    ) && untouched(&g);
    ck.line(
        ok,
        "error clip_grad_norm max -1",
        "8 values",
        format_args!("{:?}", r),
    );
    let mut h = [0.5f32, f32::INFINITY, -0.25];
    let r = clip_grad_norm(
        &mut [&mut g[..4], &mut h],
        1.0,
        GradNorm::L2,
        NonFinite::Error,
    );
    let ok =
        r == Err(Error::NonFiniteNorm {
            norm: f32::INFINITY,
        }) && untouched(&g)
            && h[0] == 0.5
            && h[1] == f32::INFINITY;
    ck.line(
        ok,
        "error clip_grad_norm inf",
        "4+3 values",
        format_args!("{:?}", r),
    );
    // NonFinite::Scale as PyTorch: an infinite norm scales by 0 (inf·0 = NaN), a NaN
    // norm makes everything NaN.
    let r = clip_grad_norm(
        &mut [&mut g[..4], &mut h],
        1.0,
        GradNorm::Max,
        NonFinite::Scale,
    );
    let ok = r == Ok(f32::INFINITY)
        && g[..4].iter().all(|&v| v.to_bits() == 0)
        && g[4..].iter().all(|&v| v == S)
        && h[0].to_bits() == 0
        && h[1].is_nan()
        && h[2].to_bits() == (-0.0f32).to_bits();
    ck.line(
        ok,
        "clip_grad_norm inf, Scale",
        "4+3 values",
        format_args!("{:?}", r),
    );
    let mut g = [S; 8];
    g[3] = f32::NAN;
    let r = clip_grad_norm(&mut [&mut g[..6]], 1.0, GradNorm::L2, NonFinite::Scale);
    let ok = r.is_ok_and(|t| t.is_nan()) && g[..6].iter().all(|v| v.is_nan()) && untouched(&g[6..]);
    ck.line(
        ok,
        "clip_grad_norm NaN, Scale",
        "6 values",
        format_args!("{:?}", r),
    );
    let mut g = [S; 8];
    g[2] = f32::NAN;
    g[5] = -S;
    let r = clip_grad_value(&mut [&mut g[..6]], 1.0);
    let ok = r.is_ok()
        && g[2].is_nan()
        && g[..6]
            .iter()
            .enumerate()
            .all(|(i, &v)| i == 2 || v == if i == 5 { -1.0 } else { 1.0 })
        && untouched(&g[6..]);
    ck.line(
        ok,
        "clip_grad_value NaN stays",
        "6 values",
        format_args!("{:?}", r),
    );
}

/// A NaN in x: only its unit's output and statistics are NaN, the rest bit for bit as
/// without it.
fn check_norm_nan<W: Write>(ck: &mut Checker<W>) {
    // Layer norm (rows), RMS norm, group norm channels-last (groups of 4 channels),
    // instance norm channels-first.
    for case in [
        &NORM_CASES[0],
        &NORM_CASES[6],
        &NORM_CASES[15],
        &NORM_CASES[21],
    ] {
        let sh = case.data.shape;
        let (n, u) = (data::len_of(sh), case.units());
        let clean = NormInputs::new(case);
        let mut inp = clean.clone();
        let k = n / 2 + 1;
        let ku = case.unit_of(k);
        inp.t.x[k] = f32::NAN;
        let mut y0 = [0.0f32; MAX_LEN];
        let mut y1 = [0.0f32; MAX_LEN];
        let (mut sm0, mut si0) = (
            [0.0f32; crate::data::MAX_UNITS],
            [0.0f32; crate::data::MAX_UNITS],
        );
        let (mut sm1, mut si1) = (
            [0.0f32; crate::data::MAX_UNITS],
            [0.0f32; crate::data::MAX_UNITS],
        );
        let norm0 = Norm::new(case, &clean, true);
        let r0 = norm0.forward(
            &clean.t.x[..n],
            &mut y0[..n],
            SavedMut {
                mean: &mut sm0[..u],
                invstd: &mut si0[..u],
            },
            None,
        );
        let norm1 = Norm::new(case, &inp, true);
        let r1 = norm1.forward(
            &inp.t.x[..n],
            &mut y1[..n],
            SavedMut {
                mean: &mut sm1[..u],
                invstd: &mut si1[..u],
            },
            None,
        );
        let ok = r0.is_ok()
            && r1.is_ok()
            && (0..n).all(|i| {
                if case.unit_of(i) == ku {
                    y1[i].is_nan()
                } else {
                    y1[i].to_bits() == y0[i].to_bits()
                }
            })
            && si1[ku].is_nan()
            && (case.op == NormOp::Rms || sm1[ku].is_nan())
            && (0..u).all(|j| j == ku || (sm1[j] == sm0[j] && si1[j] == si0[j]));
        let mut label = Label::new();
        let _ = write!(label, "{} NaN propagation", op_label(case.op));
        ck.line(
            ok,
            label.as_str(),
            case.name,
            format_args!("NaN in unit {} only", ku),
        );
    }
}

/// Runs the neighbours' and clipping's checks.
fn check_neighbours<W: Write>(ck: &mut Checker<W>) {
    for case in NORM_CASES {
        check_norm(ck, case);
    }
    for case in CLIP_CASES {
        check_clip(ck, case);
    }
    check_norm_errors(ck);
    check_norm_nan(ck);
}

// ---- stack of the neighbours and clipping -------------------------------------------
/// Kernel families `stack_of_norm` measures.
const NORM_FAMILIES: usize = 8;

/// Prints the neighbours' stack lines (the worst over their cases; row norms have no
/// layout) and clipping's; returns the largest.
fn report_norm_stack<W: Write>(ck: &mut Checker<W>) -> usize {
    let mut worst_all = 0;
    for family in 0..NORM_FAMILIES {
        let (mut cf, mut cl, mut rows) = (0, 0, false);
        let mut label = "";
        for case in NORM_CASES {
            let Some((l, used)) = stack_of_norm(family, case) else {
                continue;
            };
            label = l;
            rows = matches!(case.op, NormOp::Layer | NormOp::Rms);
            let sh = case.data.shape;
            if rows || (sh.layout == batchnorm::Layout::ChannelsFirst && sh.spatial > 1) {
                cf = cf.max(used);
            } else {
                cl = cl.max(used);
            }
        }
        worst_all = worst_all.max(cf).max(cl);
        if rows {
            ck.note(format_args!(
                "stack {:<30} {:>13} B {:>13}",
                label, cf, "(rows)"
            ));
        } else {
            ck.note(format_args!(
                "stack {:<30} {:>13} B {:>13} B",
                label, cf, cl
            ));
        }
    }
    for l2 in [false, true] {
        let mut worst = 0;
        let mut label = "";
        for case in CLIP_CASES {
            let mut g = crate::data::ClipInputs::new(case);
            let mut s = crate::scenario::slices(case, &mut g);
            if l2 {
                label = "clip_grad_norm L2";
                worst = worst.max(stack::used(|| {
                    let _ = batchnorm::clip_grad_norm(
                        &mut s,
                        case.max_norm,
                        batchnorm::GradNorm::L2,
                        batchnorm::NonFinite::Error,
                    );
                }));
            } else {
                label = "clip_grad_value";
                worst = worst.max(stack::used(|| {
                    let _ = batchnorm::clip_grad_value(&mut s, 0.5);
                }));
            }
        }
        worst_all = worst_all.max(worst);
        ck.note(format_args!(
            "stack {:<30} {:>13} B {:>13}",
            label, worst, "(flat)"
        ));
    }
    worst_all
}

/// Stack of family `family` on `case`, when the family applies to its op.
fn stack_of_norm(family: usize, case: &NormCase) -> Option<(&'static str, usize)> {
    let ops: [(NormOp, bool, &'static str); NORM_FAMILIES] = [
        (NormOp::Layer, false, "LayerNorm forward"),
        (NormOp::Layer, true, "LayerNorm backward"),
        (NormOp::Rms, false, "RmsNorm forward"),
        (NormOp::Rms, true, "RmsNorm backward"),
        (NormOp::Group(0), false, "GroupNorm forward"),
        (NormOp::Group(0), true, "GroupNorm backward"),
        (NormOp::Instance, false, "InstanceNorm forward (running)"),
        (NormOp::Instance, true, "InstanceNorm backward"),
    ];
    let (op, backward, label) = ops[family];
    let same = match (op, case.op) {
        (NormOp::Group(_), NormOp::Group(_)) => true,
        (a, b) => a == b,
    };
    if !same {
        return None;
    }
    let sh = case.data.shape;
    let (n, c, u, p) = (data::len_of(sh), sh.channels, case.units(), case.params());
    let inp = NormInputs::new(case);
    let norm = Norm::new(case, &inp, true);
    let x = &inp.t.x[..n];
    let mut y = [0.0f32; MAX_LEN];
    let (mut dg, mut db) = ([0.0f32; MAX_LEN], [0.0f32; MAX_LEN]);
    let (mut sm, mut si) = (
        [0.0f32; crate::data::MAX_UNITS],
        [1.0f32; crate::data::MAX_UNITS],
    );
    let (mut rmean, mut rvar) = ([0.0f32; MAX_C], [1.0f32; MAX_C]);
    let used = if backward {
        let saved = Saved {
            mean: &sm[..u],
            invstd: &si[..u],
        };
        stack::used(|| {
            let grads = Grads {
                dx: &mut y[..n],
                dgamma: Some(&mut dg[..p]),
                dbeta: Some(&mut db[..p]),
            };
            let _ = norm.backward(x, &inp.t.dy[..n], saved, grads);
        })
    } else {
        stack::used(|| {
            let mut running = case
                .running()
                .then(|| Running::new(&mut rmean[..c], &mut rvar[..c], Momentum::Exponential(0.1)));
            let saved = SavedMut {
                mean: &mut sm[..u],
                invstd: &mut si[..u],
            };
            let _ = norm.forward(x, &mut y[..n], saved, running.as_mut());
        })
    };
    Some((label, used))
}
