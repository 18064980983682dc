//! Property tests: every kernel against the f64 oracle in `common`, under the
//! tolerance model documented there (`common::tol`).
//!
//! Drawn: layout (channels-first / channels-last); C ∈ {1, 3, 8, 17, 64} or random
//! 1..=70; spatial ∈ {1, 7, 49} or random 1..=130; batch 1..=9; per channel an offset
//! (0, ±1-ish, ±1e4 or random in ±1e4) and a spread (1, 1e-3, 0 = constant, random
//! up to 100); γ/β present or absent (γ includes 0, 1, negative values); eps ∈ {0,
//! 1e-5, 1e-3} (eps = 0 only with non-constant channels); momentum (none, 0, 0.1, 1,
//! random, cumulative with 0 or random batches tracked).
//!
//! Every output buffer starts as a sentinel NaN with guard cells on both sides
//! (`common::Guarded`): an element never written, or a write out of range, fails.
//! Each property also checks that the in-place variant equals the out-of-place one
//! bit for bit and that running the same input twice gives bit-identical output.
//!
//! Cases per run (`PROPTEST_CASES=n` overrides every count; each property prints its
//! count with `--nocapture`): train 256, eval 256, backward 256, backward_eval 256,
//! moments 256, non-finite train 128, non-finite eval 128 — **1536 in total**.
//! The proptest RNG is seeded deterministically so CI is reproducible; set
//! `BATCHNORM_PROPTEST_RANDOM=1` for a fresh seed.

#[path = "common/cases.rs"]
mod cases;
mod common;

use batchnorm::{
    moments, BatchNorm, Error, Grads, Layout, Moments, RunningStats, Saved, SavedMut, Shape,
};
use cases::Update;
use common::Rng;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

// ----------------------------------------------------------------------------------
// Cases
// ----------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Case {
    shape: Shape,
    profiles: Vec<Profile>,
    seed: u64,
    eps: f32,
    gamma: bool,
    beta: bool,
    /// Running statistics to update: momentum, correction, and the updates before.
    momentum: Option<Update>,
}

impl Case {
    fn x(&self) -> Vec<f32> {
        tensor(&self.shape, &self.profiles, self.seed)
    }

    /// γ (with 0, 1, −1 and random values in (−2, 2)) and β, when present.
    fn affine(&self) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        let mut rng = Rng::new(self.seed ^ 0x00a1_1ce0);
        let cs = self.shape.channels;
        let gamma: Vec<f32> = (0..cs)
            .map(|_| match rng.below(8) {
                0 => 1.0,
                1 => 0.0,
                2 => -1.0,
                _ => rng.range(-2.0, 2.0) as f32,
            })
            .collect();
        let beta: Vec<f32> = (0..cs)
            .map(|_| {
                if rng.below(6) == 0 {
                    0.0
                } else {
                    rng.range(-10.0, 10.0) as f32
                }
            })
            .collect();
        (self.gamma.then_some(gamma), self.beta.then_some(beta))
    }

    /// Running statistics before a train step: unrelated to the batch, so that a
    /// wrong momentum convention shows.
    fn running_before(&self) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(self.seed ^ 0x0b0b_0b0b);
        let rm = self
            .profiles
            .iter()
            .map(|p| match rng.below(3) {
                0 => rng.range(-1e4, 1e4) as f32,
                1 => 0.0,
                _ => (p.offset + 5.0 * p.spread.max(1e-3) * rng.gauss()) as f32,
            })
            .collect();
        let rv = self
            .profiles
            .iter()
            .map(|p| (p.spread.max(1e-3).powi(2) * rng.range(0.0, 20.0)) as f32)
            .collect();
        (rm, rv)
    }

    /// Running statistics for eval: near the channel's own statistics, or anywhere.
    fn running_for_eval(&self) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(self.seed ^ 0x00e0_a100);
        let rm = self
            .profiles
            .iter()
            .map(|p| {
                if rng.below(4) == 0 {
                    rng.range(-1e4, 1e4) as f32
                } else {
                    (p.offset + p.spread * rng.gauss()) as f32
                }
            })
            .collect();
        let rv = self
            .profiles
            .iter()
            .map(|p| (p.spread.max(1e-3).powi(2) * rng.range(0.25, 4.0)) as f32)
            .collect();
        (rm, rv)
    }

    /// dy: per channel an offset (0, 1, −0.5) plus a spread (1, 0.01, 10) of noise.
    fn dy(&self) -> Vec<f32> {
        let mut rng = Rng::new(self.seed ^ 0x0000_d00d);
        let profiles: Vec<Profile> = (0..self.shape.channels)
            .map(|_| Profile {
                offset: [0.0, 1.0, -0.5][rng.below(3)],
                spread: [1.0, 1e-2, 10.0][rng.below(3)],
            })
            .collect();
        tensor(&self.shape, &profiles, rng.next_u64())
    }

    fn bn<'a>(&self, gamma: &'a Option<Vec<f32>>, beta: &'a Option<Vec<f32>>) -> BatchNorm<'a> {
        BatchNorm {
            eps: self.eps,
            gamma: gamma.as_deref(),
            beta: beta.as_deref(),
        }
    }

    fn summary(&self) -> String {
        let s = &self.shape;
        format!(
            "{:?} N={} C={} S={} eps={:e} gamma={} beta={} momentum={:?} seed={:#x}",
            s.layout,
            s.batch,
            s.channels,
            s.spatial,
            self.eps,
            self.gamma,
            self.beta,
            self.momentum,
            self.seed
        )
    }
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::ChannelsFirst), Just(Layout::ChannelsLast)]
}

fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(3),
        Just(8),
        Just(17),
        Just(64),
        1..=70usize
    ]
}

fn spatial() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(7), Just(49), 1..=130usize]
}

fn shape() -> impl Strategy<Value = Shape> {
    (layout(), 1..=9usize, channels(), spatial()).prop_map(|(layout, batch, channels, spatial)| {
        Shape {
            batch,
            channels,
            spatial,
            layout,
        }
    })
}

fn profile() -> impl Strategy<Value = Profile> {
    let offset = prop_oneof![
        Just(0.0f64),
        Just(1.0),
        Just(-3.0),
        Just(1e4),
        Just(-1e4),
        -1e4..1e4f64
    ];
    let spread =
        prop_oneof![3 => Just(1.0f64), 2 => Just(1e-3), 1 => Just(0.0), 2 => 1e-3..100.0f64];
    (offset, spread).prop_map(|(offset, spread)| Profile { offset, spread })
}

fn momentum() -> impl Strategy<Value = Option<Update>> {
    prop_oneof![2 => Just(None), 5 => cases::momentum().prop_map(Some)]
}

fn case() -> impl Strategy<Value = Case> {
    (
        shape(),
        prop::collection::vec(profile(), 70),
        any::<u64>(),
        prop_oneof![Just(0.0f32), Just(1e-5), Just(1e-3)],
        any::<bool>(),
        any::<bool>(),
        momentum(),
    )
        .prop_map(|(shape, mut profiles, seed, eps, gamma, beta, momentum)| {
            profiles.truncate(shape.channels);
            if eps == 0.0 {
                // eps = 0 is drawn with non-constant channels only; eps = 0 with a
                // constant channel is an edge case (tests/edge_cases.rs).
                for p in profiles.iter_mut().filter(|p| p.is_constant()) {
                    p.spread = 1.0;
                }
            }
            Case {
                shape,
                profiles,
                seed,
                eps,
                gamma,
                beta,
                momentum,
            }
        })
}

/// Up to three non-finite values (NaN, +inf, −inf) at random flat positions.
fn poison() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((any::<u64>(), 0..3usize), 1..=3)
}

fn apply_poison(x: &mut [f32], shape: &Shape, poison: &[(u64, usize)]) -> Vec<bool> {
    let mut poisoned = vec![false; shape.channels];
    for &(r, kind) in poison {
        let i = (r % x.len() as u64) as usize;
        x[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][kind];
        poisoned[channel_of(shape, i)] = true;
    }
    poisoned
}

/// Runs `test` on `cases` values drawn from `strategy`; proptest shrinks a failure
/// (a panic in `test`) to a minimal case and we panic with it.
fn run<S>(name: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    };
    let n = config.cases;
    let rng = if std::env::var_os("BATCHNORM_PROPTEST_RANDOM").is_some() {
        TestRng::from_seed(config.rng_algorithm, &rand_seed())
    } else {
        TestRng::deterministic_rng(config.rng_algorithm)
    };
    let mut runner = TestRunner::new_with_rng(config, rng);
    match runner.run(&strategy, |value| {
        test(value);
        Ok(())
    }) {
        Ok(()) => println!("{name}: {n} proptest cases passed"),
        Err(e) => panic!("{name}: {e}"),
    }
}

fn rand_seed() -> [u8; 32] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(t);
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    println!("BATCHNORM_PROPTEST_RANDOM seed from time {t:#x}");
    seed
}

/// All values of channel c are equal (so var must be exactly 0).
fn channel_is_constant(x: &[f32], shape: &Shape, c: usize) -> bool {
    let mut it = channel_indices(shape, c).map(|i| x[i]);
    let first = it.next();
    first.is_some_and(|v| it.all(|w| w.to_bits() == v.to_bits()))
}

// ----------------------------------------------------------------------------------
// train
// ----------------------------------------------------------------------------------

struct TrainOut {
    result: Result<(), Error>,
    y: Guarded,
    save_mean: Guarded,
    save_invstd: Guarded,
    running_mean: Guarded,
    running_var: Guarded,
    /// `Running::batches_tracked` after the call.
    batches_tracked: Option<u64>,
}

fn run_train(
    bn: &BatchNorm,
    x: &[f32],
    shape: Shape,
    (rm0, rv0): (&[f32], &[f32]),
    momentum: Option<Update>,
    in_place: bool,
) -> TrainOut {
    let cs = shape.channels;
    let mut y = if in_place {
        Guarded::from(x)
    } else {
        Guarded::sentinel(x.len())
    };
    let mut save_mean = Guarded::sentinel(cs);
    let mut save_invstd = Guarded::sentinel(cs);
    let mut running_mean = Guarded::from(rm0);
    let mut running_var = Guarded::from(rv0);
    let mut running =
        momentum.map(|u| u.running(running_mean.inner_mut(), running_var.inner_mut()));
    let saved = SavedMut {
        mean: save_mean.inner_mut(),
        invstd: save_invstd.inner_mut(),
    };
    let result = if in_place {
        bn.train_in_place(y.inner_mut(), shape, saved, running.as_mut())
    } else {
        bn.train(x, y.inner_mut(), shape, saved, running.as_mut())
    };
    let batches_tracked = running.map(|r| r.batches_tracked);
    TrainOut {
        result,
        y,
        save_mean,
        save_invstd,
        running_mean,
        running_var,
        batches_tracked,
    }
}

fn assert_same_train(what: &str, a: &TrainOut, b: &TrainOut) {
    assert_eq!(a.result, b.result, "{what}: results differ");
    assert_eq!(
        a.batches_tracked, b.batches_tracked,
        "{what}: batches_tracked"
    );
    assert_same_bits(&format!("{what}: y"), a.y.inner(), b.y.inner());
    assert_same_bits(
        &format!("{what}: save_mean"),
        a.save_mean.inner(),
        b.save_mean.inner(),
    );
    assert_same_bits(
        &format!("{what}: save_invstd"),
        a.save_invstd.inner(),
        b.save_invstd.inner(),
    );
    assert_same_bits(
        &format!("{what}: running_mean"),
        a.running_mean.inner(),
        b.running_mean.inner(),
    );
    assert_same_bits(
        &format!("{what}: running_var"),
        a.running_var.inner(),
        b.running_var.inner(),
    );
}

/// Train forward against the oracle. Channels hit by `poison` must come out NaN as a
/// whole (y all NaN, save_mean non-finite, save_invstd NaN, running stats
/// non-finite); every other channel must be as exact as without the poison.
fn check_train(case: &Case, poison: &[(u64, usize)]) {
    let shape = case.shape;
    let (cs, m) = (shape.channels, per_channel(&shape));
    let mut x = case.x();
    let poisoned = apply_poison(&mut x, &shape, poison);
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let (rm0, rv0) = case.running_before();

    let out = run_train(&bn, &x, shape, (&rm0, &rv0), case.momentum, false);
    let inp = run_train(&bn, &x, shape, (&rm0, &rv0), case.momentum, true);
    let before = case.momentum.map(|u| u.batches_tracked);

    // Biased: a mean of one value, and a variance of 0, update fine.
    let needed = case.momentum.map_or(1, |u| u.needed());
    if m < needed {
        for o in [&out, &inp] {
            assert_eq!(
                o.result,
                Err(Error::TooFewValues { needed, actual: m }),
                "{}",
                case.summary()
            );
            assert_eq!(o.batches_tracked, before, "counted a failed update");
            o.save_mean.assert_untouched("save_mean");
            o.save_invstd.assert_untouched("save_invstd");
            o.running_mean.assert_holds("running_mean", &rm0);
            o.running_var.assert_holds("running_var", &rv0);
        }
        out.y.assert_untouched("y");
        inp.y.assert_holds("x (in place)", &x);
        return;
    }
    if let Err(e) = out.result {
        panic!("train failed with {e:?}: {}", case.summary());
    }
    assert_eq!(
        out.batches_tracked,
        before.map(|t| t.saturating_add(1)),
        "batches_tracked: {}",
        case.summary()
    );
    out.y.assert_written("y");
    out.save_mean.assert_written("save_mean");
    out.save_invstd.assert_written("save_invstd");
    out.running_mean.assert_guards("running_mean");
    out.running_var.assert_guards("running_var");
    if case.momentum.is_none() {
        out.running_mean
            .assert_holds("running_mean (not passed)", &rm0);
        out.running_var
            .assert_holds("running_var (not passed)", &rv0);
    }

    let r = ref_train(
        &x,
        &shape,
        gamma.as_deref(),
        beta.as_deref(),
        case.eps,
        case.momentum.map(|u| u.oracle(&rm0, &rv0)),
    );
    let (y, sm, si) = (
        out.y.inner(),
        out.save_mean.inner(),
        out.save_invstd.inner(),
    );
    let (rm, rv) = (out.running_mean.inner(), out.running_var.inner());
    let mut ck = Checker::new(format!("train {}", case.summary()));
    for c in 0..cs {
        if poisoned[c] {
            ck.ensure(!sm[c].is_finite(), || {
                format!("poisoned channel {c}: save_mean {} is finite", sm[c])
            });
            ck.ensure(si[c].is_nan(), || {
                format!("poisoned channel {c}: save_invstd {} is not NaN", si[c])
            });
            for i in channel_indices(&shape, c) {
                ck.ensure(y[i].is_nan(), || {
                    format!("poisoned channel {c}: y[{i}] = {} is not NaN", y[i])
                });
            }
            if case.momentum.is_some() {
                ck.ensure(!rm[c].is_finite(), || {
                    format!("poisoned channel {c}: running_mean {} is finite", rm[c])
                });
                ck.ensure(!rv[c].is_finite(), || {
                    format!("poisoned channel {c}: running_var {} is finite", rv[c])
                });
            }
            continue;
        }
        let s = &r.stats[c];
        ck.close("save_mean", c, sm[c] as f64, s.mean, tol::mean(s));
        ck.close(
            "save_invstd",
            c,
            si[c] as f64,
            r.invstd[c],
            tol::invstd(s, case.eps),
        );

        // y against the f64 oracle: the reduction errors of mean and invstd (already
        // checked above) propagated, plus the elementwise roundings.
        let (g, b) = (gamma_of(gamma.as_deref(), c), beta_of(beta.as_deref(), c));
        let scale = g * r.invstd[c];
        let tol_invstd = tol::invstd(s, case.eps);
        let tol_mean_reduction = tol::REDUCTION_REL * s.max_dev;
        for i in channel_indices(&shape, c) {
            let d = x[i] as f64 - s.mean;
            let t = (d * g).abs() * tol_invstd
                + scale.abs() * tol_mean_reduction
                + tol::elementwise(&[d * scale, b, r.y[i]]);
            ck.close("y", i, y[i] as f64, r.y[i], t);
        }

        // DESIGN.md: a channel whose values are all equal has var 0; with eps > 0 its
        // output is β. That needs save_mean == x exactly (else y = β + 1ulp·γ/√eps).
        if channel_is_constant(&x, &shape, c) {
            let v = x[channel_indices(&shape, c).next().unwrap()];
            ck.ensure(sm[c] == v, || {
                format!("constant channel {c} of {v:e}: save_mean {:e}", sm[c])
            });
            if case.eps > 0.0 {
                for i in channel_indices(&shape, c) {
                    ck.ensure(y[i] as f64 == b, || {
                        format!(
                            "constant channel {c}: y[{i}] = {:e}, expected β = {b:e}",
                            y[i]
                        )
                    });
                }
            }
        }

        if let (Some(u), Some((nrm, nrv))) = (case.momentum, &r.running) {
            let (f, k) = (u.factor(), u.correction);
            ck.close(
                "running_mean",
                c,
                rm[c] as f64,
                nrm[c],
                tol::running(rm0[c] as f64, s.mean, f, tol::mean(s)),
            );
            ck.close(
                "running_var",
                c,
                rv[c] as f64,
                nrv[c],
                tol::running(rv0[c] as f64, s.batch_var(k), f, tol::batch_var(s, k)),
            );
        }
    }
    ck.finish();

    assert_same_train("train_in_place vs train", &inp, &out);
    let again = run_train(&bn, &x, shape, (&rm0, &rv0), case.momentum, false);
    assert_same_train("train run twice", &again, &out);
}

#[test]
fn train_matches_oracle() {
    run("train", 256, case(), |case| check_train(&case, &[]));
}

#[test]
fn train_non_finite_input_poisons_only_its_channel() {
    run(
        "train non-finite",
        128,
        (case(), poison()),
        |(case, poison)| check_train(&case, &poison),
    );
}

// ----------------------------------------------------------------------------------
// eval
// ----------------------------------------------------------------------------------

/// Eval forward against the oracle: a non-finite x affects its own element only
/// (expected ±inf or NaN exactly as the f64 formula gives), all others stay exact.
fn check_eval(case: &Case, poison: &[(u64, usize)]) {
    let shape = case.shape;
    let mut x = case.x();
    apply_poison(&mut x, &shape, poison);
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let (rm, rv) = case.running_for_eval();

    let mut y = Guarded::sentinel(x.len());
    let stats = RunningStats {
        mean: &rm,
        var: &rv,
    };
    if let Err(e) = bn.eval(&x, y.inner_mut(), shape, stats) {
        panic!("eval failed with {e:?}: {}", case.summary());
    }
    y.assert_written("y");

    let expected = ref_eval(
        &x,
        &shape,
        gamma.as_deref(),
        beta.as_deref(),
        &rm,
        &rv,
        case.eps,
    );
    let mut ck = Checker::new(format!("eval {}", case.summary()));
    for c in 0..shape.channels {
        let scale = gamma_of(gamma.as_deref(), c) / (rv[c] as f64 + case.eps as f64).sqrt();
        let b = beta_of(beta.as_deref(), c);
        for i in channel_indices(&shape, c) {
            let t = tol::elementwise(&[x[i] as f64 * scale, rm[c] as f64 * scale, b, expected[i]]);
            ck.close("y", i, y.inner()[i] as f64, expected[i], t);
        }
    }
    ck.finish();

    let mut in_place = Guarded::from(&x);
    bn.eval_in_place(in_place.inner_mut(), shape, stats)
        .unwrap();
    in_place.assert_guards("x (in place)");
    assert_same_bits("eval_in_place vs eval", in_place.inner(), y.inner());
    let mut again = Guarded::sentinel(x.len());
    bn.eval(&x, again.inner_mut(), shape, stats).unwrap();
    assert_same_bits("eval run twice", again.inner(), y.inner());
}

#[test]
fn eval_matches_oracle() {
    run("eval", 256, case(), |case| check_eval(&case, &[]));
}

#[test]
fn eval_non_finite_input_affects_only_its_element() {
    run(
        "eval non-finite",
        128,
        (case(), poison()),
        |(case, poison)| check_eval(&case, &poison),
    );
}

// ----------------------------------------------------------------------------------
// backward
// ----------------------------------------------------------------------------------

struct GradsOut {
    dx: Guarded,
    dgamma: Option<Guarded>,
    dbeta: Option<Guarded>,
}

fn call_backward(
    eval_mode: bool,
    bn: &BatchNorm,
    dy: &[f32],
    x: &[f32],
    shape: Shape,
    stats: (&[f32], &[f32]),
    want: (bool, bool),
) -> Result<GradsOut, Error> {
    let cs = shape.channels;
    let mut dx = Guarded::sentinel(x.len());
    let mut dgamma = want.0.then(|| Guarded::sentinel(cs));
    let mut dbeta = want.1.then(|| Guarded::sentinel(cs));
    let grads = Grads {
        dx: dx.inner_mut(),
        dgamma: dgamma.as_mut().map(|g| g.inner_mut()),
        dbeta: dbeta.as_mut().map(|g| g.inner_mut()),
    };
    if eval_mode {
        let stats = RunningStats {
            mean: stats.0,
            var: stats.1,
        };
        bn.backward_eval(x, dy, shape, stats, grads)?;
    } else {
        let saved = Saved {
            mean: stats.0,
            invstd: stats.1,
        };
        bn.backward(x, dy, shape, saved, grads)?;
    }
    dx.assert_written("dx");
    if let Some(g) = &dgamma {
        g.assert_written("dgamma");
    }
    if let Some(g) = &dbeta {
        g.assert_written("dbeta");
    }
    Ok(GradsOut { dx, dgamma, dbeta })
}

fn check_backward(case: &Case, eval_mode: bool, want: (bool, bool)) {
    let shape = case.shape;
    let m = per_channel(&shape) as f64;
    let x = case.x();
    let dy = case.dy();
    let (gamma, beta) = case.affine();
    let bn = case.bn(&gamma, &beta);
    let g = gamma.as_deref();

    // Statistics: train mode gets the batch statistics as train forward saves them
    // (f32, eps > 0 so constant channels have a finite invstd); eval mode gets
    // running statistics unrelated to the batch.
    let (mean, var) = if eval_mode {
        case.running_for_eval()
    } else {
        let eps = if case.eps > 0.0 { case.eps } else { 1e-5 };
        let st = ref_moments(&x, &shape);
        (
            st.iter().map(|s| s.mean as f32).collect(),
            st.iter()
                .map(|s| (1.0 / (s.var + eps as f64).sqrt()) as f32)
                .collect(),
        )
    };
    let out =
        call_backward(eval_mode, &bn, &dy, &x, shape, (&mean, &var), want).unwrap_or_else(|e| {
            panic!(
                "backward (eval mode: {eval_mode}) failed with {e:?}: {}",
                case.summary()
            )
        });

    let r = if eval_mode {
        ref_backward_eval(&dy, &x, &shape, g, &mean, &var, case.eps)
    } else {
        ref_backward(&dy, &x, &shape, g, &mean, &var)
    };
    let mut ck = Checker::new(format!(
        "backward (eval mode: {eval_mode}) {}",
        case.summary()
    ));
    for c in 0..shape.channels {
        let tol_dbeta = tol::sum(r.sum_abs_dy[c]);
        let mut tol_dgamma = tol::sum(r.sum_abs_dy_xhat[c]);
        if eval_mode {
            // x̂ is eval forward with γ = 1, β = 0: it may carry that elementwise bound.
            let s = 1.0 / (var[c] as f64 + case.eps as f64).sqrt();
            tol_dgamma += channel_indices(&shape, c)
                .map(|i| {
                    (dy[i] as f64).abs()
                        * tol::elementwise(&[x[i] as f64 * s, mean[c] as f64 * s, r.xhat[i]])
                })
                .sum::<f64>();
        }
        if let Some(dg) = &out.dgamma {
            ck.close("dgamma", c, dg.inner()[c] as f64, r.dgamma[c], tol_dgamma);
        }
        if let Some(db) = &out.dbeta {
            ck.close("dbeta", c, db.inner()[c] as f64, r.dbeta[c], tol_dbeta);
        }
        let a = r.a[c];
        for i in channel_indices(&shape, c) {
            let t = if eval_mode {
                tol::elementwise(&[r.dx[i]])
            } else {
                let (k1, k2) = (r.dbeta[c] / m, r.dgamma[c] / m);
                a.abs() * (tol_dbeta / m + r.xhat[i].abs() * tol_dgamma / m)
                    + tol::elementwise(&[a * dy[i] as f64, a * k1, a * r.xhat[i] * k2, r.dx[i]])
            };
            ck.close("dx", i, out.dx.inner()[i] as f64, r.dx[i], t);
        }
    }
    ck.finish();

    // Same input twice: bit-identical. Asking for dγ/dβ or not does not change dx.
    let again = call_backward(eval_mode, &bn, &dy, &x, shape, (&mean, &var), want).unwrap();
    assert_same_bits("backward run twice: dx", again.dx.inner(), out.dx.inner());
    if let (Some(a), Some(b)) = (&again.dgamma, &out.dgamma) {
        assert_same_bits("backward run twice: dgamma", a.inner(), b.inner());
    }
    if let (Some(a), Some(b)) = (&again.dbeta, &out.dbeta) {
        assert_same_bits("backward run twice: dbeta", a.inner(), b.inner());
    }
    let other = call_backward(
        eval_mode,
        &bn,
        &dy,
        &x,
        shape,
        (&mean, &var),
        (!want.0, !want.1),
    )
    .unwrap();
    assert_same_bits(
        "dx with and without dgamma/dbeta requested",
        other.dx.inner(),
        out.dx.inner(),
    );
}

#[test]
fn backward_matches_oracle() {
    run(
        "backward",
        256,
        (case(), any::<bool>(), any::<bool>()),
        |(case, dg, db)| check_backward(&case, false, (dg, db)),
    );
}

#[test]
fn backward_eval_matches_oracle() {
    run(
        "backward_eval",
        256,
        (case(), any::<bool>(), any::<bool>()),
        |(case, dg, db)| check_backward(&case, true, (dg, db)),
    );
}

// ----------------------------------------------------------------------------------
// moments
// ----------------------------------------------------------------------------------

fn check_moments_against(ck: &mut Checker, what: &str, got: &[Moments], r: &[RefMoments]) {
    for (c, (g, s)) in got.iter().zip(r).enumerate() {
        ck.ensure(g.count == s.count as u64, || {
            format!("{what}[{c}].count = {}, expected {}", g.count, s.count)
        });
        ck.close(&format!("{what}.mean"), c, g.mean, s.mean, tol::mean(s));
        ck.close(&format!("{what}.m2"), c, g.m2, s.m2, tol::m2(s));
        ck.close(&format!("{what}.var()"), c, g.var(), s.var, tol::var(s));
    }
}

/// moments over the whole tensor, and over the batch cut into pieces (possibly
/// empty) merged in order, both against the oracle.
fn check_moments(case: &Case, cuts: &[usize]) {
    let shape = case.shape;
    let cs = shape.channels;
    let x = case.x();
    let r = ref_moments(&x, &shape);

    let mut whole = GuardedMoments::sentinel(cs);
    moments(&x, shape, whole.inner_mut())
        .unwrap_or_else(|e| panic!("moments failed with {e:?}: {}", case.summary()));
    whole.assert_written("moments");
    let mut again = GuardedMoments::sentinel(cs);
    moments(&x, shape, again.inner_mut()).unwrap();
    for (a, b) in again.inner().iter().zip(whole.inner()) {
        assert!(
            a.count == b.count
                && a.mean.to_bits() == b.mean.to_bits()
                && a.m2.to_bits() == b.m2.to_bits(),
            "moments run twice differ: {a:?} vs {b:?}"
        );
    }

    // Batch is the outermost index in both layouts, so a range of samples is a
    // contiguous sub-slice with its own shape.
    let mut bounds: Vec<usize> = cuts.iter().map(|&k| k.min(shape.batch)).collect();
    bounds.push(0);
    bounds.push(shape.batch);
    bounds.sort_unstable();
    let per_sample = cs * shape.spatial;
    let mut merged = vec![Moments::EMPTY; cs];
    for w in bounds.windows(2) {
        let piece = Shape {
            batch: w[1] - w[0],
            ..shape
        };
        let mut part = GuardedMoments::sentinel(cs);
        moments(
            &x[w[0] * per_sample..w[1] * per_sample],
            piece,
            part.inner_mut(),
        )
        .unwrap();
        part.assert_written("moments of a piece");
        for (acc, p) in merged.iter_mut().zip(part.inner()) {
            *acc = acc.merge(*p);
        }
    }

    let mut ck = Checker::new(format!("moments {} cut at {bounds:?}", case.summary()));
    check_moments_against(&mut ck, "moments", whole.inner(), &r);
    check_moments_against(&mut ck, "merged pieces", &merged, &r);
    ck.finish();
}

#[test]
fn moments_match_oracle_whole_and_merged_over_chunks() {
    run(
        "moments",
        256,
        (case(), prop::collection::vec(0..=9usize, 0..=3)),
        |(case, cuts)| check_moments(&case, &cuts),
    );
}

// ----------------------------------------------------------------------------------
// wide channels-last: several bands of channel groups, several tiles of rows
// ----------------------------------------------------------------------------------

/// Channels-last with more than 64 channels walks bands of up to 256 or 1024
/// channels, and more than 1024 several bands; the random shapes above stay below 71
/// channels, so these fixed shapes cover each band capacity, several bands, and rows
/// past a spill block.
#[test]
fn wide_channels_last_matches_oracle() {
    let shapes = [
        Shape::channels_last(3, 300, 401),
        Shape::channels_last(2, 200, 700),
        Shape::rows(700, 600),
        Shape::channels_last(2, 1100, 3),
        Shape::rows(70, 2500),
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        let mut rng = Rng::new(0x5eed ^ i as u64);
        let profiles = (0..shape.channels)
            .map(|_| Profile {
                offset: [0.0, 1e4, -3.0][rng.below(3)],
                spread: [1.0, 1e-3, 0.0, 10.0][rng.below(4)],
            })
            .collect();
        let case = Case {
            shape,
            profiles,
            seed: rng.next_u64(),
            eps: 1e-5,
            gamma: i != 1,
            beta: i != 2,
            momentum: Some(Update::PYTORCH),
        };
        check_train(&case, &[]);
        check_eval(&case, &[]);
        check_backward(&case, false, (true, true));
        check_backward(&case, true, (true, i != 0));
        check_moments(&case, &[3]);
    }
}

// ----------------------------------------------------------------------------------
// walk boundaries: block spills, packed lines, overlapping tails
// ----------------------------------------------------------------------------------

/// Fixed shapes at the engine's boundaries, which random small shapes rarely reach:
/// row counts around the 64-row spill block (a rows tail once went missing when the
/// last row of a block ended on an overlapping vector), channel counts around the
/// 64-, 256- and 1024-channel bands and the packed limit (`lcm(C·S, 8)` lanes), spatial sizes
/// around a vector, and packed lines of several periods.
#[test]
fn walk_boundaries_match_oracle() {
    let mut shapes = Vec::new();
    for rows in [63, 64, 65, 128, 129, 4097] {
        for c in [1, 3, 9, 65, 130, 257, 1025] {
            shapes.push(Shape::rows(rows, c));
        }
    }
    for (n, c, s) in [
        (3, 8, 8),
        (2, 9, 7),
        (5, 16, 4),
        (1, 64, 1),
        (2, 33, 2),
        (3, 7, 9),
    ] {
        shapes.push(Shape::channels_first(n, c, s));
        shapes.push(Shape::channels_last(n, c, s));
    }
    for (n, c, s) in [(1, 5, 2049), (2, 3, 4096), (70, 3, 1), (130, 2, 3)] {
        shapes.push(Shape::channels_first(n, c, s));
        shapes.push(Shape::channels_last(n, c, s));
    }
    for (i, shape) in shapes.into_iter().enumerate() {
        let mut rng = Rng::new(0xb10c ^ i as u64);
        let profiles = (0..shape.channels)
            .map(|_| Profile {
                offset: [0.0, 1e4, -3.0][rng.below(3)],
                spread: [1.0, 1e-3, 10.0][rng.below(3)],
            })
            .collect();
        let case = Case {
            shape,
            profiles,
            seed: rng.next_u64(),
            eps: 1e-5,
            gamma: i % 2 == 0,
            beta: i % 3 != 0,
            momentum: Some(Update::PYTORCH),
        };
        check_train(&case, &[]);
        check_eval(&case, &[]);
        check_backward(&case, false, (true, true));
        check_backward(&case, true, (true, true));
        check_moments(&case, &[1]);
    }
}
