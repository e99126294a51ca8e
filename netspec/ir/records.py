"""The typed records the graph carries: one per node, one per edge, one for the whole net.

`NetGraph` is a networkx DiGraph (every networkx algorithm works on it) whose node, edge and
graph attributes are these records, reached through `graph.node(name)`, `graph.edge(a, b)`
and `graph.net`, so that back ends read typed fields a type checker can follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import networkx as nx

from netspec.spec.document import BlockUse
from netspec.spec.layers import INPUT, Layer

__all__ = ["INPUT", "Edge", "Net", "NetGraph", "Node"]


@dataclass
class Node:
    """A layer (or the input) with everything inferred about it before any tensor exists."""

    name: str
    type: str
    index: int  # position in the spec's layer list; -1 for the input
    layer: Layer | None  # the validated spec of the layer; None for the input
    shape: tuple[int, ...] = ()  # output, without the batch
    split: bool = False  # output channels partitioned across device groups
    params: int = 0
    macs: int = 0
    groups: int = 1  # the grouped convolution/linear factor
    flatten: bool = False  # a linear that flattens a C×H×W input
    towers: list[str] = field(default_factory=list)  # device groups holding a part of it
    warnings: list[str] = field(default_factory=list)
    uses: tuple[BlockUse, ...] = ()  # the block uses it came from, outermost first

    @property
    def has_weights(self) -> bool:
        return self.layer is not None and self.layer.has_weights


@dataclass
class Edge:
    """The tensor flowing from one layer into another."""

    port: int  # position among the reader's inputs
    shape: tuple[int, ...] = ()
    cross: bool = False  # a tower's layer reads every tower's channels here


@dataclass
class Net:
    """What holds for the whole network."""

    name: str
    input: tuple[int, ...]
    classes: int | None
    device_groups: list[str]
    output: str  # the name of the last layer
    params: int = 0
    macs: int = 0
    param_bytes: int = 0  # the parameters as float32
    activation_bytes: int = 0  # the input and every layer's output for one example, float32
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (layer, message)


class NetGraph(nx.DiGraph):
    """The intermediate form: nodes are layer names, each carrying a `Node` record."""

    @property
    def net(self) -> Net:
        net: Net = self.graph["net"]
        return net

    def node(self, name: str) -> Node:
        record: Node = self.nodes[name]["node"]
        return record

    def edge(self, src: str, dst: str) -> Edge:
        record: Edge = self.edges[src, dst]["edge"]
        return record

    def add_record(self, record: Node) -> None:
        self.add_node(record.name, node=record)

    def connect(self, src: str, dst: str, port: int) -> None:
        self.add_edge(src, dst, edge=Edge(port))

    def inputs_of(self, name: str) -> list[str]:
        """The layers `name` reads, in the order of its `inputs`."""
        return sorted(self.predecessors(name), key=lambda s: self.edge(s, name).port)

    def order(self) -> list[str]:
        """Nodes in an order they can run, following the spec's order where it is free to."""
        return list(nx.lexicographical_topological_sort(self, key=lambda n: self.node(n).index))

    def layers(self) -> list[Node]:
        """Every layer (not the input) in the order they run."""
        return [self.node(n) for n in self.order() if n != INPUT]


LayerT = TypeVar("LayerT", bound=Layer)


def layer_as(node: Node, model: type[LayerT]) -> LayerT:
    """The node's layer spec, typed as the model a back end's registry filed it under."""
    assert isinstance(node.layer, model), f"{node.name} is a {node.type}, not a {model.__name__}"
    return node.layer
