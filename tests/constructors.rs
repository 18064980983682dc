//! The constructors from dims (`Shape::nchw` and friends, `Layer::conv2d` and friends),
//! what they build, how they behave when a product of dims does not fit in `usize`, and
//! the error messages (each states the rule broken).

use batchnorm::fold::{self, EvalBn, Layer, WeightLayout};
use batchnorm::{moments, BatchNorm, Error, Layout, Moments, RunningStats, Shape};

const HUGE: usize = usize::MAX;

#[test]
fn shapes_from_dims() {
    for (n, c, d, h, w) in [
        (1, 1, 1, 1, 1),
        (2, 3, 4, 5, 6),
        (0, 7, 2, 3, 1),
        (8, 64, 1, 56, 56),
    ] {
        let first = |s| Shape::channels_first(n, c, s);
        let last = |s| Shape::channels_last(n, c, s);
        assert_eq!(Shape::nc(n, c), Shape::rows(n, c));
        assert_eq!(Shape::ncl(n, c, w), first(w));
        assert_eq!(Shape::nlc(n, w, c), last(w));
        assert_eq!(Shape::nchw(n, c, h, w), first(h * w));
        assert_eq!(Shape::nhwc(n, h, w, c), last(h * w));
        assert_eq!(Shape::ncdhw(n, c, d, h, w), first(d * h * w));
        assert_eq!(Shape::ndhwc(n, d, h, w, c), last(d * h * w));
        assert_eq!(Shape::nhwc(n, h, w, c).layout, Layout::ChannelsLast);
        assert_eq!(Shape::ncdhw(n, c, d, h, w).len(), Ok(n * c * d * h * w));
    }
}

/// Spatial products that do not fit saturate; the element count is then refused
/// (Overflow) or cannot match any slice (Length), and the kernel writes nothing.
#[test]
fn shape_products_that_overflow_are_refused() {
    let shapes = [
        Shape::nchw(2, 3, HUGE, 2),
        Shape::nhwc(1, HUGE, 3, 2),
        Shape::ncdhw(1, 1, 1 << 32, 1 << 32, 2),
        Shape::ndhwc(3, 1 << 40, 1 << 40, 1, 1),
        Shape::nchw(1, 1, HUGE, HUGE),
        Shape::ncl(HUGE, HUGE, 2),
    ];
    for shape in shapes {
        let x = [1.0f32; 6];
        let mut parts = [Moments::EMPTY; 3];
        let err = moments(&x, shape, &mut parts).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Overflow { arg: "x" } | Error::Length { arg: "x", .. }
            ),
            "{shape:?}: {err:?}"
        );
        assert_eq!(parts, [Moments::EMPTY; 3], "{shape:?}: written on {err:?}");
    }
    assert_eq!(Shape::nchw(1, 1, HUGE, 2).spatial, HUGE);
    // A zero dim makes the product 0, whatever saturated before it.
    assert_eq!(Shape::ncdhw(1, 1, HUGE, HUGE, 0).spatial, 0);
}

#[test]
fn layers_from_dims() {
    let fields = |l: Layer| (l.layout, l.in_channels, l.out_channels, l.groups, l.kernel);
    use WeightLayout::{Hwio, Iohw, Ohwi, Oihw};
    let cases = [
        (Layer::linear(3, 2), (Oihw, 3, 2, 1, 1)),
        (Layer::linear_in_out(3, 2), (Hwio, 3, 2, 1, 1)),
        (Layer::conv1d(4, 8, 5), (Oihw, 4, 8, 1, 5)),
        (Layer::conv2d(4, 8, [3, 5]), (Oihw, 4, 8, 1, 15)),
        (Layer::conv3d(4, 8, [2, 3, 5]), (Oihw, 4, 8, 1, 30)),
        (Layer::conv(4, 8, &[2, 3, 5, 7]), (Oihw, 4, 8, 1, 210)),
        (Layer::conv(4, 8, &[]), (Oihw, 4, 8, 1, 1)),
        (Layer::conv2d(6, 9, [3, 3]).grouped(3), (Oihw, 6, 9, 3, 9)),
        (Layer::depthwise(32, 2, &[3, 3]), (Oihw, 32, 64, 32, 9)),
        (Layer::conv_transpose1d(8, 4, 3), (Iohw, 8, 4, 1, 3)),
        (
            Layer::conv_transpose2d(8, 6, [2, 3]).grouped(2),
            (Iohw, 8, 6, 2, 6),
        ),
        (Layer::conv_transpose3d(8, 4, [2, 2, 2]), (Iohw, 8, 4, 1, 8)),
        (Layer::conv_transpose(8, 4, &[4]), (Iohw, 8, 4, 1, 4)),
        (Layer::conv_hwio(3, 16, &[3, 3]), (Hwio, 3, 16, 1, 9)),
        (Layer::conv_ohwi(3, 16, &[3, 3]), (Ohwi, 3, 16, 1, 9)),
        (Layer::depthwise_hwio(16, 3, &[5]), (Hwio, 16, 48, 16, 5)),
    ];
    for (layer, want) in cases {
        assert_eq!(fields(layer), want, "{layer:?}");
    }
    // Usable in constants.
    const STEM: Layer = Layer::conv2d(3, 64, [7, 7]);
    assert_eq!(STEM.kernel, 49);
}

/// A transposed convolution built by its constructor folds as one: output channel p of
/// `ConvTranspose1d(2, 3, 2)` is `W[i][p][k]` for all i, k, which `conv1d` (the same
/// length) would read as something else.
#[test]
fn transposed_constructor_folds_per_output_channel() {
    let weight: Vec<f32> = (1..=12).map(|v| v as f32).collect(); // [in 2][out 3][k 2]
    let gamma = [2.0, 4.0, 8.0];
    let bn = EvalBn::new(
        BatchNorm {
            eps: 0.0,
            gamma: Some(&gamma),
            beta: None,
        },
        RunningStats {
            mean: &[0.0; 3],
            var: &[1.0; 3],
        },
    );
    let mut w = weight.clone();
    let mut b = [0.0; 3];
    fold::into_preceding(&bn, Layer::conv_transpose1d(2, 3, 2), &mut w, &mut b).unwrap();
    let want: Vec<f32> = weight
        .iter()
        .enumerate()
        .map(|(n, v)| v * gamma[(n / 2) % 3])
        .collect();
    assert_eq!(w, want);
    // Read as [out 3][in 2][k 2] the same values get other scales.
    let mut w2 = weight.clone();
    fold::into_preceding(&bn, Layer::conv1d(2, 3, 2), &mut w2, &mut b).unwrap();
    assert_ne!(w2, want);
}

/// Kernel products and `channels·multiplier` that do not fit saturate; the fold refuses
/// the layer and writes nothing.
#[test]
fn layer_products_that_overflow_are_refused() {
    let layers = [
        Layer::conv2d(1, 1, [HUGE, 2]),
        Layer::conv2d(2, 2, [HUGE, 2]),
        Layer::conv3d(4, 4, [1 << 30, 1 << 30, 1 << 30]),
        Layer::conv_transpose(3, 3, &[HUGE, HUGE]),
        Layer::conv_hwio(1, 1, &[1 << 40, 1 << 40]),
        Layer::conv_ohwi(2, 1, &[HUGE]),
        Layer::depthwise(3, HUGE, &[1]),
        Layer::depthwise_hwio(5, HUGE / 2, &[3]),
    ];
    for layer in layers {
        let (mut w, mut b) = ([0.5f32; 8], [0.25f32; 8]);
        let bn = EvalBn::new(
            BatchNorm {
                eps: 1e-5,
                gamma: None,
                beta: None,
            },
            RunningStats {
                mean: &[0.0; 8],
                var: &[1.0; 8],
            },
        );
        let n = layer.out_channels.min(8);
        let err = fold::into_preceding(&bn, layer, &mut w, &mut b[..n]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Overflow { arg: "weight" } | Error::Length { .. } | Error::Groups { .. }
            ),
            "{layer:?}: {err:?}"
        );
        assert_eq!(
            (w, b),
            ([0.5; 8], [0.25; 8]),
            "{layer:?}: written on {err:?}"
        );
    }
    assert_eq!(Layer::conv(1, 1, &[HUGE, 0]).kernel, 0);
}

#[test]
fn messages_state_the_rule() {
    let cases = [
        (
            Error::Parameter {
                arg: "eps",
                value: -1.0,
            },
            "`eps` = -1 is out of range: it must be finite and ≥ 0",
        ),
        (
            Error::Parameter {
                arg: "momentum",
                value: 1.5,
            },
            "`momentum` = 1.5 is out of range: it must be finite and in [0, 1]",
        ),
        (
            Error::Parameter {
                arg: "rmax",
                value: 0.5,
            },
            "`rmax` = 0.5 is out of range: it must be ≥ 1 (+∞ allowed, NaN not)",
        ),
        (
            Error::Parameter {
                arg: "dmax",
                value: f32::NAN,
            },
            "`dmax` = NaN is out of range: it must be ≥ 0 (+∞ allowed, NaN not)",
        ),
        (
            Error::Groups {
                groups: 2,
                arg: "out_channels",
                channels: 3,
            },
            "`out_channels` (3) is not a multiple of `groups` (2)",
        ),
        (
            Error::Groups {
                groups: 0,
                arg: "in_channels",
                channels: 4,
            },
            "`groups` is 0: it must be at least 1 and divide the channel counts",
        ),
        (
            Error::Length {
                arg: "x",
                expected: 6,
                actual: 5,
            },
            "`x` has length 5, expected 6",
        ),
        (
            Error::Overflow { arg: "weight" },
            "the element count of `weight` (the product of its dims) does not fit in usize",
        ),
        (
            Error::TooFewValues {
                needed: 2,
                actual: 1,
            },
            "each channel has 1 values (batch·spatial), but at least 2 are needed",
        ),
    ];
    for (err, want) in cases {
        assert_eq!(err.to_string(), want);
    }
    let zero = Error::ZeroScale { channel: 3 }.to_string();
    assert!(zero.starts_with("channel 3 is scaled by zero"), "{zero}");
}

/// The messages as the fold functions return them.
#[test]
fn fold_errors_read_as_documented() {
    let bn = EvalBn::new(
        BatchNorm {
            eps: -1.0,
            gamma: None,
            beta: None,
        },
        RunningStats {
            mean: &[0.0; 4],
            var: &[1.0; 4],
        },
    );
    let (mut w, mut b) = ([1.0f32; 6], [0.0f32; 3]);
    let layer = Layer::conv1d(4, 3, 1).grouped(2);
    let err = fold::into_preceding(&bn, layer, &mut w, &mut b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`eps` = -1 is out of range: it must be finite and ≥ 0"
    );
    let bn = EvalBn::new(BatchNorm { eps: 1e-5, ..bn.bn }, bn.stats);
    let err = fold::into_preceding(&bn, layer, &mut w, &mut b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`out_channels` (3) is not a multiple of `groups` (2)"
    );
    assert_eq!((w, b), ([1.0; 6], [0.0; 3]));
}
