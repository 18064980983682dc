//! `fold::into_preceding` against PyTorch's fusers (golden vectors).
//!
//! `tests/golden/fold/*.txt` were written by `tests/golden/make_golden.py` from
//! `torch.nn.utils.fusion.fuse_linear_bn_weights` and `fuse_conv_bn_weights`
//! (`transpose=False` and `True`), float32 on the CPU; see that script for the format.
//!
//! Where PyTorch is right (`torch_known_wrong: 0`) it computes in f32
//! (`rsqrt(var + eps)`, then two products), a few roundings per value; we compute
//! in f64 and round once. Tolerance: `K·u` relative to the magnitude of the folded
//! weight, and to `|b − mean|·|scale| + |β|` for the bias, K = 8.
//!
//! Where PyTorch is wrong (`torch_known_wrong: 1`: `fuse_conv_bn_weights(transpose=True)`
//! with groups ≠ 1 scales dim 1, which holds `out/groups` channels, by all `out`
//! scales, and so either raises or broadcasts to a weight of the wrong shape), the file
//! holds the numpy float64 reference rounded to f32, which computes what we compute:
//! we must match it bit for bit, and the test asserts that torch's recorded answer is
//! not that (an error, a wrong shape or wrong values).
//!
//! Every non-transposed file is also folded after repacking its weight into OHWI
//! and HWIO, which must give the same folded weights.

use std::collections::BTreeMap;
use std::path::Path;

use batchnorm::fold::{self, EvalBn, Layer, WeightLayout};
use batchnorm::{BatchNorm, RunningStats};

const U: f64 = 1.0 / 16_777_216.0; // 2^-24
const K: f64 = 8.0;

struct Golden {
    name: String,
    keys: BTreeMap<String, String>,
}

impl Golden {
    fn parse(path: &Path) -> Golden {
        let text = std::fs::read_to_string(path).unwrap();
        let mut keys = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{path:?}: bad line {line:?}"));
            keys.insert(k.trim().to_string(), v.trim().to_string());
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        Golden { name, keys }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    fn str(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("{}: no `{key}`", self.name))
    }

    fn floats(&self, key: &str) -> Vec<f32> {
        self.str(key)
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    }

    fn usizes(&self, key: &str) -> Vec<usize> {
        self.str(key)
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    }

    /// The layer the file describes, in PyTorch's own layout.
    fn layer(&self) -> Layer {
        let shape = self.usizes("weight_shape");
        let groups: usize = self.str("groups").parse().unwrap();
        match self.str("weight_layout") {
            "out_in" => Layer::linear(shape[1], shape[0]),
            "out_in_per_group_k" => {
                Layer::conv(shape[1] * groups, shape[0], &shape[2..]).grouped(groups)
            }
            "in_out_per_group_k" => {
                Layer::conv_transpose(shape[0], shape[1] * groups, &shape[2..]).grouped(groups)
            }
            other => panic!("{}: unknown weight_layout {other}", self.name),
        }
    }
}

/// `Oihw` weights repacked into `layout` (`Ohwi` or `Hwio`), and back.
fn repack(w: &[f32], layer: &Layer, layout: WeightLayout, back: bool) -> Vec<f32> {
    let (o_n, k_n) = (layer.out_channels, layer.kernel);
    let in_g = layer.in_channels / layer.groups;
    let mut out = vec![f32::NAN; w.len()];
    for o in 0..o_n {
        for q in 0..in_g {
            for k in 0..k_n {
                let from = (o * in_g + q) * k_n + k;
                let to = match layout {
                    WeightLayout::Ohwi => (o * k_n + k) * in_g + q,
                    WeightLayout::Hwio => (k * in_g + q) * o_n + o,
                    _ => unreachable!(),
                };
                if back {
                    out[from] = w[to];
                } else {
                    out[to] = w[from];
                }
            }
        }
    }
    out
}

#[test]
fn fold_matches_pytorch_golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fold");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "golden fold files missing in {dir:?}");
    let (mut right, mut wrong, mut worst) = (0, 0, 0.0f64);
    for path in &paths {
        let g = Golden::parse(path);
        let layer = g.layer();
        let w = g.floats("W");
        let mean = g.floats("bn_running_mean");
        let var = g.floats("bn_running_var");
        let gamma = g.floats("bn_gamma");
        let beta = g.floats("bn_beta");
        let eps: f32 = g.str("eps").parse().unwrap();
        let bn = EvalBn::new(
            BatchNorm {
                eps,
                gamma: Some(&gamma),
                beta: Some(&beta),
            },
            RunningStats {
                mean: &mean,
                var: &var,
            },
        );
        // The layer's bias, or zeros when it had none (`b:` absent).
        let b = g
            .get("b")
            .map_or(vec![0.0; layer.out_channels], |_| g.floats("b"));
        let (mut ours_w, mut ours_b) = (w.clone(), b.clone());
        fold::into_preceding(&bn, layer, &mut ours_w, &mut ours_b).unwrap();
        let (want_w, want_b) = (g.floats("W_fused"), g.floats("b_fused"));
        assert_eq!(want_w.len(), ours_w.len(), "{}", g.name);
        assert_eq!(want_b.len(), ours_b.len(), "{}", g.name);

        match g.str("torch_known_wrong") {
            "0" => {
                right += 1;
                for (n, (&ours, &torch)) in ours_w.iter().zip(&want_w).enumerate() {
                    let err = (f64::from(ours) - f64::from(torch)).abs()
                        / (U * f64::from(ours).abs()).max(1e-300);
                    worst = worst.max(err);
                    assert!(
                        err <= K,
                        "{}: W_fused[{n}] ours {ours} torch {torch} ({err:.1} u)",
                        g.name
                    );
                }
                let out_g = layer.out_channels;
                for o in 0..out_g {
                    let scale = f64::from(gamma[o]) / (f64::from(var[o]) + f64::from(eps)).sqrt();
                    let mag = ((f64::from(b[o]) - f64::from(mean[o])) * scale).abs()
                        + f64::from(beta[o]).abs();
                    let err = (f64::from(ours_b[o]) - f64::from(want_b[o])).abs() / (U * mag);
                    worst = worst.max(err);
                    assert!(
                        err <= K,
                        "{}: b_fused[{o}] ours {} torch {} ({err:.1} u)",
                        g.name,
                        ours_b[o],
                        want_b[o]
                    );
                }
            }
            "1" => {
                wrong += 1;
                // The reference is ours exactly: f64, rounded once.
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&ours_w), bits(&want_w), "{}: W_fused", g.name);
                assert_eq!(bits(&ours_b), bits(&want_b), "{}: b_fused", g.name);
                // And PyTorch's fuser did not produce it.
                let torch_differs = g.get("torch_error").is_some()
                    || g.get("torch_fused_shape") != g.get("weight_shape")
                    || g.floats("torch_W_fused") != want_w
                    || g.floats("torch_b_fused") != want_b;
                assert!(
                    torch_differs,
                    "{}: marked torch_known_wrong but torch's answer matches",
                    g.name
                );
                assert_eq!(
                    g.str("transpose"),
                    "1",
                    "{}: only transposed conv is known wrong",
                    g.name
                );
                assert_ne!(layer.groups, 1, "{}", g.name);
            }
            other => panic!("{}: torch_known_wrong = {other}", g.name),
        }

        // The same layer stored as OHWI and HWIO folds to the same weights.
        if layer.layout == WeightLayout::Oihw {
            for layout in [WeightLayout::Ohwi, WeightLayout::Hwio] {
                let (i, o, k) = (layer.in_channels, layer.out_channels, &[layer.kernel]);
                let other = match layout {
                    WeightLayout::Ohwi => Layer::conv_ohwi(i, o, k),
                    _ => Layer::conv_hwio(i, o, k),
                }
                .grouped(layer.groups);
                let mut w2 = repack(&w, &layer, layout, false);
                let mut b2 = b.clone();
                fold::into_preceding(&bn, other, &mut w2, &mut b2).unwrap();
                assert_eq!(
                    repack(&w2, &layer, layout, true),
                    ours_w,
                    "{} as {layout:?}",
                    g.name
                );
                assert_eq!(b2, ours_b);
            }
        }
    }
    assert!(
        right >= 8 && wrong >= 2,
        "{right} right, {wrong} known wrong"
    );
    println!(
        "{} golden files ({right} where torch is right: largest difference {worst:.2} u; \
         {wrong} where torch's fuser is wrong: bit-exact with the f64 reference)",
        paths.len()
    );
}
