"""From a validated spec to the one intermediate form: a `NetGraph` of typed records.

Building runs in stages, each of which reports every mistake it finds: add the layers
(names), wire their inputs (edges), check the structure (cycles, unused outputs), then infer
every shape, parameter and MAC count through the shape rules.
"""

from __future__ import annotations

import math
from collections import Counter

import networkx as nx

from netspec.errors import Problem, SpecError, did_you_mean
from netspec.ir.records import INPUT, Net, NetGraph, Node
from netspec.ir.shapes import Context, Inferred, LayerProblem, Tensor, fmt, infer
from netspec.spec.layers import Layer
from netspec.spec.model import Spec

__all__ = ["INPUT", "NetGraph", "build_graph", "inputs_of", "located_warnings", "order"]

BYTES_PER_VALUE = 4  # float32, what netspec trains in
# One example's tensor, or one layer's weights: beyond 2^48 values (1 PiB of float32) no
# machine holds it, and a batch of them would pass torch's 64-bit element index.
MAX_ELEMENTS = 2**48
_LIMIT = f"more than the {MAX_ELEMENTS:,} (2⁴⁸) netspec allows: make it smaller"
SUGGESTIONS = 20  # did-you-mean hints per build


def build_graph(spec: Spec) -> NetGraph:
    """Wire the layers, check the structure, infer every shape; all mistakes raised at once.

    A mistake in one layer does not hide one in another: shapes are inferred for every layer
    whose inputs are sound, skipping only those downstream of a layer that could not be built.
    """
    graph = NetGraph(
        net=Net(
            name=spec.name,
            input=tuple(spec.input),
            classes=spec.classes,
            device_groups=list(spec.groups),
            output=spec.layers[-1].name,
        )
    )
    graph.add_record(
        Node(INPUT, "input", -1, None, shape=tuple(spec.input), towers=list(spec.groups))
    )
    problems, repeated = _add_layers(spec, graph)
    wiring, broken = _wire(spec, graph, repeated)
    problems += wiring
    # a layer read under a misspelt name looks unused: report that only when the wiring is sound
    structure, cyclic = _check_structure(spec, graph, check_unused=not problems)
    problems += structure
    problems += _infer_shapes(spec, graph, broken | cyclic)
    net = graph.net
    layers = sorted((graph.node(n) for n in graph.nodes if n != INPUT), key=lambda n: n.index)
    net.warnings = [(n.name, w) for n in layers for w in n.warnings]
    if problems:
        raise SpecError(problems, located_warnings(spec, graph))
    net.params = sum(n.params for n in graph.layers())
    net.macs = sum(n.macs for n in graph.layers())
    net.param_bytes = net.params * BYTES_PER_VALUE
    net.activation_bytes = BYTES_PER_VALUE * sum(
        math.prod(n.shape) for n in [graph.node(INPUT), *graph.layers()]
    )
    return graph


def located_warnings(spec: Spec, graph: NetGraph) -> list[str]:
    """Each warning as a line like an error's: where it was written, the layer, the text."""
    lines = []
    for name, message in graph.net.warnings:
        i = graph.node(name).index
        where, note = spec.where(("layers", i)), spec.note(("layers", i))
        lines.append(f"{where}: warning: {spec.layer_context(i)}: {message}{note}")
    return lines


def inputs_of(graph: NetGraph, name: str) -> list[str]:
    """The layers `name` reads, in the order of its `inputs`."""
    return graph.inputs_of(name)


def order(graph: NetGraph) -> list[str]:
    """Nodes in an order they can run, following the spec's order where it is free to."""
    return graph.order()


def _problem(spec: Spec, i: int, message: str, *loc: str | int) -> Problem:
    """A mistake in layer `i`, located at the layer or at `loc` inside it, and through the
    block uses that made it."""
    at = ("layers", i, *loc)
    return Problem(spec.where(at), message + spec.note(at), spec.layer_context(i))


def _at(spec: Spec, i: int, *loc: str | int) -> str:
    """Where layer `i` (or `loc` in it) was written, as another layer's message names it."""
    at = ("layers", i, *loc)
    return spec.where(at) + spec.note(at)


def _add_layers(spec: Spec, graph: NetGraph) -> tuple[list[Problem], set[str]]:
    """One node per layer; a reserved or repeated name is a mistake and gets no node.
    Returns the problems and the repeated names (which no reader can be wired to)."""
    problems: list[Problem] = []
    first: dict[str, int] = {}
    repeated: set[str] = set()
    for i, layer in enumerate(spec.layers):
        if layer.name == INPUT:
            problems.append(
                _problem(spec, i, f"'{INPUT}' names the spec's input; rename this layer", "name")
            )
        elif layer.name in first:
            repeated.add(layer.name)
            at = _at(spec, first[layer.name], "name")
            message = f"duplicate layer name '{layer.name}' (first at {at}); "
            problems.append(_problem(spec, i, message + "layer names must be unique", "name"))
        else:
            first[layer.name] = i
            graph.add_record(Node(layer.name, layer.type, i, layer, uses=spec.uses_of(i)))
    return problems + _nested(spec, first), repeated


def _nested(spec: Spec, first: dict[str, int]) -> list[Problem]:
    """A dotted name puts a layer inside the module its prefix names (`layer1.0.conv1` inside
    `layer1`), so no prefix may name a layer itself: torch could not hold both."""
    problems = []
    told: set[str] = set()
    for name, i in first.items():
        parts = name.split(".")
        holders = [".".join(parts[:n]) for n in range(1, len(parts))]
        holder = next((h for h in holders if h in first), None)
        if holder is None or holder in told:
            continue
        told.add(holder)  # once per layer in the way, however many names it is in the way of
        message = (
            f"the name puts this layer inside layer '{holder}' "
            f"(at {_at(spec, first[holder], 'name')}), which cannot hold layers; rename one"
        )
        problems.append(_problem(spec, i, message, "name"))
    return problems


def _sources(spec: Spec, i: int) -> list[str]:
    """The names layer `i` reads: its `inputs`, else the layer before it (or the input)."""
    layer = spec.layers[i]
    if layer.inputs is not None:
        return layer.inputs
    return [spec.layers[i - 1].name if i else INPUT]


def _wire(spec: Spec, graph: NetGraph, repeated: set[str]) -> tuple[list[Problem], set[str]]:
    """An edge for every input each layer names; wrong counts and unknown names reported.
    Returns the problems and the layers whose inputs are not as written (no shape for them)."""
    problems: list[Problem] = []
    broken: set[str] = set()
    known = list(graph.nodes)
    for node in [graph.node(n) for n in graph.nodes if n != INPUT]:  # spec order
        assert node.layer is not None
        i, names = node.index, _sources(spec, node.index)
        arity = _arity(node.layer, len(names))
        if arity:
            problems.append(_problem(spec, i, arity, "inputs"))
        counts = Counter(names)
        twice = sorted(n for n, count in counts.items() if count > 1)
        if twice:
            message = f"inputs names {', '.join(twice)} more than once; each input is read once"
            problems.append(_problem(spec, i, message, "inputs"))
        bad = bool(arity or twice or repeated.intersection(names))
        for port, src in enumerate(names):
            if src == node.name:
                problems.append(
                    _problem(spec, i, "a layer cannot take its own output", "inputs", port)
                )
                bad = True
            elif src not in graph:
                # suggestions compare against every name: only for the first few, so that a
                # spec with thousands of wrong names is still answered at once
                hint = did_you_mean(src, known) if len(problems) < SUGGESTIONS else ""
                problems.append(_problem(spec, i, f"no layer named '{src}'{hint}", "inputs", port))
                bad = True
            else:
                graph.connect(src, node.name, port)
        if bad:
            broken.add(node.name)
    return problems, broken


def _arity(layer: Layer, count: int) -> str | None:
    if layer.joins and count < 2:
        return f"{layer.type} joins two or more inputs, got {count}; list them in inputs: [a, b]"
    if not layer.joins and count != 1:
        return (
            f"{layer.type} takes one input, got {count}; "
            "join several with a concat or add layer first"
        )
    return None


def _check_structure(
    spec: Spec, graph: NetGraph, check_unused: bool
) -> tuple[list[Problem], set[str]]:
    """The wired graph must flow one way, and every output but the last must be read.
    Returns the problems and the layers on a cycle (which have no shape)."""
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return (_unused(spec, graph) if check_unused else []), set()
    first = graph.node(min((v for _, v in cycle), key=lambda n: graph.node(n).index))
    path = " → ".join([u for u, _ in cycle] + [cycle[0][0]])
    message = f"the layers form a cycle: {path}; a network must flow one way"
    on_cycles = {
        n for part in nx.strongly_connected_components(graph) if len(part) > 1 for n in part
    }
    problems = [_problem(spec, first.index, message, "inputs")]
    return problems + (_unused(spec, graph) if check_unused else []), on_cycles


def _unused(spec: Spec, graph: NetGraph) -> list[Problem]:
    output = graph.net.output
    problems = []
    for name in graph.nodes:
        if name == output or graph.out_degree(name):
            continue
        if name == INPUT:
            problems.append(Problem(spec.where(("input",)), "no layer reads the input"))
            continue
        message = (
            f"the output of '{name}' is never used; only the last layer ('{output}') may "
            "be unused: name it in a later layer's inputs, or remove it"
        )
        problems.append(_problem(spec, graph.node(name).index, message, "name"))
    return problems


def _infer_shapes(spec: Spec, graph: NetGraph, skip: set[str]) -> list[Problem]:
    """Each layer's shape from its inputs' in running order; a layer in `skip` or downstream
    of a failed one is skipped, so that one mistake is reported once."""
    ctx = Context(groups=max(1, len(spec.groups)), classes=spec.classes, spec_input=INPUT)
    problems: list[Problem] = []
    failed = set(skip)
    values = math.prod(spec.input)
    if values > MAX_ELEMENTS:
        message = f"{fmt(tuple(spec.input))} is {values:,} values per example; {_LIMIT}"
        problems.append(Problem(spec.where(("input",)), message))
        failed.add(INPUT)
    runnable = graph.subgraph(n for n in graph.nodes if n not in skip)
    for name in nx.lexicographical_topological_sort(runnable, key=lambda n: graph.node(n).index):
        node = graph.node(name)
        sources = graph.inputs_of(name)
        if name in failed or failed.intersection(sources):
            failed.add(name)
            continue
        if name == INPUT:
            continue
        try:
            result = _infer_one(graph, node, sources, ctx)
        except LayerProblem as exc:
            failed.add(node.name)
            problems.append(_problem(spec, node.index, str(exc) + _removed(spec, graph, node)))
            continue
        _record(graph, node, sources, result, ctx)
    return problems


def _removed(spec: Spec, graph: NetGraph, node: Node) -> str:
    """Which `--set layers.NAME=null` changed what reaches `node`, when one did."""
    upstream = nx.ancestors(graph, node.name) | {node.name}
    causes = [r for r in spec.removals if upstream.intersection(r.readers)]
    if not causes:
        return ""
    shown = " and ".join(f"{r.where} removed '{r.layer}'" for r in causes)
    return f" (upstream of it, {shown})"


def _infer_one(graph: NetGraph, node: Node, sources: list[str], ctx: Context) -> Inferred:
    assert node.layer is not None
    ins = [Tensor(graph.node(s).shape, graph.node(s).split, s) for s in sources]
    result = infer(node.layer, ins, ctx)
    if min(result.shape) < 1:
        raise LayerProblem(f"the output shape {fmt(result.shape)} is empty")
    values = math.prod(result.shape)
    if values > MAX_ELEMENTS:
        raise LayerProblem(
            f"its output {fmt(result.shape)} is {values:,} values per example; {_LIMIT}"
        )
    if result.params > MAX_ELEMENTS:
        raise LayerProblem(f"it has {result.params:,} parameters; {_LIMIT}")
    return result


def _record(
    graph: NetGraph, node: Node, sources: list[str], result: Inferred, ctx: Context
) -> None:
    """Store what the shape rule found on the node and on the edges into it."""
    node.shape, node.split, node.groups = result.shape, result.split, result.groups
    node.params, node.macs, node.flatten = result.params, result.macs, result.flatten
    node.warnings = result.warnings
    node.towers = list(graph.net.device_groups)
    for src in sources:
        edge = graph.edge(src, node.name)
        edge.shape = graph.node(src).shape
        edge.cross = ctx.groups > 1 and node.has_weights and result.groups == 1
        edge.cross = edge.cross and graph.node(src).split
