//! Every kernel on all cores (feature `rayon`, which links `std`): [`moments`],
//! [`train`], [`eval`], [`backward`] and [`backward_eval`], with the meaning,
//! arguments and errors of their one-core counterparts, run on the current rayon
//! thread pool (the global one, or the one a caller [`install`](rayon::ThreadPool::install)s).
//!
//! # Bit-identical whatever the number of threads
//! The work is cut by the tensor's shape alone, never by the number of threads or by
//! which thread is free, into pieces that are contiguous tensors themselves:
//!
//! | tensor | train, backward | moments, eval, backward_eval, and train/backward otherwise |
//! |---|---|---|
//! | channels-first, `S > 1`, at least 16 groups of [`GROUP`] values | **by channel**: groups of whole channels across the batch, each a job of its own (reduction, then elementwise pass, while the group is in L2) | — |
//! | channels-first, `S > 1` | tiles of ≈ [`TILE`] values: runs of whole samples (by batch); within a sample larger than a tile, groups of channels; a run longer than a tile in pieces | same |
//! | channels-last, `[N, C]` rows | tiles of whole rows (by batch rows); a row longer than a tile in groups of channels | same |
//!
//! Each piece runs the one-core code (the distributed building blocks,
//! [`distributed`](crate::distributed)): moments or backward sums per piece, merged per
//! channel **in a fixed order** (tile order, or sample order within a channel group; a
//! left fold in f64), then every piece normalized with the merged statistics. The saved
//! and running statistics and `dγ`, `dβ` are written once per channel, from the merged
//! values. The same input therefore gives the same bits on 1, 2 or 64 threads; a tensor
//! of one tile takes the one-core path and gives the bits of [`BatchNorm::train`] and
//! the others. Against the one-core functions on a larger tensor, results differ by
//! rounding only (another grouping of the same sums), within the accuracy of either.
//!
//! # Scaling
//! A tensor has `len / TILE` tiles, or `C / channels per group` groups, to spread: a
//! ResNet-50 activation of batch 32 (`32×256×56×56`, 25.7 M values) has 256 channel
//! groups for train and backward and 416 tiles for the others, enough for 64 cores.
//! A tensor of fewer pieces than cores leaves cores idle (a `[256, 1024]` matrix has 4
//! tiles): smaller tiles would cost more merging and per-tile setup than such a tensor
//! takes to stream. Tiled train and backward read the tensor twice (statistics over all
//! tiles, then the elementwise pass); the channel groups keep the one-core kernels' cache
//! reuse between the two passes. The merge is serial and small (`pieces × C` values).
//!
//! ```
//! use batchnorm::{parallel, BatchNorm, SavedMut, Shape};
//!
//! let bn = BatchNorm { eps: 1e-5, gamma: None, beta: None };
//! let shape = Shape::channels_first(4, 3, 100_000); // 24 tiles: 12 runs in 2 pieces
//! let x: Vec<f32> = (0..4 * 3 * 100_000).map(|i| (i % 7) as f32).collect();
//! let (mut y, mut mean, mut invstd) = (vec![0.0; x.len()], [0.0; 3], [0.0; 3]);
//! let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
//! pool(2).install(|| {
//!     let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
//!     parallel::train(&bn, &x, &mut y, shape, saved, None)
//! })?;
//! let mut y1 = vec![0.0; x.len()];
//! pool(1).install(|| {
//!     let saved = SavedMut { mean: &mut mean, invstd: &mut invstd };
//!     parallel::train(&bn, &x, &mut y1, shape, saved, None)
//! })?;
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
use crate::forward::{BatchNorm, RUNNING, SAVED};
use crate::kernels::{Affine, Centered};
use crate::moments::Moments;
use crate::running::{Running, RunningStats};
use crate::saved::{Saved, SavedMut};
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

/// Values per channel group of the channel-parallel walk (512 KiB of f32 per tensor):
/// a group's reduction and its elementwise pass then run back to back while the group
/// is in a core's L2, as the one-core kernels do with a band.
pub const GROUP: usize = 1 << 17;

/// Fewest groups for the channel-parallel walk: with fewer, tiles spread the work better.
const MIN_GROUPS: usize = 16;

/// Channels per group when a channels-first tensor (`S > 1`) is walked channel-parallel:
/// whole channels across the batch, about [`GROUP`] values a group, when that makes at
/// least [`MIN_GROUPS`] groups; `None` for tiles. By the shape alone.
fn channel_groups(shape: Shape) -> Option<usize> {
    if shape.walk() != Layout::ChannelsFirst || shape.channels == 0 {
        return None;
    }
    let per_channel = (shape.batch * shape.spatial).max(1);
    let g = (GROUP / per_channel).clamp(1, shape.channels);
    (shape.channels.div_ceil(g) >= MIN_GROUPS).then_some(g)
}

/// Channel group `i`'s pieces of a channels-first `t`: one per sample, in sample order.
fn group_views(shape: Shape, g: usize, t: &[f32]) -> Vec<Vec<&[f32]>> {
    let (c, s) = (shape.channels, shape.spatial);
    let mut out: Vec<Vec<&[f32]>> = (0..c.div_ceil(g)).map(|_| Vec::new()).collect();
    for sample in t.chunks(c * s) {
        for (o, piece) in out.iter_mut().zip(sample.chunks(g * s)) {
            o.push(piece);
        }
    }
    out
}

/// [`group_views`], mutable.
fn group_pieces(shape: Shape, g: usize, t: &mut [f32]) -> Vec<Vec<&mut [f32]>> {
    let (c, s) = (shape.channels, shape.spatial);
    let mut out: Vec<Vec<&mut [f32]>> = (0..c.div_ceil(g)).map(|_| Vec::new()).collect();
    for sample in t.chunks_mut(c * s) {
        for (o, piece) in out.iter_mut().zip(sample.chunks_mut(g * s)) {
            o.push(piece);
        }
    }
    out
}

/// `Some(chunk)` of `out` per group of `g` channels, or `None` for each of `groups`.
fn group_outs(out: Option<&mut [f32]>, g: usize, groups: usize) -> Vec<Option<&mut [f32]>> {
    match out {
        Some(out) => out.chunks_mut(g).map(Some).collect(),
        None => (0..groups).map(|_| None).collect(),
    }
}

/// The layer restricted to channels `range`.
fn sub<'a>(bn: &BatchNorm<'a>, range: core::ops::Range<usize>) -> BatchNorm<'a> {
    BatchNorm {
        eps: bn.eps,
        gamma: bn.gamma.map(|g| &g[range.clone()]),
        beta: bn.beta.map(|b| &b[range]),
    }
}

/// The train forward channel-parallel: each group of `g` channels is a job of its own
/// (its moments merged over the samples in order, its saved and running statistics,
/// then its elementwise pass), unchecked. `running` counts one update.
fn train_groups(
    bn: &BatchNorm,
    x: &[f32],
    y: &mut [f32],
    (shape, g): (Shape, usize),
    [save_mean, save_invstd]: [&mut [f32]; 2],
    running: Option<&mut Running<'_>>,
) {
    let groups = shape.channels.div_ceil(g);
    let runs: Vec<Option<Running<'_>>> = match running {
        Some(r) => {
            // Each group's part, as the whole was before this update.
            let (momentum, correction, batches_tracked) =
                (r.momentum, r.correction, r.batches_tracked);
            r.advance();
            let chunks = r.mean.chunks_mut(g).zip(r.var.chunks_mut(g));
            chunks
                .map(|(mean, var)| {
                    Some(Running {
                        mean,
                        var,
                        momentum,
                        correction,
                        batches_tracked,
                    })
                })
                .collect()
        }
        None => (0..groups).map(|_| None).collect(),
    };
    group_pieces(shape, g, y)
        .into_par_iter()
        .zip(group_views(shape, g, x))
        .zip(save_mean.par_chunks_mut(g))
        .zip(save_invstd.par_chunks_mut(g))
        .zip(runs)
        .enumerate()
        .for_each(|(i, ((((ys, xs), mean), invstd), mut running))| {
            let width = mean.len();
            let bn = sub(bn, i * g..i * g + width);
            let piece = Shape::channels_first(1, width, shape.spatial);
            let mut global = vec![Moments::EMPTY; width];
            let mut part = vec![Moments::EMPTY; width];
            for x in &xs {
                // The piece's length is right by construction.
                let _ = crate::moments(x, piece, &mut part);
                for (g, p) in global.iter_mut().zip(&part) {
                    *g = g.merge(*p);
                }
            }
            let none = Shape::rows(0, width);
            let saved = [mean, invstd];
            bn.train_kernel_with(
                Centered,
                [&[]],
                &mut [],
                none,
                saved,
                running.as_mut(),
                None,
                Some(&global),
            );
            let (mut m, mut v) = (vec![0.0; width], vec![0.0; width]);
            for (x, y) in xs.iter().zip(ys) {
                let saved = [&mut m[..], &mut v[..]];
                bn.train_kernel_with(Centered, [x], y, piece, saved, None, None, Some(&global));
            }
        });
}

/// The train backward channel-parallel, as [`train_groups`], unchecked.
#[allow(clippy::too_many_arguments)]
fn backward_groups(
    bn: &BatchNorm,
    dy: &[f32],
    x: &[f32],
    shape: Shape,
    g: usize,
    [save_mean, save_invstd]: [&[f32]; 2],
    grads: Grads<'_>,
) {
    let groups = shape.channels.div_ceil(g);
    let count = (shape.batch * shape.spatial) as u64;
    let Grads { dx, dgamma, dbeta } = grads;
    group_pieces(shape, g, dx)
        .into_par_iter()
        .zip(group_views(shape, g, dy))
        .zip(group_views(shape, g, x))
        .zip(group_outs(dgamma, g, groups))
        .zip(group_outs(dbeta, g, groups))
        .enumerate()
        .for_each(|(i, ((((dxs, dys), xs), dgamma), dbeta))| {
            let ch = i * g..(i * g + g).min(shape.channels);
            let width = ch.len();
            let bn = sub(bn, ch.clone());
            let saved = [&save_mean[ch.clone()], &save_invstd[ch]];
            let piece = Shape::channels_first(1, width, shape.spatial);
            let mut sums = vec![BackwardSums::ZERO; width];
            let mut part = vec![BackwardSums::ZERO; width];
            for (dy, x) in dys.iter().zip(&xs) {
                sums_kernel(dy, x, piece, saved[0], &mut part);
                for (s, p) in sums.iter_mut().zip(&part) {
                    *s = s.merge(*p);
                }
            }
            let none = Shape::rows(0, width);
            let dgb = Grads {
                dx: &mut [],
                dgamma,
                dbeta,
            };
            bn.backward_sums_kernel(&[], &[], none, saved, dgb, &sums, count);
            for ((dy, x), dx) in dys.iter().zip(&xs).zip(dxs) {
                let grads = Grads {
                    dx,
                    dgamma: None,
                    dbeta: None,
                };
                bn.backward_sums_kernel(dy, x, piece, saved, grads, &sums, count);
            }
        });
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
/// let saved = batchnorm::SavedMut { mean: &mut mean, invstd: &mut invstd };
/// parallel::train(&bn, &x, &mut y, Shape::rows(300_000, 1), saved, None)?;
/// assert_eq!((mean, invstd, &y[..2]), ([0.5], [2.0], &[-1.0, 1.0][..]));
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn train(
    bn: &BatchNorm,
    x: &[f32],
    y: &mut [f32],
    shape: Shape,
    saved: SavedMut<'_>,
    running: Option<&mut Running<'_>>,
) -> Result<(), Error> {
    let len = bn.check_train(shape, SAVED, [saved.mean, saved.invstd], running.as_deref())?;
    check_len("x", x.len(), len)?;
    check_len("y", y.len(), len)?;
    if let Some(g) = channel_groups(shape) {
        train_groups(bn, x, y, (shape, g), [saved.mean, saved.invstd], running);
        return Ok(());
    }
    let tiles = tiles(shape);
    if tiles.len() <= 1 {
        return bn.train(x, y, shape, saved, running);
    }
    let global = merged_moments(x, &tiles, shape.channels);
    // The saved and running statistics, once, by the train kernel over no values.
    let none = Shape::rows(0, shape.channels);
    let saved = [saved.mean, saved.invstd];
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
/// let stats = batchnorm::RunningStats { mean: &[1.0], var: &[4.0] };
/// parallel::eval(&bn, &x, &mut y, Shape::rows(200_000, 1), stats)?;
/// assert!(y.iter().all(|&v| v == 2.0)); // (3 − 1)/2 + 1
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn eval(
    bn: &BatchNorm,
    x: &[f32],
    y: &mut [f32],
    shape: Shape,
    stats: RunningStats<'_>,
) -> Result<(), Error> {
    let len = bn.check_eval(shape, stats)?;
    check_len("x", x.len(), len)?;
    check_len("y", y.len(), len)?;
    let tiles = tiles(shape);
    tiles.par_iter().zip(pieces(&tiles, y)).for_each(|(t, y)| {
        let stats = RunningStats {
            mean: &stats.mean[t.channels()],
            var: &stats.var[t.channels()],
        };
        t.bn(bn).eval_kernel(Affine, [t.of(x)], y, t.shape, stats);
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
/// let saved = batchnorm::Saved { mean: &[2.0], invstd: &[1.0] };
/// parallel::backward(&bn, &x, &dy, Shape::rows(200_000, 1), saved, grads)?;
/// assert_eq!(db, [200_000.0]);
/// assert!(dx.iter().all(|&v| v == 0.0)); // a constant gradient does not reach x
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn backward(
    bn: &BatchNorm,
    x: &[f32],
    dy: &[f32],
    shape: Shape,
    saved: Saved<'_>,
    grads: Grads<'_>,
) -> Result<(), Error> {
    let Saved {
        mean: save_mean,
        invstd: save_invstd,
    } = saved;
    bn.check_backward(dy, x, shape, SAVED, [save_mean, save_invstd], &grads)?;
    if let Some(g) = channel_groups(shape) {
        backward_groups(bn, dy, x, shape, g, [save_mean, save_invstd], grads);
        return Ok(());
    }
    let tiles = tiles(shape);
    if tiles.len() <= 1 {
        return bn.backward(x, dy, shape, saved, grads);
    }
    let saved = [save_mean, save_invstd];
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
/// let stats = batchnorm::RunningStats { mean: &[3.0], var: &[4.0] };
/// parallel::backward_eval(&bn, &x, &dy, Shape::rows(200_000, 1), stats, grads)?;
/// assert!(dx.iter().all(|&v| v == 3.0)); // dy·3/2
/// assert_eq!(dg, [200_000.0 * 2.0]);     // Σ dy·(5 − 3)/2
/// # Ok::<(), batchnorm::Error>(())
/// ```
pub fn backward_eval(
    bn: &BatchNorm,
    x: &[f32],
    dy: &[f32],
    shape: Shape,
    stats: RunningStats<'_>,
    grads: Grads<'_>,
) -> Result<(), Error> {
    let RunningStats {
        mean: running_mean,
        var: running_var,
    } = stats;
    bn.check_backward(dy, x, shape, RUNNING, [running_mean, running_var], &grads)?;
    let tiles = tiles(shape);
    if tiles.len() <= 1 {
        return bn.backward_eval(x, dy, shape, stats, grads);
    }
    let stats = [running_mean, running_var];
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
