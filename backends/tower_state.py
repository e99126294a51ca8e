"""One state for both forms: the grouped module's state_dict is what checkpoints hold.

A tower's state is the grouped one cut along the first dimension of every tensor of a split
layer (filters, units, a batchnorm's channels: each tower owns a contiguous block, in the
order of the device groups), with a shared layer's tensors and 0-d tensors (counters) held
whole by every tower. So `slice_state` cuts a checkpoint for tower g, and `join_states` (in
one process) or `gather_state` (across the towers' processes) puts it back. The optimiser's
per-parameter state (momentum buffers) follows its parameter's rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from netspec.ir.records import NetGraph

State = dict[str, torch.Tensor]


def layer_of(graph: NetGraph, key: str) -> str:
    """The layer a state_dict key belongs to: submodules carry the spec's layer names, which
    may hold dots (`layer1.0.conv1.weight`), so it is the longest prefix naming a layer."""
    parts = key.split(".")
    prefixes = (".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1))
    return next((p for p in prefixes if graph.has_node(p)), parts[0])


def is_split(graph: NetGraph, key: str, tensor: torch.Tensor) -> bool:
    """Whether each tower holds only its block of this tensor (else the whole of it)."""
    return tensor.dim() > 0 and graph.node(layer_of(graph, key)).split


def slice_tensor(tensor: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    block = tensor.shape[0] // size
    return tensor.narrow(0, rank * block, block).clone()


def slice_state(graph: NetGraph, state: Mapping[str, torch.Tensor], rank: int, size: int) -> State:
    """Tower `rank`'s part of a grouped module's state_dict."""
    return {
        key: slice_tensor(t, rank, size) if is_split(graph, key, t) else t.clone()
        for key, t in state.items()
    }


def join_states(graph: NetGraph, parts: list[Mapping[str, torch.Tensor]]) -> State:
    """The grouped module's state_dict from every tower's, in tower order."""
    return {
        key: torch.cat([p[key] for p in parts]) if is_split(graph, key, t) else t.clone()
        for key, t in parts[0].items()
    }


def gather_state(
    graph: NetGraph, state: Mapping[str, torch.Tensor], group: dist.ProcessGroup | None = None
) -> State | None:
    """The grouped state_dict on the group's first rank (None on the others), from every
    rank's own part; each rank must call it. Returned on the CPU, ready to save."""
    first = dist.get_global_rank(group, 0) if group is not None else 0
    own = dist.get_rank(group) == 0
    size = dist.get_world_size(group)
    out: State = {}
    for key, t in state.items():
        if not is_split(graph, key, t):
            if own:
                out[key] = t.detach().cpu().clone()
            continue
        parts = [torch.empty_like(t) for _ in range(size)] if own else None
        dist.gather(t.detach().contiguous(), parts, dst=first, group=group)
        if parts is not None:
            out[key] = torch.cat(parts).cpu()
    return out if own else None


def optimizer_param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of an optimiser's parameters in its own order, which is how its state_dict
    numbers them; the same in both forms, since the layers and their order are the same."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for g in optimizer.param_groups for p in g["params"]]


def _flat(optimizer_state: Mapping[str, Any], names: list[str]) -> State:
    """Per-parameter tensors keyed `layer.param/slot`, so the state_dict rules apply."""
    ids = [i for g in optimizer_state["param_groups"] for i in g["params"]]
    index = dict(zip(ids, names, strict=True))
    return {
        f"{index[i]}/{slot}": v
        for i, s in optimizer_state["state"].items()
        for slot, v in s.items()
        if isinstance(v, torch.Tensor)
    }


def _unflat(
    optimizer_state: Mapping[str, Any], names: list[str], flat: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """`optimizer_state` with its tensors replaced by `flat`'s."""
    ids = [i for g in optimizer_state["param_groups"] for i in g["params"]]
    index = dict(zip(ids, names, strict=True))
    state = {
        i: {slot: flat.get(f"{index[i]}/{slot}", v) for slot, v in s.items()}
        for i, s in optimizer_state["state"].items()
    }
    return {"state": state, "param_groups": optimizer_state["param_groups"]}


def slice_optimizer(
    graph: NetGraph, optimizer_state: Mapping[str, Any], names: list[str], rank: int, size: int
) -> dict[str, Any]:
    """Tower `rank`'s part of a grouped optimiser's state_dict."""
    flat = slice_state(graph, _flat(optimizer_state, names), rank, size)
    return _unflat(optimizer_state, names, flat)


def join_optimizers(
    graph: NetGraph, parts: list[Mapping[str, Any]], names: list[str]
) -> dict[str, Any]:
    """The grouped optimiser's state_dict from every tower's, in tower order."""
    flat = join_states(graph, [_flat(p, names) for p in parts])
    return _unflat(parts[0], names, flat)


def gather_optimizer(
    graph: NetGraph,
    optimizer_state: Mapping[str, Any],
    names: list[str],
    group: dist.ProcessGroup | None = None,
) -> dict[str, Any] | None:
    """The grouped optimiser state on the group's first rank (None on the others)."""
    flat = gather_state(graph, _flat(optimizer_state, names), group)
    return None if flat is None else _unflat(optimizer_state, names, flat)
