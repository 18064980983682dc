#!/usr/bin/env python3
"""Generate the PyTorch golden vectors in tests/golden/ (read by tests/golden.rs).

This script is NOT run by CI or by `cargo test`: its outputs are committed.
Re-run it only to regenerate or extend the golden files.

Setup (a venv outside the repository; torch from PyPI, CPU is all that is used):

    python3 -m venv /work/venv
    /work/venv/bin/pip install torch numpy

Run from the repository root:

    /work/venv/bin/python tests/golden/make_golden.py

Everything is float32 on the CPU with a fixed seed and deterministic algorithms,
so the output is reproducible for a given torch version (written into every file).

File format (parsed by tests/golden.rs without dependencies): plain text, one
`key: value ...` per line, `#` starts a comment line. Floats are float32 printed
with '%.9g', which round-trips exactly to the same f32. A key that is absent
means "not applicable" (e.g. no `gamma:` line = affine=False, gamma is 1).

tests/golden/NAME.txt -- one batch-norm configuration per file, all ops on it:
  torch_version, name, desc
  layout: channels_first | channels_last   (flat data is in that memory order)
  torch_shape: the PyTorch tensor shape (N, C, spatial...)
  shape: N C S                              (S = product of spatial dims)
  eps, momentum: <float> | cumulative   (+ batches_tracked: <num_batches_tracked
                                           before the step> when cumulative)
  x, gamma?, beta?, running_mean, running_var   inputs; the running stats are the
                                           values BEFORE the train step and are also
                                           the statistics used by eval / backward_eval
  train_y, train_save_mean, train_save_invstd, train_running_mean,
  train_running_var                        torch.native_batch_norm(training=True)
                                           (running_* = after the in-place update)
  eval_y                                   torch.native_batch_norm(training=False)
  dy                                       upstream gradient (same layout as x)
  backward_train_dx, backward_train_dgamma, backward_train_dbeta
  backward_eval_dx,  backward_eval_dgamma,  backward_eval_dbeta
      torch.ops.aten.native_batch_norm_backward(dy, x, weight, running_mean,
      running_var, save_mean, save_invstd, train, eps, [True, True, True]);
      backward_train uses train_save_mean/train_save_invstd.

tests/golden/fold/NAME.txt -- torch.nn.utils.fusion.fuse_{conv,linear}_bn_weights:
  torch_version, name, desc, kind: linear | conv | conv_transpose
  torch_fn, weight_shape (PyTorch weight shape), weight_layout, groups,
  transpose: 0|1, eps, W, b? (absent = layer without bias), bn_running_mean,
  bn_running_var, bn_gamma, bn_beta, W_fused, b_fused (b_fused present even when
  b is absent: the fused layer gets a bias), torch_known_wrong: 0|1.
  When torch_known_wrong is 1, W_fused/b_fused are the CORRECT reference computed
  in numpy float64 from the same f32 inputs (then rounded to f32), and torch's own
  (wrong) output, or its error, is recorded as torch_W_fused / torch_fused_shape /
  torch_error for the record only.

tests/golden/fused/NAME.txt -- batch norm fused with ReLU and with Add + ReLU: every
  key of tests/golden/NAME.txt above (the plain batch norm of the same input), and
  z                                         the residual (same layout as x)
  relu_train_y, relu_eval_y                 F.relu(F.batch_norm(x, ..., training=T/F))
  relu_backward_{train,eval}_{dx,dgamma,dbeta}
                                            autograd of that with upstream gradient dy
  add_relu_train_y, add_relu_eval_y         F.relu(F.batch_norm(x, ...) + z)
  add_relu_backward_{train,eval}_{dx,dz,dgamma,dbeta}
                                            autograd of that (dz = d/dz)
  With affine=False (no gamma/beta lines) dgamma/dbeta are the gradients of a weight
  of ones and a bias of zeros (the same forward, bit for bit).

tests/golden/renorm/NAME.txt -- Batch Renormalization (Ioffe 2017), implemented below
  in PyTorch from the paper with r and d detached (torch has no built-in):
  torch_version, name, desc, layout, torch_shape, shape, eps, momentum, rmax, dmax
  (floats, 'inf' for no limit), x, gamma?, beta?, running_mean, running_var (before
  the step; r and d come from them), dy, and
  renorm_y, renorm_save_mean, renorm_save_invstd (1/sigma_B), renorm_r, renorm_d,
  renorm_running_mean, renorm_running_var (after the update, as batch norm's)
  renorm_backward_dx, renorm_backward_dgamma, renorm_backward_dbeta   (autograd)

tests/golden/norms/NAME.txt -- batch norm's neighbours (issue 12); `op` says which:
  torch_version, name, desc, op, torch_shape
  op layer_norm | rms_norm (F.layer_norm / F.rms_norm over the trailing dims):
    normalized_shape, rows, len (rows x len values, row-major), eps (rms_norm: the
    value used, with eps_arg: None for the dtype's epsilon), x, weight?, bias? (len
    each; absent = None), dy, y, mean (layer_norm; torch.native_layer_norm's),
    rstd (torch.native_layer_norm's / torch.ops.aten._fused_rms_norm's), mean_f64,
    rstd_f64 (float64 from the same f32 inputs, rounded once to f32), dx, dweight,
    dbias (autograd; with weight / bias absent the gradients of a weight of ones and
    a bias of zeros; for rms_norm dbias is that of a bias added after the norm)
  op group_norm | instance_norm (F.group_norm; F.instance_norm(use_input_stats=True)):
    layout, shape (N C S), groups (C for instance_norm), eps, x (in layout order),
    weight?, bias? (C each), dy, y, mean, rstd ([N][groups]: torch.native_group_norm's;
    for instance_norm those of the batch norm of x viewed as [1, N*C, S] that
    F.instance_norm runs), mean_f64, rstd_f64, dx, dweight, dbias (as above), and with
    running statistics momentum, running_mean, running_var (before), running_mean_after,
    running_var_after (F.instance_norm's in-place update)
  op clip_grad_norm (torch.nn.utils.clip_grad_norm_, error_if_nonfinite=False):
    lengths (of the gradients, concatenated in grads), max_norm, norm_type (2 | inf),
    grads, torch_known_wrong, total_norm, grads_after; when torch's f32 norm is off by
    more than 1e-5 (its squares overflow or underflow), total_norm/grads_after are the
    float64 answer rounded to f32 and torch's are torch_total_norm/torch_grads_after
  op clip_grad_value (torch.nn.utils.clip_grad_value_): lengths, clip_value, grads,
    grads_after

tests/golden/onnx/NAME.txt -- ONNX BatchNormalization (opset 15) run by onnxruntime
  (CPU), in training mode (training_mode=1: batch statistics, the running ones updated
  with ONNX's momentum and the biased batch variance) and in inference mode:
  ort_version, name, desc, onnx_shape (N C spatial...), shape (N C S, NCHW order),
  eps, onnx_momentum (ONNX's: the weight of the running value), x, scale, B,
  input_mean, input_var (the running statistics before the step), train_y,
  train_running_mean, train_running_var (outputs of training mode), eval_y
  (inference mode with input_mean/input_var), mean_f64, var_f64 (float64 mean and
  biased variance of each channel of x, rounded once to f32, for the bounds).
  Needs `pip install onnx onnxruntime` besides torch and numpy.

Groups: `make_golden.py [bn] [fold] [fused] [renorm] [norms] [onnx]` regenerates only the
groups named (default: all). fused, renorm and norms draw from their own
torch.Generator, so they do not depend on which other groups run, and adding them
left the other files byte-identical.
"""

import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

HERE = os.path.dirname(os.path.abspath(__file__))
FOLD_DIR = os.path.join(HERE, "fold")
FUSED_DIR = os.path.join(HERE, "fused")
RENORM_DIR = os.path.join(HERE, "renorm")

torch.manual_seed(20240611)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
DT = torch.float32


def fmt(t):
    a = np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t,
                   dtype=np.float32).reshape(-1)
    return " ".join("%.9g" % v for v in a.tolist())


def check_roundtrip(t):
    a = np.asarray(t.detach().numpy(), dtype=np.float32).reshape(-1)
    b = np.array([float("%.9g" % v) for v in a.tolist()], dtype=np.float32)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), "repr round-trip"


class Writer:
    def __init__(self, path):
        self.path = path
        self.lines = []

    def kv(self, key, value):
        self.lines.append("%s: %s" % (key, value))

    def arr(self, key, t):
        if isinstance(t, torch.Tensor):
            check_roundtrip(t)
        self.lines.append("%s: %s" % (key, fmt(t)))

    def comment(self, text):
        for line in text.splitlines():
            self.lines.append("# " + line)

    def close(self):
        with open(self.path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        return os.path.getsize(self.path)


def flat(t, channels_last):
    """Flatten a (N, C, *spatial) tensor in the given memory order."""
    if channels_last:
        perm = [0] + list(range(2, t.dim())) + [1]
        return t.permute(*perm).contiguous().reshape(-1)
    return t.contiguous().reshape(-1)


def f64_reference(x, gamma, beta, rm, rv, dy, eps):
    """float64 oracle from the same f32 inputs (only for reporting torch's own error)."""
    xd = x.double()
    dims = [0] + list(range(2, x.dim()))
    shp = [1, -1] + [1] * (x.dim() - 2)
    C = x.shape[1]
    g = gamma.double() if gamma is not None else torch.ones(C, dtype=torch.float64)
    b = beta.double() if beta is not None else torch.zeros(C, dtype=torch.float64)
    m = xd.numel() // C
    mean = xd.mean(dims)
    var = ((xd - mean.reshape(shp)) ** 2).mean(dims)
    invstd = 1.0 / torch.sqrt(var + eps)
    xhat = (xd - mean.reshape(shp)) * invstd.reshape(shp)
    y = xhat * g.reshape(shp) + b.reshape(shp)
    dyd = dy.double()
    dbeta = dyd.sum(dims)
    dgamma = (dyd * xhat).sum(dims)
    dx = (g * invstd).reshape(shp) * (dyd - (dbeta / m).reshape(shp) - xhat * (dgamma / m).reshape(shp))
    rinv = 1.0 / torch.sqrt(rv.double() + eps)
    xhat_e = (xd - rm.double().reshape(shp)) * rinv.reshape(shp)
    ye = xhat_e * g.reshape(shp) + b.reshape(shp)
    dxe = dyd * (g * rinv).reshape(shp)
    dge = (dyd * xhat_e).sum(dims)
    return dict(train_y=y, train_save_mean=mean, train_save_invstd=invstd, eval_y=ye,
                backward_train_dx=dx, backward_train_dgamma=dgamma, backward_train_dbeta=dbeta,
                backward_eval_dx=dxe, backward_eval_dgamma=dge, backward_eval_dbeta=dbeta,
                var=var, m=m)


TOTAL = [0]
SUMMARY = []


def bn_case(name, desc, torch_shape, channels_last=False, affine=True, eps=1e-5,
            momentum=0.1, batches_tracked=None, offset=0.0, channel_scale=None,
            x_override=None):
    N, C = torch_shape[0], torch_shape[1]
    S = 1
    for d in torch_shape[2:]:
        S *= d
    x = torch.randn(*torch_shape, dtype=DT)
    if channel_scale is not None:
        x = x * torch.tensor(channel_scale, dtype=DT).reshape([1, -1] + [1] * (x.dim() - 2))
    x = (x + torch.randn(C, dtype=DT).reshape([1, -1] + [1] * (x.dim() - 2)) * 0.5 + offset).to(DT)
    if x_override is not None:
        x = x_override(x)
    dy = torch.randn(*torch_shape, dtype=DT)
    gamma = (1.0 + 0.5 * torch.randn(C, dtype=DT)) if affine else None
    beta = (0.5 * torch.randn(C, dtype=DT)) if affine else None
    dims = [0] + list(range(2, x.dim()))
    # Running stats before the step: near the batch statistics, but not equal,
    # so that eval output is O(1) and the momentum blend is visible.
    rm0 = (x.double().mean(dims) + 0.3 * torch.randn(C, dtype=torch.float64)).to(DT)
    rv0 = (x.double().var(dims) * (0.5 + torch.rand(C, dtype=torch.float64))).to(DT)

    if channels_last:
        mf = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x = x.to(memory_format=mf)
        dy = dy.to(memory_format=mf)
        assert x.is_contiguous(memory_format=mf) and not x.is_contiguous()

    # ---- train forward ----
    if batches_tracked is None:
        factor = momentum
    else:
        factor = 1.0 / float(batches_tracked + 1)
    rm = rm0.clone()
    rv = rv0.clone()
    y, save_mean, save_invstd = torch.native_batch_norm(x, gamma, beta, rm, rv, True, factor, eps)
    # Cross-checks with the public functional / module API.
    rm_f = rm0.clone()
    rv_f = rv0.clone()
    y_f = F.batch_norm(x, rm_f, rv_f, gamma, beta, training=True, momentum=factor, eps=eps)
    assert torch.equal(y_f, y) and torch.equal(rm_f, rm) and torch.equal(rv_f, rv)
    if batches_tracked is not None or x.dim() in (2, 3, 4, 5):
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[x.dim()]
        mod = cls(C, eps=eps, momentum=None if batches_tracked is not None else momentum,
                  affine=affine)
        with torch.no_grad():
            if affine:
                mod.weight.copy_(gamma)
                mod.bias.copy_(beta)
            mod.running_mean.copy_(rm0)
            mod.running_var.copy_(rv0)
            mod.num_batches_tracked.fill_(batches_tracked if batches_tracked is not None else 7)
        mod.train()
        with torch.no_grad():
            y_m = mod(x)
        assert torch.equal(y_m, y), name
        assert torch.equal(mod.running_mean, rm), name
        assert torch.equal(mod.running_var, rv), name
        assert int(mod.num_batches_tracked) == (batches_tracked if batches_tracked is not None else 7) + 1

    # ---- eval forward ----
    y_eval, _, _ = torch.native_batch_norm(x, gamma, beta, rm0.clone(), rv0.clone(), False, 0.1, eps)
    y_eval_f = F.batch_norm(x, rm0.clone(), rv0.clone(), gamma, beta, training=False, eps=eps)
    assert torch.equal(y_eval, y_eval_f)

    # ---- backward ----
    dx_t, dg_t, db_t = torch.ops.aten.native_batch_norm_backward(
        dy, x, gamma, rm0.clone(), rv0.clone(), save_mean, save_invstd, True, eps, [True, True, True])
    dx_e, dg_e, db_e = torch.ops.aten.native_batch_norm_backward(
        dy, x, gamma, rm0.clone(), rv0.clone(), save_mean, save_invstd, False, eps, [True, True, True])
    # Cross-check the train backward with autograd through F.batch_norm.
    xa = x.detach().clone().requires_grad_(True)
    ga = gamma.detach().clone().requires_grad_(True) if affine else None
    ba = beta.detach().clone().requires_grad_(True) if affine else None
    ya = F.batch_norm(xa, rm0.clone(), rv0.clone(), ga, ba, training=True, momentum=factor, eps=eps)
    ya.backward(dy)
    assert torch.allclose(xa.grad, dx_t, rtol=1e-5, atol=1e-5), name
    if affine:
        assert torch.allclose(ga.grad, dg_t, rtol=1e-5, atol=1e-4), name
        assert torch.allclose(ba.grad, db_t, rtol=1e-5, atol=1e-4), name

    w = Writer(os.path.join(HERE, name + ".txt"))
    w.comment("PyTorch golden vectors for the batchnorm crate. Generated by make_golden.py; do not edit.")
    w.comment(desc)
    w.kv("torch_version", torch.__version__)
    w.kv("name", name)
    w.kv("layout", "channels_last" if channels_last else "channels_first")
    w.kv("torch_shape", " ".join(str(d) for d in torch_shape))
    w.kv("shape", "%d %d %d" % (N, C, S))
    w.kv("eps", "%.9g" % np.float32(eps))
    if batches_tracked is None:
        w.kv("momentum", "%.9g" % np.float32(momentum))
    else:
        w.kv("momentum", "cumulative")
        w.kv("batches_tracked", str(batches_tracked))
    w.arr("x", flat(x, channels_last))
    if affine:
        w.arr("gamma", gamma)
        w.arr("beta", beta)
    w.arr("running_mean", rm0)
    w.arr("running_var", rv0)
    w.arr("train_y", flat(y, channels_last))
    w.arr("train_save_mean", save_mean)
    w.arr("train_save_invstd", save_invstd)
    w.arr("train_running_mean", rm)
    w.arr("train_running_var", rv)
    w.arr("eval_y", flat(y_eval, channels_last))
    w.arr("dy", flat(dy, channels_last))
    w.arr("backward_train_dx", flat(dx_t, channels_last))
    if dg_t is not None:
        w.arr("backward_train_dgamma", dg_t)
    if db_t is not None:
        w.arr("backward_train_dbeta", db_t)
    w.arr("backward_eval_dx", flat(dx_e, channels_last))
    if dg_e is not None:
        w.arr("backward_eval_dgamma", dg_e)
    if db_e is not None:
        w.arr("backward_eval_dbeta", db_e)
    TOTAL[0] += w.close()

    # How far is torch itself from a float64 evaluation on the same f32 inputs?
    ref = f64_reference(x.contiguous(), gamma, beta, rm0, rv0, dy.contiguous(), float(np.float32(eps)))
    got = dict(train_y=y, train_save_mean=save_mean, train_save_invstd=save_invstd, eval_y=y_eval,
               backward_train_dx=dx_t, backward_train_dgamma=dg_t, backward_train_dbeta=db_t,
               backward_eval_dx=dx_e, backward_eval_dgamma=dg_e, backward_eval_dbeta=db_e)
    errs = []
    for k, v in got.items():
        if v is None:
            continue
        r = ref[k]
        e = ((v.double().contiguous() - r).abs() / (1.0 + r.abs())).max().item()
        errs.append("%s %.2g" % (k, e))
    SUMMARY.append("%-24s max |torch-f64|/(1+|f64|): %s" % (name, ", ".join(errs)))
    SUMMARY.append("%-24s dgamma/dbeta returned with weight=None: %s" % (
        "", "n/a (affine)" if affine else (dg_t is not None, db_t is not None)))


def bn_cases():
    bn_case("nchw_affine", "BatchNorm2d NCHW, affine, momentum 0.1", (4, 3, 5, 5))
    bn_case("nchw_noaffine", "BatchNorm2d NCHW, affine=False (gamma/beta absent), momentum 0.1",
            (4, 3, 5, 5), affine=False)
    bn_case("nhwc_affine", "BatchNorm2d NHWC (x.to(memory_format=torch.channels_last)), affine",
            (3, 8, 4, 4), channels_last=True)
    bn_case("nhwc_noaffine", "BatchNorm2d NHWC (channels_last), affine=False, momentum 0.3",
            (2, 5, 3, 3), channels_last=True, affine=False, momentum=0.3)
    bn_case("ncl_affine", "BatchNorm1d on 3-D input NCL, affine, momentum 0.1", (2, 17, 7))
    bn_case("nc_affine", "BatchNorm1d on 2-D input [N, C] (S = 1), affine, momentum 0.1", (8, 5))
    bn_case("nc_noaffine_m2", "BatchNorm1d on [N, C] with N = 2 (m = 2, smallest m with running stats), affine=False",
            (2, 6), affine=False)
    bn_case("ncdhw_affine", "BatchNorm3d NCDHW, affine", (2, 3, 2, 3, 3))
    bn_case("ndhwc_affine", "BatchNorm3d NDHWC (channels_last_3d), affine", (2, 4, 2, 2, 3),
            channels_last=True)
    bn_case("nchw_cumulative", "BatchNorm2d(momentum=None): cumulative average, num_batches_tracked = 3 "
            "before the step, so the factor is 1/4", (4, 3, 5, 5), momentum=None, batches_tracked=3)
    bn_case("nc_cumulative_first", "BatchNorm1d(momentum=None) on [N, C], num_batches_tracked = 0 before "
            "the step (factor 1: running stats become the batch stats)", (8, 5),
            momentum=None, batches_tracked=0)
    bn_case("nchw_offset1000", "NCHW with x = 1000 + randn (|mean|/std ~ 1e3): single-pass accuracy",
            (4, 3, 5, 5), offset=1000.0)
    bn_case("nhwc_offset1000", "NHWC with x = 1000 + randn (|mean|/std ~ 1e3)", (3, 8, 4, 4),
            channels_last=True, offset=1000.0)
    bn_case("nc_eps_big_tinyvar", "[N, C] with eps = 0.1 and channels of very different scales "
            "(std 1e-3 .. 10): shows where eps enters (inside the sqrt)", (16, 4),
            eps=0.1, channel_scale=[1e-3, 1.0, 10.0, 0.05])
    bn_case("nchw_tinyvar", "NCHW, eps 1e-5, channel 1 has std 1e-3 (var << eps), channel 2 is constant "
            "(var 0: y = beta)", (2, 3, 3, 3), channel_scale=[1.0, 1e-3, 1.0],
            x_override=lambda x: torch.cat([x[:, :2], torch.full_like(x[:, 2:3], 0.75)], 1))


# ------------------------------------------------------------------ folding

def fold_case(name, desc, kind, weight_shape, groups=1, bias=True, eps=1e-5, layer=None):
    os.makedirs(FOLD_DIR, exist_ok=True)
    transpose = kind == "conv_transpose"
    if layer is not None:
        W = layer.weight.detach().clone()
        b = layer.bias.detach().clone() if layer.bias is not None else None
    else:
        W = torch.randn(*weight_shape, dtype=DT) * 0.5
        b = None
    assert tuple(W.shape) == tuple(weight_shape), (W.shape, weight_shape)
    if kind == "linear":
        out_ch = W.shape[0]
    elif transpose:
        out_ch = W.shape[1] * groups
    else:
        out_ch = W.shape[0]
    if bias and b is None:
        b = torch.randn(out_ch, dtype=DT) * 0.3
    rm = torch.randn(out_ch, dtype=DT) * 0.5
    rv = 0.2 + torch.rand(out_ch, dtype=DT) * 2.0
    g = 1.0 + 0.5 * torch.randn(out_ch, dtype=DT)
    beta = 0.5 * torch.randn(out_ch, dtype=DT)

    # numpy float64 reference (correct for every layout, including grouped transpose)
    Wd = W.double().numpy()
    scale = g.double().numpy() / np.sqrt(rv.double().numpy() + float(np.float32(eps)))
    if kind == "linear" or not transpose:
        Wf_ref = Wd * scale.reshape([-1] + [1] * (Wd.ndim - 1))
    else:
        # [in][out/groups][k...]: output channel o = g*(out/groups) + j lives at
        # rows g*(in/groups) .. (g+1)*(in/groups), column j.
        in_ch, opg = Wd.shape[0], Wd.shape[1]
        ipg = in_ch // groups
        Wf_ref = Wd.copy()
        for gi in range(groups):
            for j in range(opg):
                Wf_ref[gi * ipg:(gi + 1) * ipg, j] *= scale[gi * opg + j]
    bd = b.double().numpy() if b is not None else np.zeros(out_ch)
    bf_ref = (bd - rm.double().numpy()) * scale + beta.double().numpy()

    torch_wrong = False
    torch_err = None
    tW = tb = None
    try:
        if kind == "linear":
            tW, tb = fuse_linear_bn_weights(W, b, rm, rv, eps, g, beta)
            fn = "torch.nn.utils.fusion.fuse_linear_bn_weights"
        else:
            tW, tb = fuse_conv_bn_weights(W, b, rm, rv, eps, g, beta, transpose=transpose)
            fn = "torch.nn.utils.fusion.fuse_conv_bn_weights(transpose=%s)" % transpose
        tW = tW.detach()
        tb = tb.detach()
        if tuple(tW.shape) != tuple(W.shape):
            torch_wrong = True
        elif not np.allclose(tW.double().numpy(), Wf_ref, rtol=1e-5, atol=1e-6) or \
                not np.allclose(tb.double().numpy(), bf_ref, rtol=1e-5, atol=1e-6):
            torch_wrong = True
    except Exception as e:  # noqa: BLE001 -- recorded in the file
        torch_wrong = True
        torch_err = "%s: %s" % (type(e).__name__, str(e).replace("\n", " "))
        fn = "torch.nn.utils.fusion.fuse_conv_bn_weights(transpose=%s)" % transpose

    # The layer itself must agree with the fused weights (checks the reference
    # and the layout meaning end to end): eval(BN(layer(z))) == fused_layer(z).
    if layer is not None:
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d,
              5: nn.BatchNorm3d}
        with torch.no_grad():
            nd = W.dim()
            if kind == "linear":
                z = torch.randn(3, W.shape[1], dtype=torch.float64)
                bnm = nn.BatchNorm1d(out_ch, eps=eps).double()
            else:
                ks = W.shape[2:]
                z = torch.randn(*([2, W.shape[1] * groups if not transpose else W.shape[0]]
                                  + [k + 3 for k in ks]), dtype=torch.float64)
                bnm = bn[nd](out_ch, eps=eps).double()
            bnm.eval()
            bnm.running_mean.copy_(rm.double())
            bnm.running_var.copy_(rv.double())
            bnm.weight.copy_(g.double())
            bnm.bias.copy_(beta.double())
            lay = layer.double()
            ref_out = bnm(lay(z))
            lay.weight.copy_(torch.from_numpy(Wf_ref))
            if lay.bias is None:
                lay.bias = nn.Parameter(torch.from_numpy(bf_ref))
            else:
                lay.bias.copy_(torch.from_numpy(bf_ref))
            fused_out = lay(z)
            assert torch.allclose(ref_out, fused_out, rtol=1e-9, atol=1e-9), name

    if kind == "linear":
        layout = "out_in"
    elif transpose:
        layout = "in_out_per_group_k"
    else:
        layout = "out_in_per_group_k"
    w = Writer(os.path.join(FOLD_DIR, name + ".txt"))
    w.comment("PyTorch golden vectors for batchnorm folding. Generated by make_golden.py; do not edit.")
    w.comment(desc)
    if torch_wrong:
        w.comment("torch_known_wrong: PyTorch's fuser does not handle this layout; W_fused/b_fused are the")
        w.comment("correct reference computed in numpy float64 (rounded to f32); torch's output is recorded")
        w.comment("below as torch_* for the record only.")
    w.kv("torch_version", torch.__version__)
    w.kv("name", name)
    w.kv("kind", kind)
    w.kv("torch_fn", fn)
    w.kv("weight_shape", " ".join(str(d) for d in W.shape))
    w.kv("weight_layout", layout)
    w.kv("groups", str(groups))
    w.kv("transpose", "1" if transpose else "0")
    w.kv("eps", "%.9g" % np.float32(eps))
    w.arr("W", W)
    if b is not None:
        w.arr("b", b)
    w.arr("bn_running_mean", rm)
    w.arr("bn_running_var", rv)
    w.arr("bn_gamma", g)
    w.arr("bn_beta", beta)
    if torch_wrong:
        w.arr("W_fused", Wf_ref.astype(np.float32))
        w.arr("b_fused", bf_ref.astype(np.float32))
        w.kv("torch_known_wrong", "1")
        if torch_err is not None:
            w.kv("torch_error", torch_err)
        else:
            w.kv("torch_fused_shape", " ".join(str(d) for d in tW.shape))
            w.arr("torch_W_fused", tW)
            w.arr("torch_b_fused", tb)
    else:
        w.arr("W_fused", tW)
        w.arr("b_fused", tb)
        w.kv("torch_known_wrong", "0")
    TOTAL[0] += w.close()
    SUMMARY.append("fold/%-20s torch_known_wrong=%d%s" % (
        name, torch_wrong, (" (" + torch_err + ")") if torch_err else
        (" (torch shape %s)" % (tuple(tW.shape),) if torch_wrong else "")))


def fold_cases():
    fold_case("linear_bias", "nn.Linear(6, 4) with bias -> BatchNorm1d(4)", "linear", (4, 6),
              layer=nn.Linear(6, 4))
    fold_case("linear_nobias", "nn.Linear(5, 3, bias=False) -> BatchNorm1d(3)", "linear", (3, 5),
              bias=False, layer=nn.Linear(5, 3, bias=False))
    fold_case("conv2d_g1", "nn.Conv2d(3, 4, 3) with bias -> BatchNorm2d(4)", "conv", (4, 3, 3, 3),
              layer=nn.Conv2d(3, 4, 3))
    fold_case("conv2d_g2_nobias", "nn.Conv2d(4, 6, (3, 2), groups=2, bias=False) -> BatchNorm2d(6)", "conv",
              (6, 2, 3, 2), groups=2, bias=False, layer=nn.Conv2d(4, 6, (3, 2), groups=2, bias=False))
    fold_case("conv2d_depthwise", "depthwise nn.Conv2d(5, 5, 3, groups=5) -> BatchNorm2d(5)", "conv",
              (5, 1, 3, 3), groups=5, layer=nn.Conv2d(5, 5, 3, groups=5))
    fold_case("conv1d", "nn.Conv1d(3, 5, 4) -> BatchNorm1d(5)", "conv", (5, 3, 4),
              layer=nn.Conv1d(3, 5, 4))
    fold_case("conv3d", "nn.Conv3d(2, 3, (2, 2, 3)) -> BatchNorm3d(3)", "conv", (3, 2, 2, 2, 3),
              layer=nn.Conv3d(2, 3, (2, 2, 3)))
    fold_case("conv_transpose2d_g1", "nn.ConvTranspose2d(3, 4, 3) -> BatchNorm2d(4); weight [in][out][k][k]",
              "conv_transpose", (3, 4, 3, 3), layer=nn.ConvTranspose2d(3, 4, 3))
    fold_case("conv_transpose2d_g2", "nn.ConvTranspose2d(4, 6, 2, groups=2) -> BatchNorm2d(6); weight "
              "[in=4][out/groups=3][2][2]. torch's fuser scales dim 1 by all 6 channels: it fails.",
              "conv_transpose", (4, 3, 2, 2), groups=2, layer=nn.ConvTranspose2d(4, 6, 2, groups=2))
    fold_case("conv_transpose2d_g2_opg1", "nn.ConvTranspose2d(4, 2, 3, groups=2) -> BatchNorm2d(2); weight "
              "[in=4][out/groups=1][3][3]. torch's fuser broadcasts [4,1,3,3] * [1,2,1,1] to a wrong "
              "[4,2,3,3] weight without an error.",
              "conv_transpose", (4, 1, 3, 3), groups=2, layer=nn.ConvTranspose2d(4, 2, 3, groups=2))


# ------------------------------------------------------------------ fused and renorm

# Their own generator: the bn and fold groups above draw from the global one, in order.
GEN = torch.Generator().manual_seed(20261201)


def randn(*shape):
    return torch.randn(*shape, dtype=DT, generator=GEN)


def rand(*shape):
    return torch.rand(*shape, dtype=DT, generator=GEN)


def bcast(v, dim):
    """A per-channel vector shaped to broadcast over a (N, C, *spatial) tensor."""
    return v.reshape([1, -1] + [1] * (dim - 2))


def draw_inputs(torch_shape, affine, offset, channels_last, z_offsets=None):
    C = torch_shape[1]
    dim = len(torch_shape)
    x = (randn(*torch_shape) + bcast(randn(C), dim) * 0.5 + offset).to(DT)
    dy = randn(*torch_shape)
    z = randn(*torch_shape)
    if z_offsets is not None:
        z = (z + bcast(torch.tensor(z_offsets, dtype=DT), dim)).to(DT)
    gamma = (1.0 + 0.5 * randn(C)) if affine else None
    beta = (0.5 * randn(C)) if affine else None
    if channels_last:
        mf = torch.channels_last if dim == 4 else torch.channels_last_3d
        x = x.to(memory_format=mf)
        dy = dy.to(memory_format=mf)
        z = z.to(memory_format=mf)
        assert x.is_contiguous(memory_format=mf) and not x.is_contiguous()
    return x, dy, z, gamma, beta


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def write_header(w, name, desc, torch_shape, channels_last, eps, momentum):
    S = 1
    for d in torch_shape[2:]:
        S *= d
    w.comment("PyTorch golden vectors for the batchnorm crate. Generated by make_golden.py; do not edit.")
    w.comment(desc)
    w.kv("torch_version", torch.__version__)
    w.kv("name", name)
    w.kv("layout", "channels_last" if channels_last else "channels_first")
    w.kv("torch_shape", " ".join(str(d) for d in torch_shape))
    w.kv("shape", "%d %d %d" % (torch_shape[0], torch_shape[1], S))
    w.kv("eps", "%.9g" % np.float32(eps))
    w.kv("momentum", "%.9g" % np.float32(momentum))


def fused_case(name, desc, torch_shape, channels_last=False, affine=True, eps=1e-5,
               momentum=0.1, offset=0.0, z_offsets=None):
    C = torch_shape[1]
    dim = len(torch_shape)
    dims = [0] + list(range(2, dim))
    x, dy, z, gamma, beta = draw_inputs(torch_shape, affine, offset, channels_last, z_offsets)
    rm0 = (x.double().mean(dims) + 0.3 * torch.randn(C, dtype=torch.float64, generator=GEN)).to(DT)
    rv0 = (x.double().var(dims) * (0.5 + torch.rand(C, dtype=torch.float64, generator=GEN))).to(DT)
    # affine=False: a weight of ones and a bias of zeros give the same forward bit for
    # bit, and their gradients are what the crate's dgamma/dbeta compute.
    g_in = gamma if affine else torch.ones(C, dtype=DT)
    b_in = beta if affine else torch.zeros(C, dtype=DT)

    # ---- plain batch norm of the same input (the keys of a tests/golden/*.txt file)
    rm, rv = rm0.clone(), rv0.clone()
    y, save_mean, save_invstd = torch.native_batch_norm(x, gamma, beta, rm, rv, True, momentum, eps)
    y_eval, _, _ = torch.native_batch_norm(x, gamma, beta, rm0.clone(), rv0.clone(), False, 0.1, eps)
    dx_t, dg_t, db_t = torch.ops.aten.native_batch_norm_backward(
        dy, x, g_in, rm0.clone(), rv0.clone(), save_mean, save_invstd, True, eps, [True, True, True])
    dx_e, dg_e, db_e = torch.ops.aten.native_batch_norm_backward(
        dy, x, g_in, rm0.clone(), rv0.clone(), save_mean, save_invstd, False, eps, [True, True, True])

    # ---- fused: autograd through the unfused composition
    out = {}
    for fusion in ("relu", "add_relu"):
        for training in (True, False):
            xa, ga, ba, za = leaf(x), leaf(g_in), leaf(b_in), leaf(z)
            rma, rva = rm0.clone(), rv0.clone()
            bn = F.batch_norm(xa, rma, rva, ga, ba, training=training, momentum=momentum, eps=eps)
            ya = F.relu(bn + za) if fusion == "add_relu" else F.relu(bn)
            ya.backward(dy)
            mode = "train" if training else "eval"
            out["%s_%s_y" % (fusion, mode)] = ya.detach()
            out["%s_backward_%s_dx" % (fusion, mode)] = xa.grad
            if fusion == "add_relu":
                out["%s_backward_%s_dz" % (fusion, mode)] = za.grad
            out["%s_backward_%s_dgamma" % (fusion, mode)] = ga.grad
            out["%s_backward_%s_dbeta" % (fusion, mode)] = ba.grad
            # Cross-checks: the forward is relu of batch norm's own output (bit for
            # bit), and the backward is batch norm's backward of the masked gradient.
            bn_plain = y if training else y_eval
            pre = bn_plain + z if fusion == "add_relu" else bn_plain
            assert torch.equal(ya.detach(), F.relu(pre)), (name, fusion, mode)
            gmask = torch.ops.aten.threshold_backward(dy, ya.detach(), 0)
            if fusion == "add_relu":
                assert torch.equal(za.grad, gmask), name
            ref = torch.ops.aten.native_batch_norm_backward(
                gmask, x, g_in, rm0.clone(), rv0.clone(), save_mean, save_invstd, training, eps,
                [True, True, True])
            for k, (a, b) in enumerate(zip((xa.grad, ga.grad, ba.grad), ref)):
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (name, fusion, mode, k)
            masked = (ya.detach() <= 0).double().mean().item()
            SUMMARY.append("%-24s %-8s %-5s masked fraction %.2f" % ("fused/" + name, fusion, mode, masked))

    w = Writer(os.path.join(FUSED_DIR, name + ".txt"))
    write_header(w, name, desc, torch_shape, channels_last, eps, momentum)
    w.arr("x", flat(x, channels_last))
    if affine:
        w.arr("gamma", gamma)
        w.arr("beta", beta)
    w.arr("running_mean", rm0)
    w.arr("running_var", rv0)
    w.arr("train_y", flat(y, channels_last))
    w.arr("train_save_mean", save_mean)
    w.arr("train_save_invstd", save_invstd)
    w.arr("train_running_mean", rm)
    w.arr("train_running_var", rv)
    w.arr("eval_y", flat(y_eval, channels_last))
    w.arr("dy", flat(dy, channels_last))
    w.arr("backward_train_dx", flat(dx_t, channels_last))
    w.arr("backward_train_dgamma", dg_t)
    w.arr("backward_train_dbeta", db_t)
    w.arr("backward_eval_dx", flat(dx_e, channels_last))
    w.arr("backward_eval_dgamma", dg_e)
    w.arr("backward_eval_dbeta", db_e)
    w.arr("z", flat(z, channels_last))
    for k, v in out.items():
        w.arr(k, flat(v, channels_last) if v.dim() > 1 else v)
    TOTAL[0] += w.close()


def fused_cases():
    os.makedirs(FUSED_DIR, exist_ok=True)
    fused_case("nchw_affine", "BN + ReLU and BN + Add + ReLU, NCHW (BatchNorm2d), affine, momentum 0.1",
               (4, 3, 5, 5))
    fused_case("nchw_noaffine", "BN + ReLU and BN + Add + ReLU, NCHW, affine=False; z offset per channel "
               "(-3, 0, 0.5, 3: almost all masked .. almost none)", (2, 4, 3, 3), affine=False,
               z_offsets=[-3.0, 0.0, 0.5, 3.0])
    fused_case("nhwc_affine", "BN + ReLU and BN + Add + ReLU, NHWC (channels_last), affine", (3, 8, 4, 4),
               channels_last=True)
    fused_case("nc_affine", "BN + ReLU and BN + Add + ReLU on [N, C] (BatchNorm1d, S = 1), affine, momentum 0.3",
               (8, 5), momentum=0.3)
    fused_case("nhwc_offset1000", "BN + ReLU and BN + Add + ReLU, NHWC, x = 1000 + randn (|mean|/std ~ 1e3)",
               (2, 5, 3, 3), channels_last=True, offset=1000.0)


def renorm_torch(x, gamma, beta, rm, rv, eps, momentum, rmax, dmax):
    """Batch Renormalization from the paper (Ioffe 2017, Algorithm 1), r and d detached.
    Works in the dtype of x (float32 for the golden values, float64 as a cross-check)."""
    dim = x.dim()
    dims = [0] + list(range(2, dim))
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    sigma_b = torch.sqrt(var + eps)
    sigma = torch.sqrt(rv + eps)
    r = torch.clamp(sigma_b.detach() / sigma, 1.0 / rmax, rmax)
    d = torch.clamp((mean.detach() - rm) / sigma, -dmax, dmax)
    xhat = (x - bcast(mean, dim)) / bcast(sigma_b, dim)
    y = (xhat * bcast(r, dim) + bcast(d, dim)) * bcast(gamma, dim) + bcast(beta, dim)
    with torch.no_grad():
        rm_new = (1.0 - momentum) * rm + momentum * mean
        rv_new = (1.0 - momentum) * rv + momentum * x.var(dims, unbiased=True)
    return y, mean.detach(), (1.0 / sigma_b).detach(), r, d, rm_new, rv_new


def renorm_case(name, desc, torch_shape, rmax, dmax, channels_last=False, affine=True, eps=1e-5,
                momentum=0.1, offset=0.0, rm_shift=None, rv_scale=None):
    """rm_shift[c] (in batch std units) and rv_scale[c] place the running statistics
    relative to the batch's: far enough and r and d clip."""
    C = torch_shape[1]
    dim = len(torch_shape)
    dims = [0] + list(range(2, dim))
    x, dy, _, gamma, beta = draw_inputs(torch_shape, affine, offset, channels_last)
    g_in = gamma if affine else torch.ones(C, dtype=DT)
    b_in = beta if affine else torch.zeros(C, dtype=DT)
    xd = x.double()
    std = xd.var(dims, unbiased=False).sqrt()
    if rm_shift is None:
        rm_shift = 0.3 * torch.randn(C, dtype=torch.float64, generator=GEN)
    else:
        rm_shift = torch.tensor(rm_shift, dtype=torch.float64)
    if rv_scale is None:
        rv_scale = 0.5 + torch.rand(C, dtype=torch.float64, generator=GEN)
    else:
        rv_scale = torch.tensor(rv_scale, dtype=torch.float64)
    rm0 = (xd.mean(dims) + rm_shift * std).to(DT)
    rv0 = (xd.var(dims) * rv_scale).to(DT)

    xa, ga, ba = leaf(x), leaf(g_in), leaf(b_in)
    y, mean, invstd, r, d, rm1, rv1 = renorm_torch(xa, ga, ba, rm0, rv0, eps, momentum, rmax, dmax)
    y.backward(dy)
    dx, dg, db = xa.grad, ga.grad, ba.grad

    # Cross-checks: float64 evaluation of the same formulas; the closed-form backward
    # with r, d constants; rmax = 1, dmax = 0 is batch norm.
    y64, mean64, invstd64, r64, d64, rm64, rv64 = renorm_torch(
        leaf(xd), g_in.double(), b_in.double(), rm0.double(), rv0.double(), float(np.float32(eps)),
        float(np.float32(momentum)), rmax, dmax)
    xhat64 = (xd - bcast(mean64, dim)) * bcast(invstd64, dim)
    dyd = dy.double()
    m = xd.numel() // C
    sdy = dyd.sum(dims)
    sdyx = (dyd * xhat64).sum(dims)
    dx64 = bcast(g_in.double() * r64 * invstd64, dim) * (dyd - bcast(sdy / m, dim) - xhat64 * bcast(sdyx / m, dim))
    dg64 = r64 * sdyx + d64 * sdy
    errs = []
    for k, a, b in (("y", y, y64), ("r", r, r64), ("d", d, d64), ("rm", rm1, rm64), ("rv", rv1, rv64),
                    ("dx", dx, dx64), ("dgamma", dg, dg64), ("dbeta", db, sdy)):
        e = ((a.detach().double() - b.detach()).abs() / (1.0 + b.detach().abs())).max().item()
        assert e < 1e-3, (name, k, e)
        errs.append("%s %.2g" % (k, e))
    if rmax == 1.0 and dmax == 0.0:
        y_bn = F.batch_norm(x, rm0.clone(), rv0.clone(), gamma, beta, training=True, momentum=momentum, eps=eps)
        assert torch.allclose(y.detach(), y_bn, rtol=1e-5, atol=1e-5), name
    sigma64 = (rv0.double() + float(np.float32(eps))).sqrt()
    ratio64 = (xd.var(dims, unbiased=False) + float(np.float32(eps))).sqrt() / sigma64
    dev64 = (mean64 - rm0.double()) / sigma64
    clipped_r = int(((r64 - ratio64).abs() > 1e-9 * ratio64.abs()).sum())
    clipped_d = int(((d64 - dev64).abs() > 1e-9 * (1.0 + dev64.abs())).sum())
    SUMMARY.append("%-24s rmax %g dmax %g: r clipped in %d/%d channels, d in %d/%d; max |torch-f64|/(1+|f64|): %s"
                   % ("renorm/" + name, rmax, dmax, clipped_r, C, clipped_d, C, ", ".join(errs)))

    w = Writer(os.path.join(RENORM_DIR, name + ".txt"))
    write_header(w, name, desc, torch_shape, channels_last, eps, momentum)
    w.kv("rmax", "%.9g" % np.float32(rmax))
    w.kv("dmax", "%.9g" % np.float32(dmax))
    w.arr("x", flat(x, channels_last))
    if affine:
        w.arr("gamma", gamma)
        w.arr("beta", beta)
    w.arr("running_mean", rm0)
    w.arr("running_var", rv0)
    w.arr("dy", flat(dy, channels_last))
    w.arr("renorm_y", flat(y.detach(), channels_last))
    w.arr("renorm_save_mean", mean)
    w.arr("renorm_save_invstd", invstd)
    w.arr("renorm_r", r)
    w.arr("renorm_d", d)
    w.arr("renorm_running_mean", rm1)
    w.arr("renorm_running_var", rv1)
    w.arr("renorm_backward_dx", flat(dx, channels_last))
    w.arr("renorm_backward_dgamma", dg)
    w.arr("renorm_backward_dbeta", db)
    TOTAL[0] += w.close()


def renorm_cases():
    os.makedirs(RENORM_DIR, exist_ok=True)
    inf = float("inf")
    renorm_case("nchw_plain", "Batch Renormalization with rmax = 1, dmax = 0 (the paper's start: plain "
                "batch norm), NCHW", (4, 3, 5, 5), rmax=1.0, dmax=0.0)
    renorm_case("nchw_clip", "NCHW, rmax 1.5, dmax 0.5, running statistics placed so that r clips high, "
                "low and not at all and d clips up, down and not at all", (4, 6, 3, 3), rmax=1.5, dmax=0.5,
                rm_shift=[3.0, -3.0, 0.1, 0.2, -0.1, 2.0], rv_scale=[0.1, 10.0, 1.2, 0.2, 5.0, 0.9])
    renorm_case("nhwc_relaxed", "NHWC (channels_last), rmax 3, dmax 5 (the paper's relaxed limits), "
                "running statistics near the batch's, two channels far", (3, 8, 4, 4), rmax=3.0, dmax=5.0,
                channels_last=True, rm_shift=[0.3, -0.2, 0.1, 8.0, 0.0, -0.4, -7.0, 0.25],
                rv_scale=[0.7, 1.3, 0.05, 1.0, 20.0, 0.9, 1.1, 1.0])
    renorm_case("nc_unclipped_noaffine", "[N, C] (S = 1), rmax = dmax = inf (no clipping), affine=False, "
                "momentum 0.3", (8, 5), rmax=inf, dmax=inf, affine=False, momentum=0.3)
    renorm_case("nc_offset1000_clip", "[N, C], x = 1000 + randn, rmax 2, dmax 1, eps 1e-3, some channels "
                "clipped", (16, 4), rmax=2.0, dmax=1.0, eps=1e-3, offset=1000.0,
                rm_shift=[0.5, -2.5, 0.0, 1.5], rv_scale=[1.0, 0.1, 6.0, 0.5])


# ------------------------------------------------------------------ norms (issue 12)

NORMS_DIR = os.path.join(HERE, "norms")
# Their own generator, so that adding them changes no other group's files.
NGEN = torch.Generator().manual_seed(20261203)


def nrandn(*shape):
    return torch.randn(*shape, dtype=DT, generator=NGEN)


def nleaf(t):
    return t.detach().clone().requires_grad_(True)


def norm_header(w, name, op, desc, torch_shape):
    w.comment("PyTorch golden vectors for the batchnorm crate. Generated by make_golden.py; do not edit.")
    w.comment(desc)
    w.kv("torch_version", torch.__version__)
    w.kv("name", name)
    w.kv("op", op)
    w.kv("torch_shape", " ".join(str(d) for d in torch_shape))


def f64_err(a, b):
    return ((a.detach().double() - b).abs() / (1.0 + b.abs())).max().item()


def write_f64_stats(w, mean, rstd):
    """The float64 statistics from the same f32 inputs, rounded once to f32: torch's
    own (computed in f32) are off by more than the tolerance where |mean|/std is
    large, or in a constant group of a channels_last tensor."""
    if mean is not None:
        w.kv("mean_f64", fmt(mean.to(DT)))
    w.kv("rstd_f64", fmt(rstd.to(DT)))


def row_case(name, desc, torch_shape, k, rms=False, weight=True, bias=True, eps=1e-5, offset=0.0,
             constant_rows=(), zero_rows=()):
    """F.layer_norm / F.rms_norm over the trailing k dims of torch_shape."""
    norm_shape = list(torch_shape[len(torch_shape) - k:])
    inner = 1
    for d in norm_shape:
        inner *= d
    rows = 1
    for d in torch_shape[:len(torch_shape) - k]:
        rows *= d
    x = (nrandn(*torch_shape) * (1.0 + nrandn(inner).abs().reshape(norm_shape)) + offset).to(DT)
    flatx = x.reshape(rows, inner)
    for r in constant_rows:
        flatx[r] = offset + 0.25
    for r in zero_rows:
        flatx[r] = 0.0
    dy = nrandn(*torch_shape)
    gamma = (1.0 + 0.5 * nrandn(inner).reshape(norm_shape)) if weight else None
    beta = (0.5 * nrandn(inner).reshape(norm_shape)) if (bias and not rms) else None
    # Absent weight / bias: the gradients of a weight of ones and a bias of zeros (the
    # same forward), which is what the crate's dgamma/dbeta give.
    g_in = gamma if weight else torch.ones(norm_shape, dtype=DT)
    b_in = beta if beta is not None else torch.zeros(norm_shape, dtype=DT)
    xa, ga, ba = nleaf(x), nleaf(g_in), nleaf(b_in)
    if rms:
        # eps=None is the dtype's epsilon; the bias is added after the norm (RMS norm has
        # none), so that its gradient Σdy is checked too.
        y_plain = F.rms_norm(x, norm_shape, gamma, eps)
        y_fused, rstd = torch.ops.aten._fused_rms_norm(x, norm_shape, gamma, eps)
        assert torch.equal(y_plain, y_fused), name
        ya = F.rms_norm(xa, norm_shape, ga, eps) + ba
        assert torch.equal(ya.detach(), y_plain), name
        mean = None
    else:
        y_plain, mean, rstd = torch.native_layer_norm(x, norm_shape, gamma, beta, eps)
        assert torch.equal(F.layer_norm(x, norm_shape, gamma, beta, eps), y_plain), name
        ya = F.layer_norm(xa, norm_shape, ga, ba, eps)
        # With only one of weight, bias given, torch's kernel rounds differently than
        # with a weight of ones and a bias of zeros: y is the given configuration's.
        assert torch.allclose(ya.detach(), y_plain, rtol=1e-6, atol=1e-6), name
    ya.backward(dy)
    eps_val = float(torch.finfo(DT).eps) if eps is None else eps

    # torch against float64 from the same f32 inputs (the summary only).
    xd = x.double().reshape(rows, inner)
    mu = torch.zeros(rows, 1, dtype=torch.float64) if rms else xd.mean(1, keepdim=True)
    var = (xd * xd).mean(1, keepdim=True) if rms else ((xd - mu) ** 2).mean(1, keepdim=True)
    inv = 1.0 / torch.sqrt(var + float(np.float32(eps_val)))
    xh = (xd - mu) * inv
    y64 = xh * g_in.double().reshape(1, -1) + b_in.double().reshape(1, -1)
    errs = "y %.2g rstd %.2g dx-vs-autograd-f64 n/a" % (
        f64_err(y_plain.reshape(rows, inner), y64), f64_err(rstd.reshape(rows, 1), inv))
    SUMMARY.append("%-24s max |torch-f64|/(1+|f64|): %s" % ("norms/" + name, errs))

    w = Writer(os.path.join(NORMS_DIR, name + ".txt"))
    norm_header(w, name, "rms_norm" if rms else "layer_norm", desc, torch_shape)
    w.kv("normalized_shape", " ".join(str(d) for d in norm_shape))
    w.kv("rows", str(rows))
    w.kv("len", str(inner))
    if rms:
        w.kv("eps_arg", "None" if eps is None else "%.9g" % np.float32(eps))
    w.kv("eps", "%.9g" % np.float32(eps_val))
    w.arr("x", x)
    if weight:
        w.arr("weight", gamma)
    if beta is not None:
        w.arr("bias", beta)
    w.arr("dy", dy)
    w.arr("y", y_plain)
    if mean is not None:
        w.arr("mean", mean)
    w.arr("rstd", rstd)
    write_f64_stats(w, None if rms else mu.reshape(-1), inv.reshape(-1))
    w.arr("dx", xa.grad)
    w.arr("dweight", ga.grad)
    w.arr("dbias", ba.grad)
    TOTAL[0] += w.close()


def group_case(name, desc, torch_shape, groups, channels_last=False, affine=True, eps=1e-5,
               offset=0.0, constant_group=None, instance=False, running=False, momentum=0.1):
    """F.group_norm, or F.instance_norm(use_input_stats=True) with instance=True."""
    N, C = torch_shape[0], torch_shape[1]
    dim = len(torch_shape)
    S = 1
    for d in torch_shape[2:]:
        S *= d
    x = (nrandn(*torch_shape) * (1.0 + bcast(nrandn(C).abs(), dim)) + bcast(nrandn(C), dim) + offset).to(DT)
    if constant_group is not None:
        n, g = constant_group
        per = C // groups
        x[n, g * per:(g + 1) * per] = offset - 0.5
    dy = nrandn(*torch_shape)
    gamma = (1.0 + 0.5 * nrandn(C)) if affine else None
    beta = (0.5 * nrandn(C)) if affine else None
    g_in = gamma if affine else torch.ones(C, dtype=DT)
    b_in = beta if affine else torch.zeros(C, dtype=DT)
    rm0 = rv0 = rm1 = rv1 = None
    if running:
        dims = [0] + list(range(2, dim))
        rm0 = (x.double().mean(dims) + 0.3 * torch.randn(C, dtype=torch.float64, generator=NGEN)).to(DT)
        rv0 = (x.double().var(dims) * (0.5 + torch.rand(C, dtype=torch.float64, generator=NGEN))).to(DT)
    if channels_last:
        mf = torch.channels_last if dim == 4 else torch.channels_last_3d
        x = x.to(memory_format=mf)
        dy = dy.to(memory_format=mf)
        assert x.is_contiguous(memory_format=mf) and not x.is_contiguous()
    xa, ga, ba = nleaf(x), nleaf(g_in), nleaf(b_in)
    if instance:
        # F.instance_norm is batch norm of x viewed as [1, N·C, spatial] (ATen's
        # instance_norm; contiguous first): its saved statistics are these.
        xv = x.contiguous().view(1, N * C, S)
        wv = gamma.repeat(N) if affine else None
        bv = beta.repeat(N) if affine else None
        y_v, mean, rstd = torch.native_batch_norm(xv, wv, bv, None, None, True, 0.0, eps)
        rm_f = rm0.clone() if running else None
        rv_f = rv0.clone() if running else None
        y = F.instance_norm(x, rm_f, rv_f, gamma, beta, use_input_stats=True, momentum=momentum, eps=eps)
        assert torch.equal(y.contiguous().view(1, N * C, S), y_v), name
        rm1, rv1 = rm_f, rv_f
        ya = F.instance_norm(xa, rm0.clone() if running else None, rv0.clone() if running else None,
                             ga, ba, use_input_stats=True, momentum=momentum, eps=eps)
        if running:
            # The update: the mean over the batch of (1 − m)·rm + m·(instance mean,
            # unbiased variance), computed here in float64 for the summary.
            xd = x.double().reshape(N, C, S) if not channels_last else x.contiguous().double().reshape(N, C, S)
            rm64 = (1 - momentum) * rm0.double() + momentum * xd.mean(2).mean(0)
            rv64 = (1 - momentum) * rv0.double() + momentum * xd.var(2).mean(0)
            SUMMARY.append("%-24s running update |torch-f64|/(1+|f64|): mean %.2g var %.2g" % (
                "norms/" + name, f64_err(rm1, rm64), f64_err(rv1, rv64)))
    else:
        y, mean, rstd = torch.native_group_norm(x, gamma, beta, N, C, S, groups, eps)
        assert torch.equal(F.group_norm(x, groups, gamma, beta, eps), y), name
        ya = F.group_norm(xa, groups, ga, ba, eps)
    assert torch.equal(ya.detach(), y), name
    ya.backward(dy)

    w = Writer(os.path.join(NORMS_DIR, name + ".txt"))
    norm_header(w, name, "instance_norm" if instance else "group_norm", desc, torch_shape)
    w.kv("layout", "channels_last" if channels_last else "channels_first")
    w.kv("shape", "%d %d %d" % (N, C, S))
    w.kv("groups", str(C if instance else groups))
    w.kv("eps", "%.9g" % np.float32(eps))
    w.arr("x", flat(x, channels_last))
    if affine:
        w.arr("weight", gamma)
        w.arr("bias", beta)
    w.arr("dy", flat(dy, channels_last))
    w.arr("y", flat(y, channels_last))
    w.arr("mean", mean.reshape(-1))
    w.arr("rstd", rstd.reshape(-1))
    xg = x.contiguous().double().reshape(N, groups, -1)
    mu64 = xg.mean(2)
    inv64 = 1.0 / torch.sqrt(((xg - mu64.unsqueeze(2)) ** 2).mean(2) + float(np.float32(eps)))
    write_f64_stats(w, mu64.reshape(-1), inv64.reshape(-1))
    SUMMARY.append("%-24s max |torch-f64|/(1+|f64|): mean %.2g rstd %.2g" % (
        "norms/" + name, f64_err(mean.reshape(-1), mu64.reshape(-1)), f64_err(rstd.reshape(-1), inv64.reshape(-1))))
    if running:
        w.kv("momentum", "%.9g" % np.float32(momentum))
        w.arr("running_mean", rm0)
        w.arr("running_var", rv0)
        w.arr("running_mean_after", rm1)
        w.arr("running_var_after", rv1)
    w.arr("dx", flat(xa.grad, channels_last))
    w.arr("dweight", ga.grad)
    w.arr("dbias", ba.grad)
    TOTAL[0] += w.close()


def clip_norm_case(name, desc, lengths, max_norm, norm_type=2.0, scale=1.0, specials=()):
    """torch.nn.utils.clip_grad_norm_ over several gradients (error_if_nonfinite=False)."""
    grads = [(nrandn(n) * scale).to(DT) for n in lengths]
    for t, i, v in specials:
        grads[t][i] = v
    params = [torch.zeros(n, requires_grad=True) for n in lengths]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    after = torch.cat([p.grad for p in params])
    # float64 from the same f32 inputs: torch accumulates in f32, so its L2 norm
    # overflows (or underflows) where the squares leave f32's range. Then the file
    # holds the float64 answer (total and the scaled gradients, rounded to f32) and
    # torch's own for the record.
    g64 = torch.cat(grads).double()
    t64 = g64.abs().max() if norm_type == float("inf") else g64.pow(2).sum().sqrt()
    coef = min(float(max_norm) / (float(t64) + 1e-6), 1.0)
    after64 = (torch.cat(grads).double() * np.float32(coef)).to(DT) if coef < 1.0 else torch.cat(grads)
    rel = abs(float(total) - float(t64)) / float(t64) if float(t64) > 0 else abs(float(total))
    known_wrong = not (rel < 1e-5 and torch.isfinite(total))
    w = Writer(os.path.join(NORMS_DIR, name + ".txt"))
    norm_header(w, name, "clip_grad_norm", desc, [sum(lengths)])
    w.kv("lengths", " ".join(str(n) for n in lengths))
    w.kv("max_norm", "%.9g" % np.float32(max_norm))
    w.kv("norm_type", "inf" if norm_type == float("inf") else "%g" % norm_type)
    w.arr("grads", torch.cat(grads))
    w.kv("torch_known_wrong", "1" if known_wrong else "0")
    if known_wrong:
        w.arr("total_norm", torch.tensor([float(t64)], dtype=DT))
        w.arr("grads_after", after64)
        w.kv("torch_total_norm", "%.9g" % float(total))
        w.arr("torch_grads_after", after)
    else:
        w.arr("total_norm", total.reshape(1))
        w.arr("grads_after", after)
    TOTAL[0] += w.close()
    SUMMARY.append("%-24s total %.9g (f64 %.9g), clip coefficient %.3g, torch_known_wrong=%d" % (
        "norms/" + name, float(total), float(t64), coef, known_wrong))


def clip_value_case(name, desc, lengths, clip_value, specials=()):
    grads = [nrandn(n) for n in lengths]
    for t, i, v in specials:
        grads[t][i] = v
    params = [torch.zeros(n, requires_grad=True) for n in lengths]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_value_(params, clip_value)
    w = Writer(os.path.join(NORMS_DIR, name + ".txt"))
    norm_header(w, name, "clip_grad_value", desc, [sum(lengths)])
    w.kv("lengths", " ".join(str(n) for n in lengths))
    w.kv("clip_value", "%.9g" % np.float32(clip_value))
    w.arr("grads", torch.cat(grads))
    w.arr("grads_after", torch.cat([p.grad for p in params]))
    TOTAL[0] += w.close()


def norms_cases():
    os.makedirs(NORMS_DIR, exist_ok=True)
    nan, inf = float("nan"), float("inf")
    # LayerNorm: F.layer_norm over the trailing dims (torch.native_layer_norm's mean/rstd).
    row_case("layer_inner17_affine", "F.layer_norm over the last dim (17), weight and bias", (4, 5, 17), 1)
    row_case("layer_inner1", "F.layer_norm over a last dim of 1: every row constant, y = bias, dx = 0",
             (6, 1), 1)
    row_case("layer_inner3_noaffine", "F.layer_norm, inner 3, elementwise_affine=False", (7, 3), 1,
             weight=False, bias=False)
    row_case("layer_inner4097_nobias", "F.layer_norm, inner 4097, weight only (bias=False)", (2, 4097), 1,
             bias=False)
    row_case("layer_trailing2_offset1e4", "F.layer_norm over the last two dims [4, 6] (inner 24), "
             "x = 1e4 + randn (|mean|/std ~ 1e4), weight and bias", (3, 4, 6), 2, offset=1e4)
    row_case("layer_constant_rows", "F.layer_norm, inner 33, rows 1 and 4 constant (var 0: y = bias), "
             "offset 100, bias only", (6, 33), 1, weight=False, offset=100.0, constant_rows=(1, 4))
    # RMSNorm: F.rms_norm; rstd from torch.ops.aten._fused_rms_norm (same output).
    row_case("rms_inner17_dtype_eps", "F.rms_norm, inner 17, eps=None (float32 machine epsilon), weight",
             (4, 17), 1, rms=True, eps=None)
    row_case("rms_inner4097_eps1e-6_noweight", "F.rms_norm, inner 4097, eps=1e-6, no weight", (3, 4097), 1,
             rms=True, weight=False, eps=1e-6)
    row_case("rms_inner1_dtype_eps", "F.rms_norm, inner 1, eps=None, weight", (5, 1), 1, rms=True, eps=None)
    row_case("rms_trailing2_offset1e4", "F.rms_norm over the last two dims [3, 8], x = 1e4 + randn, "
             "eps=1e-5, weight", (2, 3, 8), 2, rms=True, offset=1e4)
    row_case("rms_inner3_zero_row", "F.rms_norm, inner 3, eps=None, row 2 all zeros (rstd = 1/sqrt(eps), "
             "y = 0), weight", (6, 3), 1, rms=True, eps=None, zero_rows=(2,))
    # GroupNorm: F.group_norm (torch.native_group_norm's mean/rstd, [N][G]).
    group_case("group_nchw_g1", "F.group_norm NCHW, G = 1 (layer norm over C, H, W), affine",
               (2, 6, 4, 4), 1)
    group_case("group_nchw_gc_odd", "F.group_norm NCHW, G = C = 5 (odd C: instance norm), affine",
               (3, 5, 3, 3), 5)
    group_case("group_nchw_g32_c64", "F.group_norm NCHW, G = 32 on C = 64, affine, offset 1e3",
               (2, 64, 2, 3), 32, offset=1e3)
    group_case("group_nhwc_g32_c64", "F.group_norm channels_last NHWC, G = 32 on C = 64, affine",
               (2, 64, 3, 3), 32, channels_last=True)
    group_case("group_nhwc_odd_noaffine", "F.group_norm channels_last, C = 9, G = 3, affine=False, "
               "group 1 of sample 0 constant", (2, 9, 5, 3), 3, channels_last=True, affine=False,
               constant_group=(0, 1))
    group_case("group_ncl_offset1e4", "F.group_norm on NCL (C = 6, L = 7), G = 2, x = 1e4 + randn",
               (4, 6, 7), 2, offset=1e4)
    group_case("group_nhwc_g1", "F.group_norm channels_last, G = 1, C = 3, affine", (3, 3, 4, 5), 1,
               channels_last=True)
    # InstanceNorm: F.instance_norm(use_input_stats=True); mean/rstd of the batch norm it runs.
    group_case("instance_nchw_affine_running", "F.instance_norm NCHW, affine, running stats with "
               "momentum 0.1", (3, 4, 5, 5), 4, instance=True, running=True)
    group_case("instance_nhwc_noaffine_running", "F.instance_norm channels_last, affine=False, running "
               "stats with momentum 0.3", (2, 6, 4, 4), 6, channels_last=True, affine=False, instance=True,
               running=True, momentum=0.3)
    group_case("instance_ncl_noaffine", "F.instance_norm on NCL (C = 3, L = 17), affine=False, no running "
               "stats", (2, 3, 17), 3, affine=False, instance=True)
    group_case("instance_nhwc_affine_offset1e3", "F.instance_norm channels_last, affine, x = 1e3 + randn, "
               "running stats with momentum 0.1", (2, 5, 3, 3), 5, channels_last=True, offset=1e3,
               instance=True, running=True)
    # Gradient clipping.
    clip_norm_case("clip_l2_several", "clip_grad_norm_ L2 over three gradients (5, 17, 1), max_norm 1 "
                   "(clips)", [5, 17, 1], 1.0)
    clip_norm_case("clip_l2_noclip", "clip_grad_norm_ L2, max_norm 100 (no clipping)", [8, 3], 100.0)
    clip_norm_case("clip_l2_many", "clip_grad_norm_ L2 over 40 gradients of 100, max_norm 2",
                   [100] * 40, 2.0)
    clip_norm_case("clip_inf_several", "clip_grad_norm_ norm_type=inf over (4, 9), max_norm 0.5",
                   [4, 9], 0.5, norm_type=float("inf"))
    clip_norm_case("clip_l2_huge", "clip_grad_norm_ L2 of values ~1e30 (squares overflow f32: torch's "
                   "total is inf, so it zeroes every gradient)", [6, 2], 1.0, scale=1e30)
    clip_norm_case("clip_l2_tiny", "clip_grad_norm_ L2 of values ~1e-25 (squares underflow f32: torch's "
                   "total is 0), max_norm 1e-7 (the 1e-6 in the coefficient dominates: 0.1 either way)",
                   [5, 4], 1e-7, scale=1e-25)
    clip_norm_case("clip_inf_huge", "clip_grad_norm_ norm_type=inf of values ~1e37, one of 3e38",
                   [3, 5], 1.0, norm_type=float("inf"), scale=1e37, specials=[(1, 2, 3e38)])
    clip_value_case("clip_value_specials", "clip_grad_value_(0.3) over (6, 3), with NaN, +inf and -inf "
                    "(NaN stays NaN)", [6, 3], 0.3, specials=[(0, 1, nan), (0, 4, inf), (1, 0, -inf)])
    clip_value_case("clip_value_big", "clip_grad_value_(2.5) over (50, 7)", [50, 7], 2.5)


# ------------------------------------------------------------------ ONNX (issue 11)

ONNX_DIR = os.path.join(HERE, "onnx")
# Their own generator, so that adding them changes no other group's files.
OGEN = np.random.default_rng(20261202)


def onnx_case(name, desc, onnx_shape, eps=1e-5, momentum=0.9, offset=0.0, spread=1.0):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    N, C = onnx_shape[0], onnx_shape[1]
    S = int(np.prod(onnx_shape[2:], dtype=np.int64)) if len(onnx_shape) > 2 else 1
    bshape = [1, C] + [1] * (len(onnx_shape) - 2)
    x = (OGEN.standard_normal(onnx_shape) * spread
         + 0.5 * OGEN.standard_normal(C).reshape(bshape) + offset).astype(np.float32)
    scale = (1.0 + 0.5 * OGEN.standard_normal(C)).astype(np.float32)
    bias = (0.5 * OGEN.standard_normal(C)).astype(np.float32)
    mean0 = (offset + 0.3 * OGEN.standard_normal(C)).astype(np.float32)
    var0 = (spread * spread * (0.5 + OGEN.random(C))).astype(np.float32)

    def run(training):
        outs = ["Y", "running_mean", "running_var"] if training else ["Y"]
        node = helper.make_node("BatchNormalization", ["X", "scale", "B", "input_mean", "input_var"],
                                outs, epsilon=float(eps), momentum=float(momentum),
                                training_mode=1 if training else 0)
        ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(onnx_shape))]
        ins += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [C])
                for n in ["scale", "B", "input_mean", "input_var"]]
        vi = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(onnx_shape))]
        vi += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [C]) for n in outs[1:]]
        model = helper.make_model(helper.make_graph([node], name, ins, vi),
                                  opset_imports=[helper.make_opsetid("", 15)])
        onnx.checker.check_model(model)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"X": x, "scale": scale, "B": bias, "input_mean": mean0,
                               "input_var": var0})

    y, rm1, rv1 = run(True)
    (y_eval,) = run(False)
    axes = tuple(i for i in range(len(onnx_shape)) if i != 1)
    x64 = x.astype(np.float64)
    mean64 = x64.mean(axis=axes)
    var64 = ((x64 - mean64.reshape(bshape)) ** 2).mean(axis=axes)

    w = Writer(os.path.join(ONNX_DIR, name + ".txt"))
    w.comment("ONNX Runtime golden vectors for the batchnorm crate. Generated by make_golden.py; do not edit.")
    w.comment(desc)
    w.kv("ort_version", ort.__version__)
    w.kv("name", name)
    w.kv("onnx_shape", " ".join(str(d) for d in onnx_shape))
    w.kv("shape", "%d %d %d" % (N, C, S))
    w.kv("eps", "%.9g" % np.float32(eps))
    w.kv("onnx_momentum", "%.9g" % np.float32(momentum))
    for key, v in [("x", x), ("scale", scale), ("B", bias), ("input_mean", mean0), ("input_var", var0),
                   ("train_y", y), ("train_running_mean", rm1), ("train_running_var", rv1),
                   ("eval_y", y_eval), ("mean_f64", mean64), ("var_f64", var64)]:
        w.arr(key, np.asarray(v, dtype=np.float32))
    TOTAL[0] += w.close()
    SUMMARY.append("onnx/%s: ort %s, running_var vs the biased update %.1e, vs PyTorch's unbiased %.1e"
                   % (name, ort.__version__,
                      np.abs(rv1 - (momentum * var0 + (1 - momentum) * var64)).max(),
                      np.abs(rv1 - (momentum * var0 + (1 - momentum) * var64 * N * S / max(N * S - 1, 1))).max()))


def onnx_cases():
    os.makedirs(ONNX_DIR, exist_ok=True)
    onnx_case("nchw", "NCHW (2, 3, 4, 5), ONNX's default momentum 0.9 and epsilon 1e-5", (2, 3, 4, 5))
    onnx_case("nc_momentum", "[N, C] = (8, 6), momentum 0.99 (Keras' and Flax's default), eps 1e-3",
              (8, 6), eps=1e-3, momentum=0.99)
    onnx_case("ncl_offset", "NCL (4, 5, 7), x = 10 + 2·randn, momentum 0.5", (4, 5, 7), momentum=0.5,
              offset=10.0, spread=2.0)
    onnx_case("ncdhw", "NCDHW (2, 2, 3, 2, 2), momentum 0.1", (2, 2, 3, 2, 2), momentum=0.1)
    onnx_case("one_value", "[N, C] = (1, 4): one value per channel, batch variance 0 (PyTorch's "
              "unbiased update is undefined here; ONNX's is not)", (1, 4))


GROUPS = {"bn": (HERE, bn_cases), "fold": (FOLD_DIR, fold_cases), "fused": (FUSED_DIR, fused_cases),
          "renorm": (RENORM_DIR, renorm_cases), "norms": (NORMS_DIR, norms_cases),
          "onnx": (ONNX_DIR, onnx_cases)}


def main():
    names = sys.argv[1:] or list(GROUPS)
    for n in names:
        if n not in GROUPS:
            sys.exit("unknown group %r (groups: %s)" % (n, " ".join(GROUPS)))
    os.makedirs(HERE, exist_ok=True)
    for n in names:
        d = GROUPS[n][0]
        if os.path.isdir(d):
            for f in os.listdir(d):
                if f.endswith(".txt"):
                    os.remove(os.path.join(d, f))
    # In this order: bn and fold draw from the global generator one after the other.
    for n in GROUPS:
        if n in names:
            GROUPS[n][1]()
    print("torch", torch.__version__, "numpy", np.__version__, "python", sys.version.split()[0])
    for line in SUMMARY:
        print(line)
    print("total bytes written: %d" % TOTAL[0])


if __name__ == "__main__":
    main()
