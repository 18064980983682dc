#!/usr/bin/env python3
"""PyTorch and ONNX Runtime (one thread, float32) on our shapes and kernels, beside ours.

Setup that worked on the benchmark machine (not run by CI):

    python3 -m venv /work/venv
    /work/venv/bin/pip install torch numpy onnx onnxruntime
                        # the torch wheel pulls ~3 GB of CUDA wheels it needs just to
                        # import, even on CPU (--no-deps does not import)

Run from the repository root (builds `examples/bench_table.rs` and runs it one row at a
time; `benches/run_all.sh` runs both builds and prints docs/performance.md's tables):

    /work/venv/bin/python benches/pytorch_compare.py            # default build
    RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target/native \\
        /work/venv/bin/python benches/pytorch_compare.py        # native build
    /work/venv/bin/python benches/pytorch_compare.py S1 T0      # some shapes only
    /work/venv/bin/python benches/pytorch_compare.py --csv-out=target/bench/default.csv
    /work/venv/bin/python benches/pytorch_compare.py T0 --kernel=eval --layout=NCHW --samples=3

Options: shape names; `--kernel=NAME`, `--layout=NCHW|NHWC|NC` (filters); `--samples=N`
(median of N samples per side, default 9); `--csv-out=FILE`: every cell as CSV
(shape, layout, kernel, ours_ms, copy_ms, scalar_ms, torch_ms, ort_ms, family,
bytes_per_elem, per_call; empty where a competitor has no such kernel), plus FILE's
stem + `.json` with the versions and flags of the run, for `benches/readme_tables.py`.

The rows (shape × layout × kernel) come from `bench_table --list`, so a kernel added to
`benches/common/mod.rs` shows up here; give it a PyTorch call in `torch_calls` (or it is
measured for ours and scalar only).

PyTorch's calls are the functional `torch.native_batch_norm` (train and eval),
`torch.ops.aten.native_batch_norm_backward` (train=True from the saved statistics, and
train=False from the running ones for backward_eval; all three gradients) and, for
moments, `torch.var_mean(correction=0)` over every dim but channels; NHWC is
`memory_format=torch.channels_last`.

The fused kernels are PyTorch's unfused composition as a user runs it, in place where
ResNet is (`nn.ReLU(inplace=True)`, `out += identity`): `native_batch_norm(...)[0].relu_()`
and `native_batch_norm(...)[0].add_(z).relu_()`; their backwards
`g = threshold_backward(dy, y, 0)` and `native_batch_norm_backward` of g, with dz = g
(the same tensor, as autograd hands it to both branches). PyTorch has no Batch
Renormalization: `renorm_train` composes the paper's Algorithm 1 of PyTorch ops, x̂ and
the batch statistics from `native_batch_norm` (no affine), r and d from the running
statistics, then y = x̂·(γ·r) + (γ·d + β) in one in-place `addcmul`; `renorm_backward` is
`native_batch_norm_backward` with γ·r as the weight, and dγ from its Σdy·x̂ and Σdy. That
is the fastest composition we found: taking the batch statistics from `torch.var_mean`
instead (the obvious way) was 1.9–6.6× slower on S2 and S5 (even on T0), most of it
`var_mean` itself, which would have measured PyTorch's slow reduction, not its renorm.

ONNX Runtime: a one-node BatchNormalization model (opset 15, inference mode) built with
`onnx.helper`, one intra-op and one inter-op thread, input and output preallocated numpy
arrays bound with io_binding; eval only, and NCHW/NC only (its BatchNormalization is
channels-first): '–' elsewhere.

PyTorch allocates its outputs, so the script re-executes itself with glibc's malloc told
to keep freed memory (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=64 GiB): otherwise
every large output is a new mmap and ~40 ms of page faults per 100 MB land in PyTorch's
timings.

Timing: interleaved per cell (one shape, layout and kernel): ours (the Rust table printer
for that one row, a subprocess, which also times the copy and the scalar loop), PyTorch,
ORT, then ours, PyTorch, ORT again; each a median of samples, each sample a loop of
calls lasting >= 4 ms; the lower of the two medians of each side is kept. The machine
drifts ~1.4x between runs minutes apart, so only ratios taken this close together are
worth comparing.
"""

import csv
import datetime
import io
import json
import math
import os
import subprocess
import sys
import time

if os.environ.get("MALLOC_MMAP_MAX_") != "0":
    os.environ["MALLOC_MMAP_MAX_"] = "0"
    os.environ["MALLOC_TRIM_THRESHOLD_"] = str(64 << 30)
    os.execv(sys.executable, [sys.executable] + sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:
    import onnx  # noqa: E402
    import onnxruntime as ort  # noqa: E402
except ImportError as e:  # the ORT column stays empty
    onnx = ort = None
    ORT_MISSING = str(e)

torch.set_num_threads(1)

# name: (N, C, spatial dims), as CASES in benches/common/mod.rs (checked against
# `bench_table --list`).
CASES = {
    "S1": (1, 64, (56, 56)),
    "S2": (32, 64, (56, 56)),
    "S3": (32, 256, (56, 56)),
    "S4": (256, 1024, ()),
    "S5": (8, 512, (7, 7)),
    "S6": (16, 3, (224, 224)),
    "T0": (1, 8, (2, 2)),
    "T1": (1, 64, (7, 7)),
    "L1": (4096, 768, ()),
    "L2": (32, 4096, ()),
    "G1": (8, 256, (56, 56)),
    "I1": (4, 64, (128, 128)),
}
# The neighbours' cases: layer and RMS norm over the last dim, group norm's groups,
# instance norm; the others are batch norm's.
NEIGHBOURS = {"L1": "rows", "L2": "rows", "G1": 32, "I1": "instance"}
EPS, MOMENTUM = 1e-5, 0.1
SAMPLE_S = 0.004  # seconds per sample, at least
MAX_REPS = 10_000_000
ROUNDS = 2  # ours, competitors, ours, competitors
CSV_FIELDS = [
    "shape", "layout", "kernel", "ours_ms", "copy_ms", "scalar_ms", "torch_ms", "ort_ms",
    "family", "bytes_per_elem", "per_call",
]


def median_ms(f, samples):
    """Median ms per call of `f`: warmed up, then calls timed in batches growing x4 until
    one lasts a quarter of a sample, so that microsecond calls are not timed alone."""
    f()
    reps = 1
    while True:
        t = time.perf_counter()
        for _ in range(reps):
            f()
        took = max(time.perf_counter() - t, 1e-9)
        if took >= SAMPLE_S / 4 or reps >= MAX_REPS:
            break
        reps *= 4
    reps = max(1, min(MAX_REPS, math.ceil(reps * SAMPLE_S / took)))
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        times.append((time.perf_counter() - t) * 1e3 / reps)
    times.sort()
    return times[len(times) // 2]


class Tensors:
    """One shape and layout's inputs, made once and shared by all its kernels."""

    def __init__(self, name, layout):
        self.key = (name, layout)
        n, c, hw = CASES[name]
        x = torch.randn(n, c, *hw) + 0.5
        if layout == "NHWC":
            x = x.contiguous(memory_format=torch.channels_last)
        self.x, self.dy = x, torch.randn_like(x)  # keeps x's memory format
        self.w, self.b = torch.rand(c) + 0.5, torch.randn(c)
        self.rm, self.rv = torch.zeros(c), torch.ones(c)
        y, self.save_mean, self.save_invstd = torch.native_batch_norm(
            x, self.w, self.b, self.rm, self.rv, True, MOMENTUM, EPS
        )
        if name in NEIGHBOURS:
            self.neighbour = Neighbour(self, NEIGHBOURS[name])
            return
        self.dims = [0] + list(range(2, x.dim()))
        self.view = (1, c) + (1,) * (x.dim() - 2)  # a per-channel tensor broadcast over x
        self.m = x.numel() // c
        # The fused kernels' residual, and the outputs their backwards mask dy with.
        self.z = torch.randn_like(x)
        self.y_relu, self.y_add_relu = torch.relu(y), torch.relu(y + self.z)
        # Renorm's saved r and d, from a step with the statistics above.
        _, _, _, self.r, self.d = renorm_train(self)
        self.ort = OrtEval(self) if ort is not None and layout in ("NCHW", "NC") else None


RMAX, DMAX = 3.0, 5.0  # RENORM in benches/common/mod.rs


def renorm_train(t):
    """Batch Renormalization's train step composed of PyTorch ops, the paper's Algorithm 1
    as written: batch statistics and x̂ = (x − μ_B)/σ_B from PyTorch's own batch norm
    (no affine; it also updates the running statistics, after r and d have read them),
    r = clip(σ_B/σ), d = clip((μ_B − μ)/σ), then y = x̂·(γ·r) + (γ·d + β) in place of x̂.
    Returns (y, mean, invstd, r, d)."""
    sigma = t.rv.add(EPS).sqrt_()  # running statistics before this step
    rm = t.rm.clone()
    xh, mean, invstd = torch.native_batch_norm(t.x, None, None, t.rm, t.rv, True, MOMENTUM, EPS)
    r = invstd.mul(sigma).reciprocal_().clamp_(1 / RMAX, RMAX)
    d = mean.sub(rm).div_(sigma).clamp_(-DMAX, DMAX)
    scale, shift = (t.w * r).view(t.view), torch.addcmul(t.b, t.w, d).view(t.view)
    return torch.addcmul(shift, xh, scale, out=xh), mean, invstd, r, d


def renorm_backward(t):
    """backward_renorm from PyTorch's batch-norm backward: with γ·r as its weight it
    computes dx = γ·r·invstd·(dy − Σdy/m − x̂·Σdy·x̂/m), dβ = Σdy and Σdy·x̂, from which
    dγ = r·Σdy·x̂ + d·Σdy."""
    dx, sum_dy_xh, db = torch.ops.aten.native_batch_norm_backward(
        t.dy, t.x, t.w * t.r, None, None, t.save_mean, t.save_invstd, True, EPS, [True] * 3
    )
    return dx, torch.addcmul(db * t.d, sum_dy_xh, t.r), db


def relu_backward(t, y):
    """backward through relu(bn): g = threshold_backward(dy, y, 0), which is also dz for
    the Add+ReLU (the same tensor, as autograd hands it to both branches), then batch
    norm's backward of g."""
    g = torch.ops.aten.threshold_backward(t.dy, y, 0)
    grads = torch.ops.aten.native_batch_norm_backward(
        g, t.x, t.w, t.rm, t.rv, t.save_mean, t.save_invstd, True, EPS, [True] * 3
    )
    return grads, g


class Neighbour:
    """PyTorch's calls of layer, RMS, group and instance norm on t.x: the aten ops
    F.layer_norm, F.rms_norm and F.group_norm run (with their saved statistics for the
    backwards), and autograd where there is no backward op (RMS and instance norm)."""

    def __init__(self, t, kind):
        x, dy, w, b = t.x, t.dy, t.w, t.b
        n, c = x.shape[0], x.shape[1]
        if kind == "rows":
            shape = [c]
            _, mean, rstd = torch.native_layer_norm(x, shape, w, b, EPS)
            self.calls = {
                "layer_norm": lambda: torch.native_layer_norm(x, shape, w, b, EPS),
                "layer_norm_backward": lambda: torch.ops.aten.native_layer_norm_backward(
                    dy, x, shape, mean, rstd, w, b, [True] * 3
                ),
                "rms_norm": lambda: F.rms_norm(x, shape, w, EPS),
                "rms_norm_backward": autograd_backward(
                    lambda x, w: F.rms_norm(x, shape, w, EPS), dy, x, w
                ),
            }
        elif kind == "instance":
            def inorm(x, w, b):
                return F.instance_norm(x, weight=w, bias=b, use_input_stats=True, eps=EPS)
            self.calls = {
                "instance_norm": lambda: inorm(x, w, b),
                "instance_norm_backward": autograd_backward(inorm, dy, x, w, b),
            }
        else:
            hw = x[0, 0].numel()
            _, mean, rstd = torch.native_group_norm(x, w, b, n, c, hw, kind, EPS)
            self.calls = {
                "group_norm": lambda: torch.native_group_norm(x, w, b, n, c, hw, kind, EPS),
                "group_norm_backward": lambda: torch.ops.aten.native_group_norm_backward(
                    dy, x, mean, rstd, w, n, c, hw, kind, [True] * 3
                ),
            }


def autograd_backward(f, dy, *inputs):
    """The backward of f(*inputs) alone: its graph is built once, and each call runs
    autograd through it (dx and the parameters' gradients)."""
    leaves = [v.detach().requires_grad_() for v in inputs]
    with torch.enable_grad():
        y = f(*leaves)
    return lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)


def torch_calls(t):
    """PyTorch's call for each of our kernels (a kernel missing here: no PyTorch column)."""
    if hasattr(t, "neighbour"):
        return t.neighbour.calls
    bn = torch.native_batch_norm
    return {
        "moments": lambda: torch.var_mean(t.x, t.dims, correction=0),
        "eval": lambda: torch.native_batch_norm(t.x, t.w, t.b, t.rm, t.rv, False, MOMENTUM, EPS),
        "train": lambda: torch.native_batch_norm(t.x, t.w, t.b, t.rm, t.rv, True, MOMENTUM, EPS),
        "backward": lambda: torch.ops.aten.native_batch_norm_backward(
            t.dy, t.x, t.w, t.rm, t.rv, t.save_mean, t.save_invstd, True, EPS, [True] * 3
        ),
        "backward_eval": lambda: torch.ops.aten.native_batch_norm_backward(
            t.dy, t.x, t.w, t.rm, t.rv, None, None, False, EPS, [True] * 3
        ),
        # The unfused composition, in place as ResNet's nn.ReLU(inplace=True) and
        # `out += identity` are.
        "eval_relu": lambda: bn(t.x, t.w, t.b, t.rm, t.rv, False, MOMENTUM, EPS)[0].relu_(),
        "train_relu": lambda: bn(t.x, t.w, t.b, t.rm, t.rv, True, MOMENTUM, EPS)[0].relu_(),
        "backward_relu": lambda: relu_backward(t, t.y_relu),
        "eval_add_relu": lambda: (
            bn(t.x, t.w, t.b, t.rm, t.rv, False, MOMENTUM, EPS)[0].add_(t.z).relu_()
        ),
        "train_add_relu": lambda: (
            bn(t.x, t.w, t.b, t.rm, t.rv, True, MOMENTUM, EPS)[0].add_(t.z).relu_()
        ),
        "backward_add_relu": lambda: relu_backward(t, t.y_add_relu),
        "train_renorm": lambda: renorm_train(t),
        "backward_renorm": lambda: renorm_backward(t),
    }


class OrtEval:
    """ONNX Runtime's BatchNormalization (inference) on t.x, into a preallocated output."""

    def __init__(self, t):
        from onnx import TensorProto, helper, numpy_helper

        shape = list(t.x.shape)
        params = {
            "scale": t.w, "B": t.b, "input_mean": t.rm, "input_var": t.rv,
        }
        node = helper.make_node(
            "BatchNormalization", ["X", *params], ["Y"], epsilon=EPS, momentum=1 - MOMENTUM
        )
        graph = helper.make_graph(
            [node],
            "bn",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)],
            [numpy_helper.from_array(v.numpy().copy(), k) for k, v in params.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        self.x = np.ascontiguousarray(t.x.numpy())
        self.y = np.full_like(self.x, np.nan)
        self.binding = self.session.io_binding()
        self.binding.bind_input("X", "cpu", 0, np.float32, shape, self.x.ctypes.data)
        self.binding.bind_output("Y", "cpu", 0, np.float32, shape, self.y.ctypes.data)
        # It writes where we bound it, and computes what PyTorch does.
        self()
        want = torch.native_batch_norm(t.x, t.w, t.b, t.rm, t.rv, False, MOMENTUM, EPS)[0]
        assert np.allclose(self.y, want.numpy(), rtol=1e-4, atol=1e-5), "ORT != PyTorch"

    def __call__(self):
        self.session.run_with_iobinding(self.binding)


def ours(exe, name, layout, kernel, samples):
    """(ours, copy, scalar) ms for one row, from the Rust table printer."""
    out = run(
        [exe, "--csv", f"--samples={samples}", name, f"--layout={layout}", f"--kernel={kernel}"]
    )
    (row,) = list(csv.DictReader(io.StringIO(out)))
    return [float(row[k]) for k in ("ours_ms", "copy_ms", "scalar_ms")]


def run(cmd):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def build():
    """Builds bench_table as the environment says (RUSTFLAGS, CARGO_TARGET_DIR)."""
    cmd = ["cargo", "build", "--release", "--example", "bench_table", "--message-format=json"]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:  # the diagnostics are in the JSON: show them
        for m in messages:
            if m.get("reason") == "compiler-message":
                print(m["message"]["rendered"], file=sys.stderr)
        sys.exit(f"{' '.join(cmd)} failed")
    return [
        m["executable"]
        for m in messages
        if m.get("reason") == "compiler-artifact" and m.get("executable")
        and m["target"]["name"] == "bench_table"
    ][-1]


def fmt(ms, per_call):
    if ms is None:
        return "–"
    return f"{ms * 1e3:.3f} µs" if per_call else f"{ms:.3f} ms"


def ratio(theirs, ours_ms):
    return "–" if theirs is None else f"{theirs / ours_ms:.2f}"


def main():
    args = sys.argv[1:]
    opt = {k: v for k, _, v in (a[2:].partition("=") for a in args if a.startswith("--"))}
    unknown = set(opt) - {"csv-out", "samples", "kernel", "layout"}
    if unknown:
        sys.exit(f"unknown options: {sorted(unknown)}; see the header of {sys.argv[0]}")
    shapes = [a for a in args if not a.startswith("--")]
    samples = int(opt.get("samples", 9))

    exe = build()
    filters = shapes + [f"--{k}={opt[k]}" for k in ("kernel", "layout") if k in opt]
    rows = list(csv.DictReader(io.StringIO(run([exe, "--list", *filters]))))
    for r in rows:
        n, c, hw = CASES[r["shape"]]
        if (n, c, math.prod(hw)) != tuple(int(r[k]) for k in ("batch", "channels", "spatial")):
            sys.exit(f"{r['shape']}: CASES here differ from benches/common/mod.rs")

    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "rustflags": os.environ.get("RUSTFLAGS", ""),
        "rustc": run(["rustc", "--version"]).strip(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__ if ort is not None else None,
        "numpy": np.__version__,
        "threads": 1,
        "samples": samples,
    }
    print(
        f"torch {meta['torch']}, onnxruntime {meta['onnxruntime'] or '– (' + ORT_MISSING + ')'}, "
        f"1 thread; RUSTFLAGS={meta['rustflags']!r}, {samples} samples\n"
    )
    out = None
    if "csv-out" in opt:
        path = opt["csv-out"]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(os.path.splitext(path)[0] + ".json", "w") as f:
            json.dump(meta, f, indent=1)
        out = open(path, "w", newline="")
        writer = csv.DictWriter(out, CSV_FIELDS)
        writer.writeheader()

    print("| shape | layout | kernel | ours | scalar | PyTorch | ORT | PyTorch / ours | ORT / ours |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    logs, tensors = [], None
    for r in rows:
        name, layout, kernel = r["shape"], r["layout"], r["kernel"]
        if tensors is None or tensors.key != (name, layout):
            tensors = None  # free the last shape's tensors first
            tensors = Tensors(name, layout)
        pt_call = torch_calls(tensors).get(kernel)
        ort_call = tensors.ort if kernel == "eval" else None
        best = {"ours": [math.inf] * 3, "torch": math.inf, "ort": math.inf}
        for _ in range(ROUNDS):
            best["ours"] = list(map(min, best["ours"], ours(exe, name, layout, kernel, samples)))
            with torch.no_grad():
                if pt_call is not None:
                    best["torch"] = min(best["torch"], median_ms(pt_call, samples))
                if ort_call is not None:
                    best["ort"] = min(best["ort"], median_ms(ort_call, samples))
        (ours_ms, copy_ms, scalar_ms) = best["ours"]
        pt = best["torch"] if pt_call is not None else None
        ox = best["ort"] if ort_call is not None else None
        per_call = r["per_call"] == "true"
        if pt is not None and not per_call and kernel != "moments" and name not in NEIGHBOURS:
            logs.append(math.log(pt / ours_ms))
        print(
            f"| {name} | {layout} | {kernel} | {fmt(ours_ms, per_call)} | "
            f"{fmt(scalar_ms, per_call)} | {fmt(pt, per_call)} | {fmt(ox, per_call)} | "
            f"{ratio(pt, ours_ms)} | {ratio(ox, ours_ms)} |",
            flush=True,
        )
        if out is not None:
            cell = lambda v: "" if v is None else f"{v:.7f}"  # noqa: E731
            writer.writerow({
                "shape": name, "layout": layout, "kernel": kernel,
                "ours_ms": cell(ours_ms), "copy_ms": cell(copy_ms), "scalar_ms": cell(scalar_ms),
                "torch_ms": cell(pt), "ort_ms": cell(ox),
                "family": r["family"], "bytes_per_elem": r["bytes_per_elem"],
                "per_call": r["per_call"],
            })
            out.flush()
    if out is not None:
        out.close()
    if logs:
        print(
            f"\ngeomean PyTorch / ours over the sized shapes, moments aside ({len(logs)} cells): "
            f"{math.exp(sum(logs) / len(logs)):.2f}"
        )


if __name__ == "__main__":
    main()
