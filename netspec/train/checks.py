"""Checks that a spec fits the data it is trained or evaluated on, before any work starts."""

from __future__ import annotations

from pathlib import Path

from netspec.errors import Problem, SpecError, UsageError
from netspec.ir.graph import build_graph
from netspec.spec.model import Spec
from netspec.train.data import Data, open_data


def check_data_fits(spec: Spec, folder: Path, classes: list[str]) -> None:
    """The output layer must have one unit per class folder."""
    graph = build_graph(spec)
    units = graph.node(graph.net.output).shape[0]
    if len(classes) != units:
        shown = ", ".join(classes[:5]) + (", …" if len(classes) > 5 else "")
        raise UsageError(
            f"{folder} has {len(classes)} classes ({shown}) but the spec's output "
            f"has {units} units: add --set classes={len(classes)}"
        )


def check_sizes(spec: Spec) -> None:
    """The data section must produce what the input layer expects."""
    problems = []
    channels, h, w = spec.input
    if channels != 3:
        problems.append(
            Problem(
                spec.where(("input",)),
                f"image folders give 3 channels (RGB), but the input has {channels}; "
                f"set input: [3, {h}, {w}]",
            )
        )
    if spec.data.crop != h or h != w:
        problems.append(
            Problem(
                spec.where(("data", "crop")),
                f"data.crop is {spec.data.crop} but the input is "
                f"{spec.input[0]}×{h}×{w}; crops are square and must match: "
                f"set data.crop: {h} (and a square input)",
            )
        )
    if problems:
        raise SpecError(problems)


def open_training_data(spec: Spec, root: Path) -> Data:
    """ROOT's train and val folders, checked against the spec, with statistics fitted."""
    check_sizes(spec)
    data = open_data(root, spec.data)
    check_data_fits(spec, data.train_set.folder, data.classes)
    if len(data.train_set) < spec.train.batch_size:
        raise UsageError(
            f"{data.train_set.folder} has {len(data.train_set)} images, fewer than "
            f"one batch ({spec.train.batch_size}): lower --batch-size"
        )
    return data
