"""A trained network as the inspection commands find it: a run folder or a checkpoint, read
with the spec and statistics the run saved in it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netspec import compile
from netspec.errors import SpecError, UsageError, did_you_mean
from netspec.ir.graph import build_graph
from netspec.ir.records import NetGraph
from netspec.spec.model import Spec
from netspec.spec.settings import DataConfig
from netspec.train.augment import Stats
from netspec.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    require,
    restoring,
    stats_from,
    trained_spec,
)
from netspec.train.checks import check_data_fits
from netspec.train.split import Split

# What an inspection reads from a checkpoint: its weights, and the spec they belong to.
INSPECT_FIELDS: dict[str, type | tuple[type, ...]] = {"model": dict, "spec": str}
# The checkpoints of a run folder, the one to use first: the best epoch's, as `eval` is
# usually pointed at.
RUN_CHECKPOINTS = ("best.pt", "last.pt")


@dataclass
class Trained:
    """A checkpoint with its own spec, graph and training-set statistics."""

    path: Path
    state: dict[str, Any]
    spec: Spec
    graph: NetGraph
    stats: Stats | None

    @property
    def data(self) -> DataConfig:
        return self.spec.data

    @property
    def classes(self) -> list[str] | None:
        """The class names the run trained on, where its checkpoint keeps them."""
        names = self.state.get("classes")
        if not isinstance(names, list) or len(names) != self.outputs:
            return None
        return names if all(isinstance(n, str) for n in names) else None

    @property
    def outputs(self) -> int:
        return self.graph.node(self.graph.net.output).shape[0]

    def model(self, device: torch.device) -> nn.Module:
        """The network with the checkpoint's weights, in evaluation mode, on `device`."""
        model = compile(self.spec, graph=self.graph)
        with restoring(self.path, f"model (for its own spec {self.spec.name})"):
            model.load_state_dict(self.state["model"])
        return model.to(device).eval()

    def layer(self, name: str, flag: str = "--layer") -> str:
        """`name`, checked to be one of the network's layers."""
        names = [node.name for node in self.graph.layers()]
        if name not in names:
            raise UsageError(
                f"{flag} {name}: {self.spec.name} has no such layer{did_you_mean(name, names)}; "
                f"its layers: {', '.join(names)}"
            )
        return name

    def check_split(self, split: Split) -> None:
        """The data must have as many classes as the network has outputs."""
        check_data_fits(self.spec, split.where, split.classes, self.graph)


def checkpoint_path(arg: str) -> Path:
    """The checkpoint a RUN_OR_CHECKPOINT argument names: a file, or a run folder's best.pt
    (its last.pt where it has no best)."""
    path = Path(arg).expanduser()
    if not path.exists():
        raise UsageError(f"{arg}: no such run folder or checkpoint")
    if not path.is_dir():
        return path
    for name in RUN_CHECKPOINTS:
        if (path / name).is_file():
            return path / name
    raise UsageError(
        f"{arg}: a folder without best.pt or last.pt; give a run folder netspec train wrote, "
        "or a checkpoint file"
    )


def open_trained(arg: str) -> Trained:
    """Read RUN_OR_CHECKPOINT: every mistake is one line naming the file."""
    path = checkpoint_path(arg)
    state = load_checkpoint(path)
    require(path, state, INSPECT_FIELDS, "be inspected")
    spec = trained_spec(path, state)
    assert spec is not None, "require() found its spec"
    try:
        graph = build_graph(spec)
    except SpecError:
        raise CheckpointError(
            f"{path}: its 'spec' does not build; use a checkpoint written by netspec train"
        ) from None
    return Trained(path, state, spec, graph, stats_from(path, state))


def image_name(split: Split, index: int, short: bool = False) -> str:
    """An image as a user finds it: its file where the split has files (`short`: from the
    split's folder), else the store's file and the image's index there."""
    samples = getattr(split, "samples", None)
    if samples is None:
        return f"{split.where.name if short else split.where}#{index}"
    path = Path(samples[index][0])
    return str(
        path.relative_to(split.where) if short and path.is_relative_to(split.where) else path
    )


def note(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)
