"""What each device group holds and what crosses between groups, read off the graph alone.

The figures are for one example, forward, in fp32 (4 bytes a value), and describe the tower
form: one process per device group, each holding its group's part of every layer.

- A group's parameters: its share of every split layer (1/G of the weights and biases of a
  layer whose outputs are partitioned) and the whole of every shared one (a copy each).
- A group's activations: its part of every split output, the whole of every shared output
  (the input included), and what it receives from the other groups on cross edges.
- The bytes that cross into a layer: on each cross edge (a tower's layer reading every
  tower's channels) each of the G towers receives the other G − 1 towers' parts, so
  (G − 1) × the size of the whole tensor, summed over the layer's cross edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netspec.ir.records import NetGraph

BYTES = 4  # fp32


@dataclass(frozen=True)
class GroupCost:
    params: int
    activation_bytes: int


def _groups(graph: NetGraph) -> int:
    return max(1, len(graph.net.device_groups))


def cross_bytes(graph: NetGraph, name: str) -> int:
    """Bytes all towers together receive from one another, per example, to run `name`."""
    g = _groups(graph)
    return sum(
        (g - 1) * math.prod(graph.node(src).shape) * BYTES
        for src in graph.predecessors(name)
        if graph.edge(src, name).cross
    )


def total_cross_bytes(graph: NetGraph) -> int:
    return sum(cross_bytes(graph, n.name) for n in graph.layers())


def group_cost(graph: NetGraph) -> GroupCost:
    """What one tower holds; every tower holds the same, since split layers split evenly."""
    g = _groups(graph)
    params = sum(n.params // g if n.split else n.params for n in graph.layers())
    values = 0
    for name in graph.order():
        node = graph.node(name)
        size = math.prod(node.shape)
        values += size // g if node.split else size
    received = total_cross_bytes(graph) // g
    return GroupCost(params, values * BYTES + received)


def group_costs(graph: NetGraph) -> dict[str, GroupCost]:
    """One entry per device group; none for a net without device groups."""
    cost = group_cost(graph)
    return {name: cost for name in graph.net.device_groups}
