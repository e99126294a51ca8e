"""How one run spreads over processes: the `--parallel` modes, one registry.

A mode names the dimensions of the device mesh its processes form (outermost first) and
checks the process count against the spec; its strategy, a `Parallel`, wraps the compiled
model for training, says which module evaluates, gathers the one-process `state_dict` for
checkpoints, and adds up figures over the data-parallel replicas. `OneProcess` is the
strategy without a process group (`--nproc 1`); the others subclass it.

    data         DDP replicas over a 1-D mesh ("data",): N processes
    towers       one process per device group, mesh ("towers",): N = the number of groups
    towers,data  a 2-D mesh ("towers", "data"): groups × replicas

Checkpoints always hold the plain one-process module's `state_dict` (no `module.` prefix,
no per-process shards), so a run resumes under any mode and process count, and `netspec
eval` reads them as they are.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.nn.parallel import DistributedDataParallel

from netspec.errors import UsageError
from netspec.spec.model import Spec
from netspec.train.distributed import mesh, rank_zero_first


class OneProcess:
    """One process alone, no process group: every hook is the plain single-device step."""

    dims: tuple[str, ...] = ()

    def __init__(self, spec: Spec, device: torch.device, grid: DeviceMesh | None = None):
        self.spec, self.device, self.mesh = spec, device, grid

    @property
    def rank(self) -> int:
        return dist.get_rank() if self.mesh is not None else 0

    @property
    def is_main(self) -> bool:
        """The one process that logs and writes the run folder."""
        return self.rank == 0

    @property
    def replica(self) -> int:
        """This process's index along the data-parallel dimension (0 without one)."""
        if self.mesh is None or "data" not in self.dims:
            return 0
        return self.mesh.get_local_rank("data")

    @property
    def replicas(self) -> int:
        if self.mesh is None or "data" not in self.dims:
            return 1
        return self.mesh.size(self.dims.index("data"))

    @property
    def dropout_stream(self) -> int:
        """Which stream of dropout draws this process takes in an epoch; 0 is one process's."""
        return self.replica

    def describe(self) -> str:
        return ""

    def main_first(self) -> contextlib.AbstractContextManager[None]:
        return rank_zero_first()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that trains, made from the compiled one-process module."""
        return model

    def module(self, model: nn.Module) -> nn.Module:
        """The module that evaluates (without collectives between batches) and whose
        parameters the optimiser updates."""
        return model

    def model_state(self, model: nn.Module) -> dict[str, Any]:
        """The one-process module's `state_dict`; called by every process, as gathering it
        may take all of them."""
        return self.module(model).state_dict()

    def model_state_alone(self, model: nn.Module) -> dict[str, Any] | None:
        """The one-process `state_dict` as the main process can make it by itself, after an
        interrupt, when the others may be gone; None where it takes them all."""
        return self.model_state(model)

    def load_model_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        self.module(model).load_state_dict(state)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def sum_over_replicas(self, values: torch.Tensor) -> torch.Tensor:
        """`values` added up over the data-parallel replicas (a CPU tensor in and out)."""
        return values


class DataParallel(OneProcess):
    """DDP replicas: each trains on its slice of every global batch, each rank's loss is the
    mean over its slice, and DDP averages the gradients, which makes them the gradients of
    the global batch's mean loss."""

    dims: tuple[str, ...] = ("data",)

    def describe(self) -> str:
        return f" in {self.replicas} data-parallel processes"

    def _group(self) -> dist.ProcessGroup:
        assert self.mesh is not None
        return self.mesh.get_group("data")

    def wrap(self, model: nn.Module) -> nn.Module:
        cuda = self.device.type == "cuda"
        return DistributedDataParallel(
            model, device_ids=[self.device] if cuda else None, process_group=self._group()
        )

    def module(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    def sum_over_replicas(self, values: torch.Tensor) -> torch.Tensor:
        on_device = values.to(self.device)
        dist.all_reduce(on_device, group=self._group())
        return on_device.cpu()


# --- the registry ---------------------------------------------------------------------------

Shape = Callable[[Spec, int, str], tuple[int, ...]]


def _data_shape(spec: Spec, nproc: int, source: str) -> tuple[int, ...]:
    return (nproc,)


def _groups(spec: Spec, mode: str, source: str) -> int:
    groups = len(spec.groups)
    if groups < 2:
        has = "one" if groups else "none"
        raise UsageError(
            f"--parallel {mode} places device groups on processes, and {source} has {has}: "
            "use --parallel data, or give the spec two or more device_groups"
        )
    return groups


def _towers_shape(spec: Spec, nproc: int, source: str) -> tuple[int, ...]:
    groups = _groups(spec, "towers", source)
    if nproc != groups:
        raise UsageError(
            f"--parallel towers runs one process per device group: {source} has {groups} "
            f"groups ({', '.join(spec.groups)}) but --nproc is {nproc}; use --nproc {groups}"
        )
    return (groups,)


def _towers_data_shape(spec: Spec, nproc: int, source: str) -> tuple[int, ...]:
    groups = _groups(spec, "towers,data", source)
    if nproc % groups:
        below = max(groups, nproc // groups * groups)
        raise UsageError(
            f"--parallel towers,data runs {groups} device groups × replicas: --nproc {nproc} "
            f"is not a multiple of {groups}; use --nproc {below} or {below + groups}"
        )
    return (groups, nproc // groups)


@dataclass(frozen=True)
class Mode:
    """A `--parallel` value: its mesh dimensions, how many processes lie along each (checked
    against the spec), and its strategy as `module:Class`, imported in the workers (None:
    not available in this build)."""

    dims: tuple[str, ...]
    shape: Shape
    strategy: str | None


MODES: dict[str, Mode] = {
    "data": Mode(("data",), _data_shape, "netspec.train.parallel:DataParallel"),
    "towers": Mode(("towers",), _towers_shape, "netspec.train.towers:Towers"),
    "towers,data": Mode(("towers", "data"), _towers_data_shape, "netspec.train.towers:TowersData"),
}


@dataclass(frozen=True)
class Layout:
    """A mode applied to a spec and a process count: the mesh to build."""

    mode: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def replicas(self) -> int:
        return self.shape[self.dims.index("data")] if "data" in self.dims else 1


def plan(mode: str, spec: Spec, nproc: int, source: str) -> Layout:
    """Check `--parallel MODE --nproc N` against the spec; one-line errors name the fix."""
    if mode not in MODES:
        raise UsageError(f"--parallel {mode}: unknown mode; choose one of {', '.join(MODES)}")
    chosen = MODES[mode]
    layout = Layout(mode, chosen.dims, chosen.shape(spec, nproc, source))
    batch = spec.train.batch_size
    if batch % layout.replicas:
        fits = max(layout.replicas, batch // layout.replicas * layout.replicas)
        raise UsageError(
            f"train.batch_size is the global batch, and {batch} does not split evenly over "
            f"{layout.replicas} data-parallel processes: use a multiple of {layout.replicas}, "
            f"e.g. --batch-size {fits}"
        )
    if chosen.strategy is None:
        raise UsageError(f"--parallel {mode} is not available in this build; use --parallel data")
    return layout


def strategy(layout: Layout, spec: Spec, device: torch.device) -> OneProcess:
    """The strategy of `layout` on this process's `device`, over a freshly built mesh."""
    target = MODES[layout.mode].strategy
    assert target is not None, "plan() lets only available modes through"
    module, _, name = target.partition(":")
    cls: type[OneProcess] = getattr(importlib.import_module(module), name)
    return cls(spec, device, mesh(device, layout.shape, layout.dims))
