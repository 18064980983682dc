//! The per-row or per-group statistics a train forward saves for its backward pass.

/// Where a forward pass writes the statistics it normalized with, for its backward
/// pass: the mean and `invstd = 1/√(var + eps)` of every row, group or instance.
///
/// [`as_saved`](Self::as_saved) lends them to the backward pass as [`Saved`].
///
/// ```
/// use batchnorm::SavedMut;
///
/// let (mut mean, mut invstd) = ([0.0f32; 4], [0.0f32; 4]);
/// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
/// assert_eq!(saved.as_saved().mean.len(), 4);
/// ```
#[derive(Debug)]
pub struct SavedMut<'a> {
    /// The mean of each row, group or instance.
    pub mean: &'a mut [f32],
    /// `1/√(var + eps)` of each, with the biased variance.
    pub invstd: &'a mut [f32],
}

/// The statistics a forward pass saved ([`SavedMut`]), as its backward pass reads
/// them (PyTorch's `mean` and `rstd` outputs).
///
/// ```
/// use batchnorm::Saved;
///
/// let saved = Saved { mean: &[0.5, 1.0], invstd: &[2.0, 1.0] };
/// assert_eq!(saved.invstd[0], 2.0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Saved<'a> {
    /// The mean of each row, group or instance.
    pub mean: &'a [f32],
    /// `1/√(var + eps)` of each.
    pub invstd: &'a [f32],
}

impl SavedMut<'_> {
    /// The same statistics, read-only.
    ///
    /// ```
    /// let (mut mean, mut invstd) = ([1.0f32], [2.0f32]);
    /// let saved = batchnorm::SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// assert_eq!(saved.as_saved().invstd, &[2.0]);
    /// ```
    pub fn as_saved(&self) -> Saved<'_> {
        Saved {
            mean: self.mean,
            invstd: self.invstd,
        }
    }
}
