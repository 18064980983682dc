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
            Error::Overflow { arg } => write!(f, "the size of `{arg}` overflows usize"),
            Error::Parameter { arg, value } => write!(f, "`{arg}` = {value} is out of range"),
            Error::TooFewValues { needed, actual } => {
                write!(f, "{actual} values per channel, at least {needed} needed")
            }
            Error::Groups {
                groups,
                arg,
                channels,
            } => write!(
                f,
                "{groups} groups do not divide the {channels} channels of `{arg}`"
            ),
            Error::ZeroScale { channel } => {
                write!(
                    f,
                    "channel {channel} is scaled by zero: no padding value maps to 0"
                )
            }
            Error::NonFiniteNorm { norm } => {
                write!(f, "the total norm of the gradients is {norm}, not finite")
            }
        }
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
