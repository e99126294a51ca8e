"""python -m benchmarks [--device cuda] [--repeats N]: netspec against its references, one table.

`make bench` runs it on the CPU; `--only lrn,steps --batches 16` runs a part;
`--only pool` the max pool rows.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torchvision

from benchmarks import construct, lrn, pipeline, pool, steps
from benchmarks.timing import Row

COMPILED_LAYERS = {"lrn": lrn, "pool": pool}  # each: rows() and first_call_in_fresh_processes()
PARTS = ("lrn", "pool", "steps", "construct", "pipeline")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU, {line.split(':', 1)[1].strip()}"
    return f"CPU, {platform.processor() or platform.machine()}"


def conditions(device: torch.device, repeats: int, batches: list[int]) -> list[str]:
    return [
        f"device: {device_name(device)}; {torch.get_num_threads()} torch threads",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Python {platform.python_version()}",
        f"batch sizes {', '.join(map(str, batches))}; each figure the median of {repeats} "
        "interleaved repeats, netspec and its reference in turn",
        "ratio: netspec's speed ÷ the reference's (above 1: netspec is faster)",
    ]


def fmt(value: float, per_second: bool) -> str:
    if per_second:
        return f"{value:,.0f} img/s"
    return f"{value * 1000:,.0f} ms" if value < 10 else f"{value:,.1f} s"


def table(rows: list[Row]) -> list[str]:
    lines = ["| benchmark | reference | netspec | reference | ratio |", "|---|---|--:|--:|--:|"]
    for r in rows:
        ours, theirs = fmt(r.ours, r.per_second), fmt(r.theirs, r.per_second)
        lines.append(f"| {r.what} | {r.reference} | {ours} | {theirs} | {r.ratio:.2f}× |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per figure")
    p.add_argument("--batches", default="16,128", help="comma-separated step batch sizes")
    p.add_argument("--only", default=",".join(PARTS), help=f"some of: {', '.join(PARTS)}")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    parts = args.only.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"--only: unknown part {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    started = time.perf_counter()
    print("\n".join(conditions(device, args.repeats, batches)), flush=True)
    rows: list[Row] = []
    notes: list[str] = []
    for name, compiled in COMPILED_LAYERS.items():
        if name in parts:
            part_rows, part_notes = compiled.rows(device, args.repeats)
            rows += part_rows
            notes += part_notes
            if device.type == "cpu":
                notes.append(compiled.first_call_in_fresh_processes())
    if "steps" in parts:
        rows += steps.rows(device, args.repeats, batches)
    if "construct" in parts:
        rows += construct.rows(args.repeats)
    if "pipeline" in parts:
        rows += pipeline.rows(args.repeats, device)
    print()
    print("\n".join(table(rows)))
    print()
    print("\n".join([*notes, f"whole run: {time.perf_counter() - started:.0f} s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
