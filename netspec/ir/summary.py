"""The layer table and its JSON form: what `netspec build` prints, read off the graph."""

from __future__ import annotations

from typing import Any

from netspec.ir.costs import cross_bytes, group_costs, total_cross_bytes
from netspec.ir.records import INPUT, NetGraph
from netspec.ir.shapes import fmt


def connectivity(graph: NetGraph, name: str) -> str:
    """How a layer relates to the device groups: the paper's `connect` and per-group work."""
    node = graph.node(name)
    if len(graph.net.device_groups) < 2:
        return "-"
    if name == INPUT:
        return "shared"
    if node.has_weights:
        if node.groups > 1:
            return "group"
        crosses = any(graph.edge(s, name).cross for s in graph.predecessors(name))
        return "all ⇄" if crosses else "all"
    return "per group" if node.split else "shared"


def to_json(graph: NetGraph) -> dict[str, Any]:
    layers = [
        {
            "name": n.name,
            "type": n.type,
            "inputs": graph.inputs_of(n.name),
            "output_shape": list(n.shape),
            "params": n.params,
            "macs": n.macs,
            "connectivity": connectivity(graph, n.name),
            "cross_bytes": cross_bytes(graph, n.name),
        }
        for n in sorted(graph.layers(), key=lambda n: n.index)  # spec order
    ]
    net = graph.net
    return {
        "name": net.name,
        "input": list(net.input),
        "classes": net.classes,
        "device_groups": net.device_groups,
        "params": net.params,
        "macs": net.macs,
        "output": net.output,
        "param_bytes": net.param_bytes,
        "activation_bytes": net.activation_bytes,
        "layers": layers,
        "warnings": [{"layer": n, "message": w} for n, w in net.warnings],
        "groups": {
            name: {"params": cost.params, "activation_bytes": cost.activation_bytes}
            for name, cost in group_costs(graph).items()
        },
        "cross_bytes": total_cross_bytes(graph),
    }


def format_table(graph: NetGraph) -> str:
    info = to_json(graph)
    return "\n".join([_layer_table(info), *_group_lines(info)])


def _layer_table(info: dict[str, Any]) -> str:
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
    lines.append(
        f"memory (float32): parameters {info['param_bytes']:,} bytes "
        f"({binary_size(info['param_bytes'])}), activations {info['activation_bytes']:,} bytes "
        f"({binary_size(info['activation_bytes'])}) per example"
    )
    return "\n".join(lines)


def binary_size(size: int) -> str:
    """A byte count in the largest binary unit that keeps it at least 1: `232.6 MiB`."""
    value, unit = float(size), "bytes"
    for next_unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, next_unit
    return f"{value:.1f} {unit}" if unit != "bytes" else f"{size} bytes"


def _group_lines(info: dict[str, Any]) -> list[str]:
    """Below the table, for a net with device groups: what each group holds, what crosses.

    No line starts with a layer's name, so the table's rows stay the only ones that do.
    """
    if not info["groups"]:
        return []
    lines = ["", "each device group on its own device, per example, fp32:"]
    for name, cost in info["groups"].items():
        mib = cost["activation_bytes"] / 2**20
        lines.append(
            f"  {name}: {cost['params']:,} params, {cost['activation_bytes']:,} bytes of "
            f"activations ({mib:.2f} MiB)"
        )
    lines.append("bytes crossing between groups, forward (what all groups receive):")
    crossing = [(f"into {r['name']}:", r["cross_bytes"]) for r in info["layers"]]
    crossing = [(label, size) for label, size in crossing if size]
    if not crossing:
        lines.append("  none: every layer reads its own group's channels or shared ones")
        return lines
    width = max(len(label) for label, _ in [*crossing, ("in all:", 0)])
    digits = len(f"{info['cross_bytes']:,}")
    towers = len(info["groups"])
    for label, size in crossing:
        lines.append(f"  {label:<{width}} {size:>{digits},} ({towers} × {size // towers:,})")
    lines.append(f"  {'in all:':<{width}} {info['cross_bytes']:>{digits},}")
    return lines
