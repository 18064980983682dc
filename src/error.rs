//! The one error type of the crate.

use core::fmt;

/// Why a call was refused. Every public function checks all its arguments before it
/// touches any data, so an `Err` means that no output was written.
///
/// Each variant names the argument at fault, as the parameter is called in the
/// function's signature (`"x"`, `"running_var"`, `"gamma"`, …).
///
/// ```
/// use batchnorm::{moments, Error, Moments, Shape};
///
/// let mut parts = [Moments::EMPTY; 3];
/// let err = moments(&[0.0; 5], Shape::rows(2, 3), &mut parts).unwrap_err();
/// assert_eq!(err, Error::Length { arg: "x", expected: 6, actual: 5 });
/// assert_eq!(err.to_string(), "`x` has length 5, expected 6");
///
/// // Scalar parameters and group counts: the message states the rule broken.
/// let err = Error::Parameter { arg: "eps", value: -1.0 };
/// assert_eq!(err.to_string(), "`eps` = -1 is out of range: it must be finite and ≥ 0");
/// let err = Error::Groups { groups: 2, arg: "out_channels", channels: 3 };
/// assert_eq!(err.to_string(), "`out_channels` (3) is not a multiple of `groups` (2)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A slice does not have the length the shape asks for.
    Length {
        /// The argument's name.
        arg: &'static str,
        /// The length the shape asks for.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
    /// A product of sizes (the element count of `arg`) does not fit in `usize`.
    Overflow {
        /// The argument whose size overflows.
        arg: &'static str,
    },
    /// A scalar parameter is out of its range: `eps` must be finite and ≥ 0,
    /// `momentum` finite and in `[0, 1]`.
    Parameter {
        /// The parameter's name.
        arg: &'static str,
        /// The value that was given.
        value: f32,
    },
    /// There are too few values per channel for the statistics asked for: the batch
    /// mean needs at least one value per channel, the unbiased running variance two.
    TooFewValues {
        /// How many values per channel the operation needs.
        needed: usize,
        /// How many values per channel the shape holds (`batch · spatial`).
        actual: usize,
    },
    /// A group count that is zero or does not divide a channel count.
    Groups {
        /// The number of groups that was given.
        groups: usize,
        /// The argument whose channel count it must divide.
        arg: &'static str,
        /// That channel count.
        channels: usize,
    },
    /// Batch norm scales `channel` by exactly zero, so no padding value maps to zero
    /// and the fold into a following padded convolution is not possible.
    ZeroScale {
        /// The channel whose scale is zero.
        channel: usize,
    },
    /// The total norm of the gradients is NaN or infinite, and the caller asked for
    /// an error then ([`NonFinite::Error`](crate::NonFinite::Error)).
    NonFiniteNorm {
        /// The norm.
        norm: f32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Length {
                arg,
                expected,
                actual,
            } => write!(f, "`{arg}` has length {actual}, expected {expected}"),
            Error::Overflow { arg } => write!(
                f,
                "the element count of `{arg}` (the product of its dims) does not fit in usize"
            ),
            Error::Parameter { arg, value } => {
                write!(f, "`{arg}` = {value} is out of range: {}", rule(arg))
            }
            Error::TooFewValues { needed, actual } => write!(
                f,
                "each channel has {actual} values (batch·spatial), but at least {needed} are needed"
            ),
            Error::Groups {
                groups: 0,
                arg: _,
                channels: _,
            } => write!(
                f,
                "`groups` is 0: it must be at least 1 and divide the channel counts"
            ),
            Error::Groups {
                groups,
                arg,
                channels,
            } => write!(
                f,
                "`{arg}` ({channels}) is not a multiple of `groups` ({groups})"
            ),
            Error::ZeroScale { channel } => write!(
                f,
                "channel {channel} is scaled by zero (γ = 0 or an infinite variance): \
                 no padding value maps to 0, so a layer that pads cannot absorb this BN; \
                 pass `pad: None` if the layer does not pad"
            ),
            Error::NonFiniteNorm { norm } => write!(
                f,
                "the total norm of the gradients is {norm}: not finite (pass \
                 `NonFinite::Scale` to scale anyway, as PyTorch's default)"
            ),
        }
    }
}

/// The valid range of each scalar parameter, as [`Error::Parameter`] reports it.
fn rule(arg: &str) -> &'static str {
    match arg {
        "eps" => "it must be finite and ≥ 0",
        "momentum" => "it must be finite and in [0, 1]",
        "rmax" => "it must be ≥ 1 (+∞ allowed, NaN not)",
        "dmax" => "it must be ≥ 0 (+∞ allowed, NaN not)",
        "clip_value" => "it must be ≥ 0 (+∞ clips nothing, NaN not allowed)",
        "max_norm" => "it must be ≥ 0 (+∞ allowed, NaN not)",
        _ => "see the documentation of the function",
    }
}

impl core::error::Error for Error {}

/// `Ok` when `slice_len == expected`, else the `Length` error for `arg`.
pub(crate) fn check_len(arg: &'static str, actual: usize, expected: usize) -> Result<(), Error> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::Length {
            arg,
            expected,
            actual,
        })
    }
}

/// `Ok` when `eps` is finite and ≥ 0.
pub(crate) fn check_eps(eps: f32) -> Result<(), Error> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(Error::Parameter {
            arg: "eps",
            value: eps,
        })
    }
}
