//! Edge cases beside the property tests: empty and degenerate shapes, every argument's
//! length off by one, overflowing shapes, out-of-range eps and momentum, constant
//! channels with eps = 0, momentum 0 and 1, m = 1 with and without running
//! statistics. Each error must leave every buffer (outputs, running statistics, the
//! in-place tensor, guard cells) exactly as it was. The list, with the behaviour each
//! case gets, is kept in docs/accuracy.md ("Edge cases").

mod common;

use batchnorm::{moments, BatchNorm, Error, Grads, Layout, Moments, Momentum, Running, Shape};
use common::*;

const LAYOUTS: [Layout; 2] = [Layout::ChannelsFirst, Layout::ChannelsLast];

fn shape(layout: Layout, batch: usize, channels: usize, spatial: usize) -> Shape {
    Shape {
        batch,
        channels,
        spatial,
        layout,
    }
}

// ----------------------------------------------------------------------------------
// A full set of arguments for every entry point, in guarded buffers
// ----------------------------------------------------------------------------------

/// Every argument any entry point takes, each in a guarded buffer. Inputs hold valid
/// data, outputs the sentinel. One argument can be given a length off by `delta`.
struct Args {
    shape: Shape,
    x: Guarded,
    y: Guarded,
    dy: Guarded,
    dx: Guarded,
    save_mean: Guarded,
    save_invstd: Guarded,
    running_mean: Guarded,
    running_var: Guarded,
    gamma: Guarded,
    beta: Guarded,
    dgamma: Guarded,
    dbeta: Guarded,
    out: GuardedMoments,
}

/// A whole-state snapshot: every buffer's bits, guards included.
type Snapshot = Vec<Vec<u32>>;

impl Args {
    /// Lengths for `shape` (which must not overflow), `off = Some((name, delta))` makes
    /// that argument's length `expected + delta`.
    fn new(shape: Shape, off: Option<(&str, isize)>) -> Args {
        let n = numel(&shape);
        let cs = shape.channels;
        let len = |name: &str, base: usize| match off {
            Some((o, d)) if o == name => (base as isize + d) as usize,
            _ => base,
        };
        let data = |len: usize, f: &dyn Fn(usize) -> f32| {
            Guarded::from(&(0..len).map(f).collect::<Vec<f32>>())
        };
        Args {
            shape,
            x: data(len("x", n), &|i| 1.0 + 0.25 * (i % 7) as f32),
            y: Guarded::sentinel(len("y", n)),
            dy: data(len("dy", n), &|i| 0.5 - 0.125 * (i % 5) as f32),
            dx: Guarded::sentinel(len("dx", n)),
            save_mean: Guarded::sentinel(len("save_mean", cs)),
            save_invstd: Guarded::sentinel(len("save_invstd", cs)),
            running_mean: data(len("running_mean", cs), &|c| 0.5 + c as f32),
            running_var: data(len("running_var", cs), &|c| 2.0 + c as f32),
            gamma: data(len("gamma", cs), &|c| 1.5 - 0.5 * c as f32),
            beta: data(len("beta", cs), &|c| 0.25 * c as f32),
            dgamma: Guarded::sentinel(len("dgamma", cs)),
            dbeta: Guarded::sentinel(len("dbeta", cs)),
            out: GuardedMoments::sentinel(len("out", cs)),
        }
    }

    /// Inputs are backward's save_mean/save_invstd too: give them valid values.
    fn with_saved_stats(mut self) -> Args {
        let cs = self.save_mean.inner().len();
        self.save_mean = Guarded::from(&vec![1.5; cs]);
        let cs = self.save_invstd.inner().len();
        self.save_invstd = Guarded::from(&vec![0.8; cs]);
        self
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = vec![
            self.x.snapshot(),
            self.y.snapshot(),
            self.dy.snapshot(),
            self.dx.snapshot(),
            self.save_mean.snapshot(),
            self.save_invstd.snapshot(),
            self.running_mean.snapshot(),
            self.running_var.snapshot(),
            self.gamma.snapshot(),
            self.beta.snapshot(),
            self.dgamma.snapshot(),
            self.dbeta.snapshot(),
        ];
        s.push(
            self.out
                .snapshot()
                .into_iter()
                .flat_map(|(a, b, c)| [a as u32, (a >> 32) as u32, b as u32, c as u32])
                .collect(),
        );
        s
    }
}

const BUFFER_NAMES: [&str; 13] = [
    "x",
    "y",
    "dy",
    "dx",
    "save_mean",
    "save_invstd",
    "running_mean",
    "running_var",
    "gamma",
    "beta",
    "dgamma",
    "dbeta",
    "out",
];

fn assert_nothing_written(what: &str, before: &Snapshot, after: &Snapshot) {
    for (k, (b, a)) in before.iter().zip(after).enumerate() {
        assert!(
            b == a,
            "{what}: `{}` was modified although the call returned an error",
            BUFFER_NAMES[k]
        );
    }
}

/// The entry points, called with the buffers of `a` (γ and β given, running
/// statistics given with `momentum`, dγ and dβ requested).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry {
    Moments,
    Eval,
    EvalInPlace,
    Train,
    TrainInPlace,
    Backward,
    BackwardEval,
}

const ENTRIES: [Entry; 7] = [
    Entry::Moments,
    Entry::Eval,
    Entry::EvalInPlace,
    Entry::Train,
    Entry::TrainInPlace,
    Entry::Backward,
    Entry::BackwardEval,
];

impl Entry {
    /// The arguments this entry point takes (in the order of its signature).
    fn args(self) -> &'static [&'static str] {
        match self {
            Entry::Moments => &["x", "out"],
            Entry::Eval => &["x", "y", "running_mean", "running_var", "gamma", "beta"],
            Entry::EvalInPlace => &["x", "running_mean", "running_var", "gamma", "beta"],
            Entry::Train => &[
                "x",
                "y",
                "save_mean",
                "save_invstd",
                "running_mean",
                "running_var",
                "gamma",
                "beta",
            ],
            Entry::TrainInPlace => &[
                "x",
                "save_mean",
                "save_invstd",
                "running_mean",
                "running_var",
                "gamma",
                "beta",
            ],
            // β is not used by the backward pass, but the layer is checked whole.
            Entry::Backward => &[
                "dy",
                "x",
                "save_mean",
                "save_invstd",
                "gamma",
                "beta",
                "dx",
                "dgamma",
                "dbeta",
            ],
            Entry::BackwardEval => &[
                "dy",
                "x",
                "running_mean",
                "running_var",
                "gamma",
                "beta",
                "dx",
                "dgamma",
                "dbeta",
            ],
        }
    }

    fn is_per_channel(arg: &str) -> bool {
        !matches!(arg, "x" | "y" | "dy" | "dx")
    }

    fn call(self, a: &mut Args, eps: f32, momentum: Option<Momentum>) -> Result<(), Error> {
        let bn = BatchNorm {
            eps,
            gamma: Some(a.gamma.inner()),
            beta: Some(a.beta.inner()),
        };
        let shape = a.shape;
        let running = momentum.map(|momentum| Running {
            mean: a.running_mean.inner_mut(),
            var: a.running_var.inner_mut(),
            momentum,
        });
        let grads = Grads {
            dx: a.dx.inner_mut(),
            dgamma: Some(a.dgamma.inner_mut()),
            dbeta: Some(a.dbeta.inner_mut()),
        };
        match self {
            Entry::Moments => moments(a.x.inner(), shape, a.out.inner_mut()),
            Entry::Eval => bn.eval(
                a.x.inner(),
                a.y.inner_mut(),
                shape,
                a.running_mean.inner(),
                a.running_var.inner(),
            ),
            Entry::EvalInPlace => bn.eval_in_place(
                a.x.inner_mut(),
                shape,
                a.running_mean.inner(),
                a.running_var.inner(),
            ),
            Entry::Train => bn.train(
                a.x.inner(),
                a.y.inner_mut(),
                shape,
                a.save_mean.inner_mut(),
                a.save_invstd.inner_mut(),
                running,
            ),
            Entry::TrainInPlace => bn.train_in_place(
                a.x.inner_mut(),
                shape,
                a.save_mean.inner_mut(),
                a.save_invstd.inner_mut(),
                running,
            ),
            Entry::Backward => bn.backward(
                a.dy.inner(),
                a.x.inner(),
                shape,
                a.save_mean.inner(),
                a.save_invstd.inner(),
                grads,
            ),
            Entry::BackwardEval => bn.backward_eval(
                a.dy.inner(),
                a.x.inner(),
                shape,
                a.running_mean.inner(),
                a.running_var.inner(),
                grads,
            ),
        }
    }
}

/// Borrow-friendly wrapper: builds the args, calls, returns result and the args.
fn call(
    entry: Entry,
    shape: Shape,
    off: Option<(&str, isize)>,
    eps: f32,
    momentum: Option<Momentum>,
) -> (Result<(), Error>, Args, Snapshot) {
    let mut a = Args::new(shape, off).with_saved_stats();
    if !matches!(entry, Entry::Backward) {
        // save_mean/save_invstd are outputs everywhere but in backward.
        a.save_mean = Guarded::sentinel(a.save_mean.inner().len());
        a.save_invstd = Guarded::sentinel(a.save_invstd.inner().len());
    }
    let before = a.snapshot();
    let r = entry.call(&mut a, eps, momentum);
    (r, a, before)
}

// ----------------------------------------------------------------------------------
// Lengths, overflow, parameters
// ----------------------------------------------------------------------------------

#[test]
fn every_length_off_by_one_is_a_length_error_naming_the_argument_and_writes_nothing() {
    let shapes = [
        Shape::channels_first(2, 3, 5),
        Shape::channels_last(2, 3, 5),
        Shape::rows(4, 17),
        Shape::channels_last(1, 1, 9),
    ];
    let mut checked = 0;
    for shape in shapes {
        for entry in ENTRIES {
            for &arg in entry.args() {
                let expected = if Entry::is_per_channel(arg) {
                    shape.channels
                } else {
                    numel(&shape)
                };
                for delta in [-1isize, 1] {
                    let actual = (expected as isize + delta) as usize;
                    let (r, a, before) = call(
                        entry,
                        shape,
                        Some((arg, delta)),
                        1e-5,
                        Some(Momentum::Exponential(0.1)),
                    );
                    assert_eq!(
                        r,
                        Err(Error::Length {
                            arg,
                            expected,
                            actual
                        }),
                        "{entry:?} {shape:?} with `{arg}` of length {actual}"
                    );
                    assert_nothing_written(
                        &format!("{entry:?} {shape:?} `{arg}` {delta:+}"),
                        &before,
                        &a.snapshot(),
                    );
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} off-by-one calls, each Err(Length) naming the argument, nothing written");
}

/// Shapes whose element count `N·C·S` (or `N·S`) overflows usize, with per-channel
/// arguments of the right length (C is small).
#[test]
fn overflowing_shapes_are_overflow_errors_and_write_nothing() {
    for layout in LAYOUTS {
        for (batch, channels, spatial) in [
            (usize::MAX, 2, 1),
            (2, 2, usize::MAX),
            (usize::MAX / 2 + 1, 2, 2),
            (usize::MAX, 3, usize::MAX),
        ] {
            let s = shape(layout, batch, channels, spatial);
            for entry in ENTRIES {
                // Tensors of a small length: the shape must be rejected before any
                // length is compared (the expected length cannot even be computed).
                let mut a = Args::new(
                    Shape {
                        batch: 1,
                        spatial: 1,
                        ..s
                    },
                    None,
                )
                .with_saved_stats();
                a.shape = s;
                let before = a.snapshot();
                let r = entry.call(&mut a, 1e-5, Some(Momentum::Exponential(0.1)));
                assert!(
                    matches!(r, Err(Error::Overflow { .. })),
                    "{entry:?} {s:?}: {r:?}, expected Err(Overflow)"
                );
                assert_nothing_written(&format!("{entry:?} {s:?}"), &before, &a.snapshot());
                if layout == Layout::ChannelsFirst && batch == usize::MAX && spatial == 1 {
                    println!("{entry:?} with N = usize::MAX, C = 2, S = 1: {r:?}");
                }
            }
        }
    }
}

/// A huge channel count with no elements (N·S = 0, N·C·S = 0): per-channel arguments
/// cannot have that length, so some error, never a panic or an allocation.
#[test]
fn huge_channel_count_with_empty_tensor_is_an_error() {
    for layout in LAYOUTS {
        let s = shape(layout, 0, usize::MAX, 3);
        for entry in ENTRIES {
            let mut a = Args::new(shape(layout, 0, 2, 3), None).with_saved_stats();
            a.shape = s;
            let before = a.snapshot();
            let r = entry.call(&mut a, 1e-5, Some(Momentum::Exponential(0.1)));
            assert!(r.is_err(), "{entry:?} {s:?}: {r:?}");
            assert_nothing_written(&format!("{entry:?} {s:?}"), &before, &a.snapshot());
            println!("{entry:?} with N=0, C=usize::MAX: {r:?}");
        }
    }
}

#[test]
fn eps_negative_nan_or_infinite_is_a_parameter_error() {
    let s = Shape::channels_first(2, 3, 5);
    for eps in [
        -1e-5f32,
        -f32::MIN_POSITIVE,
        -1e-45,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.0,
    ] {
        // Train-mode backward does not use eps, but a layer with such an eps is
        // invalid and is rejected there too (documented in `backward`).
        for entry in [
            Entry::Eval,
            Entry::EvalInPlace,
            Entry::Train,
            Entry::TrainInPlace,
            Entry::Backward,
            Entry::BackwardEval,
        ] {
            for momentum in [None, Some(Momentum::Exponential(0.1))] {
                let (r, a, before) = call(entry, s, None, eps, momentum);
                assert!(
                    matches!(r, Err(Error::Parameter { arg: "eps", value }) if value.to_bits() == eps.to_bits()),
                    "{entry:?} eps = {eps}: {r:?}"
                );
                assert_nothing_written(&format!("{entry:?} eps = {eps}"), &before, &a.snapshot());
            }
        }
    }
    // −0.0 is ≥ 0: a valid eps, the same as +0.
    for entry in [Entry::Eval, Entry::Train, Entry::BackwardEval] {
        let (r, a, _) = call(entry, s, None, -0.0, None);
        assert_eq!(r, Ok(()), "{entry:?} eps = -0.0");
        let (r0, a0, _) = call(entry, s, None, 0.0, None);
        assert_eq!(r0, Ok(()));
        assert_eq!(
            a.snapshot(),
            a0.snapshot(),
            "{entry:?}: eps = -0.0 differs from eps = 0"
        );
    }
}

#[test]
fn momentum_out_of_range_is_a_parameter_error() {
    let s = Shape::channels_last(2, 3, 5);
    for p in [
        -0.1f32,
        -f32::MIN_POSITIVE,
        1.0001,
        1.0 + f32::EPSILON,
        2.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        for entry in [Entry::Train, Entry::TrainInPlace] {
            let (r, a, before) = call(entry, s, None, 1e-5, Some(Momentum::Exponential(p)));
            assert!(
                matches!(r, Err(Error::Parameter { arg: "momentum", value }) if value.to_bits() == p.to_bits()),
                "{entry:?} momentum = {p}: {r:?}"
            );
            assert_nothing_written(&format!("{entry:?} momentum = {p}"), &before, &a.snapshot());
        }
    }
}

// ----------------------------------------------------------------------------------
// Empty shapes
// ----------------------------------------------------------------------------------

/// m = N·S = 0 (batch 0 or spatial 0): nothing to normalize, no statistics.
#[test]
fn zero_batch_or_spatial() {
    for layout in LAYOUTS {
        for (batch, spatial) in [(0, 5), (4, 0), (0, 0)] {
            let s = shape(layout, batch, 3, spatial);
            let what = format!("{s:?}");

            // moments: every channel gets the empty moments (count 0).
            let (r, a, _) = call(Entry::Moments, s, None, 1e-5, None);
            assert_eq!(r, Ok(()), "{what}");
            a.out.assert_written("out");
            assert!(
                a.out.inner().iter().all(|m| *m == Moments::EMPTY),
                "{what}: {:?}",
                a.out.inner()
            );

            // eval: nothing to do.
            for entry in [Entry::Eval, Entry::EvalInPlace] {
                let (r, a, before) = call(entry, s, None, 1e-5, None);
                assert_eq!(r, Ok(()), "{entry:?} {what}");
                assert_nothing_written(&format!("{entry:?} {what}"), &before, &a.snapshot());
            }

            // train: the batch mean needs one value per channel.
            for entry in [Entry::Train, Entry::TrainInPlace] {
                let (r, a, before) = call(entry, s, None, 1e-5, None);
                assert_eq!(
                    r,
                    Err(Error::TooFewValues {
                        needed: 1,
                        actual: 0
                    }),
                    "{entry:?} {what}"
                );
                assert_nothing_written(&format!("{entry:?} {what}"), &before, &a.snapshot());
                let (r, a, before) = call(entry, s, None, 1e-5, Some(Momentum::Exponential(0.1)));
                assert!(
                    matches!(
                        r,
                        Err(Error::TooFewValues {
                            needed: 1 | 2,
                            actual: 0
                        })
                    ),
                    "{entry:?} {what} with running statistics: {r:?}"
                );
                assert_nothing_written(
                    &format!("{entry:?} {what} running"),
                    &before,
                    &a.snapshot(),
                );
                if layout == Layout::ChannelsFirst
                    && batch == 0
                    && spatial == 5
                    && entry == Entry::Train
                {
                    println!("train with m = 0 and running statistics: {r:?}");
                }
            }

            // backward: empty sums, dγ = dβ = 0.
            for entry in [Entry::Backward, Entry::BackwardEval] {
                let (r, a, _) = call(entry, s, None, 1e-5, None);
                assert_eq!(r, Ok(()), "{entry:?} {what}");
                a.dgamma.assert_written("dgamma");
                a.dbeta.assert_written("dbeta");
                assert!(
                    a.dgamma
                        .inner()
                        .iter()
                        .chain(a.dbeta.inner())
                        .all(|&v| v == 0.0),
                    "{entry:?} {what}"
                );
            }
        }
    }
}

/// C = 0: every per-channel slice is empty; nothing to do, Ok.
#[test]
fn zero_channels() {
    for layout in LAYOUTS {
        for (batch, spatial) in [(3, 4), (0, 4), (1, 1)] {
            let s = shape(layout, batch, 0, spatial);
            for entry in ENTRIES {
                for momentum in [None, Some(Momentum::Exponential(0.1))] {
                    let (r, a, before) = call(entry, s, None, 1e-5, momentum);
                    let m = batch * spatial;
                    let train = matches!(entry, Entry::Train | Entry::TrainInPlace);
                    if train && (m == 0 || (m < 2 && momentum.is_some())) {
                        // m = 0 or m = 1 with running statistics: the rule for m holds
                        // for C = 0 too, or C = 0 means nothing to do; either is fine.
                        assert!(
                            matches!(r, Ok(()) | Err(Error::TooFewValues { .. })),
                            "{entry:?} {s:?}: {r:?}"
                        );
                        println!(
                            "{entry:?} C=0 N={batch} S={spatial} running={}: {r:?}",
                            momentum.is_some()
                        );
                    } else {
                        assert_eq!(r, Ok(()), "{entry:?} {s:?} running={}", momentum.is_some());
                    }
                    assert_nothing_written(&format!("{entry:?} {s:?}"), &before, &a.snapshot());
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------
// Degenerate statistics
// ----------------------------------------------------------------------------------

/// Runs train on `x` (γ, β as given, eps, optional running statistics (1, 2) per
/// channel); returns (result, y, save_mean, save_invstd, running_mean, running_var).
#[allow(clippy::type_complexity)]
fn train(
    x: &[f32],
    s: Shape,
    bn: BatchNorm,
    momentum: Option<Momentum>,
) -> (
    Result<(), Error>,
    Guarded,
    Guarded,
    Guarded,
    Guarded,
    Guarded,
) {
    let cs = s.channels;
    let (mut y, mut sm, mut si) = (
        Guarded::sentinel(x.len()),
        Guarded::sentinel(cs),
        Guarded::sentinel(cs),
    );
    let (mut rm, mut rv) = (Guarded::from(&vec![1.0; cs]), Guarded::from(&vec![2.0; cs]));
    let running = momentum.map(|momentum| Running {
        mean: rm.inner_mut(),
        var: rv.inner_mut(),
        momentum,
    });
    let r = bn.train(x, y.inner_mut(), s, sm.inner_mut(), si.inner_mut(), running);
    (r, y, sm, si, rm, rv)
}

/// Channel 0 constant (3.0), channel 1 not; both layouts, spatial 1 and 5.
fn constant_channel_input(s: &Shape) -> Vec<f32> {
    let mut x = vec![0.0; numel(s)];
    for c in 0..2 {
        for (k, i) in channel_indices(s, c).enumerate() {
            x[i] = if c == 0 { 3.0 } else { k as f32 * 0.5 - 1.0 };
        }
    }
    x
}

#[test]
fn constant_channel_with_eps_positive_gives_beta() {
    let gamma = [2.0f32, -1.5];
    let beta = [0.75f32, -4.0];
    for layout in LAYOUTS {
        for spatial in [1, 5] {
            let s = shape(layout, 3, 2, spatial);
            let x = constant_channel_input(&s);
            for (g, b) in [
                (Some(&gamma[..]), Some(&beta[..])),
                (None, None),
                (Some(&gamma[..]), None),
            ] {
                for eps in [1e-5f32, 1e-3, 1.0] {
                    let bn = BatchNorm {
                        eps,
                        gamma: g,
                        beta: b,
                    };
                    let (r, y, sm, si, rm, rv) = train(&x, s, bn, Some(Momentum::Exponential(0.5)));
                    assert_eq!(r, Ok(()));
                    let b0 = b.map_or(0.0, |b| b[0]);
                    for i in channel_indices(&s, 0) {
                        assert_eq!(
                            y.inner()[i],
                            b0,
                            "{s:?} eps {eps}: constant channel gives y = β"
                        );
                    }
                    assert_eq!(sm.inner()[0], 3.0);
                    let invstd = 1.0 / (eps as f64).sqrt();
                    assert!(
                        close(si.inner()[0] as f64, invstd, 4.0 * tol::EPS32 * invstd),
                        "{} vs {invstd}",
                        si.inner()[0]
                    );
                    assert_eq!(rm.inner()[0], 2.0, "running_mean = 0.5·1 + 0.5·3");
                    assert_eq!(rv.inner()[0], 1.0, "running_var = 0.5·2 + 0.5·0");
                }
            }
        }
    }
}

/// eps = 0 and a constant channel: var = 0, invstd = 1/√0 = +inf, and y = 0·inf = NaN
/// for the whole channel (IEEE; PyTorch gives the same). The other channel is normal.
#[test]
fn constant_channel_with_eps_zero_gives_infinite_invstd_and_nan_output() {
    for layout in LAYOUTS {
        let s = shape(layout, 3, 2, 5);
        let x = constant_channel_input(&s);
        let bn = BatchNorm {
            eps: 0.0,
            gamma: None,
            beta: Some(&[0.5, 0.5]),
        };
        let (r, y, sm, si, rm, rv) = train(&x, s, bn, Some(Momentum::Exponential(0.1)));
        assert_eq!(r, Ok(()));
        assert_eq!(sm.inner()[0], 3.0);
        assert_eq!(
            si.inner()[0],
            f32::INFINITY,
            "invstd of a constant channel with eps = 0"
        );
        for i in channel_indices(&s, 0) {
            assert!(y.inner()[i].is_nan(), "y[{i}] = {}", y.inner()[i]);
        }
        for i in channel_indices(&s, 1) {
            assert!(y.inner()[i].is_finite());
        }
        // The running statistics stay finite: var 0 is a valid batch variance.
        // (0.9·2 + 0.1·0 and 0.9·1 + 0.1·3, within the running-statistics tolerance.)
        let f = 0.1f32 as f64;
        assert!(
            close(
                rv.inner()[0] as f64,
                (1.0 - f) * 2.0,
                tol::running(2.0, 0.0, f, 0.0)
            ),
            "{}",
            rv.inner()[0]
        );
        assert!(
            close(
                rm.inner()[0] as f64,
                (1.0 - f) + f * 3.0,
                tol::running(1.0, 3.0, f, 0.0)
            ),
            "{}",
            rm.inner()[0]
        );
    }
}

/// eval with running_var + eps = 0: scale = γ/0 = ±inf. Documented: whatever IEEE gives
/// for the kernel's formula (never a panic): y is not finite.
#[test]
fn eval_with_zero_running_var_and_eps_zero() {
    let s = Shape::channels_first(1, 1, 3);
    let x = [1.0f32, 2.0, 3.0];
    let mut y = [0.0f32; 3];
    BatchNorm {
        eps: 0.0,
        gamma: None,
        beta: None,
    }
    .eval(&x, &mut y, s, &[2.0], &[0.0])
    .unwrap();
    println!("eval x = {x:?}, running mean 2, running var 0, eps 0: y = {y:?} (f64 formula: [-inf, NaN, inf])");
    assert!(y.iter().all(|v| !v.is_finite()), "{y:?}");
}

#[test]
fn momentum_zero_keeps_running_statistics_momentum_one_replaces_them() {
    for layout in LAYOUTS {
        // m = 2 per channel: channel 0 = {1, 3}: mean 2, biased var 1, unbiased var 2.
        let s = shape(layout, 2, 2, 1);
        let x: Vec<f32> = {
            let mut x = vec![0.0; 4];
            for (c, vals) in [[1.0f32, 3.0], [-2.0, 6.0]].iter().enumerate() {
                for (k, i) in channel_indices(&s, c).enumerate() {
                    x[i] = vals[k];
                }
            }
            x
        };
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: None,
            beta: None,
        };

        let (r, _, _, _, rm, rv) = train(&x, s, bn, Some(Momentum::Exponential(0.0)));
        assert_eq!(r, Ok(()));
        rm.assert_holds("running_mean, momentum 0", &[1.0, 1.0]);
        rv.assert_holds("running_var, momentum 0", &[2.0, 2.0]);

        for momentum in [
            Momentum::Exponential(1.0),
            Momentum::Cumulative { batches_tracked: 0 },
        ] {
            let (r, _, sm, si, rm, rv) = train(&x, s, bn, Some(momentum));
            assert_eq!(r, Ok(()));
            rm.assert_holds(&format!("running_mean, {momentum:?}"), &[2.0, 2.0]);
            // Unbiased: {1, 3} → 2 (biased 1); {−2, 6} → 32 (biased 16).
            rv.assert_holds(&format!("running_var, {momentum:?}"), &[2.0, 32.0]);
            assert_same_bits("save_mean", sm.inner(), &[2.0, 2.0]);
            for (c, var) in [1.0f64, 16.0].into_iter().enumerate() {
                let invstd = 1.0 / (var + 1e-5f32 as f64).sqrt();
                assert!(
                    close(si.inner()[c] as f64, invstd, 4.0 * tol::EPS32 * invstd),
                    "{:?}",
                    si.inner()
                );
            }
        }

        // Cumulative{1}: factor 1/2, the same as Exponential(0.5).
        let (_, _, _, _, rm, rv) =
            train(&x, s, bn, Some(Momentum::Cumulative { batches_tracked: 1 }));
        rm.assert_holds("running_mean, Cumulative{1}", &[1.5, 1.5]);
        rv.assert_holds("running_var, Cumulative{1}", &[2.0, 17.0]);
        // Cumulative{3}: factor 1/4.
        let (_, _, _, _, rm, rv) =
            train(&x, s, bn, Some(Momentum::Cumulative { batches_tracked: 3 }));
        rm.assert_holds("running_mean, Cumulative{3}", &[1.25, 1.25]);
        rv.assert_holds("running_var, Cumulative{3}", &[2.0, 9.5]);
        // Cumulative{u64::MAX}: factor 2⁻⁶⁴, no overflow in t + 1; running stats
        // stay where they were (to f32 precision).
        let (r, _, _, _, rm, rv) = train(
            &x,
            s,
            bn,
            Some(Momentum::Cumulative {
                batches_tracked: u64::MAX,
            }),
        );
        assert_eq!(r, Ok(()));
        rm.assert_holds("running_mean, Cumulative{u64::MAX}", &[1.0, 1.0]);
        rv.assert_holds("running_var, Cumulative{u64::MAX}", &[2.0, 2.0]);
    }
}

/// m = 1: the batch variance is 0 (y = β with eps > 0); the running variance would
/// need m/(m−1) = 1/0, so an update of running statistics is refused.
#[test]
fn one_value_per_channel() {
    let gamma = [3.0f32, -1.0, 0.5];
    let beta = [0.25f32, 8.0, -1.0];
    for s in [
        Shape::rows(1, 3),
        Shape::channels_last(1, 3, 1),
        Shape::channels_first(1, 3, 1),
    ] {
        let x = [5.0f32, -1e4, 0.125];
        let bn = BatchNorm {
            eps: 1e-5,
            gamma: Some(&gamma),
            beta: Some(&beta),
        };
        let (r, y, sm, si, _, _) = train(&x, s, bn, None);
        assert_eq!(r, Ok(()));
        assert_same_bits("y = β", y.inner(), &beta);
        assert_same_bits("save_mean = x", sm.inner(), &x);
        let invstd = 1.0 / (1e-5f32 as f64).sqrt();
        for &v in si.inner() {
            assert!(
                close(v as f64, invstd, 4.0 * tol::EPS32 * invstd),
                "{v} vs {invstd}"
            );
        }

        for momentum in [
            Momentum::Exponential(0.1),
            Momentum::Cumulative { batches_tracked: 4 },
        ] {
            let (r, y, sm, si, rm, rv) = train(&x, s, bn, Some(momentum));
            assert_eq!(
                r,
                Err(Error::TooFewValues {
                    needed: 2,
                    actual: 1
                })
            );
            y.assert_untouched("y");
            sm.assert_untouched("save_mean");
            si.assert_untouched("save_invstd");
            rm.assert_holds("running_mean", &[1.0; 3]);
            rv.assert_holds("running_var", &[2.0; 3]);
            let mut xi = Guarded::from(&x);
            let (mut sm, mut si) = (Guarded::sentinel(3), Guarded::sentinel(3));
            let (mut rm, mut rv) = (vec![1.0f32; 3], vec![2.0f32; 3]);
            let r = bn.train_in_place(
                xi.inner_mut(),
                s,
                sm.inner_mut(),
                si.inner_mut(),
                Some(Running {
                    mean: &mut rm,
                    var: &mut rv,
                    momentum,
                }),
            );
            assert_eq!(
                r,
                Err(Error::TooFewValues {
                    needed: 2,
                    actual: 1
                })
            );
            xi.assert_holds("x (in place)", &x);
            sm.assert_untouched("save_mean");
        }

        // eps = 0 and m = 1: invstd = +inf, y = NaN (as for any constant channel).
        let (r, y, _, si, _, _) = train(&x, s, BatchNorm { eps: 0.0, ..bn }, None);
        assert_eq!(r, Ok(()));
        assert!(si.inner().iter().all(|&v| v == f32::INFINITY));
        assert!(y.inner().iter().all(|v| v.is_nan()));
    }
}

// ----------------------------------------------------------------------------------
// Moments
// ----------------------------------------------------------------------------------

#[test]
fn moments_merge_with_empty_and_degenerate_counts() {
    let e = Moments::EMPTY;
    assert_eq!(e.count, 0);
    let ee = e.merge(e);
    assert_eq!(ee.count, 0);
    assert!(
        ee.mean == 0.0 && ee.m2 == 0.0,
        "EMPTY.merge(EMPTY) = {ee:?}"
    );

    let mut one = [Moments::EMPTY; 2];
    moments(&[7.5, -2.0], Shape::rows(1, 2), &mut one).unwrap();
    assert_eq!(
        one[0],
        Moments {
            count: 1,
            mean: 7.5,
            m2: 0.0
        }
    );
    assert_eq!(one[0].var(), 0.0);
    let a = Moments {
        count: 5,
        mean: 1.25,
        m2: 3.5,
    };
    assert_eq!(a.merge(e), a, "merging EMPTY is the identity");
    assert_eq!(e.merge(a), a, "merging into EMPTY is the identity");

    // No panic (u64 count − 1 must not underflow); the values are 0/0 = NaN.
    println!(
        "EMPTY.var() = {}, EMPTY.unbiased_var() = {}, count-1 var() = {}, count-1 unbiased_var() = {}",
        e.var(),
        e.unbiased_var(),
        one[0].var(),
        one[0].unbiased_var()
    );

    // Merging two halves equals the whole: {1, 3} ∪ {−2, 6}.
    let mut p = [Moments::EMPTY; 1];
    let mut q = [Moments::EMPTY; 1];
    moments(&[1.0, 3.0], Shape::rows(2, 1), &mut p).unwrap();
    moments(&[-2.0, 6.0], Shape::rows(2, 1), &mut q).unwrap();
    let w = p[0].merge(q[0]);
    assert_eq!(w.count, 4);
    assert_eq!(w.mean, 2.0);
    assert_eq!(w.m2, 1.0 + 1.0 + 16.0 + 16.0);
}
