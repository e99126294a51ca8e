"""From a validated spec to the one intermediate form: a networkx graph of plain data.

Nodes are `input` and one per spec layer, with attributes:
  layer (the pydantic model, None for input), type, index (spec order; -1 for input),
  shape (output, no batch), split (channels partitioned across device groups),
  params, macs, groups (grouped conv/linear factor), flatten, warnings,
  towers (the device groups whose part of the computation the node holds).
Edges carry `shape` (of the tensor flowing along them), `port` (input position) and
`cross` (True where a tower's layer reads the other towers' channels).
The graph carries name, input, classes, device_groups, output, params, macs, warnings.
"""

from __future__ import annotations

import networkx as nx

from netspec.errors import Problem, SpecError, did_you_mean
from netspec.ir.shapes import Context, LayerProblem, Tensor, fmt, infer
from netspec.spec.model import Spec

INPUT = "input"


def build_graph(spec: Spec) -> nx.DiGraph:
    """Wire the layers, check the structure, infer every shape; all mistakes raised at once."""
    graph = nx.DiGraph(
        name=spec.name,
        input=tuple(spec.input),
        classes=spec.classes,
        device_groups=list(spec.groups),
        output=spec.layers[-1].name,
    )
    towers = spec.groups or []
    graph.add_node(
        INPUT,
        layer=None,
        type="input",
        index=-1,
        shape=tuple(spec.input),
        split=False,
        params=0,
        macs=0,
        groups=1,
        flatten=False,
        warnings=[],
        towers=towers,
    )
    problems = _wire(spec, graph)
    if problems:
        raise SpecError(problems)
    problems = _infer_shapes(spec, graph)
    graph.graph["warnings"] = [
        (n, w) for n in order(graph) for w in graph.nodes[n].get("warnings", [])
    ]
    if problems:
        raise SpecError(problems, located_warnings(spec, graph))
    graph.graph["params"] = sum(d["params"] for _, d in graph.nodes(data=True))
    graph.graph["macs"] = sum(d["macs"] for _, d in graph.nodes(data=True))
    return graph


def located_warnings(spec: Spec, graph: nx.DiGraph) -> list[str]:
    """Each warning as a line like an error's: where it was written, the layer, the text."""
    lines = []
    for name, message in graph.graph["warnings"]:
        i = graph.nodes[name]["index"]
        lines.append(f"{spec.where(('layers', i))}: warning: {spec.layer_context(i)}: {message}")
    return lines


def inputs_of(graph: nx.DiGraph, name: str) -> list[str]:
    """The layers `name` reads, in the order of its `inputs`."""
    return sorted(graph.predecessors(name), key=lambda s: graph.edges[s, name]["port"])


def order(graph: nx.DiGraph) -> list[str]:
    """Layers in an order they can run, following the spec's order where it is free to."""
    return list(nx.lexicographical_topological_sort(graph, key=lambda n: graph.nodes[n]["index"]))


def _wire(spec: Spec, graph: nx.DiGraph) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, layer in enumerate(spec.layers):
        at = spec.where(("layers", i, "name"))
        if layer.name == INPUT:
            problems.append(
                Problem(
                    at,
                    f"'{INPUT}' names the spec's input; rename this layer",
                    spec.layer_context(i),
                )
            )
        elif layer.name in seen:
            first = spec.where(("layers", seen[layer.name], "name"))
            problems.append(
                Problem(
                    at,
                    f"duplicate layer name '{layer.name}' (first at {first}); "
                    "layer names must be unique",
                    spec.layer_context(i),
                )
            )
        else:
            seen[layer.name] = i
            graph.add_node(layer.name, layer=layer, type=layer.type, index=i)
    known = [INPUT, *seen]
    for i, layer in enumerate(spec.layers):
        if seen.get(layer.name) != i:
            continue
        names = (
            layer.inputs if layer.inputs is not None else [spec.layers[i - 1].name if i else INPUT]
        )
        problem = _arity(layer, len(names))
        if problem:
            problems.append(
                Problem(spec.where(("layers", i, "inputs")), problem, spec.layer_context(i))
            )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(
                Problem(
                    spec.where(("layers", i, "inputs")),
                    f"inputs names {', '.join(repeated)} more than once; each input is read once",
                    spec.layer_context(i),
                )
            )
        for port, src in enumerate(names):
            if src == layer.name:
                problems.append(
                    Problem(
                        spec.where(("layers", i, "inputs", port)),
                        "a layer cannot take its own output",
                        spec.layer_context(i),
                    )
                )
            elif src not in seen and src != INPUT:
                problems.append(
                    Problem(
                        spec.where(("layers", i, "inputs", port)),
                        f"no layer named '{src}'{did_you_mean(src, known)}",
                        spec.layer_context(i),
                    )
                )
            else:
                graph.add_edge(src, layer.name, port=port)
    if problems:
        return problems
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        first = min((v for _, v in cycle), key=lambda n: graph.nodes[n]["index"])
        path = " → ".join([u for u, _ in cycle] + [cycle[0][0]])
        i = graph.nodes[first]["index"]
        problems.append(
            Problem(
                spec.where(("layers", i, "inputs")),
                f"the layers form a cycle: {path}; a network must flow one way",
                spec.layer_context(i),
            )
        )
        return problems
    output = spec.layers[-1].name
    for name in [INPUT, *seen]:
        if name != output and graph.out_degree(name) == 0:
            if name == INPUT:
                problems.append(Problem(spec.where(("input",)), "no layer reads the input"))
                continue
            i = seen[name]
            problems.append(
                Problem(
                    spec.where(("layers", i, "name")),
                    f"the output of '{name}' is never used; only the last layer ('{output}') may "
                    "be unused: name it in a later layer's inputs, or remove it",
                    spec.layer_context(i),
                )
            )
    return problems


def _arity(layer, count: int) -> str | None:
    if layer.joins and count < 2:
        return f"{layer.type} joins two or more inputs, got {count}; list them in inputs: [a, b]"
    if not layer.joins and count != 1:
        return (
            f"{layer.type} takes one input, got {count}; "
            "join several with a concat or add layer first"
        )
    return None


def _infer_shapes(spec: Spec, graph: nx.DiGraph) -> list[Problem]:
    ctx = Context(groups=max(1, len(spec.groups)), classes=spec.classes, spec_input=INPUT)
    problems: list[Problem] = []
    failed: set[str] = set()
    for name in order(graph):
        node = graph.nodes[name]
        if name == INPUT:
            continue
        sources = inputs_of(graph, name)
        if failed.intersection(sources):
            failed.add(name)
            continue
        ins = [Tensor(graph.nodes[s]["shape"], graph.nodes[s]["split"], s) for s in sources]
        try:
            result = infer(node["layer"], ins, ctx)
        except LayerProblem as exc:
            failed.add(name)
            i = node["index"]
            problems.append(Problem(spec.where(("layers", i)), str(exc), spec.layer_context(i)))
            continue
        if min(result.shape) < 1:
            failed.add(name)
            i = node["index"]
            problems.append(
                Problem(
                    spec.where(("layers", i)),
                    f"the output shape {fmt(result.shape)} is empty",
                    spec.layer_context(i),
                )
            )
            continue
        node.update(
            shape=result.shape,
            split=result.split,
            params=result.params,
            macs=result.macs,
            groups=result.groups,
            flatten=result.flatten,
            warnings=result.warnings,
            towers=list(spec.groups),
        )
        for src in sources:
            graph.edges[src, name].update(
                shape=graph.nodes[src]["shape"],
                cross=bool(
                    ctx.groups > 1
                    and node["layer"].has_weights
                    and result.groups == 1
                    and graph.nodes[src]["split"]
                ),
            )
    return problems
