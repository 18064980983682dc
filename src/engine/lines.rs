//! Channels-last, `[N, C]` rows, and packed small samples: the tensor as lines, walked
//! in memory order with one accumulator vector per lane slot.
//!
//! A rows line is one row's slice of the band's channels, one slot per vector. A
//! packed line is many periods of the lane pattern back to back, so that the few
//! instructions a line costs are spread over thousands of values; vector `v` of it
//! uses slot `v % slots`.

use core::ops::Range;

use super::{each, shortest, sub, zip_with, Band, Kind, Map, Reduce, Walk, BLOCK};
use crate::lanes::{load_tail, mask_overlap, store_tail, Lanes, LANES, V};

/// Where a band's lines are and which channel each lane holds.
pub(super) struct Lines {
    /// Index of line 0's first value; line `r` starts `r·stride` later.
    start: usize,
    stride: usize,
    /// Values in a line (the last line of a packed walk may hold fewer).
    len: usize,
    /// Vector slots of the lane pattern: a rows line has as many, a packed line a
    /// whole number of periods of them.
    slots: usize,
    /// The end of the tensor.
    end: usize,
    steps: usize,
    /// Channels of the band; in a packed line, lane `p` holds channel
    /// `p / spatial % channels`.
    channels: usize,
    spatial: usize,
    packed: bool,
}

impl Walk {
    pub(super) fn lines(&self, band: Band) -> Lines {
        let (start, stride, len, slots, spatial, packed) = match self.kind {
            Kind::Packed {
                period,
                spatial,
                line,
            } => {
                // A tensor shorter than one period uses only its slots.
                let slots = (period / LANES).min(self.len.div_ceil(LANES));
                (0, line, line.min(self.len), slots, spatial, true)
            }
            _ => {
                let slots = band.channels.div_ceil(LANES);
                (band.first, self.channels, band.channels, slots, 1, false)
            }
        };
        Lines {
            start,
            stride,
            len,
            slots,
            end: self.len,
            steps: self.steps(),
            channels: band.channels,
            spatial,
            packed,
        }
    }
}

impl Lines {
    /// The band offset of the channel in every lane of the first `S` slots, counted
    /// without a division per lane. A rows line that does not end on a whole vector
    /// ends with an overlapping slot: its last [`LANES`] values.
    fn offsets<const S: usize>(&self) -> [[u16; LANES]; S] {
        let mut at = [[0; LANES]; S];
        let (mut c, mut s) = (0, 0);
        let overlap_from = if self.packed || self.len < LANES {
            usize::MAX
        } else {
            self.len / LANES
        };
        if self.spatial == 1 {
            // One value per channel (channels-last): slot `j + 1` is slot `j` moved
            // on by `LANES` channels, a vector add and a wrap the compiler vectorizes.
            let c = self.channels.max(1);
            let mut prev: [u16; LANES] = each(|l| (l % c) as u16);
            let (step, c) = ((LANES % c) as u16, c as u16);
            for (j, at) in at.iter_mut().enumerate().take(self.slots) {
                *at = match j >= overlap_from {
                    true => each(|l| (self.len - LANES + l) as u16),
                    false => prev,
                };
                prev = each(|l| {
                    let v = prev[l] + step;
                    if v >= c {
                        v - c
                    } else {
                        v
                    }
                });
            }
            return at;
        }
        for (j, at) in at.iter_mut().enumerate().take(self.slots) {
            for (l, at) in at.iter_mut().enumerate() {
                *at = if j >= overlap_from {
                    self.len - LANES + l
                } else {
                    c
                } as u16;
                s += 1;
                if s >= self.spatial {
                    (c, s) = (c + 1, 0);
                    if c >= self.channels {
                        c = 0;
                    }
                }
            }
        }
        at
    }

    /// Writes the constants of every slot's lanes to `kv`: one load per slot where
    /// its lanes are consecutive channels (rows, and packed lines of one lane per
    /// channel), else lane by lane.
    fn constants<const K: usize, const S: usize>(
        &self,
        offsets: &[[u16; LANES]; S],
        k: [&[f32]; K],
        kv: &mut [[V; K]; S],
    ) {
        for (kv, at) in kv.iter_mut().zip(offsets).take(self.slots) {
            let first = usize::from(at[0]);
            let consecutive = at
                .iter()
                .enumerate()
                .all(|(l, &a)| usize::from(a) == first + l);
            for (kv, k) in kv.iter_mut().zip(k) {
                *kv = match k.get(first..first + LANES) {
                    Some(lanes) if consecutive => V::from(lanes),
                    _ => V::new(each(|l| k.get(usize::from(at[l])).copied().unwrap_or(0.0))),
                };
            }
        }
    }

    /// The values of line `r`.
    fn line(&self, r: usize) -> Range<usize> {
        let start = self.start + r * self.stride;
        start..(start + self.len).min(self.end)
    }

    /// Whether a line of `n` values that does not end on a whole vector ends with an
    /// overlapping vector (rows lines of at least a vector) rather than a padded one.
    fn overlaps(&self, n: usize) -> bool {
        !self.packed && n >= LANES
    }

    /// Adds every lane of `acc` to its channel's sums in f64 and zeroes it.
    fn spill<const A: usize, const S: usize>(
        &self,
        offsets: &[[u16; LANES]; S],
        acc: &mut [[V; A]; S],
        sums: &mut [[f64; A]],
    ) {
        for (acc, at) in acc.iter_mut().zip(offsets).take(self.slots) {
            for (a, v) in acc.iter().enumerate() {
                for (&at, &x) in at.iter().zip(v.as_array()) {
                    if let Some(s) = sums.get_mut(usize::from(at)) {
                        s[a] += f64::from(x);
                    }
                }
            }
            *acc = [V::ZERO; A];
        }
    }
}

/// The inputs' `n` vectors from place `v` on, and how many every input has (`n`
/// unless a slice is short), for [`zip_with`] to walk (it stops at the shortest).
#[inline(always)]
fn period<'a, const I: usize>(
    xs: &[&'a [Lanes]; I],
    v: usize,
    n: usize,
    in_place: bool,
) -> ([&'a [Lanes]; I], usize) {
    let xp: [&[Lanes]; I] = each(|i| xs[i].get(v..v + n).unwrap_or(&[]));
    // In place, input 0 is the output itself and has no slice of its own.
    (xp, shortest(&xp, n, usize::from(in_place)))
}

// Its arrays in a frame of its own (see `by_cap`).
#[cfg_attr(target_pointer_width = "64", inline(never))]
pub(super) fn reduce<
    R: Reduce<I, K, A>,
    const I: usize,
    const K: usize,
    const A: usize,
    const S: usize,
>(
    g: &Lines,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: [&[f32]; K],
    steps: Range<usize>,
    sums: &mut [[f64; A]],
) {
    let offsets = g.offsets::<S>();
    let mut kv = [[V::ZERO; K]; S];
    g.constants(&offsets, k, &mut kv);
    let mut acc = [[V::ZERO; A]; S];
    // `S` ≥ 1: as `clamp(1, S)`, without its panic path for `S < 1`.
    let slots = g.slots.min(S).max(1);
    // Adds per accumulator since the last spill.
    let mut adds = 0;
    for r in steps {
        let line = g.line(r);
        let out = if R::WRITES {
            out.get_mut(line.clone()).unwrap_or(&mut [])
        } else {
            &mut [][..]
        };
        let x = sub(&ins, line);
        let n = x[0].len();
        let xs = x.map(|x| x.as_chunks::<LANES>().0);
        let whole = xs.iter().fold(n / LANES, |w, x| w.min(x.len()));
        let (outs, _) = out.as_chunks_mut::<LANES>();
        let mut v = 0;
        while v < whole {
            let (xp, n) = period(&xs, v, slots.min(whole - v), false);
            let op = match outs.get_mut(v..v + n) {
                Some(op) if R::WRITES => op,
                _ => &mut [],
            };
            // Slots and streams zipped: no index to check.
            let places = kv.iter().zip(acc.iter_mut());
            let fill = [0.0; LANES];
            if R::WRITES {
                zip_with(
                    places.zip(op.iter_mut()),
                    xp,
                    0,
                    fill,
                    |((kv, acc), o), x| {
                        *o = R::step(kv, each(|i| V::new(x[i])), acc).to_array();
                    },
                );
            } else {
                zip_with(places, xp, 0, fill, |(kv, acc), x| {
                    R::step(kv, each(|i| V::new(x[i])), acc);
                });
            }
            v += slots;
            adds += 1;
            if adds == BLOCK {
                g.spill(&offsets, &mut acc, sums);
                adds = 0;
            }
        }
        let t = n % LANES;
        let j = whole % slots;
        if let (true, Some(acc), Some(kv)) = (t != 0, acc.get_mut(j), kv.get(j)) {
            let pad = R::pad(kv);
            if g.overlaps(n) {
                let last: [V; I] =
                    each(|j| V::new(*x[j].last_chunk::<LANES>().unwrap_or(&[0.0; LANES])));
                if R::WRITES {
                    if let Some(o) = out.last_chunk_mut::<LANES>() {
                        *o = R::step(kv, last, &mut [V::ZERO; A]).to_array();
                    }
                }
                let masked = each(|j| mask_overlap(last[j], t, pad[j]));
                R::step(kv, masked, acc);
            } else {
                let tail = each(|j| load_tail(x[j].get(n - t..).unwrap_or(&[]), pad[j]));
                let y = R::step(kv, tail, acc);
                if let (true, Some(o)) = (R::WRITES, out.get_mut(n - t..)) {
                    store_tail(o, y);
                }
            }
            if whole % slots == 0 {
                // The tail began a period of its own.
                adds += 1;
            }
        }
        if adds >= BLOCK {
            g.spill(&offsets, &mut acc, sums);
            adds = 0;
        }
    }
    // Unconditional: a tail may have been added after a spill within its line.
    g.spill(&offsets, &mut acc, sums);
}

// Its arrays in a frame of its own (see `by_cap`).
#[cfg_attr(target_pointer_width = "64", inline(never))]
pub(super) fn map<
    M: Map<I, K>,
    const I: usize,
    const K: usize,
    const IN_PLACE: bool,
    const S: usize,
>(
    g: &Lines,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: [&[f32]; K],
) {
    let mut kv = [[V::ZERO; K]; S];
    g.constants(&g.offsets::<S>(), k, &mut kv);
    // `S` ≥ 1: as `clamp(1, S)`, without its panic path for `S < 1`.
    let slots = g.slots.min(S).max(1);
    for r in 0..g.steps {
        let line = g.line(r);
        let x = sub(&ins, line.clone());
        let out = out.get_mut(line).unwrap_or(&mut []);
        let n = out.len();
        let t = n % LANES;
        // The overlapping last vector, computed before anything is stored.
        let last: Option<Lanes> = match kv.get(n / LANES) {
            Some(kv) if t != 0 && g.overlaps(n) => {
                let v = each(|j| {
                    let src = if IN_PLACE && j == 0 { &*out } else { x[j] };
                    V::new(*src.last_chunk::<LANES>().unwrap_or(&[0.0; LANES]))
                });
                Some(M::map(kv, v).to_array())
            }
            _ => None,
        };
        let xs = x.map(|x| x.as_chunks::<LANES>().0);
        let (outs, tail) = out.as_chunks_mut::<LANES>();
        let whole = xs
            .iter()
            .skip(usize::from(IN_PLACE))
            .fold(outs.len(), |w, x| w.min(x.len()));
        let outs = outs.get_mut(..whole).unwrap_or(&mut []);
        for (p, outs) in outs.chunks_mut(slots).enumerate() {
            let (xp, n) = period(&xs, p * slots, outs.len(), IN_PLACE);
            let f = |(o, kv): (&mut Lanes, &[V; K]), x: [Lanes; I]| {
                let x = each(|i| V::new(if IN_PLACE && i == 0 { *o } else { x[i] }));
                *o = M::map(kv, x).to_array();
            };
            // Slots and streams zipped, the slots limited to `n`: by `take` for one
            // read stream, by cutting for more (the other way round cost 10 % more
            // instructions on NHWC eval, 11 % more on NHWC eval with Add + ReLU).
            let (skip, fill) = (usize::from(IN_PLACE), [0.0; LANES]);
            if I - skip <= 1 {
                zip_with(outs.iter_mut().zip(&kv).take(n), xp, skip, fill, f);
            } else {
                let n = n.min(S).min(outs.len());
                zip_with(outs[..n].iter_mut().zip(&kv[..n]), xp, skip, fill, f);
            }
        }
        match (last, kv.get(whole % slots)) {
            (Some(y), _) => {
                if let Some(o) = out.last_chunk_mut::<LANES>() {
                    *o = y;
                }
            }
            (None, Some(kv)) if t != 0 => {
                let x = each(|j| {
                    let src = if IN_PLACE && j == 0 {
                        &*tail
                    } else {
                        x[j].get(n - t..).unwrap_or(&[])
                    };
                    load_tail(src, V::ZERO)
                });
                store_tail(tail, M::map(kv, x));
            }
            _ => {}
        }
    }
}
