//! Every kernel on all cores (feature `rayon`, which links `std`): [`moments`],
//! [`train`], [`eval`], [`backward`] and [`backward_eval`], with the meaning,
//! arguments and errors of their one-core counterparts, run on the current rayon
//! thread pool (the global one, or the one a caller [`install`](rayon::ThreadPool::install)s).
//!
//! # Bit-identical whatever the number of threads
//! The tensor is cut into **tiles** by its shape alone, never by the number of
//! threads or by which thread is free: each tile is a contiguous piece of the slice
//! that is itself a tensor, about [`TILE`] values.
//!
//! | layout | a sample (`C·S` values) | tiles |
//! |---|---|---|
//! | channels-first, `S > 1` | at most a tile | runs of whole samples (split by batch) |
//! | channels-first, `S > 1` | more than a tile | within each sample, groups of channels (split by channel); a run longer than a tile in pieces |
//! | channels-last, `[N, C]` rows | — | runs of whole rows (`N·S` rows of `C` values); a row longer than a tile in groups of channels |
//!
//! Tiles run in any order on any thread, each by the one-core code (the distributed
//! building blocks, [`distributed`](crate::distributed)): moments or backward sums per
//! tile, merged per channel **in tile order** (a fixed left fold, in f64), then every
//! tile normalized with the merged statistics. The saved and running statistics and
//! `dγ`, `dβ` are written once, from the merged values. The same input therefore gives
//! the same bits on 1, 2 or 64 threads; a tensor of one tile takes the one-core path
//! and gives the bits of [`BatchNorm::train`] and the others. Against the one-core
//! functions on a tensor of several tiles, results differ by rounding only (another
//! grouping of the same sums), within the accuracy of either.
//!
//! # Scaling
//! Work per tile is ~`TILE` values (≈ 256 KiB of f32), so a tensor has
//! `len / TILE` tiles to spread: a ResNet-50 activation of batch 32
//! (`32×256×56×56` = 25.7 M values) has ~390, enough for 64 cores; the merge is
//! `tiles × channels` moments, serial, small against the tensor. A tensor of fewer
//! tiles than cores leaves cores idle: smaller tiles would cost more merge and
//! per-tile setup than such a tensor takes to stream.
//!
//! ```
//! use batchnorm::{parallel, BatchNorm, Shape};
//!
//! let bn = BatchNorm { eps: 1e-5, gamma: None, beta: None };
//! let shape = Shape::channels_first(4, 3, 100_000); // 12 tiles or so
//! let x: Vec<f32> = (0..4 * 3 * 100_000).map(|i| (i % 7) as f32).collect();
//! let (mut y, mut mean, mut invstd) = (vec![0.0; x.len()], [0.0; 3], [0.0; 3]);
//! let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
//! pool(2).install(|| parallel::train(&bn, &x, &mut y, shape, &mut mean, &mut invstd, None))?;
//! let mut y1 = vec![0.0; x.len()];
//! pool(1).install(|| parallel::train(&bn, &x, &mut y1, shape, &mut mean, &mut invstd, None))?;
//! assert_eq!(y, y1); // the same bits on 1 and 2 threads
//! # Ok::<(), batchnorm::Error>(())
//! ```

extern crate std;

use std::vec;
use std::vec::Vec;

use rayon::prelude::*;

use crate::backward::{EvalSums, Grads, Through};
use crate::distributed::{sums_kernel, BackwardSums};
use crate::error::{check_len, Error};
use crate::forward::{BatchNorm, Running, SAVED};
use crate::kernels::{Affine, Centered};
use crate::moments::Moments;
use crate::shape::{Layout, Shape};

/// Values in a tile (at most; at least one run or row, or this many of a longer one).
pub const TILE: usize = 1 << 16;

/// A contiguous piece of the tensor that is a tensor itself: `shape` at `at`, whose
/// channels are the tensor's `first ..`.
#[derive(Clone, Copy, Debug)]
struct Tile {
    at: usize,
    shape: Shape,
    first: usize,
}

impl Tile {
    fn len(&self) -> usize {
        self.shape.batch * self.shape.channels * self.shape.spatial
    }

    fn channels(&self) -> core::ops::Range<usize> {
        self.first..self.first + self.shape.channels
    }

    /// Its part of `x`.
    fn of<'a>(&self, x: &'a [f32]) -> &'a [f32] {
        &x[self.at..self.at + self.len()]
    }

    /// The layer restricted to the tile's channels.
    fn bn<'a>(&self, bn: &BatchNorm<'a>) -> BatchNorm<'a> {
        BatchNorm {
            eps: bn.eps,
            gamma: bn.gamma.map(|g| &g[self.channels()]),
            beta: bn.beta.map(|b| &b[self.channels()]),
        }
    }
}

/// The tiles of a tensor of `shape` (whose length was checked), in memory order,
/// covering it: by the shape alone.
fn tiles(shape: Shape) -> Vec<Tile> {
    let (n, c, s) = (shape.batch, shape.channels, shape.spatial);
    let mut out = Vec::new();
    if n * c * s == 0 {
        return out;
    }
    let tile = |at, shape, first| Tile { at, shape, first };
    if shape.walk() == Layout::ChannelsFirst {
        let sample = c * s;
        if sample <= TILE {
            let per = TILE / sample;
            for n0 in (0..n).step_by(per) {
                let k = per.min(n - n0);
                out.push(tile(n0 * sample, Shape::channels_first(k, c, s), 0));
            }
        } else if s <= TILE {
            let group = TILE / s;
            for n0 in 0..n {
                for c0 in (0..c).step_by(group) {
                    let g = group.min(c - c0);
                    let at = (n0 * c + c0) * s;
                    out.push(tile(at, Shape::channels_first(1, g, s), c0));
                }
            }
        } else {
            for run in 0..n * c {
                for s0 in (0..s).step_by(TILE) {
                    let len = TILE.min(s - s0);
                    let at = run * s + s0;
                    out.push(tile(at, Shape::channels_first(1, 1, len), run % c));
                }
            }
        }
    } else {
        // Channels-last (or S = 1): N·S rows of C values.
        let rows = n * s;
        if c <= TILE {
            let per = TILE / c;
            for r0 in (0..rows).step_by(per) {
                out.push(tile(r0 * c, Shape::rows(per.min(rows - r0), c), 0));
            }
        } else {
            for r0 in 0..rows {
                for c0 in (0..c).step_by(TILE) {
                    let g = TILE.min(c - c0);
                    out.push(tile(r0 * c + c0, Shape::rows(1, g), c0));
                }
            }
        }
    }
    out
}

/// `out` cut into the tiles' pieces, in tile order.
fn pieces<'a>(tiles: &[Tile], mut out: &'a mut [f32]) -> Vec<&'a mut [f32]> {
    let mut v = Vec::with_capacity(tiles.len());
    for t in tiles {
        let (piece, rest) = core::mem::take(&mut out).split_at_mut(t.len());
        v.push(piece);
        out = rest;
    }
    v
}

/// Per-channel values of every tile, merged per channel in tile order.
fn merge<T: Copy>(tiles: &[Tile], parts: Vec<Vec<T>>, out: &mut [T], f: impl Fn(T, T) -> T) {
    for (t, part) in tiles.iter().zip(parts) {
        for (o, p) in out[t.channels()].iter_mut().zip(part) {
            *o = f(*o, p);
        }
    }
}

/// The merged moments of every channel, unchecked.
fn merged_moments(x: &[f32], tiles: &[Tile], channels: usize) -> Vec<Moments> {
    let parts: Vec<Vec<Moments>> = tiles
        .par_iter()
        .map(|t| {
            let mut m = vec![Moments::EMPTY; t.shape.channels];
            // The tile's length is right by construction.
            let _ = crate::moments(t.of(x), t.shape, &mut m);
            m
        })
        .collect();
    let mut out = vec![Moments::EMPTY; channels];
    merge(tiles, parts, &mut out, Moments::merge);
    out
}

/// [`moments`](fn@crate::moments) on all cores.
///
/// # Errors
/// As [`moments`](fn@crate::moments); nothing is written on error.
///
/// ```
/// use batchnorm::{parallel, Moments, Shape};
///
/// let x = vec![1.0; 3 * 200_000];
/// let mut out = [Moments::EMPTY; 3];
/// parallel::moments(&x, Shape::channels_last(1, 3, 200_000), &mut out)?;
/// assert_eq!((out[2].count, out[2].mean, out[2].var()), (200_000, 1.0, 0.0));
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn moments(x: &[f32], shape: Shape, out: &mut [Moments]) -> Result<(), Error> {
    check_len("x", x.len(), shape.len()?)?;
    check_len("out", out.len(), shape.channels)?;
    let tiles = tiles(shape);
    if tiles.len() <= 1 {
        return crate::moments(x, shape, out);
    }
    out.copy_from_slice(&merged_moments(x, &tiles, shape.channels));
    Ok(())
}

/// [`BatchNorm::train`] on all cores.
///
/// # Errors
/// As [`BatchNorm::train`]; nothing is written on error.
///
/// ```
/// use batchnorm::{parallel, BatchNorm, Shape};
///
/// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
/// let x: Vec<f32> = (0..300_000).map(|i| (i % 2) as f32).collect(); // mean ½, var ¼
/// let (mut y, mut mean, mut invstd) = (vec![0.0; x.len()], [0.0], [0.0]);
/// parallel::train(&bn, &x, &mut y, Shape::rows(300_000, 1), &mut mean, &mut invstd, None)?;
/// assert_eq!((mean, invstd, &y[..2]), ([0.5], [2.0], &[-1.0, 1.0][..]));
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn train(
    bn: &BatchNorm,
    x: &[f32],
    y: &mut [f32],
    shape: Shape,
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
    running: Option<Running<'_>>,
) -> Result<(), Error> {
    let len = bn.check_train(shape, SAVED, [save_mean, save_invstd], &running)?;
    check_len("x", x.len(), len)?;
    check_len("y", y.len(), len)?;
    let tiles = tiles(shape);
    if tiles.len() <= 1 {
        return bn.train(x, y, shape, save_mean, save_invstd, running);
    }
    let global = merged_moments(x, &tiles, shape.channels);
    // The saved and running statistics, once, by the train kernel over no values.
    let none = Shape::rows(0, shape.channels);
    let saved = [save_mean, save_invstd];
    bn.train_kernel_with(
        Centered,
        [&[]],
        &mut [],
        none,
        saved,
        running,
        None,
        Some(&global),
    );
    tiles.par_iter().zip(pieces(&tiles, y)).for_each(|(t, y)| {
        let cs = t.shape.channels;
        let (mut mean, mut invstd) = (vec![0.0; cs], vec![0.0; cs]);
        let saved = [&mut mean[..], &mut invstd[..]];
        let global = Some(&global[t.channels()]);
        let ins = [t.of(x)];
        t.bn(bn)
            .train_kernel_with(Centered, ins, y, t.shape, saved, None, None, global);
    });
    Ok(())
}

/// [`BatchNorm::eval`] on all cores.
///
/// # Errors
/// As [`BatchNorm::eval`]; nothing is written on error.
///
/// ```
/// use batchnorm::{parallel, BatchNorm, Shape};
///
/// let bn = BatchNorm { eps: 0.0, gamma: None, beta: Some(&[1.0]) };
/// let x = vec![3.0; 200_000];
/// let mut y = vec![0.0; x.len()];
/// parallel::eval(&bn, &x, &mut y, Shape::rows(200_000, 1), &[1.0], &[4.0])?;
/// assert!(y.iter().all(|&v| v == 2.0)); // (3 − 1)/2 + 1
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn eval(
    bn: &BatchNorm,
    x: &[f32],
    y: &mut [f32],
    shape: Shape,
    running_mean: &[f32],
    running_var: &[f32],
) -> Result<(), Error> {
    let len = bn.check_eval(shape, running_mean, running_var)?;
    check_len("x", x.len(), len)?;
    check_len("y", y.len(), len)?;
    let tiles = tiles(shape);
    tiles.par_iter().zip(pieces(&tiles, y)).for_each(|(t, y)| {
        let (rm, rv) = (&running_mean[t.channels()], &running_var[t.channels()]);
        t.bn(bn).eval_kernel(Affine, [t.of(x)], y, t.shape, rm, rv);
    });
    Ok(())
}

/// [`BatchNorm::backward`] on all cores.
///
/// # Errors
/// As [`BatchNorm::backward`]; nothing is written on error.
///
/// ```
/// use batchnorm::{parallel, BatchNorm, Grads, Shape};
///
/// let bn = BatchNorm { eps: 0.0, gamma: None, beta: None };
/// let (x, dy) = (vec![2.0; 200_000], vec![1.0; 200_000]);
/// let (mut dx, mut db) = (vec![9.0; 200_000], [0.0]);
/// let grads = Grads { dx: &mut dx, dgamma: None, dbeta: Some(&mut db) };
/// parallel::backward(&bn, &dy, &x, Shape::rows(200_000, 1), &[2.0], &[1.0], grads)?;
/// assert_eq!(db, [200_000.0]);
/// assert!(dx.iter().all(|&v| v == 0.0)); // a constant gradient does not reach x
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn backward(
    bn: &BatchNorm,
    dy: &[f32],
    x: &[f32],
    shape: Shape,
    save_mean: &[f32],
    save_invstd: &[f32],
    grads: Grads<'_>,
) -> Result<(), Error> {
    let saved = [save_mean, save_invstd];
    bn.check_backward(dy, x, shape, SAVED, saved, &grads)?;
    let tiles = tiles(shape);
    if tiles.len() <= 1 {
        return bn.backward(dy, x, shape, save_mean, save_invstd, grads);
    }
    let parts: Vec<Vec<BackwardSums>> = tiles
        .par_iter()
        .map(|t| {
            let mut s = vec![BackwardSums::ZERO; t.shape.channels];
            sums_kernel(t.of(dy), t.of(x), t.shape, &save_mean[t.channels()], &mut s);
            s
        })
        .collect();
    let mut sums = vec![BackwardSums::ZERO; shape.channels];
    merge(&tiles, parts, &mut sums, BackwardSums::merge);
    let count = shape.batch * shape.spatial;
    let Grads { dx, dgamma, dbeta } = grads;
    // dγ and dβ, once, by the backward kernel over no values.
    let none = Shape::rows(0, shape.channels);
    let dgb = Grads {
        dx: &mut [],
        dgamma,
        dbeta,
    };
    bn.backward_sums_kernel(&[], &[], none, saved, dgb, &sums, count as u64);
    tiles
        .par_iter()
        .zip(pieces(&tiles, dx))
        .for_each(|(t, dx)| {
            let ch = t.channels();
            let saved = [&save_mean[ch.clone()], &save_invstd[ch.clone()]];
            let grads = Grads {
                dx,
                dgamma: None,
                dbeta: None,
            };
            let (dy, x) = (t.of(dy), t.of(x));
            t.bn(bn)
                .backward_sums_kernel(dy, x, t.shape, saved, grads, &sums[ch], count as u64);
        });
    Ok(())
}

/// [`BatchNorm::backward_eval`] on all cores.
///
/// # Errors
/// As [`BatchNorm::backward_eval`]; nothing is written on error.
///
/// ```
/// use batchnorm::{parallel, BatchNorm, Grads, Shape};
///
/// let bn = BatchNorm { eps: 0.0, gamma: Some(&[3.0]), beta: None };
/// let (x, dy) = (vec![5.0; 200_000], vec![2.0; 200_000]);
/// let (mut dx, mut dg) = (vec![0.0; 200_000], [0.0]);
/// let grads = Grads { dx: &mut dx, dgamma: Some(&mut dg), dbeta: None };
/// parallel::backward_eval(&bn, &dy, &x, Shape::rows(200_000, 1), &[3.0], &[4.0], grads)?;
/// assert!(dx.iter().all(|&v| v == 3.0)); // dy·3/2
/// assert_eq!(dg, [200_000.0 * 2.0]);     // Σ dy·(5 − 3)/2
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn backward_eval(
    bn: &BatchNorm,
    dy: &[f32],
    x: &[f32],
    shape: Shape,
    running_mean: &[f32],
    running_var: &[f32],
    grads: Grads<'_>,
) -> Result<(), Error> {
    let stats = [running_mean, running_var];
    bn.check_backward(dy, x, shape, ["running_mean", "running_var"], stats, &grads)?;
    let tiles = tiles(shape);
    if tiles.len() <= 1 {
        return bn.backward_eval(dy, x, shape, running_mean, running_var, grads);
    }
    let Grads { dx, dgamma, dbeta } = grads;
    let wanted = dgamma.is_some() || dbeta.is_some();
    let parts: Vec<Vec<BackwardSums>> = tiles
        .par_iter()
        .zip(pieces(&tiles, dx))
        .map(|(t, dx)| {
            let ch = t.channels();
            let stats = [&running_mean[ch.clone()], &running_var[ch]];
            let grads = Grads {
                dx,
                dgamma: None,
                dbeta: None,
            };
            let mut s = vec![BackwardSums::ZERO; if wanted { t.shape.channels } else { 0 }];
            let mode = if wanted {
                EvalSums::Into(&mut s)
            } else {
                EvalSums::Reduce
            };
            let (dy, x) = (t.of(dy), t.of(x));
            t.bn(bn)
                .backward_eval_kernel_with(Through::Bn, dy, x, t.shape, stats, grads, mode);
            s
        })
        .collect();
    if wanted {
        let mut sums = vec![BackwardSums::ZERO; shape.channels];
        merge(&tiles, parts, &mut sums, BackwardSums::merge);
        let none = Shape::rows(0, shape.channels);
        let grads = Grads {
            dx: &mut [],
            dgamma,
            dbeta,
        };
        let given = EvalSums::Given(&sums);
        bn.backward_eval_kernel_with(Through::Bn, &[], &[], none, stats, grads, given);
    }
    Ok(())
}
