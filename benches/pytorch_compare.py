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

Timing: interleaved per case (one shape, layout and kernel): ours (the Rust table
printer for that one row, a subprocess), PyTorch, ours, PyTorch; each a median of
repeats, each repeat a loop of calls lasting >= 4 ms; the table shows the lower of
the two medians of each side. The machine drifts ~1.4x between runs minutes apart,
so only ratios taken this close together are worth comparing.
"""

import csv
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


def ours_ms(exe, name, layout, kernel, samples):
    out = subprocess.run(
        [exe, "--csv", f"--samples={samples}", name, f"--layout={layout}", f"--kernel={kernel}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (row,) = list(csv.DictReader(io.StringIO(out)))
    return float(row["ours_ms"])


def main():
    shapes = [a for a in sys.argv[1:] if not a.startswith("--")] or list(CASES)
    build = subprocess.run(
        ["cargo", "build", "--release", "--example", "bench_table", "--message-format=json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    exe = [
        m["executable"]
        for m in map(json.loads, build.splitlines())
        if m.get("reason") == "compiler-artifact" and m.get("executable")
        and m["target"]["name"] == "bench_table"
    ][-1]
    print(f"torch {torch.__version__}, 1 thread; RUSTFLAGS={os.environ.get('RUSTFLAGS', '')!r}\n")
    print("| shape | layout | kernel | ours ms | PyTorch ms | PyTorch / ours |")
    print("|---|---|---|---:|---:|---:|")
    logs = []
    for name in shapes:
        layouts = ["NC"] if CASES[name][2] == () else ["NCHW", "NHWC"]
        for layout in layouts:
            for kernel in ["moments", "eval", "train", "backward"]:
                ours, pt = math.inf, math.inf
                for _ in range(2):
                    ours = min(ours, ours_ms(exe, name, layout, kernel, 9))
                    pt = min(pt, torch_ms(name, layout, kernel, 9))
                logs.append(math.log(pt / ours))
                print(f"| {name} | {layout} | {kernel} | {ours:.3f} | {pt:.3f} | {pt / ours:.2f} |")
                sys.stdout.flush()
    if logs:
        print(f"\ngeomean PyTorch / ours: {math.exp(sum(logs) / len(logs)):.2f}")


if __name__ == "__main__":
    main()
