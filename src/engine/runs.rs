//! Channels-first: every (sample, channel) is a contiguous run of `S` values, and
//! every lane of a vector holds the same channel. With one lane (no SIMD), also
//! channels-last: a channel is one run of every `C`-th value.

use core::ops::Range;

use super::{cut, each, sub, zip_step, zip_with, Band, Map, MapSum, Reduce, Walk, BLOCK};
use crate::lanes::{load_tail, mask_overlap, store_tail, Lanes, ACCUMULATORS, LANES, UNROLL, V};

/// Reduces channel by channel: each channel's runs in turn, into accumulators that
/// stay in registers across them.
pub(super) fn reduce<R: Reduce<I, K, A>, const I: usize, const K: usize, const A: usize>(
    w: &Walk,
    band: Band,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: [&[f32]; K],
    steps: Range<usize>,
    sums: &mut [[f64; A]],
) {
    for (i, sums) in sums.iter_mut().take(band.channels).enumerate() {
        let kv = splat(&k, i);
        let mut acc = [[V::ZERO; A]; UNROLL];
        let mut adds = 0;
        for n in steps.clone() {
            let run = w.run_of(n, band.first + i);
            let out = if R::WRITES {
                out.get_mut(run.clone()).unwrap_or(&mut [])
            } else {
                &mut [][..]
            };
            let x = w.run(&ins, run);
            if LANES == 1 {
                reduce_strided::<R, I, K, A>(x, out, w.step, &kv, &mut acc, &mut adds, sums);
            } else {
                reduce_run::<R, I, K, A>(x, out, &kv, &mut acc, &mut adds, sums);
            }
        }
        if adds > 0 {
            spill(&mut acc, sums);
        }
    }
}

/// One lane (no SIMD): adds every `step`-th value of `x` to `acc`, as
/// [`reduce_run`] adds a run of vectors; no chunks, no tails.
#[inline(always)]
fn reduce_strided<R: Reduce<I, K, A>, const I: usize, const K: usize, const A: usize>(
    x: [&[f32]; I],
    out: &mut [f32],
    step: usize,
    k: &[V; K],
    acc: &mut [[V; A]; UNROLL],
    adds: &mut usize,
    sums: &mut [f64; A],
) {
    let step = step.max(1);
    let len = x.iter().fold(x[0].len(), |n, x| n.min(x.len()));
    let mut at = 0;
    while at < len {
        // The values before the next spill.
        let end = len.min(at + (BLOCK - *adds) * step);
        let part = sub(&x, at..end);
        let taken = (end - at).div_ceil(step);
        let mut add = |x: [f32; I]| R::step(k, each(|j| V::splat(x[j])), &mut acc[0]);
        if R::WRITES {
            let o = out.get_mut(at..end).unwrap_or_default();
            zip_step(o.iter_mut().step_by(step), part, 0, step, |o, x| {
                *o = add(x).as_array()[0];
            });
        } else {
            zip_step(0..taken, part, 0, step, |_, x| {
                add(x);
            });
        }
        *adds += taken;
        if *adds >= BLOCK {
            spill(acc, sums);
            *adds = 0;
        }
        at = end;
    }
}

/// Adds one run to `acc`, spilling into `sums` whenever a lane has taken [`BLOCK`]
/// adds (`adds` counts them across runs).
#[inline(always)]
fn reduce_run<R: Reduce<I, K, A>, const I: usize, const K: usize, const A: usize>(
    x: [&[f32]; I],
    out: &mut [f32],
    k: &[V; K],
    acc: &mut [[V; A]; UNROLL],
    adds: &mut usize,
    sums: &mut [f64; A],
) {
    let len = x[0].len();
    let xs = x.map(|x| x.as_chunks::<LANES>().0);
    let whole = xs.iter().fold(len / LANES, |n, x| n.min(x.len()));
    let (outs, _) = out.as_chunks_mut::<LANES>();
    let Some(xs) = cut(xs, whole, 0) else {
        return;
    };
    // The accumulators as locals, so that they live in registers: through `acc` they
    // were stored and reloaded on every vector, a store-forwarding round trip in
    // every add's chain.
    let mut a = *acc;
    // The same order of additions for every kernel, whatever its streams: the fused
    // backward through an all-positive ReLU is the plain one, bit for bit.
    // As many sets of accumulators as fit the registers beside the inputs: a constant
    // of the kernel, so one arm remains.
    let unroll = (ACCUMULATORS / A.max(1)).clamp(1, UNROLL);
    let mut v = match unroll {
        1 => groups::<R, I, K, A, 1>(xs, outs, k, &mut a, adds, sums),
        2 => groups::<R, I, K, A, 2>(xs, outs, k, &mut a, adds, sums),
        3 => groups::<R, I, K, A, 3>(xs, outs, k, &mut a, adds, sums),
        _ => groups::<R, I, K, A, UNROLL>(xs, outs, k, &mut a, adds, sums),
    };
    let at = |v: usize| -> [V; I] { each(|j| V::new(xs[j].get(v).copied().unwrap_or_default())) };
    // The rest: fewer than UNROLL whole vectors, then the tail, one per accumulator.
    let mut u = 0;
    while v < whole {
        let y = R::step(k, at(v), &mut a[u % unroll]);
        if R::WRITES {
            if let Some(o) = outs.get_mut(v) {
                *o = y.to_array();
            }
        }
        (u, v) = (u + 1, v + 1);
    }
    let t = len % LANES;
    if t != 0 {
        let pad = R::pad(k);
        let acc = &mut a[u % unroll];
        if len >= LANES {
            let last: [V; I] =
                each(|j| V::new(*x[j].last_chunk::<LANES>().unwrap_or(&[0.0; LANES])));
            if R::WRITES {
                if let Some(o) = out.last_chunk_mut::<LANES>() {
                    *o = R::step(k, last, &mut [V::ZERO; A]).to_array();
                }
            }
            let masked = each(|j| mask_overlap(last[j], t, pad[j]));
            R::step(k, masked, acc);
        } else {
            let tail = each(|j| load_tail(x[j].get(len - t..).unwrap_or(&[]), pad[j]));
            let y = R::step(k, tail, acc);
            if let (true, Some(o)) = (R::WRITES, out.get_mut(len - t..)) {
                store_tail(o, y);
            }
        }
    }
    if v > 0 || t > 0 {
        *adds += 1;
        if *adds >= BLOCK {
            spill(&mut a, sums);
            *adds = 0;
        }
    }
    *acc = a;
}

/// The whole groups of `U` vectors of a run, one accumulator set per vector of a
/// group, spilling into `sums` whenever a lane has taken [`BLOCK`] adds; returns the
/// vectors taken. The streams' groups are zipped (`zip_with`): no load is checked.
#[inline(always)]
fn groups<R: Reduce<I, K, A>, const I: usize, const K: usize, const A: usize, const U: usize>(
    xs: [&[Lanes]; I],
    outs: &mut [Lanes],
    k: &[V; K],
    a: &mut [[V; A]; UNROLL],
    adds: &mut usize,
    sums: &mut [f64; A],
) -> usize {
    let gs: [&[[Lanes; U]]; I] = each(|j| xs[j].as_chunks::<U>().0);
    // Every stream holds the same whole vectors: as many groups each.
    let n = xs.first().map_or(0, |x| x.len() / U);
    let mut g = 0;
    while g < n {
        // The steps before the next spill, in a loop with nothing else in it.
        let end = n.min(g + (BLOCK - *adds));
        let part: [&[[Lanes; U]]; I] = each(|j| gs[j].get(g..end).unwrap_or(&[]));
        let fill = [[0.0; LANES]; U];
        let mut group = |x: [[Lanes; U]; I], mut o: Option<&mut [Lanes; U]>| {
            for u in 0..U.min(UNROLL) {
                let y = R::step(k, each(|j| V::new(x[j][u])), &mut a[u]);
                if let Some(o) = o.as_deref_mut() {
                    o[u] = y.to_array();
                }
            }
        };
        // The output's groups zipped too where the kernel writes.
        if R::WRITES {
            let outs = outs
                .as_chunks_mut::<U>()
                .0
                .get_mut(g..end)
                .unwrap_or_default();
            zip_with(outs.iter_mut(), part, 0, fill, |o, x| group(x, Some(o)));
        } else {
            zip_with(g..end, part, 0, fill, |_, x| group(x, None));
        }
        *adds += end - g;
        g = end;
        if *adds >= BLOCK {
            spill(a, sums);
            *adds = 0;
        }
    }
    n * U
}

/// Maps the positions `cols` of every run of the band as [`map`] does (not in
/// place), adding each place's sums into `sums`, indexed by position from
/// `cols.start`.
pub(super) fn map_sum<M: MapSum<I, K, A>, const I: usize, const K: usize, const A: usize>(
    w: &Walk,
    band: Band,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: [&[f32]; K],
    cols: Range<usize>,
    mut sums: [&mut [f32]; A],
) {
    let (c, s) = (w.channels, w.spatial);
    let cols = cols.start.min(s)..cols.end.min(s);
    for n in 0..w.batch {
        for i in 0..band.channels {
            let at = (n * c + band.first + i) * s;
            let run = at + cols.start..at + cols.end;
            let kv = splat(&k, i);
            let x = w.run_at(&ins, run.clone(), cols.clone());
            let out = out.get_mut(run).unwrap_or(&mut []);
            map_sum_run::<M, I, K, A>(x, out, &kv, &mut sums);
        }
    }
}

/// `out = M(x)` over one run, adding into `sums` at the same places. A run that
/// does not end on a whole vector ends as in [`map_run`], but its last vector adds
/// to the sums only in the lanes the one before did not hold (the others take the
/// kernel's pad).
#[inline(always)]
fn map_sum_run<M: MapSum<I, K, A>, const I: usize, const K: usize, const A: usize>(
    x: [&[f32]; I],
    out: &mut [f32],
    k: &[V; K],
    sums: &mut [&mut [f32]; A],
) {
    let n = x.iter().fold(out.len(), |n, x| n.min(x.len()));
    let n = sums.iter().fold(n, |n, s| n.min(s.len()));
    // Cut to exactly `n` (in range by the folds), so that the last vector is the run's.
    let (Some(x), Some(out)) = (cut(x, n, 0), out.get_mut(..n)) else {
        return;
    };
    let mut sums: [&mut [f32]; A] = sums.each_mut().map(|s| s.get_mut(..n).unwrap_or(&mut []));
    let pad = M::pad(k);
    if n < LANES {
        let v = each(|j| load_tail(x[j], pad[j]));
        let mut acc = sums.each_ref().map(|s| load_tail(s, V::ZERO));
        store_tail(out, M::map(k, v, &mut acc));
        for (s, a) in sums.into_iter().zip(acc) {
            store_tail(s, a);
        }
        return;
    }
    let xs = x.map(|x| x.as_chunks::<LANES>().0);
    let (outs, _) = out.as_chunks_mut::<LANES>();
    // The two sums zipped with the output (checked when compiled: a kernel with
    // other sums needs its own arm here), the streams by `zip_with`.
    const { assert!(A == 2, "map_sum zips two sums") };
    {
        let mut ss = sums
            .each_mut()
            .map(|s| s.as_chunks_mut::<LANES>().0)
            .into_iter();
        let (s0, s1) = (ss.next().unwrap_or_default(), ss.next().unwrap_or_default());
        let places = outs.iter_mut().zip(s0.iter_mut().zip(s1.iter_mut()));
        zip_with(places, xs, 0, [0.0; LANES], |(o, (s0, s1)), x| {
            let mut acc = each(|q| V::new(if q == 0 { *s0 } else { *s1 }));
            *o = M::map(k, each(|j| V::new(x[j])), &mut acc).to_array();
            (*s0, *s1) = (acc[0].to_array(), acc[A - 1].to_array());
        });
    }
    let t = n % LANES;
    if t == 0 {
        return;
    }
    let last: [V; I] = each(|j| V::new(*x[j].last_chunk::<LANES>().unwrap_or(&[0.0; LANES])));
    if let Some(o) = out.last_chunk_mut::<LANES>() {
        *o = M::map(k, last, &mut [V::ZERO; A]).to_array();
    }
    let masked = each(|j| mask_overlap(last[j], t, pad[j]));
    let mut ends = sums.map(|s| s.last_chunk_mut::<LANES>());
    let mut acc = ends
        .each_ref()
        .map(|e| e.as_deref().map_or(V::ZERO, |e| V::new(*e)));
    M::map(k, masked, &mut acc);
    for (e, a) in ends.iter_mut().zip(acc) {
        if let Some(e) = e {
            **e = a.to_array();
        }
    }
}

/// The constants of channel `i` in every lane.
#[inline(always)]
fn splat<const K: usize>(k: &[&[f32]; K], i: usize) -> [V; K] {
    each(|q| V::splat(k[q].get(i).copied().unwrap_or(0.0)))
}

/// Adds the accumulators' lanes to `sums` in f64 and zeroes them: the `UNROLL`
/// vectors of a sum are added in f32 first (a few more roundings against a block's 64).
#[inline(always)]
fn spill<const A: usize>(acc: &mut [[V; A]; UNROLL], sums: &mut [f64; A]) {
    for (a, sum) in sums.iter_mut().enumerate() {
        let v = acc.iter().fold(V::ZERO, |s, acc| s + acc[a]).to_array();
        // A tree, not a chain: short channels spill once each.
        let mut lanes = v.map(f64::from);
        let mut n = LANES;
        while n > 1 {
            n /= 2;
            for l in 0..n {
                lanes[l] += lanes[l + n];
            }
        }
        *sum += lanes[0];
    }
    *acc = [[V::ZERO; A]; UNROLL];
}

/// Maps sample by sample: the runs of the band's channels lie back to back within a
/// sample, so memory is read as one stream per sample, which prefetchers follow.
pub(super) fn map<M: Map<I, K>, const I: usize, const K: usize, const IN_PLACE: bool>(
    w: &Walk,
    band: Band,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: [&[f32]; K],
) {
    for n in 0..w.batch {
        for i in 0..band.channels {
            let run = w.run_of(n, band.first + i);
            let kv = splat(&k, i);
            let out = out.get_mut(run.clone()).unwrap_or(&mut []);
            let x = w.run(&ins, run);
            if LANES == 1 {
                map_strided::<M, I, K, IN_PLACE>(x, out, w.step, &kv);
            } else {
                map_run::<M, I, K, IN_PLACE>(x, out, &kv);
            }
        }
    }
}

/// One lane (no SIMD): `out = M(x)` at every `step`-th value, as [`map_run`] maps a
/// run of vectors; no chunks, no tails.
#[inline(always)]
fn map_strided<M: Map<I, K>, const I: usize, const K: usize, const IN_PLACE: bool>(
    x: [&[f32]; I],
    out: &mut [f32],
    step: usize,
    k: &[V; K],
) {
    let skip = usize::from(IN_PLACE);
    let outs = out.iter_mut().step_by(step.max(1));
    zip_step(outs, x, skip, step, |o, x| {
        let x = each(|j| V::splat(if IN_PLACE && j == 0 { *o } else { x[j] }));
        *o = M::map(k, x).as_array()[0];
    });
}

/// `out = M(x)` over one run; with `IN_PLACE` the first input is `out` itself. A run
/// that does not end on a whole vector ends with its last [`LANES`] values as one
/// vector, overlapping the one before: computed before anything is stored (so also
/// in place), stored last.
///
/// The streams are zipped with the output (`zip_with`): no load or store is checked,
/// and per run this costs a few instructions.
#[inline(always)]
pub(super) fn map_run<M: Map<I, K>, const I: usize, const K: usize, const IN_PLACE: bool>(
    x: [&[f32]; I],
    out: &mut [f32],
    k: &[V; K],
) {
    let n = x
        .iter()
        .skip(usize::from(IN_PLACE))
        .fold(out.len(), |n, x| n.min(x.len()));
    // Cut to exactly `n` (in range by the fold), so that the last vector is the run's.
    let (Some(x), Some(out)) = (cut(x, n, usize::from(IN_PLACE)), out.get_mut(..n)) else {
        return;
    };
    if n < LANES {
        let v = each(|j| {
            let src = if IN_PLACE && j == 0 { &*out } else { x[j] };
            load_tail(src, V::ZERO)
        });
        store_tail(out, M::map(k, v));
        return;
    }
    let last = each(|j| {
        let src = if IN_PLACE && j == 0 { &*out } else { x[j] };
        V::new(*src.last_chunk::<LANES>().unwrap_or(&[0.0; LANES]))
    });
    let last = M::map(k, last).to_array();
    let xs = x.map(|x| x.as_chunks::<LANES>().0);
    let (outs, _) = out.as_chunks_mut::<LANES>();
    zip_with(
        outs.iter_mut(),
        xs,
        usize::from(IN_PLACE),
        [0.0; LANES],
        |o, x| {
            let x = each(|j| V::new(if IN_PLACE && j == 0 { *o } else { x[j] }));
            *o = M::map(k, x).to_array();
        },
    );
    if let Some(o) = out.last_chunk_mut::<LANES>() {
        *o = last;
    }
}
