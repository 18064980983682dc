//! Tensor shapes and memory layouts.

use crate::error::Error;

/// Where channel `c` of sample `n` at spatial position `s` lives in a flat slice.
///
/// | layout | element `(n, c, s)` at | PyTorch |
/// |---|---|---|
/// | [`ChannelsFirst`](Layout::ChannelsFirst) | `(n·C + c)·S + s` | NCHW, NCL, NCDHW, NC |
/// | [`ChannelsLast`](Layout::ChannelsLast) | `(n·S + s)·C + c` | NHWC (`channels_last`), NC |
///
/// With `S = 1` the two layouts are the same memory and the kernels take the same path.
///
/// ```
/// use batchnorm::{Layout, Shape};
///
/// assert_eq!(Shape::channels_last(2, 3, 4).layout, Layout::ChannelsLast);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[batch][channels][spatial]`: NCHW, NCL, NCDHW, and NC when spatial is 1.
    ChannelsFirst,
    /// `[batch][spatial][channels]`: NHWC, and NC when spatial is 1.
    ChannelsLast,
}

/// The shape of a tensor of `batch × channels × spatial` f32 values in one flat slice.
///
/// `spatial` is the product of all spatial dimensions: 1 for a `[batch][channels]`
/// matrix, `L` for 1-D, `H·W` for 2-D, `D·H·W` for 3-D. Every channel is reduced over
/// `batch · spatial` values.
///
/// Constructing a shape never fails; the kernels check the products for overflow and
/// the slices against them.
///
/// ```
/// use batchnorm::Shape;
///
/// let nchw = Shape::channels_first(8, 64, 56 * 56);
/// assert_eq!(nchw.len(), Ok(8 * 64 * 56 * 56));
/// assert_eq!(nchw.per_channel(), Ok(8 * 56 * 56));
/// assert!(Shape::rows(1 << 40, 1 << 40).len().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Number of samples, `N`.
    pub batch: usize,
    /// Number of channels, `C`: the length of γ, β and every per-channel statistic.
    pub channels: usize,
    /// Product of the spatial dimensions, `S` (1 when there are none).
    pub spatial: usize,
    /// Where each element lives in the flat slice.
    pub layout: Layout,
}

impl Shape {
    /// `[batch][channels][spatial]` (NCHW and friends).
    ///
    /// ```
    /// let s = batchnorm::Shape::channels_first(2, 3, 5);
    /// assert_eq!((s.batch, s.channels, s.spatial), (2, 3, 5));
    /// ```
    pub const fn channels_first(batch: usize, channels: usize, spatial: usize) -> Shape {
        Shape {
            batch,
            channels,
            spatial,
            layout: Layout::ChannelsFirst,
        }
    }

    /// `[batch][spatial][channels]` (NHWC).
    ///
    /// ```
    /// let s = batchnorm::Shape::channels_last(2, 3, 5);
    /// assert_eq!(s.layout, batchnorm::Layout::ChannelsLast);
    /// ```
    pub const fn channels_last(batch: usize, channels: usize, spatial: usize) -> Shape {
        Shape {
            batch,
            channels,
            spatial,
            layout: Layout::ChannelsLast,
        }
    }

    /// A `[batch][channels]` matrix (PyTorch's `BatchNorm1d` on 2-D input): spatial 1.
    ///
    /// ```
    /// let s = batchnorm::Shape::rows(32, 128);
    /// assert_eq!(s.len(), Ok(32 * 128));
    /// ```
    pub const fn rows(batch: usize, channels: usize) -> Shape {
        Shape::channels_first(batch, channels, 1)
    }

    /// The number of elements, `batch · channels · spatial`.
    ///
    /// # Errors
    /// [`Error::Overflow`] (argument `"x"`) when the product does not fit in `usize`.
    ///
    /// ```
    /// assert_eq!(batchnorm::Shape::channels_first(2, 3, 5).len(), Ok(30));
    /// ```
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> Result<usize, Error> {
        self.per_channel()?
            .checked_mul(self.channels)
            .ok_or(Error::Overflow { arg: "x" })
    }

    /// The number of values each channel is reduced over, `m = batch · spatial`.
    ///
    /// # Errors
    /// [`Error::Overflow`] (argument `"x"`) when the product does not fit in `usize`.
    ///
    /// ```
    /// assert_eq!(batchnorm::Shape::channels_last(2, 3, 5).per_channel(), Ok(10));
    /// ```
    pub fn per_channel(&self) -> Result<usize, Error> {
        self.batch
            .checked_mul(self.spatial)
            .ok_or(Error::Overflow { arg: "x" })
    }

    /// The layout kernels actually walk: with `spatial == 1` both layouts are the same
    /// memory, a `[rows][channels]` matrix, which the channels-last kernels handle.
    pub(crate) fn walk(&self) -> Layout {
        if self.spatial == 1 {
            Layout::ChannelsLast
        } else {
            self.layout
        }
    }
}
