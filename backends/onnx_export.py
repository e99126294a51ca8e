"""The ONNX back end: the graph and a set of weights become an ONNX model, node by node.

The model is written from the graph's records with the `onnx` helper API, not traced from the
torch module: every node is named after the spec layer it computes (a layer of several nodes
names its parts `layer/part`, and its last node is the layer's name; `OnnxGraph.fresh` gives
every name, so none repeats whatever the layers and device groups are called), every value is
the output of a named node, and the shapes on the edges are the graph's own. The batch size is
the symbolic dimension `batch`.

Device groups stay visible: a per-group LRN is Split → one LRN per group → Concat, a grouped
linear is Split → one Gemm per group → Concat, a per-group concat splits each input and joins
the groups' parts in order. Where an ONNX operator computes a layer exactly it is used (LRN,
pooling); where none does, the exact computation is written out in elementary operators and
the nodes' `doc_string` says why (`notes()` lists them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from netspec.ir.records import INPUT, NetGraph, Node, layer_as
from netspec.ir.registry import LayerTable
from netspec.spec import layers as L

OPSET = 17  # every operator used here, with inputs (not attributes) for Split, Pad and Slice
IR_VERSION = 8  # the IR version that goes with opset 17, so older runtimes read the file
BATCH = "batch"


@dataclass
class OnnxGraph:
    """The ONNX graph being written: nodes and initializers, in the order the layers run."""

    graph: NetGraph
    weights: Mapping[str, np.ndarray]  # the compiled module's state_dict, as numpy arrays
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # layers written out in elementary ops
    taken: set[str] = field(default_factory=lambda: {INPUT})  # node and value names given

    @property
    def towers(self) -> list[str]:
        """Names for the parts of a layer split across device groups."""
        return self.graph.net.device_groups

    def fresh(self, name: str) -> str:
        """`name`, or `name_2`, `name_3`, … where it is taken: every node and value is named
        once, as ONNX requires, whatever the spec's layers and device groups are called (a
        group `split` would otherwise give a layer's Split node and its part one name). A
        layer's own name is kept for its last node: no other node may take it."""
        layers = self.graph.nodes
        if name in layers and name not in self.taken:
            self.taken.add(name)
            return name
        candidate, n = name, 1
        while candidate in self.taken or candidate in layers:
            n += 1
            candidate = f"{name}_{n}"
        self.taken.add(candidate)
        return candidate

    def add(self, op: str, inputs: list[str], name: str, doc: str = "", **attrs: Any) -> str:
        """A node named after `name` whose one output is the value of the same name."""
        name = self.fresh(name)
        self.nodes.append(helper.make_node(op, inputs, [name], name, doc or None, **attrs))
        return name

    def constant(self, name: str, value: np.ndarray) -> str:
        name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def weight(self, key: str) -> str:
        """The state_dict entry `key` as an initializer of the same name."""
        return self.constant(key, self.weights[key].astype(np.float32))

    def split(self, value: str, name: str) -> list[str]:
        """`value`'s channels in equal blocks, one per device group, by the node `name`."""
        name = self.fresh(name)
        outputs = [self.fresh(f"{name}/{tower}") for tower in self.towers]
        self.nodes.append(helper.make_node("Split", [value], outputs, name, axis=1))
        return outputs


Emitter = Callable[[OnnxGraph, Node, list[str]], str]
EMITTERS: LayerTable[Emitter] = LayerTable("ONNX emitter")
emits = EMITTERS.register


def to_onnx(
    graph: NetGraph, weights: Mapping[str, np.ndarray], source: str = ""
) -> onnx.ModelProto:
    """The network with these weights (a state_dict of the compiled module, in numpy)."""
    out = OnnxGraph(graph, weights)
    values = {INPUT: INPUT}
    for node in graph.layers():
        inputs = [values[s] for s in graph.inputs_of(node.name)]
        values[node.name] = EMITTERS[type(node.layer)](out, node, inputs)
        assert values[node.name] == node.name, f"{node.name}'s last node is not named for it"
    net = graph.net
    onnx_graph = helper.make_graph(
        out.nodes,
        net.name,
        [_value_info(INPUT, net.input)],
        [_value_info(net.output, graph.node(net.output).shape)],
        out.initializers,
        value_info=[_value_info(n.name, n.shape) for n in graph.layers() if n.name != net.output],
        doc_string="\n".join(out.notes) or None,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="netspec",
        producer_version=_netspec_version(),
        doc_string=f"{net.name}, exported by netspec" + (f" from {source}" if source else ""),
    )
    helper.set_model_props(model, {"netspec.spec": net.name, "netspec.source": source})
    return model


def notes(model: onnx.ModelProto) -> list[str]:
    """What the export had to write out in elementary operators, one line per layer."""
    return [line for line in model.graph.doc_string.splitlines() if line]


def _value_info(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shape])


def _netspec_version() -> str:
    try:
        return version("netspec")
    except PackageNotFoundError:
        return "unknown"


@emits(L.Conv)
def _conv(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    layer = layer_as(node, L.Conv)
    weights = [out.weight(f"{node.name}.weight")]
    if layer.bias:
        weights.append(out.weight(f"{node.name}.bias"))
    return out.add(
        "Conv",
        [*inputs, *weights],
        node.name,
        kernel_shape=_pair(layer.kernel),
        strides=_pair(layer.stride),
        pads=_pair(layer.padding) * 2,
        group=node.groups,
    )


@emits(L.Linear)
def _linear(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    (x,) = inputs
    if node.flatten:
        x = out.add("Flatten", [x], f"{node.name}/flatten", axis=1)
    if node.groups == 1:
        weights = [out.weight(f"{node.name}.weight")]
        if layer_as(node, L.Linear).bias:
            weights.append(out.weight(f"{node.name}.bias"))
        return out.add("Gemm", [x, *weights], node.name, transB=1)
    # one Gemm per device group, each over its own block of features and units
    g = node.groups
    weight = np.split(out.weights[f"{node.name}.weight"], g)
    bias = np.split(out.weights[f"{node.name}.bias"], g) if layer_as(node, L.Linear).bias else None
    parts = []
    for i, part in enumerate(out.split(x, f"{node.name}/split")):
        tower = out.towers[i]
        args = [part, out.constant(f"{node.name}.{tower}.weight", weight[i].astype(np.float32))]
        if bias is not None:
            args.append(out.constant(f"{node.name}.{tower}.bias", bias[i].astype(np.float32)))
        parts.append(out.add("Gemm", args, f"{node.name}/{tower}", transB=1))
    return out.add("Concat", parts, node.name, axis=1)


@emits(L.LRN)
def _lrn(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    (x,) = inputs
    layer = layer_as(node, L.LRN)
    before, after, scale = lrn_window(layer)
    groups = len(out.towers) if node.split and len(out.towers) > 1 else 1
    per = node.shape[0] // groups
    if before == after:  # ONNX's window is centred for an odd size: it computes this exactly
        size = before + after + 1
        doc = (
            f"{layer.convention} LRN, n = {layer.size}: {size} channels, α = {scale:g} on "
            f"each square; ONNX divides its alpha by size, so alpha = {scale * size:g}"
        )

        def one(value: str, name: str) -> str:
            return out.add(
                "LRN",
                [value],
                name,
                doc,
                size=size,
                alpha=scale * size,
                beta=layer.beta,
                bias=layer.k,
            )

    else:
        onnx_before, onnx_after = (layer.size - 1) // 2, layer.size // 2  # ONNX's window
        why = (
            "onnxruntime runs LRN of odd sizes only"
            if (before, after) == (onnx_before, onnx_after)
            else f"ONNX's LRN c-{onnx_before}…c+{onnx_after}"
        )
        note = (
            f"{node.name}: LRN ({layer.convention} convention, even size {layer.size}) is "
            f"written out in elementary operators: it sums channels c-{before}…c+{after}, {why}"
        )
        out.notes.append(note)

        def one(value: str, name: str) -> str:
            return _lrn_elementary(out, value, name, per, layer, note)

    if groups == 1:
        return one(x, node.name)
    parts = out.split(x, f"{node.name}/split")
    parts = [
        one(part, f"{node.name}/{tower}") for part, tower in zip(parts, out.towers, strict=True)
    ]
    return out.add("Concat", parts, node.name, axis=1)


def lrn_window(layer: L.LRN) -> tuple[int, int, float]:
    """Channels summed before and after c, and the factor on the sum of squares.

    The paper: ⌊n/2⌋ each side and α itself; torch (and cuda-convnet) and caffe (and
    cuDNN, ONNX): α/n over the convention's window (netspec.spec.layers.LRN_WINDOWS) — as
    `netspec.backends.torch_layers.LocalResponseNorm`.
    """
    before, after = L.LRN_WINDOWS[layer.convention](layer.size)
    return before, after, layer.alpha if layer.convention == "paper" else layer.alpha / layer.size


def _lrn_elementary(
    out: OnnxGraph, x: str, name: str, channels: int, layer: L.LRN, doc: str
) -> str:
    """x / (k + s·Σ x²)^β, the sum over a zero-padded window of channels, as plain operators."""
    before, after, scale = lrn_window(layer)
    square = out.add("Mul", [x, x], f"{name}/square", doc)
    pads = np.array([0, before, 0, 0, 0, after, 0, 0], np.int64)
    padded = out.add("Pad", [square, out.constant(f"{name}.pads", pads)], f"{name}/pad", doc)
    axes = out.constant(f"{name}.axes", np.array([1], np.int64))
    shifted = []
    for i in range(before + after + 1):
        start = out.constant(f"{name}.start{i}", np.array([i], np.int64))
        end = out.constant(f"{name}.end{i}", np.array([i + channels], np.int64))
        shifted.append(out.add("Slice", [padded, start, end, axes], f"{name}/shift{i}", doc))
    total = out.add("Sum", shifted, f"{name}/sum", doc)
    const = {
        key: out.constant(f"{name}.{key}", np.array(value, np.float32))
        for key, value in (("alpha", scale), ("k", layer.k), ("beta", layer.beta))
    }
    scaled = out.add("Mul", [total, const["alpha"]], f"{name}/alpha", doc)
    shifted_k = out.add("Add", [scaled, const["k"]], f"{name}/k", doc)
    denominator = out.add("Pow", [shifted_k, const["beta"]], f"{name}/beta", doc)
    return out.add("Div", [x, denominator], name, doc)


@emits(L.MaxPool, L.AvgPool)
def _pool(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    layer = layer_as(node, L.Pool)
    kernel, stride, padding = (
        _pair(layer.kernel),
        _pair(layer.stride or layer.kernel),
        _pair(layer.padding),
    )
    attrs: dict[str, Any] = {
        "kernel_shape": kernel,
        "strides": stride,
        "pads": padding * 2,
        "ceil_mode": int(layer.ceil),
    }
    if isinstance(layer, L.AvgPool):
        op, attrs["count_include_pad"] = "AveragePool", 1
    else:
        op = "MaxPool"
    # Rounding up, torch drops a last window that would start in the padding; ONNX keeps it.
    _, h, w = out.graph.node(out.graph.inputs_of(node.name)[0]).shape
    spans = zip((h, w), kernel, stride, padding, strict=True)
    rounded_up = tuple(-(-(n + 2 * p - k) // s) + 1 for n, k, s, p in spans)
    if not layer.ceil or rounded_up == node.shape[1:]:
        return out.add(op, inputs, node.name, **attrs)
    doc = "rounding up, torch drops a last window that starts in the padding: sliced off here"
    pooled = out.add(op, inputs, f"{node.name}/pool", doc, **attrs)
    ends = out.constant(f"{node.name}.ends", np.array(node.shape[1:], np.int64))
    starts = out.constant(f"{node.name}.starts", np.zeros(2, np.int64))
    axes = out.constant(f"{node.name}.axes", np.array([2, 3], np.int64))
    return out.add("Slice", [pooled, starts, ends, axes], node.name, doc)


def _pair(value: Any) -> list[int]:
    """A (height, width) kernel, stride or padding as ONNX's list."""
    return [int(value[0]), int(value[1])]


@emits(L.AdaptiveAvgPool)
def _adaptive(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    (x,) = inputs
    _, h, w = out.graph.node(out.graph.inputs_of(node.name)[0]).shape
    _, oh, ow = node.shape
    if h % oh == 0 and w % ow == 0:  # equal windows: an ordinary average pool
        kernel = [h // oh, w // ow]
        return out.add("AveragePool", [x], node.name, kernel_shape=kernel, strides=kernel)
    # unequal windows: each output averages rows ⌊i·h/oh⌋ … ⌈(i+1)·h/oh⌉ − 1, which is a
    # product with an averaging matrix on each side
    doc = "adaptive average pooling with unequal windows, as two products with averaging matrices"
    cols = out.constant(f"{node.name}.columns", _averaging(w, ow).T)
    rows = out.constant(f"{node.name}.rows", _averaging(h, oh))
    by_cols = out.add("MatMul", [x, cols], f"{node.name}/columns", doc)
    return out.add("MatMul", [rows, by_cols], node.name, doc)


def _averaging(size: int, bins: int) -> np.ndarray:
    """bins × size: row i averages torch's adaptive window i."""
    matrix = np.zeros((bins, size), np.float32)
    for i in range(bins):
        lo, hi = (i * size) // bins, math.ceil((i + 1) * size / bins)
        matrix[i, lo:hi] = 1.0 / (hi - lo)
    return matrix


@emits(L.BatchNorm)
def _batchnorm(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    keys = ("weight", "bias", "running_mean", "running_var")
    args = [out.weight(f"{node.name}.{key}") for key in keys]
    return out.add(
        "BatchNormalization", [*inputs, *args], node.name, epsilon=layer_as(node, L.BatchNorm).eps
    )


@emits(L.Dropout)
def _dropout(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    ratio = out.constant(f"{node.name}.p", np.array(layer_as(node, L.Dropout).p, np.float32))
    return out.add("Dropout", [*inputs, ratio], node.name)  # the identity at inference


@emits(L.Concat)
def _concat(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    groups = len(out.towers) if node.split and len(out.towers) > 1 else 1
    if groups == 1:
        return out.add("Concat", inputs, node.name, axis=1)
    # each group's channels stay together: group 0's part of every input, then group 1's, …
    parts = [out.split(x, f"{node.name}/split_{x}") for x in inputs]
    joined = [p[i] for i in range(groups) for p in parts]
    return out.add("Concat", joined, node.name, axis=1)


@emits(L.Add)
def _add(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    return out.add("Add" if len(inputs) == 2 else "Sum", inputs, node.name)


def _single(op: str, **attrs: Any) -> Emitter:
    def emit(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
        return out.add(op, inputs, node.name, **attrs)

    return emit


@emits(L.GELU)
def _gelu(out: OnnxGraph, node: Node, inputs: list[str]) -> str:
    """x·Φ(x) = x · (1 + erf(x / √2)) / 2, in the ops of opset 17, which has no Gelu."""
    (x,) = inputs
    name = node.name
    scaled = out.add("Mul", [x, out.constant(f"{name}/1_sqrt2", _f32(2**-0.5))], f"{name}/x")
    erf = out.add("Erf", [scaled], f"{name}/erf")
    one_plus = out.add("Add", [erf, out.constant(f"{name}/one", _f32(1.0))], f"{name}/1+erf")
    half = out.add("Mul", [x, out.constant(f"{name}/half", _f32(0.5))], f"{name}/x_2")
    return out.add("Mul", [half, one_plus], name)


def _f32(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


EMITTERS.update(
    {
        L.ReLU: _single("Relu"),
        L.Tanh: _single("Tanh"),
        L.Sigmoid: _single("Sigmoid"),
        L.Flatten: _single("Flatten", axis=1),
    }
)
