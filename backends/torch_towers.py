"""The torch back end's second form: each device group in its own process, as on the paper's GPUs.

Rank g of a process group of G ranks (G = the number of device groups) holds group g's part of
every layer and nothing else: the g-th G-th of a split layer's filters or units (a
`connect: group` layer over its own group's channels, a `connect: all` one over every group's),
so its optimiser state and activations are its own too. Its layers come from the grouped
module's builders (`netspec.backends.torch_module`), given the tower's sizes.

Activations cross between processes only on the graph's cross edges, where a layer reads every
tower's channels: an all-gather whose backward sums each tower's gradient back to its owner.
The net's output is gathered so that every rank computes the same loss; its backward hands
each rank the gradient of its own slice only (every rank holds the same full gradient, so
summing would count it G times). Both forms compute the same function with the same weights:
`netspec.backends.tower_state` turns one's state_dict into the other's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from netspec.backends.torch_module import BUILDERS, place
from torch import nn

from netspec.errors import UsageError
from netspec.ir.records import INPUT, NetGraph, Node
from netspec.ir.registry import LayerTable
from netspec.spec import layers as L

Group = dist.ProcessGroup | None


def part(shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    """The shape of one tower's part of a split tensor: its block of the channels or units."""
    return (shape[0] // size, *shape[1:])


class TowerDropout(nn.Module):
    """Dropout whose mask is the grouped module's: the full-width mask, drawn from the same
    generator state on every rank (the same op on a tensor of the full shape), sliced."""

    def __init__(self, p: float, rank: int, size: int):
        super().__init__()
        self.p, self.rank, self.size = p, rank, size

    def extra_repr(self) -> str:
        return f"p={self.p}, tower={self.rank} of {self.size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        width = x.shape[1]
        full = (x.shape[0], width * self.size, *x.shape[2:])
        mask = F.dropout(torch.ones(full, dtype=x.dtype, device=x.device), self.p, True)
        return x * mask.narrow(1, self.rank * width, width)


PartBuilder = Callable[[Node, int, int], nn.Module]  # (node, rank, size) -> the tower's part
# the layer types whose part of a split layer is not the grouped builder's layer at the
# tower's size
TOWER_BUILDERS: LayerTable[PartBuilder] = LayerTable("tower builder")


@TOWER_BUILDERS.register(L.Dropout)
def _dropout(node: Node, rank: int, size: int) -> nn.Module:
    assert isinstance(node.layer, L.Dropout)
    return TowerDropout(node.layer.p, rank, size)


class _GatherOutput(torch.autograd.Function):
    """All towers' parts joined on dim 1; backward keeps this rank's slice of the gradient.

    Every rank computes the same loss from the same gathered output, so each already holds
    the whole gradient: its own slice is exactly what its part contributed, no sum needed.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Group) -> torch.Tensor:
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.start, ctx.width = rank * x.shape[1], x.shape[1]
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.narrow(1, ctx.start, ctx.width).contiguous(), None


def gather_output(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    out: torch.Tensor = _GatherOutput.apply(x, group)
    return out


class _GatherAcross(torch.autograd.Function):
    """All towers' parts joined on dim 1; backward reduce-scatters: each part's owner gets
    the sum of what every tower's layer sent back through it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Group) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.group, ctx.width = group, x.shape[1]
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        chunks = [c.contiguous() for c in grad.split(ctx.width, dim=1)]
        own = torch.empty_like(chunks[0])
        dist.reduce_scatter(own, chunks, group=ctx.group)
        return own, None


def gather_across(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    """Every tower's part of a split tensor, for a layer that reads all of them."""
    out: torch.Tensor = _GatherAcross.apply(x, group)
    return out


class _SumGradients(torch.autograd.Function):
    """Identity forward; backward sums the gradient over the towers.

    Put where a shared tensor (the same on every rank) enters a tower's own layers: each rank
    holds only its tower's share of the gradient, and everything upstream (a shared layer's
    weights, say) needs the sum, the same on every rank so that every copy takes one step.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Group) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def sum_gradients(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    out: torch.Tensor = _SumGradients.apply(x, group)
    return out


Join = Callable[[torch.Tensor, Group], torch.Tensor]
JOINS: dict[str, Join] = {
    "local": lambda x, group: x,  # the tower's own part, or a shared tensor into shared layers
    "cross": gather_across,  # every tower's part, on a cross edge
    "enter": sum_gradients,  # a shared tensor into the tower's own layers
}


def _joining(graph: NetGraph, src: str, node: Node) -> tuple[str, str]:
    """How the tensor from `src` reaches `node`'s part: one of `JOINS`."""
    if graph.edge(src, node.name).cross:
        return src, "cross"
    if node.split and not graph.node(src).split:
        return src, "enter"
    return src, "local"


def local_node(node: Node, size: int) -> Node:
    """The node as one tower sees it: its part of a split output, no grouping left."""
    layer = node.layer
    if isinstance(layer, L.Conv):
        layer = layer.model_copy(update={"filters": layer.filters // size})
    shape = part(node.shape, size) if node.split else node.shape
    return replace(node, layer=layer, shape=shape, groups=1)


def _input_shape(graph: NetGraph, src: str, dst: str, size: int) -> tuple[int, ...]:
    node = graph.node(src)
    whole = graph.edge(src, dst).cross or not node.split
    return node.shape if whole else part(node.shape, size)


class TowerNetwork(nn.Module):
    """One device group's part of the network, for rank `rank` of a process group of `size`.

    Submodules carry the spec's layer names, as in the grouped `Network`, so state_dict keys
    are the same and only the tensors' sizes differ. A shared layer (one that reads only
    shared tensors, such as a batchnorm of the input) is held whole by every tower, and its
    gradients are summed across towers where its output enters their own layers, so every
    copy takes the same step.
    """

    def __init__(self, graph: NetGraph, rank: int, size: int, group: Group = None):
        super().__init__()
        groups = graph.net.device_groups
        if len(groups) < 2:
            raise UsageError(
                f"{graph.net.name} has no device groups to place on separate processes; "
                "add device_groups: [a, b] to the spec, or train without --parallel towers"
            )
        if size != len(groups):
            raise UsageError(
                f"{graph.net.name} has {len(groups)} device groups ({', '.join(groups)}) but "
                f"{size} processes were started; towers need one process per group: "
                f"use --nproc {len(groups)}"
            )
        self.rank, self.size, self.group = rank, size, group
        self._plan: list[tuple[str, list[tuple[str, str]]]] = []
        for node in graph.layers():
            sources = graph.inputs_of(node.name)
            in_shape = _input_shape(graph, sources[0], node.name, size)
            in_size = math.prod(in_shape) if node.type == "linear" else in_shape[0]
            tower_builder = TOWER_BUILDERS.get(type(node.layer))
            if node.split and tower_builder is not None:
                module = tower_builder(node, rank, size)
            else:
                module = BUILDERS[type(node.layer)](local_node(node, size), in_size, 1)
            place(self, node.name, module)
            self._plan.append((node.name, [_joining(graph, s, node) for s in sources]))
        self._output = graph.net.output
        self._gather = graph.node(self._output).split

    def extra_repr(self) -> str:
        return f"tower={self.rank} of {self.size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {INPUT: x}
        for name, sources in self._plan:
            ins = [JOINS[join](values[s], self.group) for s, join in sources]
            values[name] = self.get_submodule(name)(*ins)
        out = values[self._output]
        return gather_output(out, self.group) if self._gather else out
