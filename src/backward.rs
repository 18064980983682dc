//! The backward pass, for train and for eval mode.

use crate::error::{check_len, Error};
use crate::forward::{Affine, BatchNorm};
use crate::shape::Shape;
use crate::walk::{self, Plan, BAND, MAX_LANES};

/// Where the backward pass writes: the input gradient `dx` (same shape as `x`), and
/// optionally the per-channel gradients of γ and β.
///
/// `dgamma` and `dbeta` can be asked for whether or not the layer has γ and β
/// (PyTorch's `output_mask`); leave them `None` to skip them.
///
/// ```
/// use batchnorm::Grads;
///
/// let (mut dx, mut dgamma) = ([0.0f32; 12], [0.0f32; 3]);
/// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dgamma), dbeta: None };
/// # let _ = grads;
/// ```
#[derive(Debug)]
pub struct Grads<'a> {
    /// ∂L/∂x, one per element.
    pub dx: &'a mut [f32],
    /// ∂L/∂γ, one per channel, if wanted.
    pub dgamma: Option<&'a mut [f32]>,
    /// ∂L/∂β, one per channel, if wanted.
    pub dbeta: Option<&'a mut [f32]>,
}

impl BatchNorm<'_> {
    /// Backward pass of the train forward (PyTorch's `native_batch_norm_backward`
    /// with `train=True`), from the `save_mean` and `save_invstd` it wrote. With
    /// `x̂ = (x − save_mean)·save_invstd` and `m = batch·spatial`:
    ///
    /// `dβ = Σdy`, `dγ = Σdy·x̂`, `dx = γ·invstd·(dy − dβ/m − x̂·dγ/m)`.
    ///
    /// Two reads of `dy` and `x`: one for the two sums, one for `dx`; in
    /// channels-first layout both run back to back per channel, while it is in cache.
    /// The sums accumulate in f32 vectors merged in f64 every few thousand values.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite (it is not used
    ///   here, but a layer with such an `eps` is invalid);
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `dy`, `x` or `dx` does not hold
    ///   `batch·channels·spatial` values, or `save_mean`, `save_invstd`, `gamma`,
    ///   `beta`, `dgamma` or `dbeta` not `channels`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Grads, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
    /// let shape = Shape::rows(2, 1);
    /// let x = [1.0, 3.0];                  // mean 2, var 1, x̂ = [-1, 1]
    /// let dy = [1.0, 0.0];
    /// let (mut dx, mut dg, mut db) = ([0.0; 2], [0.0], [0.0]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: Some(&mut db) };
    /// bn.backward(&dy, &x, shape, &[2.0], &[1.0], grads)?;
    /// assert_eq!((db, dg), ([1.0], [-1.0]));
    /// assert_eq!(dx, [0.0, 0.0]);          // 1 − 1/2 − (−1)(−1)/2 and 0 − 1/2 + 1/2
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn backward(
        &self,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        save_mean: &[f32],
        save_invstd: &[f32],
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        self.check_backward(
            dy,
            x,
            shape,
            ["save_mean", "save_invstd"],
            [save_mean, save_invstd],
            &grads,
        )?;
        let Grads {
            dx,
            mut dgamma,
            mut dbeta,
        } = grads;
        let plan = Plan::new(shape);
        let m = (shape.batch * shape.spatial) as f64;
        // Channels-first: a band is one channel, so the sums and dx run back to back
        // while the channel is cached.
        // Per group of a band: dx = dy·k + (x − mu)·a + b. Out of the loop, as only the
        // band's channels are read: channels-first bands are one channel.
        let [mut k, mut mu, mut a, mut b, mut p] = [[[0.0; MAX_LANES]; BAND]; 5];
        let mut sums = [[[0.0; MAX_LANES]; 2]; BAND];
        for band in plan.bands(2) {
            for (&g, mu) in band.groups().iter().zip(&mut mu) {
                mu[..g.channels].copy_from_slice(&save_mean[g.first..][..g.channels]);
            }
            walk::grad_sums(dy, x, &plan, &band, &mu, &mut sums);
            for (j, (&g, [sum_dy, sum_dyx])) in band.groups().iter().zip(&sums).enumerate() {
                let Affine { gamma, .. } = self.affine(g.first, g.channels);
                for i in g.offsets() {
                    let c = g.first + i;
                    let invstd = f64::from(save_invstd[c]);
                    let (db, dg) = (sum_dy[i], sum_dyx[i] * invstd);
                    write(&mut dbeta, c, db);
                    write(&mut dgamma, c, dg);
                    // dx = dy·k + (x − mu)·a + b, with k = γ·invstd, a = −k·invstd·dγ/m
                    // and b = −k·dβ/m, each of which may overflow (or underflow) f32
                    // where dx does not: when the largest is far out, a power of two
                    // comes out of all three, dx = (…)·p, which brings them back and
                    // costs no rounding.
                    let kk = gamma[i] * invstd;
                    let (aa, bb) = (-kk * invstd * dg / m, -kk * db / m);
                    let pp = out_of_range(kk.abs().max(aa.abs()).max(bb.abs()));
                    k[j][i] = (kk / pp) as f32;
                    a[j][i] = (aa / pp) as f32;
                    b[j][i] = (bb / pp) as f32;
                    p[j][i] = pp as f32;
                }
            }
            walk::grad_input(dy, x, dx, &plan, &band, [&k, &mu, &a, &b, &p]);
        }
        Ok(())
    }

    /// Backward pass of the eval forward, where the statistics are constants (PyTorch's
    /// `native_batch_norm_backward` with `train=False`). With
    /// `x̂ = (x − running_mean)/√(running_var + eps)`:
    ///
    /// `dx = dy·γ/√(running_var + eps)`, `dγ = Σdy·x̂`, `dβ = Σdy`.
    ///
    /// `x` is read only when `dgamma` or `dbeta` is asked for.
    ///
    /// # Errors
    /// Checked before anything is written:
    /// - [`Error::Parameter`] when `eps` is negative, NaN or infinite;
    /// - [`Error::Overflow`] when the shape's element count does not fit in `usize`;
    /// - [`Error::Length`] when `dy`, `x` or `dx` does not hold
    ///   `batch·channels·spatial` values, or `running_mean`, `running_var`, `gamma`,
    ///   `beta`, `dgamma` or `dbeta` not `channels`.
    ///
    /// ```
    /// use batchnorm::{BatchNorm, Grads, Shape};
    ///
    /// let bn = BatchNorm { eps: 0.0, gamma: Some(&[3.0]), beta: None };
    /// let (x, dy) = ([1.0, 5.0], [1.0, 2.0]);
    /// let (mut dx, mut dg) = ([0.0; 2], [0.0]);
    /// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: None };
    /// bn.backward_eval(&dy, &x, Shape::rows(2, 1), &[3.0], &[4.0], grads)?;
    /// assert_eq!(dx, [1.5, 3.0]);          // dy·3/2
    /// assert_eq!(dg, [1.0 * -1.0 + 2.0 * 1.0]);
    /// # Ok::<(), batchnorm::Error>(())
    /// ```
    pub fn backward_eval(
        &self,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        running_mean: &[f32],
        running_var: &[f32],
        grads: Grads<'_>,
    ) -> Result<(), Error> {
        self.check_backward(
            dy,
            x,
            shape,
            ["running_mean", "running_var"],
            [running_mean, running_var],
            &grads,
        )?;
        let Grads {
            dx,
            mut dgamma,
            mut dbeta,
        } = grads;
        let plan = Plan::new(shape);
        let invstd = |c: usize| self.invstd(f64::from(running_var[c]));
        if dgamma.is_some() || dbeta.is_some() {
            let mut mu = [[0.0; MAX_LANES]; BAND];
            let mut sums = [[[0.0; MAX_LANES]; 2]; BAND];
            for band in plan.bands(0) {
                for (&g, mu) in band.groups().iter().zip(&mut mu) {
                    mu[..g.channels].copy_from_slice(&running_mean[g.first..][..g.channels]);
                }
                walk::grad_sums(dy, x, &plan, &band, &mu, &mut sums);
                for (&g, [sum_dy, sum_dyx]) in band.groups().iter().zip(&sums) {
                    for i in g.offsets() {
                        let c = g.first + i;
                        write(&mut dbeta, c, sum_dy[i]);
                        write(&mut dgamma, c, sum_dyx[i] * invstd(c));
                    }
                }
            }
        }
        // A pass of its own, over the groups of an elementwise map (memory order).
        let mut k = [[0.0; MAX_LANES]; BAND];
        for band in plan.map_bands() {
            for (&g, k) in band.groups().iter().zip(&mut k) {
                let Affine { gamma, .. } = self.affine(g.first, g.channels);
                for i in g.offsets() {
                    k[i] = (gamma[i] * invstd(g.first + i)) as f32;
                }
            }
            // dx = dy·k + (−0): adding −0 leaves every value, −0 included, unchanged.
            walk::affine(Some(dy), dx, &plan, &band, &k, &[[-0.0; MAX_LANES]; BAND]);
        }
        Ok(())
    }

    fn check_backward(
        &self,
        dy: &[f32],
        x: &[f32],
        shape: Shape,
        stat_names: [&'static str; 2],
        stats: [&[f32]; 2],
        grads: &Grads<'_>,
    ) -> Result<(), Error> {
        let len = shape.len()?;
        self.check(shape.channels)?;
        for (name, stat) in stat_names.into_iter().zip(stats) {
            check_len(name, stat.len(), shape.channels)?;
        }
        check_len("dy", dy.len(), len)?;
        check_len("x", x.len(), len)?;
        check_len("dx", grads.dx.len(), len)?;
        if let Some(dg) = &grads.dgamma {
            check_len("dgamma", dg.len(), shape.channels)?;
        }
        if let Some(db) = &grads.dbeta {
            check_len("dbeta", db.len(), shape.channels)?;
        }
        Ok(())
    }
}

/// 1 when `v` (> 0) lies within 2^±64, else the power of two (within f32's normal
/// range) that brings it to about 2^±64: the same scaling for all of a channel's
/// constants keeps the largest in range without pushing the smaller ones out.
fn out_of_range(v: f64) -> f64 {
    const LIMIT: i32 = 64;
    let e = libm::frexp(v).1;
    if !v.is_finite() || v == 0.0 || (-LIMIT..=LIMIT).contains(&e) {
        return 1.0;
    }
    libm::ldexp(1.0, (e - LIMIT * e.signum()).clamp(-126, 127))
}

/// Stores `v` at `out[c]` when `out` was asked for.
fn write(out: &mut Option<&mut [f32]>, c: usize, v: f64) {
    if let Some(out) = out {
        out[c] = v as f32;
    }
}
