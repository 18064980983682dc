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
/// Build it from the tensor's dims with the constructor named after its layout:
///
/// | tensor | constructor | layout |
/// |---|---|---|
/// | `[N, C]` (`BatchNorm1d` on 2-D input, Keras on `(batch, features)`) | [`nc(n, c)`](Shape::nc) | either (S = 1) |
/// | `[N, C, L]` (`BatchNorm1d` on 3-D input) | [`ncl(n, c, l)`](Shape::ncl) | channels-first |
/// | `[N, L, C]` (Keras `Conv1D` activations) | [`nlc(n, l, c)`](Shape::nlc) | channels-last |
/// | `[N, C, H, W]` (`BatchNorm2d`, ONNX) | [`nchw(n, c, h, w)`](Shape::nchw) | channels-first |
/// | `[N, H, W, C]` (PyTorch `channels_last`, TensorFlow, TFLite) | [`nhwc(n, h, w, c)`](Shape::nhwc) | channels-last |
/// | `[N, C, D, H, W]` (`BatchNorm3d`) | [`ncdhw(n, c, d, h, w)`](Shape::ncdhw) | channels-first |
/// | `[N, D, H, W, C]` (`channels_last_3d`, TensorFlow) | [`ndhwc(n, d, h, w, c)`](Shape::ndhwc) | channels-last |
///
/// or, with the spatial product already at hand, [`channels_first`](Shape::channels_first),
/// [`channels_last`](Shape::channels_last) and [`rows`](Shape::rows).
///
/// Constructing a shape never fails: the constructors multiply the spatial dims
/// saturating at `usize::MAX`, and the kernels check the products for overflow and the
/// slices against them, so a shape whose element count does not fit is refused with
/// [`Error::Overflow`] or [`Error::Length`] (no slice holds `usize::MAX` values).
///
/// ```
/// use batchnorm::Shape;
///
/// let nchw = Shape::nchw(8, 64, 56, 56);
/// assert_eq!(nchw, Shape::channels_first(8, 64, 56 * 56));
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
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
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
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
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
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
    ///
    /// ```
    /// let s = batchnorm::Shape::rows(32, 128);
    /// assert_eq!(s.len(), Ok(32 * 128));
    /// ```
    pub const fn rows(batch: usize, channels: usize) -> Shape {
        Shape::channels_first(batch, channels, 1)
    }

    /// `[N, C]`: a batch of `n` rows of `c` features (PyTorch's `BatchNorm1d` on 2-D
    /// input, Keras' `BatchNormalization` on `(batch, features)`); the same as
    /// [`rows`](Shape::rows).
    ///
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
    ///
    /// ```
    /// use batchnorm::Shape;
    ///
    /// assert_eq!(Shape::nc(32, 128), Shape::rows(32, 128));
    /// assert_eq!(Shape::nc(32, 128).per_channel(), Ok(32));
    /// ```
    pub const fn nc(n: usize, c: usize) -> Shape {
        Shape::rows(n, c)
    }

    /// `[N, C, L]`, channels-first (PyTorch's `BatchNorm1d` on 3-D input).
    ///
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
    ///
    /// ```
    /// use batchnorm::Shape;
    ///
    /// assert_eq!(Shape::ncl(4, 16, 100), Shape::channels_first(4, 16, 100));
    /// ```
    pub const fn ncl(n: usize, c: usize, l: usize) -> Shape {
        Shape::channels_first(n, c, l)
    }

    /// `[N, L, C]`, channels-last (TensorFlow's 1-D activations).
    ///
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
    ///
    /// ```
    /// use batchnorm::Shape;
    ///
    /// assert_eq!(Shape::nlc(4, 100, 16), Shape::channels_last(4, 16, 100));
    /// ```
    pub const fn nlc(n: usize, l: usize, c: usize) -> Shape {
        Shape::channels_last(n, c, l)
    }

    /// `[N, C, H, W]`, channels-first (PyTorch's `BatchNorm2d`, ONNX).
    ///
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
    ///
    /// ```
    /// use batchnorm::Shape;
    ///
    /// let s = Shape::nchw(8, 64, 56, 56);
    /// assert_eq!((s.batch, s.channels, s.spatial), (8, 64, 56 * 56));
    /// // A product that does not fit is refused by the kernels, not wrapped.
    /// assert!(Shape::nchw(2, 3, usize::MAX, 2).len().is_err());
    /// ```
    pub const fn nchw(n: usize, c: usize, h: usize, w: usize) -> Shape {
        Shape::channels_first(n, c, h.saturating_mul(w))
    }

    /// `[N, H, W, C]`, channels-last (PyTorch's `channels_last` memory format,
    /// TensorFlow, TFLite).
    ///
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
    ///
    /// ```
    /// use batchnorm::{Layout, Shape};
    ///
    /// let s = Shape::nhwc(8, 56, 56, 64);
    /// assert_eq!((s.channels, s.spatial, s.layout), (64, 56 * 56, Layout::ChannelsLast));
    /// ```
    pub const fn nhwc(n: usize, h: usize, w: usize, c: usize) -> Shape {
        Shape::channels_last(n, c, h.saturating_mul(w))
    }

    /// `[N, C, D, H, W]`, channels-first (PyTorch's `BatchNorm3d`).
    ///
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
    ///
    /// ```
    /// use batchnorm::Shape;
    ///
    /// assert_eq!(Shape::ncdhw(2, 8, 4, 16, 16), Shape::channels_first(2, 8, 4 * 16 * 16));
    /// ```
    pub const fn ncdhw(n: usize, c: usize, d: usize, h: usize, w: usize) -> Shape {
        Shape::channels_first(n, c, d.saturating_mul(h).saturating_mul(w))
    }

    /// `[N, D, H, W, C]`, channels-last (PyTorch's `channels_last_3d`, TensorFlow).
    ///
    /// # Errors
    /// None here; the kernels check the shape (see [`Shape`]).
    ///
    /// ```
    /// use batchnorm::Shape;
    ///
    /// assert_eq!(Shape::ndhwc(2, 4, 16, 16, 8), Shape::channels_last(2, 8, 4 * 16 * 16));
    /// ```
    pub const fn ndhwc(n: usize, d: usize, h: usize, w: usize, c: usize) -> Shape {
        Shape::channels_last(n, c, d.saturating_mul(h).saturating_mul(w))
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
