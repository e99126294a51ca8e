"""`--parallel towers` and `towers,data`: each device group trains in its own process.

The tower processes of a replica see the same batches (the input is shared), each holds its
group's part of every layer (`netspec.backends.torch_towers`), and they draw the same dropout
stream, so a tower run computes what the grouped one-process run does. With `towers,data`
the processes form a groups × replicas mesh: DDP averages each tower's gradients over the
replicas holding the same tower, and each replica trains on its slice of the global batch.

Checkpoints hold the grouped module's state_dict and optimiser state, gathered over the
towers on save and sliced again on resume, so a run moves freely between forms.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from netspec.backends.torch_towers import TowerNetwork
from netspec.backends.tower_state import (
    gather_optimizer,
    gather_state,
    optimizer_param_names,
    slice_optimizer,
    slice_state,
)
from netspec.ir.graph import build_graph
from netspec.spec.model import Spec
from netspec.train.parallel import DataParallel


class Towers(DataParallel):
    """One process per device group; with a "data" mesh dimension, DDP over the replicas."""

    dims: tuple[str, ...] = ("towers",)

    def __init__(self, spec: Spec, device: torch.device, grid: DeviceMesh | None = None):
        super().__init__(spec, device, grid)
        assert grid is not None
        self.graph = build_graph(spec)
        self.towers = grid.get_group("towers")
        self.tower = grid.get_local_rank("towers")
        self.size = grid.size(self.dims.index("towers"))
        self.part: TowerNetwork | None = None  # this process's tower, once wrapped

    def describe(self) -> str:
        where = f" as {self.size} towers (one process per device group)"
        if self.replicas > 1:
            where += f" × {self.replicas} data-parallel replicas"
        return where

    def wrap(self, model: nn.Module) -> nn.Module:
        with torch.device("meta"):
            tower = TowerNetwork(self.graph, self.tower, self.size, self.towers)
        part = slice_state(self.graph, model.state_dict(), self.tower, self.size)
        tower.load_state_dict(part, assign=True)
        self.part = tower
        if self.replicas == 1:
            return tower
        return super().wrap(tower)

    def model_state(self, model: nn.Module) -> dict[str, Any]:
        """The grouped state_dict on each replica's first tower; {} on the other towers."""
        return gather_state(self.graph, self.module(model).state_dict(), self.towers) or {}

    def model_state_alone(self, model: nn.Module) -> dict[str, Any] | None:
        """None: gathering the towers' parts takes every tower, and after an interrupt the
        launcher is stopping them."""
        return None

    def load_model_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        part = slice_state(self.graph, state, self.tower, self.size)
        self.module(model).load_state_dict(part)

    def _names(self, optimizer: torch.optim.Optimizer) -> list[str]:
        assert self.part is not None, "wrap the model before its optimiser"
        return optimizer_param_names(self.part, optimizer)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = optimizer.state_dict()
        return gather_optimizer(self.graph, state, self._names(optimizer), self.towers) or {}

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        part = slice_optimizer(self.graph, state, self._names(optimizer), self.tower, self.size)
        optimizer.load_state_dict(part)

    def sum_over_replicas(self, values: torch.Tensor) -> torch.Tensor:
        return values if self.replicas == 1 else super().sum_over_replicas(values)


class TowersData(Towers):
    dims = ("towers", "data")
