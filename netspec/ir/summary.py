"""The layer table and its JSON form: what `netspec build` prints, read off the graph."""

from __future__ import annotations

from typing import Any

import networkx as nx

from netspec.ir.graph import INPUT, inputs_of
from netspec.ir.shapes import fmt


def connectivity(graph: nx.DiGraph, name: str) -> str:
    """How a layer relates to the device groups: the paper's `connect` and per-group work."""
    towers = len(graph.graph["device_groups"])
    node = graph.nodes[name]
    if towers < 2:
        return "-"
    if name == INPUT:
        return "shared"
    if node["layer"].has_weights:
        if node["groups"] > 1:
            return "group"
        crosses = any(graph.edges[s, name]["cross"] for s in graph.predecessors(name))
        return "all ⇄" if crosses else "all"
    return "per group" if node["split"] else "shared"


def to_json(graph: nx.DiGraph) -> dict[str, Any]:
    layers = [
        {
            "name": n,
            "type": graph.nodes[n]["type"],
            "inputs": inputs_of(graph, n),
            "output_shape": list(graph.nodes[n]["shape"]),
            "params": graph.nodes[n]["params"],
            "macs": graph.nodes[n]["macs"],
            "connectivity": connectivity(graph, n),
        }
        for n in sorted(graph, key=lambda n: graph.nodes[n]["index"])  # spec order
        if n != INPUT
    ]
    return {
        "name": graph.graph["name"],
        "input": list(graph.graph["input"]),
        "classes": graph.graph["classes"],
        "device_groups": graph.graph["device_groups"],
        "params": graph.graph["params"],
        "macs": graph.graph["macs"],
        "output": graph.graph["output"],
        "layers": layers,
        "warnings": [{"layer": n, "message": w} for n, w in graph.graph["warnings"]],
    }


def format_table(graph: nx.DiGraph) -> str:
    info = to_json(graph)
    groups = info["device_groups"]
    head = f"{info['name']}: input {fmt(tuple(info['input']))}"
    if groups:
        head += f", {len(groups)} device groups ({', '.join(groups)})"
    rows = [("layer", "type", "groups", "output", "params", "MACs")]
    rows += [
        (
            r["name"],
            r["type"],
            r["connectivity"],
            fmt(tuple(r["output_shape"])),
            f"{r['params']:,}",
            f"{r['macs']:,}",
        )
        for r in info["layers"]
    ]
    rows.append(("total", "", "", "", f"{info['params']:,}", f"{info['macs']:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {4, 5}
    lines = [head, ""]
    for k, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0 or k == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
