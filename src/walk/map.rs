//! Elementwise passes: `y = f(x)` (or `dx = f(dy, x)`) with per-channel constants.

use super::{patterns, Band, Group, Kind, PerChannel, Plan, MAX_VECS};
use crate::lanes::{load_tail, split, split_mut, store_tail, LANES, V};

/// `y = x·a + b` per channel over `band` (`a[b]`, `b[b]` hold group `b`'s), reading
/// `x` from `src`, or from `dst` itself when `src` is `None`.
pub(crate) fn affine(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    a: &[PerChannel<f32>],
    b: &[PerChannel<f32>],
) {
    if let Kind::ChannelsFirst = plan.kind {
        return affine_channels_first(src, dst, plan, band.groups[0], &a[0], &b[0]);
    }
    by_vecs!(band.groups[0], affine_nv(src, dst, plan, band, a, b))
}

/// [`affine`] for channels-first, sample by sample: the runs of the group's channels
/// lie back to back within a sample, so memory is read as one stream per sample (which
/// the hardware prefetcher follows) rather than as `batch` short runs per channel.
fn affine_channels_first(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    g: Group,
    a: &PerChannel<f32>,
    b: &PerChannel<f32>,
) {
    if dst.is_empty() {
        // However large the batch: with no values, every run is empty.
        return;
    }
    let (c, s) = (plan.channels, plan.spatial);
    for n in 0..plan.batch {
        for i in g.offsets() {
            let run = (n * c + g.first + i) * s..(n * c + g.first + i + 1) * s;
            let (av, bv) = (V::splat(a[i]), V::splat(b[i]));
            map_run(src.map(|x| &x[run.clone()]), &mut dst[run], |x| {
                x.mul_add(av, bv)
            });
        }
    }
}

/// `y = f(x)` over one contiguous run, from `src` (or `dst` itself) into `dst`.
///
/// A run of at least [`LANES`] values that does not end on a whole vector ends with
/// its last [`LANES`] values as one vector, overlapping the one before: computed from
/// the input before anything is written (so also in place), stored last. Only for
/// patterns whose lanes all hold one channel.
#[inline(always)]
fn map_run(src: Option<&[f32]>, dst: &mut [f32], f: impl Fn(V) -> V) {
    let last = if !dst.len().is_multiple_of(LANES) {
        match src {
            Some(src) => src.last_chunk::<LANES>(),
            None => dst.last_chunk::<LANES>(),
        }
        .map(|x| f(V::new(*x)))
    } else {
        None
    };
    let (yfull, ytail) = split_mut(dst);
    match src {
        Some(src) => {
            let (xfull, xtail) = split(src);
            for (x, y) in xfull.iter().zip(yfull) {
                *y = f(V::new(*x)).to_array();
            }
            if last.is_none() && !xtail.is_empty() {
                store_tail(ytail, f(load_tail(xtail, V::ZERO)));
            }
        }
        None => {
            for y in yfull {
                *y = f(V::new(*y)).to_array();
            }
            if last.is_none() && !ytail.is_empty() {
                let v = f(load_tail(ytail, V::ZERO));
                store_tail(ytail, v);
            }
        }
    }
    if let (Some(v), Some(out)) = (last, dst.last_chunk_mut::<LANES>()) {
        *out = v.to_array();
    }
}

/// `out = f(a, b)` over one contiguous run, overlapping the tail as [`map_run`].
#[inline(always)]
fn zip_run(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(V, V) -> V) {
    let last = match (a.last_chunk::<LANES>(), b.last_chunk::<LANES>()) {
        (Some(x), Some(y)) if !out.len().is_multiple_of(LANES) => Some(f(V::new(*x), V::new(*y))),
        _ => None,
    };
    let ((afull, atail), (bfull, btail), (ofull, otail)) = (split(a), split(b), split_mut(out));
    for ((x, y), o) in afull.iter().zip(bfull).zip(ofull) {
        *o = f(V::new(*x), V::new(*y)).to_array();
    }
    if last.is_none() && !atail.is_empty() {
        store_tail(
            otail,
            f(load_tail(atail, V::ZERO), load_tail(btail, V::ZERO)),
        );
    }
    if let (Some(v), Some(o)) = (last, out.last_chunk_mut::<LANES>()) {
        *o = v.to_array();
    }
}

#[inline(never)] // see `by_vecs!`
fn affine_nv<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    a: &[PerChannel<f32>],
    b: &[PerChannel<f32>],
) {
    let (av, bv) = (patterns::<NV>(band, a), patterns::<NV>(band, b));
    map::<NV>(src, dst, plan, band, |g, j, x| {
        x.mul_add(av[g][j], bv[g][j])
    });
}

/// `y = (x − mu)·a + b` per channel over `band`; `src` as in [`affine`].
pub(crate) fn centered(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    [mu, a, b]: [&[PerChannel<f32>]; 3],
) {
    by_vecs!(
        band.groups[0],
        centered_nv(src, dst, plan, band, [mu, a, b])
    )
}

#[inline(never)] // see `by_vecs!`
fn centered_nv<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    [mu, a, b]: [&[PerChannel<f32>]; 3],
) {
    let (muv, av, bv) = (
        patterns::<NV>(band, mu),
        patterns::<NV>(band, a),
        patterns::<NV>(band, b),
    );
    map::<NV>(src, dst, plan, band, |g, j, x| {
        (x - muv[g][j]).mul_add(av[g][j], bv[g][j])
    });
}

/// Applies `f(b, j, x)` (with `b` the group in `band` and `j` the vector's place in
/// its pattern) to every vector of `band`, from `src` (or `dst` itself) into `dst`.
#[inline(always)]
fn map<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    f: impl Fn(usize, usize, V) -> V,
) {
    if let Kind::ChannelsFirst = plan.kind {
        // Runs of `s` values, one per channel of the band; one channel per run, so
        // every vector of a pattern is the same.
        let s = plan.spatial.max(1);
        for seg in plan.segments(band) {
            for (b, y) in dst[seg.clone()].chunks_mut(s).enumerate() {
                let x = src.map(|x| &x[seg.start + b * s..][..y.len()]);
                map_run(x, y, |x| f(b, 0, x));
            }
        }
        return;
    }
    let width = NV * LANES;
    for seg in plan.segments(band) {
        match src {
            Some(src) => {
                let chunks = src[seg.clone()]
                    .chunks(width)
                    .zip(dst[seg].chunks_mut(width));
                for (g, (xc, yc)) in chunks.enumerate() {
                    let ((xfull, xtail), (yfull, ytail)) = (split(xc), split_mut(yc));
                    for (j, (x, y)) in xfull.iter().zip(yfull).enumerate() {
                        *y = f(g, j, V::new(*x)).to_array();
                    }
                    if !xtail.is_empty() {
                        store_tail(ytail, f(g, xfull.len(), load_tail(xtail, V::ZERO)));
                    }
                }
            }
            None => {
                for (g, yc) in dst[seg].chunks_mut(width).enumerate() {
                    let (yfull, ytail) = split_mut(yc);
                    let j_tail = yfull.len();
                    for (j, y) in yfull.iter_mut().enumerate() {
                        *y = f(g, j, V::new(*y)).to_array();
                    }
                    if !ytail.is_empty() {
                        let v = f(g, j_tail, load_tail(ytail, V::ZERO));
                        store_tail(ytail, v);
                    }
                }
            }
        }
    }
}

/// `dx = (dy·k + ((x − mu)·a + b))·p` per channel over `band`.
pub(crate) fn grad_input(
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    plan: &Plan,
    band: &Band,
    consts: [&[PerChannel<f32>]; 5],
) {
    by_vecs!(band.groups[0], grad_input_nv(dy, x, dx, plan, band, consts))
}

#[inline(never)] // see `by_vecs!`
fn grad_input_nv<const NV: usize>(
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    plan: &Plan,
    band: &Band,
    [k, mu, a, b, p]: [&[PerChannel<f32>]; 5],
) {
    let (kv, muv, av, bv) = (
        patterns::<NV>(band, k),
        patterns::<NV>(band, mu),
        patterns::<NV>(band, a),
        patterns::<NV>(band, b),
    );
    let pv = patterns::<NV>(band, p);
    let f = |g: usize, j: usize, dy: V, x: V| {
        dy.mul_add(kv[g][j], (x - muv[g][j]).mul_add(av[g][j], bv[g][j])) * pv[g][j]
    };
    if let Kind::ChannelsFirst = plan.kind {
        // Runs of `s` values, one per channel of the band, as in [`map`].
        let s = plan.spatial.max(1);
        for seg in plan.segments(band) {
            let runs = dy[seg.clone()]
                .chunks(s)
                .zip(x[seg.clone()].chunks(s))
                .zip(dx[seg].chunks_mut(s));
            for (b, ((dy, x), dx)) in runs.enumerate() {
                zip_run(dy, x, dx, |d, x| f(b, 0, d, x));
            }
        }
        return;
    }
    let width = NV * LANES;
    for seg in plan.segments(band) {
        let chunks = dy[seg.clone()]
            .chunks(width)
            .zip(x[seg.clone()].chunks(width))
            .zip(dx[seg].chunks_mut(width));
        for (g, ((dc, xc), oc)) in chunks.enumerate() {
            let ((dfull, dtail), (xfull, xtail), (ofull, otail)) =
                (split(dc), split(xc), split_mut(oc));
            for (j, ((d, x), o)) in dfull.iter().zip(xfull).zip(ofull).enumerate() {
                *o = f(g, j, V::new(*d), V::new(*x)).to_array();
            }
            if !dtail.is_empty() {
                let j = dfull.len();
                let v = f(g, j, load_tail(dtail, V::ZERO), load_tail(xtail, V::ZERO));
                store_tail(otail, v);
            }
        }
    }
}
