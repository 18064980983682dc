#!/usr/bin/env python3
"""The performance tables of docs/performance.md, from the CSVs of
`benches/pytorch_compare.py --csv-out`.

    python3 benches/readme_tables.py target/bench/default.csv target/bench/native.csv \
        --doc=docs/performance.md

One CSV per build (its name is the file's stem, or `NAME=FILE`); the run's versions and
flags come from the `.json` beside each CSV when there is one, the machine from `lscpu`
(`--machine="..."` replaces that line, for tables made on another machine's CSVs).
Nothing here is typed in by hand: `--doc=FILE` writes the output between the
bench-table markers of FILE (docs/performance.md); without it the tables are only printed.

Per build, one table per kernel family (the kernels of `benches/common/mod.rs` that share
a family are its columns), a row per shape × layout, each cell
`limit · ×scalar · ×PyTorch` (and `· ×ORT` where ONNX Runtime ran):

- limit = copy_ms / ours_ms: a copy of the kernel's minimum traffic over our time (1.0 =
  at the bandwidth limit; above 1, the working set stayed in cache where the copy's did
  not);
- ×scalar, ×PyTorch, ×ORT = their time / ours (above 1: we are faster).

Per-call shapes (T0, T1) get a table of their own in µs per call: ours / scalar /
PyTorch (/ ORT). Then the summary: the geometric mean of PyTorch / ours over the sized
shapes (S1–S6) without moments, overall and per family (the fused kernels are compared
with PyTorch's unfused composition, renorm with a composition of its ops: see
`benches/pytorch_compare.py`), and the cells where we are more than 5 % slower than
scalar or than PyTorch.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys

SLOWER = 1.05  # "slower by more than 5 %"


def lscpu_machine():
    """'AMD EPYC, L2 512 KiB per core, 2 CPUs' from lscpu, or what of it is there."""
    parts = []
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "(lscpu not available)"
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in info.splitlines())
    )
    parts.append(fields.get("Model name", "unknown CPU"))
    l2 = l2_per_core(fields)
    if l2:
        parts.append(f"L2 {l2} per core")
    if "CPU(s)" in fields:
        parts.append(f"{fields['CPU(s)']} CPUs")
    if "Hypervisor vendor" in fields:
        parts.append(f"under {fields['Hypervisor vendor']}")
    return ", ".join(parts)


def l2_per_core(fields):
    """L2 of one core: `lscpu -B -C=NAME,ONE-SIZE`, else the total of `lscpu` over its
    instances."""
    try:
        caches = subprocess.run(
            ["lscpu", "-B", "-C=NAME,ONE-SIZE"], capture_output=True, text=True, check=True
        ).stdout
        for line in caches.splitlines():
            name, *size = line.split()
            if name == "L2" and size and size[0].isdigit():
                return binary(int(size[0]))
    except (OSError, subprocess.CalledProcessError):
        pass
    m = re.match(r"([\d.]+)\s*([KMG])i?B?(?:\s*\((\d+) instances?\))?", fields.get("L2 cache", ""))
    if not m:
        return None
    total = float(m.group(1)) * 1024 ** " KMG".index(m.group(2))
    return binary(int(total / int(m.group(3) or 1)))


def binary(n):
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % (size // 4) == 0:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def read(path):
    def num(v):
        return float(v) if v not in (None, "") else None

    with open(path, newline="") as f:
        rows = []
        for r in csv.DictReader(f):
            for k in ("ours_ms", "copy_ms", "scalar_ms", "torch_ms", "ort_ms"):
                r[k] = num(r.get(k))
            per_call = r.get("per_call")
            r["per_call"] = per_call == "true" if per_call else r["shape"].startswith("T")
            r.setdefault("family", r["kernel"])
            rows.append(r)
    meta_path = os.path.splitext(path)[0] + ".json"
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    return rows, meta


def x(ratio):
    if ratio is None:
        return "–"
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.1f}×"


def us(ms):
    """µs with three significant digits (two below 0.1 µs), never in exponent form."""
    if ms is None:
        return "–"
    v = ms * 1e3
    return f"{v:.{max(0, 2 - math.floor(math.log10(v)))}f}" if v >= 0.1 else f"{v:.3f}"


def over(theirs, ours):
    return None if theirs is None else theirs / ours


def sized_cell(r):
    cell = [f"{r['copy_ms'] / r['ours_ms']:.2f}", x(over(r["scalar_ms"], r["ours_ms"])),
            x(over(r["torch_ms"], r["ours_ms"]))]
    if r["ort_ms"] is not None:
        cell.append("ORT " + x(over(r["ort_ms"], r["ours_ms"])))
    return " · ".join(cell)


def tiny_cell(r):
    cell = [us(r["ours_ms"]), us(r["scalar_ms"]), us(r["torch_ms"])]
    if r["ort_ms"] is not None:
        cell.append("ORT " + us(r["ort_ms"]))
    return " / ".join(cell)


def ordered(values):
    return list(dict.fromkeys(values))


def table(rows, kernels, cell):
    cases = ordered((r["shape"], r["layout"]) for r in rows)
    at = {(r["shape"], r["layout"], r["kernel"]): r for r in rows}
    out = ["| case | " + " | ".join(kernels) + " |", "|---|" + "---|" * len(kernels)]
    for shape, layout in cases:
        cells = [
            cell(at[shape, layout, k]) if (shape, layout, k) in at else "–" for k in kernels
        ]
        out.append(f"| {shape} {layout} | " + " | ".join(cells) + " |")
    return out


def slower(rows, key):
    """Cells where `key`'s time beats ours by more than 5 %, as 'S5 NCHW train'."""
    return [
        f"{r['shape']} {r['layout']} {r['kernel']}"
        for r in rows
        if r[key] is not None and r["ours_ms"] > SLOWER * r[key]
    ]


# The families of batch norm's neighbours: summed up on a line of their own.
NEIGHBOURS = ("layer norm", "rms norm", "group norm", "instance norm")


def summary(rows):
    sized = [r for r in rows if not r["per_call"]]
    tiny = [r for r in rows if r["per_call"]]
    compared = [r for r in sized if r["kernel"] != "moments" and r["torch_ms"] is not None]
    neighbours = [r for r in compared if r["family"] in NEIGHBOURS]
    compared = [r for r in compared if r["family"] not in NEIGHBOURS]
    logs = [math.log(r["torch_ms"] / r["ours_ms"]) for r in compared]
    out = []
    if neighbours:
        nl = [math.log(r["torch_ms"] / r["ours_ms"]) for r in neighbours]
        worst = min(neighbours, key=lambda r: r["torch_ms"] / r["ours_ms"])
        out.append(
            f"- Neighbours (layer, RMS, group, instance norm; {len(nl)} cells): geometric "
            f"mean of PyTorch / ours **{math.exp(sum(nl) / len(nl)):.2f}×**, lowest "
            f"{worst['torch_ms'] / worst['ours_ms']:.2f}× ({worst['shape']} {worst['layout']} "
            f"{worst['kernel']})."
        )
    if logs:
        names = ", ".join(ordered(r["shape"] for r in compared))
        line = (
            f"- Geometric mean of PyTorch / ours over {names}, every kernel but moments "
            f"({len(logs)} cells): **{math.exp(sum(logs) / len(logs)):.2f}×**"
        )
        families = ordered(r["family"] for r in compared)
        if len(families) > 1:
            per = []
            for family in families:
                fam = [math.log(r["torch_ms"] / r["ours_ms"]) for r in compared
                       if r["family"] == family]
                per.append(f"{family} {math.exp(sum(fam) / len(fam)):.2f}× ({len(fam)})")
            line += "; by family: " + ", ".join(per)
        out.append(line + ".")
    for key, who in (("scalar_ms", "the scalar loop"), ("torch_ms", "PyTorch")):
        for group, label in ((sized, "sized"), (tiny, "per-call")):
            have = [r for r in group if r[key] is not None]
            if not have:
                continue
            bad = slower(have, key)
            line = f"- Slower than {who} by more than 5 %: {len(bad)} of {len(have)} {label} cells"
            out.append(line + (f" ({', '.join(bad)})." if bad else "."))
    return out


def traffic(rows):
    """'moments 4, eval 8, train 8–12, …' from the CSV's bytes_per_elem."""
    per = {}
    for r in rows:
        if r.get("bytes_per_elem") and not r["per_call"]:
            per.setdefault(r["kernel"], set()).add(int(r["bytes_per_elem"]))
    return ", ".join(
        f"{k} {min(v)}" + (f"–{max(v)}" if max(v) > min(v) else "") for k, v in per.items()
    )


def build_section(name, rows, meta):
    flags = meta.get("rustflags")
    title = {"default": "Default build", "native": "Native build"}.get(name, f"Build `{name}`")
    head = f"## {title}"
    if flags is not None:
        head += f" (`RUSTFLAGS={flags!r}`)" if flags else " (no `RUSTFLAGS`)"
    out = [head, ""]
    versions = [
        f"{label} {meta[k]}" for k, label in
        (("torch", "PyTorch"), ("onnxruntime", "ONNX Runtime"), ("rustc", "")) if meta.get(k)
    ]
    if versions:
        extra = f"; measured {meta['date']}" if meta.get("date") else ""
        samples = f", medians of {meta['samples']} samples" if meta.get("samples") else ""
        out += [f"{', '.join(v.strip() for v in versions)}{samples}{extra}.", ""]
    for family in ordered(r["family"] for r in rows):
        fam = [r for r in rows if r["family"] == family]
        kernels = ordered(r["kernel"] for r in fam)
        sized = [r for r in fam if not r["per_call"]]
        tiny = [r for r in fam if r["per_call"]]
        if sized:
            out += [f"### {family}: limit · ×scalar · ×PyTorch (· ×ORT)", ""]
            out += table(sized, kernels, sized_cell) + [""]
        if tiny:
            out += [f"### {family}, per call: µs of ours / scalar / PyTorch (/ ORT)", ""]
            out += table(tiny, kernels, tiny_cell) + [""]
    return out + summary(rows) + [""]


def main():
    args = sys.argv[1:]
    machine = next((a.split("=", 1)[1] for a in args if a.startswith("--machine=")), None)
    files = [a for a in args if not a.startswith("--")]
    if not files:
        sys.exit(__doc__)
    builds = []
    for spec in files:
        name, _, path = spec.rpartition("=")
        builds.append((name or os.path.splitext(os.path.basename(path))[0], *read(path)))
    lines = [f"Machine: {machine or lscpu_machine()}; one thread, float32."]
    bytes_per_elem = traffic(builds[0][1])
    if bytes_per_elem:
        lines.append(
            f"Minimum traffic, bytes per element (the lower figure channels-first where a "
            f"channel stays cached between two passes): {bytes_per_elem}."
        )
    lines.append("")
    for name, rows, meta in builds:
        lines.extend(build_section(name, rows, meta))
    text = "\n".join(lines)
    print(text)
    doc = next((a.split("=", 1)[1] for a in args if a.startswith("--doc=")), None)
    if doc:
        write_between_markers(doc, text)


BEGIN, END = "<!-- bench tables: begin -->", "<!-- bench tables: end -->"


def write_between_markers(path, text):
    """Replace what stands between the bench-table markers of `path` by `text`."""
    with open(path) as f:
        doc = f.read()
    head, sep, rest = doc.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        sys.exit(f"{path}: no {BEGIN} ... {END} block")
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
