"""The torch back end: a graph becomes an nn.Module, one submodule per spec layer.

Device groups compile to grouped convolutions and linears and to per-group LRN and concat,
all on one device: the same function, with the same weights, as the paper's two GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from netspec.backends import torch_layers as T
from torch import nn

from netspec.ir.records import INPUT, NetGraph, Node, layer_as
from netspec.ir.registry import LayerTable
from netspec.spec import layers as L
from netspec.spec.layers import Init

__all__ = ["BUILDERS", "Network", "Uses", "initialise", "place", "to_module"]

Builder = Callable[[Node, int, int], nn.Module]
BUILDERS: LayerTable[Builder] = LayerTable("torch builder")
builds = BUILDERS.register


# A layer reading at most this many channels (an image) whose filters are split among the
# device groups computes each group's filters on their own (see T.PerGroupConv2d).
FEW_CHANNELS = 4


@builds(L.Conv)
def _conv(node: Node, in_size: int, groups: int) -> nn.Module:
    layer = layer_as(node, L.Conv)
    args = (in_size, layer.filters, layer.kernel, layer.stride, layer.padding)
    if node.split and node.groups == 1 and groups > 1 and in_size <= FEW_CHANNELS:
        return T.PerGroupConv2d(*args, bias=layer.bias, parts=groups)
    return nn.Conv2d(*args, groups=node.groups, bias=layer.bias)


@builds(L.Linear)
def _linear(node: Node, in_size: int, groups: int) -> nn.Module:
    units = node.shape[0]
    bias = layer_as(node, L.Linear).bias
    if node.groups > 1:
        return T.GroupedLinear(in_size, units, node.groups, bias, node.flatten)
    return (T.FlattenLinear if node.flatten else nn.Linear)(in_size, units, bias=bias)


@builds(L.LRN)
def _lrn(node: Node, in_size: int, groups: int) -> nn.Module:
    layer = layer_as(node, L.LRN)
    return T.LocalResponseNorm(
        layer.size,
        layer.alpha,
        layer.beta,
        layer.k,
        layer.convention,
        groups if node.split else 1,
    )


@builds(L.MaxPool)
def _maxpool(node: Node, in_size: int, groups: int) -> nn.Module:
    layer = layer_as(node, L.MaxPool)
    return T.MaxPool2d(
        layer.kernel, layer.stride or layer.kernel, layer.padding, ceil_mode=layer.ceil
    )


@builds(L.AvgPool)
def _avgpool(node: Node, in_size: int, groups: int) -> nn.Module:
    layer = layer_as(node, L.AvgPool)
    return nn.AvgPool2d(
        layer.kernel,
        layer.stride or layer.kernel,
        layer.padding,
        ceil_mode=layer.ceil,
        count_include_pad=True,
    )


@builds(L.AdaptiveAvgPool)
def _adaptive(node: Node, in_size: int, groups: int) -> nn.Module:
    return nn.AdaptiveAvgPool2d(layer_as(node, L.AdaptiveAvgPool).output_size)


@builds(L.BatchNorm)
def _batchnorm(node: Node, in_size: int, groups: int) -> nn.Module:
    layer = layer_as(node, L.BatchNorm)
    norm = nn.BatchNorm2d if len(node.shape) == 3 else nn.BatchNorm1d
    return norm(node.shape[0], eps=layer.eps, momentum=layer.momentum)


@builds(L.Concat)
def _concat(node: Node, in_size: int, groups: int) -> nn.Module:
    return T.Concat(groups if node.split else 1)


BUILDERS.update(
    {
        L.ReLU: lambda node, in_size, groups: nn.ReLU(),
        L.Tanh: lambda node, in_size, groups: nn.Tanh(),
        L.GELU: lambda node, in_size, groups: nn.GELU(),
        L.Sigmoid: lambda node, in_size, groups: nn.Sigmoid(),
        L.Dropout: lambda node, in_size, groups: nn.Dropout(layer_as(node, L.Dropout).p),
        L.Flatten: lambda node, in_size, groups: nn.Flatten(),
        L.Add: lambda node, in_size, groups: T.Add(),
    }
)

# Layers whose backward reads their input, never their output: a ReLU that is the only reader
# of one may overwrite that output in place, as torchvision's AlexNet does, saving a map's
# worth of memory and a pass over it.
KEEPS_NO_OUTPUT = (L.Conv, L.Linear, L.LRN, L.MaxPool, L.BatchNorm)


def overwritable(graph: NetGraph, name: str) -> bool:
    """May the layer `name` overwrite its one input in place?"""
    sources = graph.inputs_of(name)
    if len(sources) != 1 or sources[0] == INPUT or graph.out_degree(sources[0]) != 1:
        return False
    return isinstance(graph.node(sources[0]).layer, KEEPS_NO_OUTPUT)


WeightInit = Callable[[torch.Tensor, Init], object]
WEIGHT_INITS: dict[str, WeightInit | None] = {
    "torch": None,
    "normal": lambda w, init: nn.init.normal_(w, init.mean, init.std),
    "kaiming": lambda w, init: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "xavier": lambda w, init: nn.init.xavier_uniform_(w),
}


class Uses(nn.Module):
    """Holds the layers of one block use (`layer1`, `layer1.0`), as torchvision's nested
    modules hold theirs, so that the state_dict keys are the layers' dotted names
    (`layer1.0.conv1.weight`). It runs nothing itself: the network runs every layer."""


def place(root: nn.Module, name: str, module: nn.Module) -> None:
    """Register `module` under its layer's name, inside the block uses that hold it."""
    *holders, leaf = name.split(".")
    for part in holders:
        inner = root._modules.get(part)
        if inner is None:
            inner = Uses()
            root.add_module(part, inner)
        root = inner
    root.add_module(leaf, module)


class Network(nn.Module):
    """Runs the graph's layers in order; each spec layer is the submodule of its name."""

    def __init__(self, graph: NetGraph):
        super().__init__()
        groups = max(1, len(graph.net.device_groups))
        self._plan: list[tuple[str, list[str]]] = []
        for node in graph.layers():
            sources = graph.inputs_of(node.name)
            in_shape = graph.node(sources[0]).shape
            in_size = math.prod(in_shape) if node.type == "linear" else in_shape[0]
            module = BUILDERS[type(node.layer)](node, in_size, groups)
            if isinstance(module, nn.ReLU):
                module.inplace = overwritable(graph, node.name)
            place(self, node.name, module)
            self._plan.append((node.name, sources))
        self._output = graph.net.output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {INPUT: x}
        for name, sources in self._plan:
            values[name] = self.get_submodule(name)(*(values[s] for s in sources))
        return values[self._output]


def _reset(module: nn.Module) -> None:
    """torch's own first values for the module's parameters and buffers, where it has any."""
    reset = getattr(module, "reset_parameters", None)
    if reset is not None:
        reset()


def _init_weights(module: nn.Module, init: Init) -> None:
    fill = WEIGHT_INITS[init.weight]
    if fill is None:
        _reset(module)
    else:
        fill(module.get_parameter("weight"), init)
    if getattr(module, "bias", None) is None:
        return
    bias = module.get_parameter("bias")
    if init.bias is not None:
        bias.fill_(init.bias)
    elif fill is not None:
        # torch's own bias draw for convolutions and linears, U(±1/√fan_in), alone
        bound = module.get_parameter("weight")[0].numel() ** -0.5
        nn.init.uniform_(bias, -bound, bound)


def initialise(model: Network, graph: NetGraph, default: Init) -> None:
    """Give every parameter and buffer its first value, once: each weight layer's `init` (or
    the spec's default; `torch` is the module's own `reset_parameters`), and batch norm its
    ones, zeros and fresh running statistics."""
    with torch.no_grad():
        for node in graph.layers():
            module = model.get_submodule(node.name)
            if isinstance(node.layer, L.WeightLayer):
                _init_weights(module, node.layer.init or default)
            else:
                _reset(module)


def to_module(
    graph: NetGraph, default_init: Init, device: str | torch.device | None = None
) -> Network:
    """Build the module; on the `meta` device no weight memory is allocated.

    Elsewhere it is built on `meta` too, then given memory and initialised, so that each
    weight is drawn once (torch's constructors would draw every weight before the spec's
    init replaced it)."""
    with torch.device("meta"):
        model = Network(graph)
    target = torch.device(device or "cpu")
    if target.type != "meta":
        model.to_empty(device=target)
        initialise(model, graph, default_init)
    return model
