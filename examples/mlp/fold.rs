//! TODO(fold): replace with batchnorm::fold — this whole module is a stand-in until the
//! crate's `fold::into_preceding` lands in main. It has the same arguments
//! (`EvalBn`, then the `[out][in]` weight and the bias), so the switch is one call.

/// An eval-mode batch norm: running statistics, affine parameters and eps.
pub struct EvalBn<'a> {
    pub running_mean: &'a [f32],
    pub running_var: &'a [f32],
    pub gamma: Option<&'a [f32]>,
    pub beta: Option<&'a [f32]>,
    pub eps: f32,
}

/// Folds `bn` into the linear layer before it (weights `[out][in]`), as DESIGN.md says:
/// `scale_o = γ_o/√(var_o + eps)`, `W'[o, :] = W[o, :]·scale_o`,
/// `b'_o = (b_o − mean_o)·scale_o + β_o`, in f64 and rounded once to f32.
pub fn into_preceding(bn: &EvalBn<'_>, weight: &mut [f32], bias: &mut [f32]) {
    let inputs = weight.len() / bias.len();
    for (o, (w_row, b)) in weight.chunks_exact_mut(inputs).zip(bias).enumerate() {
        let gamma = bn.gamma.map_or(1.0, |g| f64::from(g[o]));
        let beta = bn.beta.map_or(0.0, |b| f64::from(b[o]));
        let scale = gamma / (f64::from(bn.running_var[o]) + f64::from(bn.eps)).sqrt();
        for w in w_row {
            *w = (f64::from(*w) * scale) as f32;
        }
        *b = ((f64::from(*b) - f64::from(bn.running_mean[o])) * scale + beta) as f32;
    }
}
