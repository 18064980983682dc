//! `fold::into_preceding` and `fold::into_following`, every `WeightLayout`, groups
//! (dense, grouped, depthwise, and ones that do not divide), any kernel size.
//!
//! The fold documents every folded weight, the preceding bias and the pad values as
//! one f64 expression rounded once to f32, so those are checked bit for bit (NaNs as
//! NaN); the following bias is an f64 sum whose order is the implementation's, checked
//! to `4·U·(|b| + Σ|W·shift|)`.
#![no_main]

use batchnorm::fold::{self, EvalBn, Layer, WeightLayout};
use batchnorm::{BatchNorm, Error, RunningStats};
use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

const LAYOUTS: [WeightLayout; 4] = [
    WeightLayout::Oihw,
    WeightLayout::Ohwi,
    WeightLayout::Hwio,
    WeightLayout::Iohw,
];

fn layer(d: &mut Dec) -> Layer {
    let layout = LAYOUTS[usize::from(d.u8()) % 4];
    let mode = d.u8();
    if mode >= 248 {
        const HUGE: [usize; 12] = [
            0,
            1,
            2,
            3,
            1 << 31,
            1 << 32,
            1 << 40,
            usize::MAX / 3,
            usize::MAX / 2 + 1,
            usize::MAX,
            6,
            1 << 62,
        ];
        let mut pick = || HUGE[usize::from(d.u8()) % HUGE.len()];
        let (i, o, g) = (pick(), pick(), pick());
        // Kernel dims whose product may saturate, as the constructors multiply them.
        let dims = [pick(), pick()];
        return make(layout, i, o, g, &dims[..1 + usize::from(d.u8() & 1)]);
    }
    let g = 1 + usize::from(d.u8() % 4);
    let ig = usize::from(d.u8() % 6);
    let og = usize::from(d.u8() % 6);
    let kernel = [1, 1, 2, 3, 4, 9, 27, 0][usize::from(d.u8()) % 8];
    let (mut in_channels, mut out_channels, mut groups) = (g * ig, g * og, g);
    match d.u8() {
        0..=199 => {}
        200..=209 => groups = 0,
        210..=219 => in_channels += 1,
        220..=229 => out_channels += 1,
        230..=239 => groups = in_channels.max(1), // depthwise when it divides
        _ => groups = 7,
    }
    match d.u8() {
        // The named constructors, where they describe this layer.
        0..=15 if groups == 1 && kernel == 1 && layout == WeightLayout::Oihw => {
            Layer::linear(in_channels, out_channels)
        }
        0..=15 if groups == 1 && kernel == 1 && layout == WeightLayout::Hwio => {
            Layer::linear_in_out(in_channels, out_channels)
        }
        16..=31 if groups == in_channels && groups > 0 && layout == WeightLayout::Oihw => {
            Layer::depthwise(in_channels, out_channels / groups, &[kernel])
        }
        16..=31 if groups == in_channels && groups > 0 && layout == WeightLayout::Hwio => {
            Layer::depthwise_hwio(in_channels, out_channels / groups, &[kernel])
        }
        _ => make(layout, in_channels, out_channels, groups, &[kernel]),
    }
}

/// A layer of `layout` through its N-d constructor.
fn make(layout: WeightLayout, i: usize, o: usize, groups: usize, kernel: &[usize]) -> Layer {
    match layout {
        WeightLayout::Oihw => Layer::conv(i, o, kernel),
        WeightLayout::Ohwi => Layer::conv_ohwi(i, o, kernel),
        WeightLayout::Hwio => Layer::conv_hwio(i, o, kernel),
        _ => Layer::conv_transpose(i, o, kernel),
    }
    .grouped(groups)
}

/// Sizes of a layer whose groups divide its channels; None if the weight's element
/// count overflows.
struct Geo {
    og: usize,
    ig: usize,
    len: usize,
}

fn geometry(l: &Layer) -> Option<Geo> {
    let (og, ig) = (l.out_channels / l.groups, l.in_channels / l.groups);
    let len = og
        .checked_mul(ig)?
        .checked_mul(l.kernel)?
        .checked_mul(l.groups)?;
    Some(Geo { og, ig, len })
}

/// Flat index of `W[o = g·Og + p, i = g·Ig + q, k]`.
fn windex(l: &Layer, geo: &Geo, g: usize, p: usize, q: usize, k: usize) -> usize {
    let (o, i, kk) = (g * geo.og + p, g * geo.ig + q, l.kernel);
    match l.layout {
        WeightLayout::Oihw => (o * geo.ig + q) * kk + k,
        WeightLayout::Ohwi => (o * kk + k) * geo.ig + q,
        WeightLayout::Hwio => (k * geo.ig + q) * l.out_channels + o,
        WeightLayout::Iohw => (i * geo.og + p) * kk + k,
        _ => unreachable!("a layout this target does not know"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = Dec::new(data);
    let following = d.bool();
    let l = layer(&mut d);
    let eps = d.eps();
    let wgen = d.values();
    let pgen = d.values();

    let mut expect = Expect::default();
    expect.eps(eps);
    let divides = l.groups != 0
        && l.in_channels.is_multiple_of(l.groups)
        && l.out_channels.is_multiple_of(l.groups);
    for (arg, channels) in [
        ("in_channels", l.in_channels),
        ("out_channels", l.out_channels),
    ] {
        if l.groups == 0 || channels % l.groups != 0 {
            expect.push(Error::Groups {
                groups: l.groups,
                arg,
                channels,
            });
        }
    }
    let geo = divides.then(|| geometry(&l)).flatten();
    if divides && geo.is_none() {
        expect.push(Error::Overflow { arg: "weight" });
    }
    let bn_channels = if following {
        l.in_channels
    } else {
        l.out_channels
    };
    let cn = Some(bn_channels);
    let wlen = d.len(geo.as_ref().map(|g| g.len));
    let blen = d.len(Some(l.out_channels));
    let (mlen, vlen) = (d.len(cn), d.len(cn));
    let glen = (d.u8() & 3 != 0).then(|| d.len(cn));
    let betalen = (d.u8() & 3 != 0).then(|| d.len(cn));
    let padlen = (following && d.u8() & 1 == 1).then(|| d.len(cn));
    if let Some(g) = &geo {
        expect.len("weight", Some(g.len), wlen);
    }
    expect.len("bias", Some(l.out_channels), blen);
    expect.len("running_mean", cn, mlen);
    expect.len("running_var", cn, vlen);
    for (arg, n) in [("gamma", glen), ("beta", betalen), ("pad", padlen)] {
        if let Some(n) = n {
            expect.len(arg, cn, n);
        }
    }

    let mut stream = 0;
    let mut params = |n: usize| {
        stream += 1;
        pgen.fill_stream(n, stream)
    };
    let w0 = wgen.fill(wlen);
    let b0 = params(blen);
    let mean = params(mlen);
    let mut var = params(vlen);
    if d.u8() < 200 {
        var.iter_mut().for_each(|v| *v = v.abs());
    }
    let gamma = glen.map(&mut params);
    let beta = betalen.map(&mut params);
    let bn = EvalBn::new(
        BatchNorm {
            eps,
            gamma: gamma.as_deref(),
            beta: beta.as_deref(),
        },
        RunningStats {
            mean: &mean,
            var: &var,
        },
    );
    let lengths_ok = mlen == bn_channels
        && vlen == bn_channels
        && glen.is_none_or(|n| n == bn_channels)
        && betalen.is_none_or(|n| n == bn_channels);
    let scale_shift = |c: usize| {
        let g = gamma.as_ref().map_or(1.0, |g| f64::from(g[c]));
        let b = beta.as_ref().map_or(0.0, |b| f64::from(b[c]));
        let s = g / (f64::from(var[c]) + f64::from(eps)).sqrt();
        (s, b - f64::from(mean[c]) * s, b)
    };
    if following && padlen.is_some() && lengths_ok {
        if let Some(channel) = (0..bn_channels).find(|&i| scale_shift(i).0 == 0.0) {
            expect.push(Error::ZeroScale { channel });
        }
    }

    let mut w = Buf::from(&w0);
    let mut b = Buf::from(&b0);
    let mut pad = padlen.map(Buf::sentinel);
    let before = [w.bits(), b.bits(), pad.as_ref().map_or(vec![], Buf::bits)];
    let (r, name) = if following {
        let p = opt_body(&mut pad);
        (
            fold::into_following(&bn, l, w.body_mut(), b.body_mut(), p),
            "into_following",
        )
    } else {
        (
            fold::into_preceding(&bn, l, w.body_mut(), b.body_mut()),
            "into_preceding",
        )
    };
    let ok = expect.check(r, name);
    let outs = [
        (Some(&w), "weight"),
        (Some(&b), "bias"),
        (pad.as_ref(), "pad"),
    ];
    if !ok {
        for ((buf, n), before) in outs.iter().zip(&before) {
            if let Some(buf) = buf {
                buf.assert_unchanged(before, n);
            }
        }
        return;
    }
    for (buf, n) in outs {
        if let Some(buf) = buf {
            buf.assert_guards(n);
        }
    }
    if let Some(p) = &pad {
        p.assert_written("pad");
        for (i, got) in p.body().iter().enumerate() {
            let (s, _, beta) = scale_shift(i);
            let want = (f64::from(mean[i]) - beta / s) as f32;
            assert!(
                same_f32(*got, want),
                "{name}: pad[{i}] = {got:e}, expected {want:e}"
            );
        }
    }
    let geo = geo.expect("Ok with a valid geometry");
    let (w1, b1) = (w.body(), b.body());
    let mut seen = vec![false; geo.len];
    let mut acc = vec![(0.0f64, 0.0f64); l.out_channels]; // Σ W·shift, Σ|W·shift|
    for g in 0..l.groups.min(geo.len) {
        for p in 0..geo.og {
            for q in 0..geo.ig {
                for k in 0..l.kernel {
                    let at = windex(&l, &geo, g, p, q, k);
                    assert!(!seen[at], "layout maps two weights to {at}");
                    seen[at] = true;
                    let (o, i) = (g * geo.og + p, g * geo.ig + q);
                    let c = if following { i } else { o };
                    let (s, shift, _) = scale_shift(c);
                    let v = f64::from(w0[at]);
                    let want = (v * s) as f32;
                    assert!(
                        same_f32(w1[at], want),
                        "{name} {l:?}: weight[{at}] (o {o}, i {i}, k {k}) = {:e}, expected {want:e} = {:e}·{s:e}",
                        w1[at],
                        w0[at]
                    );
                    acc[o].0 += v * shift;
                    acc[o].1 += (v * shift).abs();
                }
            }
        }
    }
    assert!(
        seen.iter().all(|&s| s),
        "{name} {l:?}: the layout misses a weight"
    );
    for (o, &got) in b1.iter().enumerate() {
        let b = f64::from(b0[o]);
        if following {
            let (sum, mag) = acc[o];
            let want = b + sum;
            if in_range(want) && in_range(mag) {
                close(f64::from(got), want, 4.0 * U * (b.abs() + mag), || {
                    format!("{name} {l:?}: bias[{o}]")
                });
            } else if want.is_nan() {
                assert!(got.is_nan(), "{name}: bias[{o}] = {got:e}, expected NaN");
            }
        } else {
            let (s, _, beta) = scale_shift(o);
            let want = ((b - f64::from(mean[o])) * s + beta) as f32;
            assert!(
                same_f32(got, want),
                "{name} {l:?}: bias[{o}] = {got:e}, expected {want:e}"
            );
        }
    }
});
