//! Folding whole networks: every conv → BN pair of torchvision's resnet50 (53 pairs,
//! 23.45 M weights), resnext50_32x4d (grouped 3×3, 32 groups) and mobilenet_v2
//! (depthwise 3×3), each in every weight layout and on both sides of the layer, plus
//! linear layers `[out][in]` and `[in][out]`. Beside each, a plain loop over the weights
//! in memory order (per output channel where the layout keeps an output channel
//! together), compiled in the same build, which gives the same folded weights.
//!
//! ```sh
//! flock /tmp/bench.lock cargo bench --bench fold
//! flock /tmp/bench.lock env RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target/native cargo bench --bench fold
//! cargo bench --bench fold -- resnet50 --rounds=5   # a filter on the row names
//! ```
//!
//! Each row folds every layer of the network once per call; ours and the plain loop
//! alternate for `--rounds` rounds (default 9) on the same buffers, with the crate's
//! loops as they were before (commit a2b51c0, copied into `before`) in the first half
//! of the rounds (`--no-before` leaves them out), and the medians are printed, in ms per
//! network and ns per weight. Before timing, every row checks on
//! random BN statistics that ours and the plain loop agree: weights and the preceding
//! bias bit for bit, the following bias (an f64 sum in another order) to 1 ulp.
//! The timed calls fold with scale = ±1 exactly (γ = ±1, running_var = 1, eps = 0), so
//! that folding the same buffers again and again neither overflows nor reaches
//! subnormals; the cost of a fold does not depend on the values.

use std::hint::black_box;
use std::time::Instant;

use batchnorm::fold::{self, EvalBn, Layer, WeightLayout};
use batchnorm::{BatchNorm, RunningStats};

/// One convolution (or linear layer): `out × (in/groups) × kernel` weights.
#[derive(Clone, Copy, Debug)]
struct Conv {
    in_c: usize,
    out_c: usize,
    groups: usize,
    kernel: usize,
}

const fn conv(in_c: usize, out_c: usize, groups: usize, kernel: usize) -> Conv {
    Conv {
        in_c,
        out_c,
        groups,
        kernel,
    }
}

/// torchvision's ResNet of Bottleneck blocks [3, 4, 6, 3]: the stem 7×7 conv, then per
/// block conv1 1×1, conv2 3×3 (`groups`, `width` = planes·width_per_group/64·groups),
/// conv3 1×1 (planes·4), and a 1×1 downsample on the first block of each stage. Every
/// one of them is followed by a BatchNorm2d.
fn resnet(groups: usize, width_per_group: usize) -> Vec<Conv> {
    let mut convs = vec![conv(3, 64, 1, 7 * 7)];
    let mut inplanes = 64;
    for (planes, blocks) in [(64, 3), (128, 4), (256, 6), (512, 3)] {
        let width = planes * width_per_group / 64 * groups;
        for block in 0..blocks {
            convs.push(conv(inplanes, width, 1, 1));
            convs.push(conv(width, width, groups, 3 * 3));
            convs.push(conv(width, planes * 4, 1, 1));
            if block == 0 {
                convs.push(conv(inplanes, planes * 4, 1, 1));
            }
            inplanes = planes * 4;
        }
    }
    convs
}

/// torchvision's mobilenet_v2: the stem 3×3 conv (3 → 32), inverted residual blocks
/// (t, c, n) = expansion, channels, repeats: a 1×1 expansion when t ≠ 1, a depthwise
/// 3×3, a 1×1 projection; then the last 1×1 conv to 1280. Each conv is followed by BN.
fn mobilenet_v2() -> Vec<Conv> {
    let mut convs = vec![conv(3, 32, 1, 3 * 3)];
    let mut input = 32;
    for (t, c, n) in [
        (1, 16, 1),
        (6, 24, 2),
        (6, 32, 3),
        (6, 64, 4),
        (6, 96, 3),
        (6, 160, 3),
        (6, 320, 1),
    ] {
        for _ in 0..n {
            let hidden = input * t;
            if t != 1 {
                convs.push(conv(input, hidden, 1, 1));
            }
            convs.push(conv(hidden, hidden, hidden, 3 * 3));
            convs.push(conv(hidden, c, 1, 1));
            input = c;
        }
    }
    convs.push(conv(input, 1280, 1, 1));
    convs
}

/// Linear layers: resnet50's classifier and two square ones.
fn linears() -> Vec<Conv> {
    vec![
        conv(2048, 1000, 1, 1),
        conv(4096, 4096, 1, 1),
        conv(1024, 1024, 1, 1),
    ]
}

fn layer(layout: WeightLayout, c: Conv) -> Layer {
    let (i, o, k) = (c.in_c, c.out_c, &[c.kernel]);
    match layout {
        WeightLayout::Oihw => Layer::conv(i, o, k),
        WeightLayout::Ohwi => Layer::conv_ohwi(i, o, k),
        WeightLayout::Hwio => Layer::conv_hwio(i, o, k),
        _ => Layer::conv_transpose(i, o, k),
    }
    .grouped(c.groups)
}

fn layout_name(l: WeightLayout) -> &'static str {
    match l {
        WeightLayout::Oihw => "OIHW",
        WeightLayout::Ohwi => "OHWI",
        WeightLayout::Hwio => "HWIO",
        WeightLayout::Iohw => "IOHW",
        _ => "?",
    }
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }

    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// One BN's parameters, owned.
struct Bn {
    mean: Vec<f32>,
    var: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Bn {
    /// Random statistics (for the agreement check).
    fn random(rng: &mut Rng, n: usize) -> Bn {
        Bn {
            mean: rng.vec(n, -1.0, 1.0),
            var: rng.vec(n, 0.1, 3.0),
            gamma: rng.vec(n, -2.0, 2.0),
            beta: rng.vec(n, -1.0, 1.0),
            eps: 1e-5,
        }
    }

    /// scale = ±1 exactly (for timing: see the module docs).
    fn unit(rng: &mut Rng, n: usize) -> Bn {
        Bn {
            mean: rng.vec(n, -1.0, 1.0),
            var: vec![1.0; n],
            gamma: (0..n)
                .map(|_| if rng.next() & 1 == 0 { 1.0 } else { -1.0 })
                .collect(),
            beta: rng.vec(n, -1.0, 1.0),
            eps: 0.0,
        }
    }

    fn eval(&self) -> EvalBn<'_> {
        EvalBn::new(
            BatchNorm {
                eps: self.eps,
                gamma: Some(&self.gamma),
                beta: Some(&self.beta),
            },
            RunningStats {
                mean: &self.mean,
                var: &self.var,
            },
        )
    }

    /// (scale, shift) of channel `c`, in f64, as the crate documents them.
    fn scale_shift(&self, c: usize) -> (f64, f64) {
        let var = f64::from(self.var[c]) + f64::from(self.eps);
        let scale = f64::from(self.gamma[c]) / var.sqrt();
        (
            scale,
            f64::from(self.beta[c]) - f64::from(self.mean[c]) * scale,
        )
    }

    /// (scale, shift) of every channel.
    fn constants(&self) -> (Vec<f64>, Vec<f64>) {
        (0..self.mean.len()).map(|c| self.scale_shift(c)).unzip()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    /// conv → BN: `into_preceding`.
    Preceding,
    /// BN → conv: `into_following`.
    Following,
}

/// The plain loop: the weights in memory order, one f64 product per weight, per-channel
/// constants computed once into a Vec.
fn plain(side: Side, bn: &Bn, layer: Layer, w: &mut [f32], b: &mut [f32]) {
    let (scale, shift) = bn.constants();
    let (o_n, k_n) = (layer.out_channels, layer.kernel);
    let (og, ig) = (o_n / layer.groups, layer.in_channels / layer.groups);
    let mul = |w: &mut f32, s: f64| *w = (f64::from(*w) * s) as f32;
    match side {
        Side::Preceding => {
            for (o, b) in b.iter_mut().enumerate() {
                let shifted = f64::from(*b) - f64::from(bn.mean[o]);
                *b = (shifted * scale[o] + f64::from(bn.beta[o])) as f32;
            }
            match layer.layout {
                // [O][Ig][K], [O][K][Ig]: one output channel after another.
                WeightLayout::Oihw | WeightLayout::Ohwi => {
                    for (row, &s) in w.chunks_mut(ig * k_n).zip(&scale) {
                        row.iter_mut().for_each(|w| mul(w, s));
                    }
                }
                // [K][Ig][O]: every row runs across the output channels.
                WeightLayout::Hwio => {
                    for row in w.chunks_mut(o_n) {
                        row.iter_mut().zip(&scale).for_each(|(w, &s)| mul(w, s));
                    }
                }
                // [I][Og][K]: input channel i = g·Ig + q holds K weights per output p.
                _ => {
                    for (i, block) in w.chunks_mut(og * k_n).enumerate() {
                        let g = i / ig;
                        for (run, &s) in block.chunks_mut(k_n).zip(&scale[g * og..]) {
                            run.iter_mut().for_each(|w| mul(w, s));
                        }
                    }
                }
            }
        }
        Side::Following => {
            let mut acc = vec![0.0f64; o_n];
            match layer.layout {
                WeightLayout::Oihw => {
                    for (o, row) in w.chunks_mut(ig * k_n).enumerate() {
                        let g = o / og;
                        for (q, run) in row.chunks_mut(k_n).enumerate() {
                            let (s, h) = (scale[g * ig + q], shift[g * ig + q]);
                            for w in run {
                                acc[o] += f64::from(*w) * h;
                                mul(w, s);
                            }
                        }
                    }
                }
                WeightLayout::Ohwi => {
                    for (o, row) in w.chunks_mut(ig * k_n).enumerate() {
                        let g = o / og;
                        for run in row.chunks_mut(ig) {
                            for (q, w) in run.iter_mut().enumerate() {
                                acc[o] += f64::from(*w) * shift[g * ig + q];
                                mul(w, scale[g * ig + q]);
                            }
                        }
                    }
                }
                WeightLayout::Hwio => {
                    for (r, row) in w.chunks_mut(o_n).enumerate() {
                        let q = r % ig;
                        for (g, part) in row.chunks_mut(og).enumerate() {
                            let (s, h) = (scale[g * ig + q], shift[g * ig + q]);
                            for (a, w) in acc[g * og..].iter_mut().zip(part) {
                                *a += f64::from(*w) * h;
                                mul(w, s);
                            }
                        }
                    }
                }
                _ => {
                    for (i, block) in w.chunks_mut(og * k_n).enumerate() {
                        let g = i / ig;
                        let (s, h) = (scale[i], shift[i]);
                        for (run, a) in block.chunks_mut(k_n).zip(&mut acc[g * og..]) {
                            for w in run {
                                *a += f64::from(*w) * h;
                                mul(w, s);
                            }
                        }
                    }
                }
            }
            for (b, a) in b.iter_mut().zip(&acc) {
                *b = (f64::from(*b) + a) as f32;
            }
        }
    }
}

/// The crate's fold loops before this bench existed (commit a2b51c0), copied here so that
/// before and after run in one build: tiles of 32 output channels, each weight found by
/// its strides, so the inner loop steps across output channels (OIHW, OHWI, IOHW) rather
/// than along a row.
fn before(side: Side, bn: &Bn, layer: Layer, weight: &mut [f32], bias: &mut [f32]) {
    const TILE: usize = 32;
    let scale_shift = |c: usize| bn.scale_shift(c);
    let beta = |c: usize| f64::from(bn.beta[c]);
    let groups = layer.groups;
    let (out_g, in_g, kernel) = (
        layer.out_channels / groups,
        layer.in_channels / groups,
        layer.kernel,
    );
    let per_group = out_g * in_g * kernel;
    let (sg, sp, sq, sk) = match layer.layout {
        WeightLayout::Oihw => (per_group, in_g * kernel, kernel, 1),
        WeightLayout::Ohwi => (per_group, kernel * in_g, 1, in_g),
        WeightLayout::Hwio => (out_g, 1, layer.out_channels, in_g * layer.out_channels),
        _ => (per_group, kernel, out_g * kernel, 1),
    };
    match side {
        Side::Preceding => {
            for (o, b) in bias.iter_mut().enumerate() {
                let (scale, _) = scale_shift(o);
                let shifted = f64::from(*b) - f64::from(bn.mean[o]);
                *b = (shifted * scale + beta(o)) as f32;
            }
            for g in 0..groups {
                for p0 in (0..out_g).step_by(TILE) {
                    let n = TILE.min(out_g - p0);
                    let mut scale = [0.0; TILE];
                    for (t, s) in scale[..n].iter_mut().enumerate() {
                        *s = scale_shift(g * out_g + p0 + t).0;
                    }
                    let tile = g * sg + p0 * sp;
                    for q in 0..in_g {
                        for k in 0..kernel {
                            let at = tile + q * sq + k * sk;
                            for (t, &s) in scale[..n].iter().enumerate() {
                                let w = &mut weight[at + t * sp];
                                *w = (f64::from(*w) * s) as f32;
                            }
                        }
                    }
                }
            }
        }
        Side::Following => {
            for g in 0..groups {
                for p0 in (0..out_g).step_by(TILE) {
                    let n = TILE.min(out_g - p0);
                    let mut acc = [0.0f64; TILE];
                    for q0 in (0..in_g).step_by(TILE) {
                        let m = TILE.min(in_g - q0);
                        let (mut scale, mut shift) = ([0.0; TILE], [0.0; TILE]);
                        for (t, (sc, sh)) in scale[..m].iter_mut().zip(&mut shift[..m]).enumerate()
                        {
                            (*sc, *sh) = scale_shift(g * in_g + q0 + t);
                        }
                        let tile = g * sg + p0 * sp + q0 * sq;
                        for (q, (&sc, &sh)) in scale[..m].iter().zip(&shift[..m]).enumerate() {
                            for k in 0..kernel {
                                let at = tile + q * sq + k * sk;
                                for (t, a) in acc[..n].iter_mut().enumerate() {
                                    let w = &mut weight[at + t * sp];
                                    let v = f64::from(*w);
                                    *a += v * sh;
                                    *w = (v * sc) as f32;
                                }
                            }
                        }
                    }
                    for (t, a) in acc[..n].iter().enumerate() {
                        let b = &mut bias[g * out_g + p0 + t];
                        *b = (f64::from(*b) + a) as f32;
                    }
                }
            }
        }
    }
}

fn ours(side: Side, bn: &Bn, layer: Layer, w: &mut [f32], b: &mut [f32]) {
    let r = match side {
        Side::Preceding => fold::into_preceding(&bn.eval(), layer, w, b),
        Side::Following => fold::into_following(&bn.eval(), layer, w, b, None),
    };
    r.expect("a valid layer");
}

/// One network in one layout, folded on one side.
struct Row {
    name: String,
    layers: Vec<Layer>,
    weights: Vec<Vec<f32>>,
    biases: Vec<Vec<f32>>,
    bns: Vec<Bn>,
    side: Side,
}

impl Row {
    fn new(net: &str, convs: &[Conv], layout: WeightLayout, side: Side, seed: u64) -> Row {
        let mut rng = Rng(seed);
        let layers: Vec<Layer> = convs.iter().map(|&c| layer(layout, c)).collect();
        let weights = layers
            .iter()
            .map(|l| {
                rng.vec(
                    l.out_channels * l.in_channels / l.groups * l.kernel,
                    -1.0,
                    1.0,
                )
            })
            .collect();
        let biases = layers
            .iter()
            .map(|l| rng.vec(l.out_channels, -1.0, 1.0))
            .collect();
        let bns = layers
            .iter()
            .map(|l| Bn::unit(&mut rng, bn_channels(side, l)))
            .collect();
        let side_name = match side {
            Side::Preceding => "conv→BN",
            Side::Following => "BN→conv",
        };
        Row {
            name: format!("{net} {} {side_name}", layout_name(layout)),
            layers,
            weights,
            biases,
            bns,
            side,
        }
    }

    fn weight_count(&self) -> usize {
        self.weights.iter().map(Vec::len).sum()
    }

    /// Ours against the plain loop on random statistics, on copies.
    fn check(&self, seed: u64) {
        let mut rng = Rng(seed);
        for (n, &l) in self.layers.iter().enumerate() {
            let bn = Bn::random(&mut rng, bn_channels(self.side, &l));
            let (mut w1, mut b1) = (self.weights[n].clone(), self.biases[n].clone());
            let (mut w2, mut b2) = (w1.clone(), b1.clone());
            let (mut w3, mut b3) = (w1.clone(), b1.clone());
            ours(self.side, &bn, l, &mut w1, &mut b1);
            plain(self.side, &bn, l, &mut w2, &mut b2);
            before(self.side, &bn, l, &mut w3, &mut b3);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&w1) == bits(&w2),
                "{}: layer {n} {l:?}: weights differ",
                self.name
            );
            assert!(
                bits(&w1) == bits(&w3),
                "{}: layer {n}: before differs",
                self.name
            );
            if self.side == Side::Preceding {
                assert!(
                    bits(&b1) == bits(&b3),
                    "{}: layer {n}: before's bias",
                    self.name
                );
            }
            for (o, (x, y)) in b1.iter().zip(&b2).enumerate() {
                let ulps = (i64::from(x.to_bits() as i32) - i64::from(y.to_bits() as i32)).abs();
                let limit = if self.side == Side::Preceding { 0 } else { 1 };
                assert!(
                    ulps <= limit,
                    "{}: layer {n}: bias[{o}] {x} vs {y}",
                    self.name
                );
            }
        }
    }

    fn run(&mut self, f: fn(Side, &Bn, Layer, &mut [f32], &mut [f32])) -> f64 {
        let start = Instant::now();
        for n in 0..self.layers.len() {
            f(
                self.side,
                &self.bns[n],
                self.layers[n],
                black_box(&mut self.weights[n]),
                &mut self.biases[n],
            );
        }
        black_box(&self.weights);
        start.elapsed().as_secs_f64()
    }
}

fn bn_channels(side: Side, l: &Layer) -> usize {
    match side {
        Side::Preceding => l.out_channels,
        Side::Following => l.in_channels,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = args
        .iter()
        .find_map(|a| a.strip_prefix("--rounds=")?.parse().ok())
        .unwrap_or(9usize)
        .max(1);
    // The old loops are slow (tens of ms per network): half the rounds, or none.
    let with_before = !args.iter().any(|a| a == "--no-before");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();

    let resnet50 = resnet(1, 64);
    let weights: usize = resnet50
        .iter()
        .map(|c| c.out_c * c.in_c / c.groups * c.kernel)
        .sum();
    // torchvision: 25 557 032 parameters = these + fc (2 049 000) + BN (2 × 26 560).
    assert_eq!((resnet50.len(), weights), (53, 23_454_912));
    let nets = [
        ("resnet50", resnet50),
        ("resnext50_32x4d", resnet(32, 4)),
        ("mobilenet_v2", mobilenet_v2()),
    ];
    const LAYOUTS: [WeightLayout; 4] = [
        WeightLayout::Oihw,
        WeightLayout::Ohwi,
        WeightLayout::Hwio,
        WeightLayout::Iohw,
    ];
    let mut specs = Vec::new();
    for (net, convs) in &nets {
        for layout in LAYOUTS {
            for side in [Side::Preceding, Side::Following] {
                specs.push((net.to_string(), convs.clone(), layout, side));
            }
        }
    }
    for (name, layout) in [
        ("linear [out][in]", WeightLayout::Oihw),
        ("linear [in][out]", WeightLayout::Hwio),
    ] {
        for side in [Side::Preceding, Side::Following] {
            specs.push((name.replace(" [", "[").to_string(), linears(), layout, side));
        }
    }

    println!("| network, layout, side | pairs | weights | before ms | ours ms | plain ms | ours ns/weight | plain ns/weight | plain/ours |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (seed, (net, convs, layout, side)) in specs.into_iter().enumerate() {
        let mut row = Row::new(&net, &convs, layout, side, seed as u64);
        if !filters.is_empty() && !filters.iter().any(|f| row.name.contains(f)) {
            continue;
        }
        row.check(1000 + seed as u64);
        let (mut t_ours, mut t_plain, mut t_before) = (Vec::new(), Vec::new(), Vec::new());
        row.run(ours); // warm-up: page faults, caches
        row.run(plain);
        for round in 0..rounds {
            t_ours.push(row.run(ours));
            t_plain.push(row.run(plain));
            if with_before && round < rounds.div_ceil(2) {
                t_before.push(row.run(before));
            }
        }
        let (a, b) = (median(&mut t_ours), median(&mut t_plain));
        let n = row.weight_count() as f64;
        let old = if t_before.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2}", median(&mut t_before) * 1e3)
        };
        println!(
            "| {} | {} | {:.2} M | {old} | {:.2} | {:.2} | {:.3} | {:.3} | {:.2} |",
            row.name,
            row.layers.len(),
            n / 1e6,
            a * 1e3,
            b * 1e3,
            a * 1e9 / n,
            b * 1e9 / n,
            b / a
        );
    }
}
