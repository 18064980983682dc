#!/usr/bin/env python3
"""PyTorch (one thread, float32) on the shapes and kernels of issue 6, beside ours.

Setup that worked on the benchmark machine (not run by CI):

    python3 -m venv /work/venv
    /work/venv/bin/pip install torch numpy   # the PyPI wheel; it pulls ~3 GB of CUDA
                                             # wheels it needs just to import, even on
                                             # CPU (--no-deps does not import)

Run from the repository root (builds and runs `examples/bench_table.rs --csv`):

    /work/venv/bin/python benches/pytorch_compare.py            # default build
    RUSTFLAGS="-C target-cpu=native" /work/venv/bin/python benches/pytorch_compare.py
    /work/venv/bin/python benches/pytorch_compare.py S1 S5      # some shapes only

PyTorch's calls are the functional `torch.native_batch_norm` (train and eval),
`torch.ops.aten.native_batch_norm_backward` (train, all three gradients) and, for
moments, `torch.var_mean(correction=0)` over every dim but channels; NHWC is
`memory_format=torch.channels_last`. Outputs are freshly allocated by PyTorch, so the
script re-executes itself with glibc's malloc told to keep freed memory
(MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=64 GiB): otherwise every large output is
a new mmap and ~40 ms of page faults per 100 MB land in PyTorch's timings.

Timing: each case runs ours (the Rust table printer, a subprocess) then PyTorch,
median of repeats, each repeat a loop of calls lasting >= 4 ms. The machine drifts
~1.4x between runs minutes apart, so ratios from one run are what to compare.
"""

import csv
import io
import math
import os
import subprocess
import sys
import time

if os.environ.get("MALLOC_MMAP_MAX_") != "0":
    os.environ["MALLOC_MMAP_MAX_"] = "0"
    os.environ["MALLOC_TRIM_THRESHOLD_"] = str(64 << 30)
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch  # noqa: E402

torch.set_num_threads(1)

CASES = {  # name: (N, C, H*W) as in benches/common/mod.rs
    "S1": (1, 64, (56, 56)),
    "S2": (32, 64, (56, 56)),
    "S3": (32, 256, (56, 56)),
    "S4": (256, 1024, ()),
    "S5": (8, 512, (7, 7)),
    "S6": (16, 3, (224, 224)),
}
EPS, MOMENTUM = 1e-5, 0.1


def median_ms(f, samples):
    f()
    t = time.perf_counter()
    f()
    once = max(time.perf_counter() - t, 1e-7)
    reps = max(1, min(10000, int(0.004 / once)))
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        times.append((time.perf_counter() - t) * 1e3 / reps)
    times.sort()
    return times[len(times) // 2]


def torch_ms(name, layout, kernel, samples):
    n, c, hw = CASES[name]
    x = torch.randn(n, c, *hw) + 0.5
    if layout == "NHWC":
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x)  # keeps x's memory format
    w, b = torch.rand(c) + 0.5, torch.randn(c)
    rm, rv = torch.zeros(c), torch.ones(c)
    _, save_mean, save_invstd = torch.native_batch_norm(x, w, b, rm, rv, True, MOMENTUM, EPS)
    dims = [0] + list(range(2, x.dim()))
    calls = {
        "moments": lambda: torch.var_mean(x, dims, correction=0),
        "eval": lambda: torch.native_batch_norm(x, w, b, rm, rv, False, MOMENTUM, EPS),
        "train": lambda: torch.native_batch_norm(x, w, b, rm, rv, True, MOMENTUM, EPS),
        "backward": lambda: torch.ops.aten.native_batch_norm_backward(
            dy, x, w, rm, rv, save_mean, save_invstd, True, EPS, [True, True, True]
        ),
    }
    with torch.no_grad():
        return median_ms(calls[kernel], samples)


def main():
    shapes = [a for a in sys.argv[1:] if not a.startswith("--")]
    rust = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--example", "bench_table", "--", "--csv", *shapes],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(rust)))
    print(f"torch {torch.__version__}, 1 thread; RUSTFLAGS={os.environ.get('RUSTFLAGS', '')!r}\n")
    print("| shape | layout | kernel | ours ms | PyTorch ms | PyTorch / ours |")
    print("|---|---|---|---:|---:|---:|")
    logs = []
    for r in rows:
        ours = float(r["ours_ms"])
        pt = torch_ms(r["shape"], r["layout"], r["kernel"], 11)
        logs.append(math.log(pt / ours))
        print(f"| {r['shape']} | {r['layout']} | {r['kernel']} | {ours:.3f} | {pt:.3f} | {pt / ours:.2f} |")
        sys.stdout.flush()
    if logs:
        print(f"\ngeomean PyTorch / ours: {math.exp(sum(logs) / len(logs)):.2f}")


if __name__ == "__main__":
    main()
