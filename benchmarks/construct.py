"""Spec → module (`netspec.compile`) against torchvision's `alexnet()` constructor.

The paper's N(0, 0.01²) weights cost more to draw than torch's default uniform ones, so the
paper spec is also measured against what a torchvision user does to get them: the constructor,
then `nn.init.normal_` over every weight and the paper's biases."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from benchmarks.timing import Row, interleaved
from netspec import compile, load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = {
    "alexnet.yaml (paper: N(0, 0.01²) weights)": "specs/alexnet.yaml",
    "torchvision-alexnet.yaml (torch's default init)": "specs/torchvision-alexnet.yaml",
}


def torchvision_with_paper_init() -> nn.Module:
    """torchvision's AlexNet drawn as the paper's: N(0, 0.01²) weights, biases 0 or 1."""
    model = torchvision.models.alexnet(weights=None)
    ones = {"features.3", "features.8", "features.10", "classifier.1", "classifier.4"}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.constant_(module.bias, 1.0 if name in ones else 0.0)
    return model


def rows(repeats: int) -> list[Row]:
    specs = {label: load_spec(ROOT / path) for label, path in SPECS.items()}
    runs: dict[str, Callable[[], object]] = {
        label: functools.partial(compile, spec) for label, spec in specs.items()
    }
    runs["reference"] = functools.partial(torchvision.models.alexnet, weights=None)
    runs["paper reference"] = torchvision_with_paper_init
    seconds = interleaved(runs, repeats)
    paper = next(iter(SPECS))
    return [
        Row(
            f"netspec.compile, {label}",
            "torchvision alexnet()",
            seconds[label],
            seconds["reference"],
        )
        for label in SPECS
    ] + [
        Row(
            f"netspec.compile, {paper}",
            "torchvision alexnet(), then N(0, 0.01²)",
            seconds[paper],
            seconds["paper reference"],
        )
    ]
