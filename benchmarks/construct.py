"""Spec → module (`netspec.compile`) against torchvision's `alexnet()` constructor."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torchvision

from benchmarks.timing import Row, interleaved
from netspec import compile, load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = {
    "alexnet.yaml (paper: N(0, 0.01²) weights)": "specs/alexnet.yaml",
    "torchvision-alexnet.yaml (torch's default init)": "specs/torchvision-alexnet.yaml",
}


def rows(repeats: int) -> list[Row]:
    specs = {label: load_spec(ROOT / path) for label, path in SPECS.items()}
    runs: dict[str, Callable[[], object]] = {
        label: functools.partial(compile, spec) for label, spec in specs.items()
    }
    runs["reference"] = functools.partial(torchvision.models.alexnet, weights=None)
    seconds = interleaved(runs, repeats)
    return [
        Row(
            f"netspec.compile, {label}",
            "torchvision alexnet()",
            seconds[label],
            seconds["reference"],
        )
        for label in SPECS
    ]
