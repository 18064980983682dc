//! Layer norm and RMS norm (PyTorch's `F.layer_norm` and `F.rms_norm`): statistics
//! per row of a sample's trailing dims, with an elementwise γ and β that every row
//! shares.
//!
//! Both walk the tensor as rows (see [`Walk::rows`]): a row's statistics, then its
//! output, while it is cached; γ and β are read at the same positions in every row.

use crate::backward::{out_of_range, Grads};
use core::ops::Range;

use crate::engine::{self, put, Band, Walk, BLOCK, SMALL};
use crate::error::{check_eps, check_len, Error};
use crate::forward::BatchNorm;
use crate::group_norm::add;
use crate::kernels::{Centered, RowAffine, RowGradInput, RowGradSums, RowScale, RowShift};
use crate::moments::{band_moments, Moments};
use crate::saved::{Saved, SavedMut};

/// Positions of the column sums (dγ, dβ) a row norm's backward keeps on the stack
/// for rows of up to this many values, and for longer rows (in pieces of that many).
const SMALL_COLS: usize = if cfg!(target_pointer_width = "64") {
    512
} else {
    64
};
const COLS: usize = if cfg!(target_pointer_width = "64") {
    4096
} else {
    256
};

/// Bytes of `x` and `dy` a band of rows rereads for its `dx` from L1 (rows of up to
/// [`COLS`] values), or from L2 (longer rows).
const L1_BYTES: usize = 32 << 10;
const L2_BYTES: usize = 512 << 10;

/// A tensor seen as `rows` rows of `len` values: the rows a layer norm or RMS norm
/// normalizes one by one. `len` is the product of PyTorch's `normalized_shape` (ONNX:
/// the dims from `axis` on); `rows` the product of the dims before.
///
/// ```
/// use batchnorm::Rows;
///
/// // A transformer's activations, [batch 4][tokens 128][features 768], normalized
/// // over the features:
/// let rows = Rows::new(4 * 128, 768);
/// assert_eq!(rows.count(), Ok(4 * 128 * 768));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rows {
    /// How many rows: one mean and one invstd each.
    pub rows: usize,
    /// Values per row: the length of γ and β.
    pub len: usize,
}

impl Rows {
    /// `rows` rows of `len` values.
    ///
    /// ```
    /// let r = batchnorm::Rows::new(2, 3);
    /// assert_eq!((r.rows, r.len), (2, 3));
    /// ```
    pub const fn new(rows: usize, len: usize) -> Rows {
        Rows { rows, len }
    }

    /// The number of values, `rows · len`.
    ///
    /// # Errors
    /// [`Error::Overflow`] (argument `"x"`) when the product does not fit in `usize`.
    ///
    /// ```
    /// assert!(batchnorm::Rows::new(usize::MAX, 2).count().is_err());
    /// ```
    pub fn count(&self) -> Result<usize, Error> {
        self.rows
            .checked_mul(self.len)
            .ok_or(Error::Overflow { arg: "x" })
    }
}

/// Layer normalization (Ba et al., 2016; PyTorch's `nn.LayerNorm`): every row of
/// `len` values is normalized by its own mean and biased variance,
/// `y = (x − mean)/√(var + eps)·γ + β`, with `γ`, `β` of length `len` (one per
/// position of the row, the same for every row).
///
/// `gamma: None` is PyTorch's `elementwise_affine=False`; `beta: None` its
/// `bias=False`.
///
/// | PyTorch | ONNX `LayerNormalization` | here |
/// |---|---|---|
/// | `normalized_shape` (the last dims) | `axis` (dims from `axis` on) | [`Rows::len`]: their product; [`Rows::rows`]: the product of the dims before |
/// | `eps = 1e-5` | `epsilon = 1e-5` | `eps` |
/// | `weight`, `bias` | `Scale`, `B` | `gamma`, `beta` |
/// | (float32 statistics) | `stash_type = 1` (float32) | statistics in f64 from f32 inputs, saved as f32 |
/// | outputs `mean`, `rstd` | `Mean`, `InvStdDev` | [`SavedMut`] `mean`, `invstd` |
///
/// ```
/// use batchnorm::{LayerNorm, Rows, SavedMut};
///
/// let ln = LayerNorm { eps: 1e-5, gamma: Some(&[1.0, 2.0]), beta: Some(&[0.0, 1.0]) };
/// let x = [1.0, 3.0, 10.0, 10.0]; // two rows of two
/// let (mut y, mut mean, mut invstd) = ([0.0; 4], [0.0; 2], [0.0; 2]);
/// ln.forward(&x, &mut y, Rows::new(2, 2), SavedMut { mean: &mut mean, invstd: &mut invstd })?;
/// assert_eq!(mean, [2.0, 10.0]);
/// assert!((y[0] + 1.0).abs() < 1e-4 && (y[1] - 3.0).abs() < 1e-4);
/// assert_eq!(&y[2..], &[0.0, 1.0]); // a constant row gives β
/// # Ok::<(), batchnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNorm<'a> {
    /// Added to the variance; finite and ≥ 0 (PyTorch's default `1e-5`).
    pub eps: f32,
    /// γ, one per position of a row; `None` is γ = 1.
    pub gamma: Option<&'a [f32]>,
    /// β, one per position of a row; `None` is β = 0.
    pub beta: Option<&'a [f32]>,
}

/// RMS normalization (Zhang & Sennrich, 2019; PyTorch's `nn.RMSNorm`): every row of
/// `len` values is scaled by the inverse of its root mean square,
/// `y = x/√(mean(x²) + eps)·γ`. There is no centering and no β.
///
/// PyTorch's `eps=None` means the dtype's machine epsilon: pass
/// [`RmsNorm::DTYPE_EPS`] for it. ONNX's `RMSNormalization` (opset 23) maps as
/// [`LayerNorm`] does (`axis`, `epsilon`, `Scale`, float32 `stash_type`), and its
/// optional `InvStdDev` output is the `invstd` written here.
///
/// ```
/// use batchnorm::{RmsNorm, Rows};
///
/// let rms = RmsNorm { eps: 0.0, gamma: None };
/// let x = [3.0, 4.0, 0.0, 0.0]; // one row of four: mean(x²) = 25/4
/// let (mut y, mut invstd) = ([0.0; 4], [0.0]);
/// rms.forward(&x, &mut y, Rows::new(1, 4), &mut invstd)?;
/// assert_eq!(invstd, [0.4]);
/// assert_eq!(y, [1.2, 1.6, 0.0, 0.0]);
/// # Ok::<(), batchnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsNorm<'a> {
    /// Added to the mean square; finite and ≥ 0.
    pub eps: f32,
    /// γ, one per position of a row; `None` is γ = 1.
    pub gamma: Option<&'a [f32]>,
}

/// What a row norm normalizes by.
#[derive(Clone, Copy, PartialEq)]
enum Center {
    /// Layer norm: the row's mean and variance.
    Mean,
    /// RMS norm: no centering, the row's mean square.
    None,
}

/// The common part of both row norms.
#[derive(Clone, Copy)]
struct RowNorm<'a> {
    center: Center,
    eps: f32,
    gamma: Option<&'a [f32]>,
    beta: Option<&'a [f32]>,
}

impl LayerNorm<'_> {
    fn rows(&self) -> RowNorm<'_> {
        RowNorm {
            center: Center::Mean,
            eps: self.eps,
            gamma: self.gamma,
            beta: self.beta,
        }
    }

    /// Forward pass: normalizes every row of `x` into `y` and writes each row's mean
    /// and `invstd = 1/√(var + eps)` (biased variance) to `saved`, as PyTorch's
    /// `native_layer_norm` returns them.
    ///
    /// The statistics come from one read of the row, exact as batch norm's (see
    /// [`moments`](fn@crate::moments)), also when the mean is far larger than the
    /// spread; the row is then normalized while it is in cache. A NaN or infinity
    /// makes its row's statistics and output NaN.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when `rows · len` does not fit in `usize`;
    /// - [`Error::Length`] when `x` or `y` does not hold `rows · len` values,
    ///   `gamma` or `beta` not `len`, or `saved.mean` (`"save_mean"`) or
    ///   `saved.invstd` (`"save_invstd"`) not `rows`;
    /// - [`Error::TooFewValues`] when `len` is 0 and there are rows.
    ///
    /// ```
    /// use batchnorm::{LayerNorm, Rows, SavedMut};
    ///
    /// let ln = LayerNorm { eps: 0.0, gamma: None, beta: None };
    /// let (mut y, mut mean, mut invstd) = ([0.0; 3], [0.0], [0.0]);
    /// let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
    /// ln.forward(&[1.0, 2.0, 3.0], &mut y, Rows::new(1, 3), saved)?;
    /// let s = 1.5f32.sqrt(); // 1/σ with the biased variance 2/3
    /// assert_eq!((mean, invstd), ([2.0], [s]));
    /// assert_eq!(y, [-s, 0.0, s]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn forward(
        &self,
        x: &[f32],
        y: &mut [f32],
        rows: Rows,
        saved: SavedMut<'_>,
    ) -> Result<(), Error> {
        let norm = self.rows();
        let n = norm.check(rows, [saved.mean.len(), saved.invstd.len()])?;
        check_len("x", x.len(), n)?;
        check_len("y", y.len(), n)?;
        norm.forward(x, y, rows, Some(saved.mean), saved.invstd);
        Ok(())
    }

    /// [`forward`](Self::forward) with `y` written over `x`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward); the tensor is argument `"x"`.
    ///
    /// ```
    /// use batchnorm::{LayerNorm, Rows, SavedMut};
    ///
    /// let ln = LayerNorm { eps: 0.0, gamma: None, beta: Some(&[1.0, 1.0]) };
    /// let mut x = [0.0, 2.0];
    /// let (mut mean, mut invstd) = ([0.0], [0.0]);
    /// ln.forward_in_place(&mut x, Rows::new(1, 2), SavedMut { mean: &mut mean, invstd: &mut invstd })?;
    /// assert_eq!(x, [0.0, 2.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn forward_in_place(
        &self,
        x: &mut [f32],
        rows: Rows,
        saved: SavedMut<'_>,
    ) -> Result<(), Error> {
        let norm = self.rows();
        let n = norm.check(rows, [saved.mean.len(), saved.invstd.len()])?;
        check_len("x", x.len(), n)?;
        norm.forward(&[], x, rows, Some(saved.mean), saved.invstd);
        Ok(())
    }

    /// Backward pass of [`forward`](Self::forward), from the statistics it saved.
    /// With `x̂ = (x − mean)·invstd` per row, `g = dy·γ` and means over the row:
    ///
    /// `dx = invstd·(g − mean(g) − x̂·mean(g·x̂))`, `dγ = Σ_rows dy·x̂`,
    /// `dβ = Σ_rows dy`.
    ///
    /// `x` and `dy` are read once for the row sums, and once more for `dx`, `dγ` and
    /// `dβ` while still in L1 (rows of up to 4096 values, 256 on 32-bit targets;
    /// longer rows in L2). `dγ` and `dβ` sum each block of up to 64 rows in f32 and
    /// add the blocks in f32.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when `rows · len` does not fit in `usize`;
    /// - [`Error::Length`] when `x`, `dy` or `dx` does not hold `rows · len` values,
    ///   `gamma`, `beta`, `dgamma` or `dbeta` not `len`, or `saved.mean`
    ///   (`"save_mean"`) or `saved.invstd` (`"save_invstd"`) not `rows`;
    /// - [`Error::TooFewValues`] when `len` is 0 and there are rows.
    ///
    /// ```
    /// use batchnorm::{Grads, LayerNorm, Rows, Saved};
    ///
    /// let ln = LayerNorm { eps: 0.0, gamma: None, beta: None };
    /// let (x, dy) = ([1.0, 3.0], [1.0, 1.0]); // mean 2, invstd 1: x̂ = [-1, 1]
    /// let (mut dx, mut dg, mut db) = ([9.0; 2], [9.0; 2], [9.0; 2]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    /// ln.backward(&x, &dy, Rows::new(1, 2), Saved { mean: &[2.0], invstd: &[1.0] }, grads)?;
    /// assert_eq!((dx, dg, db), ([0.0; 2], [-1.0, 1.0], [1.0, 1.0]));
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        rows: Rows,
        saved: Saved<'_>,
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        let norm = self.rows();
        norm.check_backward(x, dy, rows, [saved.mean.len(), saved.invstd.len()], &grads)?;
        norm.backward(x, dy, rows, saved.mean, saved.invstd, grads);
        Ok(())
    }
}

impl RmsNorm<'_> {
    /// PyTorch's `eps=None`: the machine epsilon of f32, 2⁻²³.
    ///
    /// ```
    /// let rms = batchnorm::RmsNorm { eps: batchnorm::RmsNorm::DTYPE_EPS, gamma: None };
    /// assert_eq!(rms.eps, f32::EPSILON);
    /// ```
    pub const DTYPE_EPS: f32 = f32::EPSILON;

    fn rows(&self) -> RowNorm<'_> {
        RowNorm {
            center: Center::None,
            eps: self.eps,
            gamma: self.gamma,
            beta: None,
        }
    }

    /// Forward pass: `y = x·invstd·γ` per row, with `invstd = 1/√(mean(x²) + eps)`
    /// written to `invstd` (one per row).
    ///
    /// `mean(x²)` comes from one read of the row, in f64 (the mean square is the
    /// variance plus the squared mean, both exact as [`moments`](fn@crate::moments)
    /// gives them), so it neither overflows nor loses small rows.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when `rows · len` does not fit in `usize`;
    /// - [`Error::Length`] when `x` or `y` does not hold `rows · len` values, `gamma`
    ///   not `len`, or `invstd` (`"save_invstd"`) not `rows`;
    /// - [`Error::TooFewValues`] when `len` is 0 and there are rows.
    ///
    /// ```
    /// use batchnorm::{RmsNorm, Rows};
    ///
    /// let rms = RmsNorm { eps: 0.0, gamma: Some(&[2.0, 1.0]) };
    /// let (mut y, mut invstd) = ([0.0; 4], [0.0; 2]);
    /// rms.forward(&[1.0, 1.0, -2.0, 2.0], &mut y, Rows::new(2, 2), &mut invstd)?;
    /// assert_eq!(invstd, [1.0, 0.5]);
    /// assert_eq!(y, [2.0, 1.0, -2.0, 1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn forward(
        &self,
        x: &[f32],
        y: &mut [f32],
        rows: Rows,
        invstd: &mut [f32],
    ) -> Result<(), Error> {
        let norm = self.rows();
        let n = norm.check(rows, [rows.rows, invstd.len()])?;
        check_len("x", x.len(), n)?;
        check_len("y", y.len(), n)?;
        norm.forward(x, y, rows, None, invstd);
        Ok(())
    }

    /// [`forward`](Self::forward) with `y` written over `x`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward); the tensor is argument `"x"`.
    ///
    /// ```
    /// use batchnorm::{RmsNorm, Rows};
    ///
    /// let mut x = [2.0, -2.0];
    /// let mut invstd = [0.0];
    /// RmsNorm { eps: 0.0, gamma: None }.forward_in_place(&mut x, Rows::new(1, 2), &mut invstd)?;
    /// assert_eq!(x, [1.0, -1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn forward_in_place(
        &self,
        x: &mut [f32],
        rows: Rows,
        invstd: &mut [f32],
    ) -> Result<(), Error> {
        let norm = self.rows();
        let n = norm.check(rows, [rows.rows, invstd.len()])?;
        check_len("x", x.len(), n)?;
        norm.forward(&[], x, rows, None, invstd);
        Ok(())
    }

    /// Backward pass of [`forward`](Self::forward), from the `invstd` it wrote. With
    /// `x̂ = x·invstd`, `g = dy·γ` and means over the row:
    ///
    /// `dx = invstd·(g − x̂·mean(g·x̂))`, `dγ = Σ_rows dy·x̂`.
    ///
    /// `dbeta`, when asked for, receives `Σ_rows dy`: the gradient of a bias added
    /// after the norm (RMS norm itself has none). Reads as
    /// [`LayerNorm::backward`] does.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when `rows · len` does not fit in `usize`;
    /// - [`Error::Length`] when `x`, `dy` or `dx` does not hold `rows · len` values,
    ///   `gamma`, `dgamma` or `dbeta` not `len`, or `invstd` (`"save_invstd"`) not
    ///   `rows`;
    /// - [`Error::TooFewValues`] when `len` is 0 and there are rows.
    ///
    /// ```
    /// use batchnorm::{Grads, RmsNorm, Rows};
    ///
    /// let rms = RmsNorm { eps: 0.0, gamma: None };
    /// let (x, dy) = ([1.0, -1.0], [1.0, 0.0]); // invstd 1, x̂ = x
    /// let (mut dx, mut dg) = ([0.0; 2], [0.0; 2]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: None };
    /// rms.backward(&x, &dy, Rows::new(1, 2), &[1.0], grads)?;
    /// assert_eq!(dx, [0.5, 0.5]); // dy − x̂·mean(dy·x̂) = dy − x̂/2
    /// assert_eq!(dg, [1.0, 0.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        rows: Rows,
        invstd: &[f32],
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        let norm = self.rows();
        norm.check_backward(x, dy, rows, [rows.rows, invstd.len()], &grads)?;
        norm.backward(x, dy, rows, &[], invstd, grads);
        Ok(())
    }
}

impl RowNorm<'_> {
    /// Checks the parameters and the saved statistics' lengths `saved` (mean,
    /// invstd); returns the element count.
    fn check(&self, rows: Rows, saved: [usize; 2]) -> Result<usize, Error> {
        let n = rows.count()?;
        check_eps(self.eps)?;
        if let Some(g) = self.gamma {
            check_len("gamma", g.len(), rows.len)?;
        }
        if let Some(b) = self.beta {
            check_len("beta", b.len(), rows.len)?;
        }
        for (name, len) in ["save_mean", "save_invstd"].into_iter().zip(saved) {
            check_len(name, len, rows.rows)?;
        }
        if rows.rows > 0 && rows.len == 0 {
            return Err(Error::TooFewValues {
                needed: 1,
                actual: 0,
            });
        }
        Ok(n)
    }

    fn check_backward(
        &self,
        x: &[f32],
        dy: &[f32],
        rows: Rows,
        saved: [usize; 2],
        grads: &Grads<'_>,
    ) -> Result<(), Error> {
        let n = self.check(rows, saved)?;
        check_len("x", x.len(), n)?;
        check_len("dy", dy.len(), n)?;
        check_len("dx", grads.dx.len(), n)?;
        if let Some(dg) = &grads.dgamma {
            check_len("dgamma", dg.len(), rows.len)?;
        }
        if let Some(db) = &grads.dbeta {
            check_len("dbeta", db.len(), rows.len)?;
        }
        Ok(())
    }

    /// The forward pass, band of rows by band of rows: their statistics, then their
    /// output. An empty `x` is `y` itself (in place); `mean` is written for layer
    /// norm.
    fn forward(
        &self,
        x: &[f32],
        y: &mut [f32],
        rows: Rows,
        mut mean: Option<&mut [f32]>,
        invstd: &mut [f32],
    ) {
        let (gamma, beta) = (self.gamma, self.beta);
        let walk = Walk::rows(rows.rows, rows.len);
        let affine = walk.sharing(usize::from(gamma.is_some()) + usize::from(beta.is_some()));
        let bn = BatchNorm {
            eps: self.eps,
            gamma: None,
            beta: None,
        };
        for band in walk.bands(1) {
            let mut stats = [Moments::EMPTY; SMALL];
            let src = if x.is_empty() { &*y } else { x };
            band_moments::<SMALL>(
                &walk,
                band,
                src,
                stats.get_mut(..band.channels).unwrap_or(&mut []),
            );
            let spread = |s: &Moments| match self.center {
                Center::Mean => s.var(),
                // The mean square: no cancellation, both terms are ≥ 0.
                Center::None => s.var() + s.mean * s.mean,
            };
            let inv = bn.invstds::<SMALL>(band.channels, |i| stats.get(i).map_or(1.0, spread));
            // [mean, invstd, fix] of every row, `fix` the part of the mean that the
            // f32 mean misses (as in batch norm's train forward).
            let mut k = [[0.0; SMALL]; 3];
            for (i, (st, inv)) in stats.iter().zip(inv).enumerate().take(band.channels) {
                let r = band.first + i;
                let (mu, fix) = match self.center {
                    Center::Mean => {
                        let mu = st.mean as f32;
                        (mu, -(st.mean - f64::from(mu)) * inv)
                    }
                    Center::None => (0.0, 0.0),
                };
                for (k, v) in k.iter_mut().zip([mu, inv as f32, fix as f32]) {
                    put(k, i, v);
                }
                if let Some(m) = mean.as_deref_mut().and_then(|m| m.get_mut(r)) {
                    *m = mu;
                }
                if let Some(v) = invstd.get_mut(r) {
                    *v = inv as f32;
                }
            }
            let k = [&k[0][..], &k[1][..], &k[2][..]];
            match (gamma, beta) {
                (None, None) => engine::map(Centered, &walk, band, [x], y, k),
                (Some(g), None) => engine::map(RowScale, &affine, band, [x, g], y, k),
                (None, Some(b)) => engine::map(RowShift, &affine, band, [x, b], y, k),
                (Some(g), Some(b)) => engine::map(RowAffine, &affine, band, [x, g, b], y, k),
            }
        }
    }

    /// The backward pass, band of rows by band of rows: the row sums, then `dx`,
    /// which also adds each position's `Σdy` and `Σdy·x̂` into column sums that
    /// are added to `dβ` and `dγ` every block of up to [`BLOCK`] rows. An empty
    /// `mean` is 0 (RMS norm).
    fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        rows: Rows,
        mean: &[f32],
        invstd: &[f32],
        grads: Grads<'_>,
    ) {
        if rows.len <= SMALL_COLS {
            self.backward_in::<SMALL_COLS>(x, dy, rows, mean, invstd, grads)
        } else {
            self.backward_in::<COLS>(x, dy, rows, mean, invstd, grads)
        }
    }

    /// [`backward`](Self::backward) with column sums of `W` positions. Rows of up
    /// to `W` values go in bands that stay in L1 from their sums to their `dx`,
    /// and the column sums gather whole blocks; longer rows in bands that stay in
    /// L2, each band's columns `W` at a time, added per band.
    fn backward_in<const W: usize>(
        &self,
        x: &[f32],
        dy: &[f32],
        rows: Rows,
        mean: &[f32],
        invstd: &[f32],
        grads: Grads<'_>,
    ) {
        let Grads {
            dx,
            mut dgamma,
            mut dbeta,
        } = grads;
        for d in [&mut dgamma, &mut dbeta].into_iter().flatten() {
            d.fill(0.0);
        }
        let walk = Walk::rows(rows.rows, rows.len).sharing(usize::from(self.gamma.is_some()));
        let one = rows.len <= W;
        let bytes = if one { L1_BYTES } else { L2_BYTES };
        let zeros = [0.0; SMALL];
        let m = rows.len as f64;
        let mut cols = [[0.0f32; W]; 2];
        let mut held = 0;
        for band in walk.bands_within(2, bytes) {
            let mu = if mean.is_empty() {
                &zeros[..]
            } else {
                band.of(mean)
            };
            let inv = band.of(invstd);
            let mut sums = [[0.0; 2]; SMALL];
            let steps = 0..walk.steps();
            match self.gamma {
                None => engine::reduce(
                    RowGradSums,
                    &walk,
                    band,
                    [x, dy],
                    &mut [],
                    [mu, inv],
                    steps,
                    &mut sums,
                ),
                Some(g) => {
                    let ins = [x, dy, g];
                    engine::reduce(
                        RowGradSums,
                        &walk,
                        band,
                        ins,
                        &mut [],
                        [mu, inv],
                        steps,
                        &mut sums,
                    )
                }
            }
            // dx = (g·k + (x − mean)·a + b)·p with k = invstd,
            // a = −invstd³·mean(g·(x − mean)) and b = −invstd·mean(g) (0 for RMS
            // norm), scaled by `p` as batch norm's.
            let mut k = [[0.0; SMALL]; 6];
            for (i, [sum_g, sum_gd]) in sums.iter().enumerate().take(band.channels) {
                let inv = f64::from(k_at(invstd, band, i));
                let a = -inv * inv * inv * sum_gd / m;
                let b = match self.center {
                    Center::Mean => -inv * sum_g / m,
                    Center::None => 0.0,
                };
                let p = out_of_range(inv.abs().max(a.abs()).max(b.abs()));
                let mu = f64::from(mu.get(i).copied().unwrap_or(0.0));
                for (k, v) in k.iter_mut().zip([mu, inv, inv / p, a / p, b / p, p]) {
                    put(k, i, v as f32);
                }
            }
            let k = k.each_ref().map(|k| &k[..]);
            if one && held + band.channels > BLOCK {
                add_columns(&mut cols, 0..rows.len, &mut dgamma, &mut dbeta);
                held = 0;
            }
            for start in (0..rows.len).step_by(W) {
                let at = start..(start + W).min(rows.len);
                let [sum_dy, sum_dyx] = cols
                    .each_mut()
                    .map(|c| c.get_mut(..at.len()).unwrap_or(&mut []));
                let sums = [sum_dy, sum_dyx];
                match self.gamma {
                    None => {
                        engine::map_sum(RowGradInput, &walk, band, [x, dy], dx, k, at.clone(), sums)
                    }
                    Some(g) => {
                        let ins = [x, dy, g];
                        engine::map_sum(RowGradInput, &walk, band, ins, dx, k, at.clone(), sums)
                    }
                }
                if !one {
                    add_columns(&mut cols, at, &mut dgamma, &mut dbeta);
                }
            }
            held += band.channels;
        }
        if one {
            add_columns(&mut cols, 0..rows.len, &mut dgamma, &mut dbeta);
        }
    }
}

/// Adds the column sums `cols` = `[Σdy, Σdy·x̂]` of positions `at` (from index 0) to
/// `dbeta` and `dgamma`, and zeroes them.
fn add_columns<const W: usize>(
    cols: &mut [[f32; W]; 2],
    at: Range<usize>,
    dgamma: &mut Option<&mut [f32]>,
    dbeta: &mut Option<&mut [f32]>,
) {
    let [sum_dy, sum_dyx] = cols;
    for (p, (s_dy, s_dyx)) in at.zip(sum_dy.iter_mut().zip(sum_dyx.iter_mut())) {
        add(dbeta, p, f64::from(*s_dy));
        add(dgamma, p, f64::from(*s_dyx));
        (*s_dy, *s_dyx) = (0.0, 0.0);
    }
}

/// The value of row `i` of `band` in a per-row slice (0 past its end).
fn k_at(xs: &[f32], band: Band, i: usize) -> f32 {
    xs.get(band.first + i).copied().unwrap_or(0.0)
}
