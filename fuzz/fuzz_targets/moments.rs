//! `moments`, `Moments::of` and `Moments::merge`.
#![no_main]

use batchnorm::{moments, Moments, Shape};
use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

const SENTINEL: Moments = Moments {
    count: 0xdead_beef_dead_beef,
    mean: f64::from_bits(0x7ff4_dead_beef_0001),
    m2: f64::from_bits(0x7ff4_dead_beef_0002),
};
const GUARD: Moments = Moments {
    count: 0x6a5d_6a5d_6a5d_6a5d,
    mean: f64::from_bits(0xfff4_6a5d_6a5d_0001),
    m2: f64::from_bits(0xfff4_6a5d_6a5d_0002),
};

fn bits(m: &Moments) -> (u64, u64, u64) {
    (m.count, m.mean.to_bits(), m.m2.to_bits())
}

/// Checks computed moments of one channel against the reference.
fn check_channel(got: &Moments, r: &ChanRef, what: &dyn Fn() -> String) {
    assert_eq!(got.count, r.n as u64, "{}: count", what());
    if r.n == 0 {
        assert_eq!(
            bits(got),
            bits(&Moments::EMPTY),
            "{}: empty channel",
            what()
        );
        return;
    }
    if !r.finite {
        assert!(
            !(got.mean.is_finite() && got.m2.is_finite()),
            "{}: non-finite input gave finite moments {got:?}",
            what()
        );
        return;
    }
    if !r.moderate {
        return;
    }
    close(got.mean, r.mean, tol_mean(r), || {
        format!("{}: mean", what())
    });
    close(got.m2, r.m2, tol_m2(r), || format!("{}: m2", what()));
}

fuzz_target!(|data: &[u8]| {
    let mut d = Dec::new(data);
    let shape = d.shape();
    let gen = d.values();
    let mut expect = Expect::default();
    let len = expect.shape(shape);
    let xlen = d.len(len);
    let olen = d.len(Some(shape.channels));
    expect.len("x", len, xlen);
    expect.len("out", Some(shape.channels), olen);
    let split = d.u8();

    let x = gen.fill(xlen);
    let mut out = vec![GUARD; olen + 2 * GUARDS];
    out[GUARDS..GUARDS + olen].fill(SENTINEL);
    let before: Vec<_> = out.iter().map(bits).collect();

    let ok = expect.check(
        moments(&x, shape, &mut out[GUARDS..GUARDS + olen]),
        "moments",
    );
    if !ok {
        let after: Vec<_> = out.iter().map(bits).collect();
        assert_eq!(
            before, after,
            "moments: `out` modified by a call that failed"
        );
    } else {
        for (i, g) in out[..GUARDS]
            .iter()
            .chain(&out[GUARDS + olen..])
            .enumerate()
        {
            assert_eq!(bits(g), bits(&GUARD), "moments: guard cell {i} overwritten");
        }
        let out = &out[GUARDS..GUARDS + olen];
        let refs: Vec<ChanRef> = (0..shape.channels)
            .map(|c| ChanRef::of(channel_indices(shape, c).map(|i| x[i])))
            .collect();
        for (c, (got, r)) in out.iter().zip(&refs).enumerate() {
            assert_ne!(bits(got), bits(&SENTINEL), "moments: out[{c}] not written");
            check_channel(got, r, &|| format!("moments: channel {c} of {shape:?}"));
        }

        // The same tensor in two parts along the batch, merged.
        if shape.batch >= 2 {
            let b1 = 1 + usize::from(split) % (shape.batch - 1);
            let cut = b1 * shape.channels * shape.spatial;
            let s1 = Shape { batch: b1, ..shape };
            let s2 = Shape {
                batch: shape.batch - b1,
                ..shape
            };
            let mut p1 = vec![Moments::EMPTY; shape.channels];
            let mut p2 = vec![Moments::EMPTY; shape.channels];
            moments(&x[..cut], s1, &mut p1).expect("moments of the first part");
            moments(&x[cut..], s2, &mut p2).expect("moments of the second part");
            for c in 0..shape.channels {
                let merged = p1[c].merge(p2[c]);
                check_channel(&merged, &refs[c], &|| {
                    format!("merge: channel {c} at batch {b1}")
                });
                // Merging in the other order agrees to rounding.
                let swapped = p2[c].merge(p1[c]);
                check_channel(&swapped, &refs[c], &|| {
                    format!("merge swapped: channel {c}")
                });
            }
        }

        // `Moments::of` on the values of one channel.
        if let Some(c) = (shape.channels > 0).then(|| usize::from(split) % shape.channels) {
            let vals: Vec<f32> = channel_indices(shape, c).map(|i| x[i]).collect();
            check_channel(&Moments::of(&vals), &refs[c], &|| {
                format!("Moments::of channel {c}")
            });
        }
        // The empty set is the identity.
        for m in out {
            assert_eq!(bits(&m.merge(Moments::EMPTY)), bits(m), "merge EMPTY right");
            assert_eq!(bits(&Moments::EMPTY.merge(*m)), bits(m), "merge EMPTY left");
        }
    }

    // `merge`, `var`, `unbiased_var` of arbitrary parts never panic; counts add
    // (saturating).
    let counts = [0, 1, 2, 3, u64::MAX, u64::MAX - 1, 1 << 53, 1 << 63];
    let a = Moments {
        count: if d.bool() {
            d.u64()
        } else {
            counts[usize::from(d.u8()) % 8]
        },
        mean: if d.bool() {
            d.f64()
        } else {
            f64::from(d.raw_f32())
        },
        m2: if d.bool() {
            d.f64()
        } else {
            f64::from(d.raw_f32())
        },
    };
    let b = Moments {
        count: counts[usize::from(d.u8()) % 8],
        mean: d.f64(),
        m2: f64::from(d.raw_f32()),
    };
    for (p, q) in [(a, b), (b, a)] {
        let m = p.merge(q);
        assert_eq!(m.count, p.count.saturating_add(q.count), "merge count");
        if q.count == 0 {
            assert_eq!(bits(&m), bits(&p), "merge with an empty part");
        } else if p.count == 0 {
            assert_eq!(bits(&m), bits(&q), "merge into an empty part");
        }
        let _ = (m.var(), m.unbiased_var(), p.var(), p.unbiased_var());
    }
});
