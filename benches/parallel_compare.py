#!/usr/bin/env python3
"""Multi-core: `batchnorm::parallel` on 1 and 2 threads against PyTorch on 2 threads,
each as a fraction of the limit: the kernel's minimum traffic (benches/common's, as
bench_table counts it) copied by 2 threads in the same process as ours.

    flock /tmp/bench.lock /work/venv/bin/python benches/parallel_compare.py [--doc]

Per row (shape, layout, kernel), interleaved twice: ours (examples/parallel_table.rs, a
subprocess that times 1 thread, 2 threads and the 2-thread copy), then PyTorch with
torch.set_num_threads(2) (the calls of benches/pytorch_compare.py); the lower of the two
medians of each is kept. Prints a markdown table; `limit` columns are copy time over
kernel time (1.0 = at the 2-core copy bandwidth), `2t/1t` our speed-up. The table
also goes to target/parallel_table.md. With `--doc`, it is written between the
`<!-- parallel-table -->` markers of docs/scaling.md; `--doc-from=FILE` writes a table
saved by an earlier run there without measuring.
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_compare as pc  # noqa: E402  (re-executes with its malloc settings)

import torch  # noqa: E402

torch.set_num_threads(2)

ROWS = [("S2", "NCHW"), ("S2", "NHWC"), ("S3", "NCHW"), ("S4", "NC")]
KERNELS = ["moments", "train", "eval", "backward", "backward_eval"]
ROUNDS = 2
SAMPLES = 9


def ours(shape, layout, kernel):
    out = subprocess.run(
        ["target/release/examples/parallel_table", shape, layout, kernel],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    t1, t2, copy, bpe = out
    return float(t1), float(t2), float(copy), int(bpe)


def write_doc(table):
    path = "docs/scaling.md"
    text = open(path).read()
    new, n = re.subn(
        r"(<!-- parallel-table -->\n).*?(<!-- /parallel-table -->)",
        lambda m: m.group(1) + table + "\n" + m.group(2),
        text,
        flags=re.S,
    )
    if n != 1:
        sys.exit(f"{path} has no <!-- parallel-table --> markers")
    open(path, "w").write(new)
    print(f"{path}: table written")


def main():
    doc = "--doc" in sys.argv[1:]
    saved = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--doc-from=")]
    if saved:
        write_doc(open(saved[0]).read().strip())
        return
    subprocess.run(
        ["cargo", "build", "--release", "--features", "rayon", "--example", "parallel_table"],
        check=True,
    )
    lines = [
        "| shape | layout | kernel | B/elem | 1 thread | 2 threads | PyTorch 2 threads | 2t/1t |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    fractions = {"1t": [], "2t": [], "torch": []}
    for shape, layout in ROWS:
        t = pc.Tensors(shape, layout)
        calls = pc.torch_calls(t)
        for kernel in KERNELS:
            best = None
            torch_ms = float("inf")
            for _ in range(ROUNDS):
                o = ours(shape, layout, kernel)
                best = o if best is None else tuple(min(a, b) for a, b in zip(best, o))
                torch_ms = min(torch_ms, pc.median_ms(calls[kernel], SAMPLES))
            t1, t2, copy, bpe = best
            f1, f2, ft = copy / t1, copy / t2, copy / torch_ms
            fractions["1t"].append(f1)
            fractions["2t"].append(f2)
            fractions["torch"].append(ft)
            lines.append(
                f"| {shape} | {layout} | {kernel} | {bpe} | {t1:.3f} ms ({f1:.2f}) | "
                f"{t2:.3f} ms ({f2:.2f}) | {torch_ms:.3f} ms ({ft:.2f}) | {t1 / t2:.2f} |"
            )
            print(lines[-1], flush=True)
    geo = {k: pc.math.exp(sum(pc.math.log(v) for v in vs) / len(vs)) for k, vs in fractions.items()}
    lines.append(
        f"| geomean of the limit fractions | | | | {geo['1t']:.2f} | {geo['2t']:.2f} | "
        f"{geo['torch']:.2f} | |"
    )
    table = "\n".join(lines)
    print(table)
    os.makedirs("target", exist_ok=True)
    with open("target/parallel_table.md", "w") as f:
        f.write(table + "\n")
    if doc:
        write_doc(table)


if __name__ == "__main__":
    main()
