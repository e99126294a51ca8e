"""How a layer looks in a diagram: a colour by kind, and the key parameters in its label.

A layer type names its kind itself (`kind` on its model class); its label details come from a
table keyed by model class, where a base class's entry serves the types derived from it, so a
new activation needs nothing here. A test checks that every type of the spec language has both.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from netspec.ir.records import NetGraph, Node, layer_as
from netspec.ir.registry import LayerTable
from netspec.ir.shapes import fmt, fmt_pair
from netspec.spec import layers as L
from netspec.spec.document import BlockUse


@dataclass(frozen=True)
class Kind:
    legend: str  # what the legend calls this kind of layer
    fill: str


INPUT = Kind("input", "#e6e6e6")
CONV = Kind("convolution", "#8fbfe0")
LINEAR = Kind("fully connected", "#f6c177")
ACTIVATION = Kind("activation", "#cfe8c6")
NORM = Kind("normalisation", "#dccbf0")
POOL = Kind("pooling", "#f4c6cf")
DROPOUT = Kind("dropout", "#f2f2f2")
RESHAPE = Kind("reshape · join", "#fffbe0")

# The colours of the kinds a layer type names (its `kind`), and the input's own.
KINDS: dict[str, Kind] = {
    k.legend: k for k in (CONV, LINEAR, ACTIVATION, NORM, POOL, DROPOUT, RESHAPE)
}


USE = Kind("block use", "#eef2f8")  # --compact's box for a whole block use


def kind_of(node: Node) -> Kind:
    return INPUT if node.layer is None else KINDS[node.layer.kind]


CROSS_COLOUR = "#d1495b"
FONT = "Helvetica"

# Graphviz attributes, as DOT writes them; `newrank` lets ranks line up across clusters.
GRAPH = {"labelloc": "t", "labeljust": "l", "fontname": FONT, "newrank": "true"}
GRAPH |= {"nodesep": "0.25", "ranksep": "0.3"}
NODE = {"shape": "box", "style": "rounded,filled", "fontname": FONT, "fontsize": "11"}
NODE |= {"color": "#707070", "margin": "0.12,0.04", "height": "0.3"}
EDGE = {"fontname": FONT, "fontsize": "9", "fontcolor": "#505050", "color": "#606060"}
EDGE |= {"arrowsize": "0.6"}
CLUSTER = {"labeljust": "c", "style": "rounded,dashed", "color": "#9a9a9a"}
# `class` is what an SVG's styling (and the tests) can find cross-tower edges by.
CROSS = {"class": "cross", "color": CROSS_COLOUR, "penwidth": "1.3"}

# A node of the graph and how many towers share it → its key parameters.
Describe = Callable[[Node, int], str]


def _window(kernel: tuple[int, int], stride: tuple[int, int]) -> str:
    return fmt(kernel) if stride == (1, 1) else f"{fmt(kernel)}/{fmt_pair(stride)}"


def _padding(padding: tuple[int, int]) -> list[str]:
    return [f"pad {fmt_pair(padding)}"] if any(padding) else []


def _count(node: Node, towers: int) -> str:
    """Output channels or units, read off the graph's shape; a tower holds an equal share."""
    total = node.shape[0]
    return f"{total // towers} of {total}" if towers > 1 else str(total)


def _conv(node: Node, towers: int) -> str:
    layer = layer_as(node, L.Conv)
    parts = [_window(layer.kernel, layer.stride), _count(node, towers), *_padding(layer.padding)]
    return " · ".join(parts)


def _pool(node: Node, towers: int) -> str:
    layer = layer_as(node, L.Pool)
    parts = [_window(layer.kernel, layer.stride or layer.kernel), *_padding(layer.padding)]
    return " · ".join(parts + (["ceil"] if layer.ceil else []))


def _lrn(node: Node, towers: int) -> str:
    return f"size {layer_as(node, L.LRN).size}"


def _adaptive(node: Node, towers: int) -> str:
    return f"to {fmt(layer_as(node, L.AdaptiveAvgPool).output_size)}"


def _dropout(node: Node, towers: int) -> str:
    return f"p {layer_as(node, L.Dropout).p:g}"


def _none(node: Node, towers: int) -> str:
    return ""


def _shape(node: Node, towers: int) -> str:
    return fmt(node.shape)


# A layer type's key parameters; a base class's entry serves the types derived from it.
DESCRIBE: LayerTable[Describe] = LayerTable("diagram label")
DESCRIBE.register(L.Conv)(_conv)
DESCRIBE.register(L.Linear)(_count)
DESCRIBE.register(L.LRN)(_lrn)
DESCRIBE.register(L.Pool)(_pool)
DESCRIBE.register(L.AdaptiveAvgPool)(_adaptive)
DESCRIBE.register(L.Dropout)(_dropout)
DESCRIBE.register(L.Layer)(_none)  # the rest show their type alone


def summary(name: str, node: Node, towers: int) -> str:
    """`conv2`, its type and key parameters, as HTML-like label text (escaped)."""
    kind = node.type if node.type != name else ""
    describe = DESCRIBE[type(node.layer)] if node.layer is not None else _shape
    detail = " ".join(p for p in (kind, describe(node, towers)) if p)
    return f"<B>{html.escape(name)}</B> {html.escape(detail)}".rstrip()


def title(graph: NetGraph, kinds: list[Kind], cross: bool) -> str:
    """The name, the totals and the key, as an HTML-like label (escaped)."""
    g = graph.net
    facts = [f"input {fmt(g.input)}"]
    if len(g.device_groups) > 1:
        facts.append(f"device groups {', '.join(g.device_groups)}")
    facts += [f"{g.params:,} parameters", f"{g.macs:,} MACs"]
    rows = [
        f'<FONT POINT-SIZE="18"><B>{html.escape(g.name)}</B></FONT>',
        html.escape(" · ".join(facts)),
        _legend(kinds, cross),
    ]
    cells = "".join(f'<TR><TD ALIGN="LEFT">{row}</TD></TR>' for row in rows)
    return f'<TABLE BORDER="0" CELLSPACING="2">{cells}</TABLE>'


def _legend(kinds: list[Kind], cross: bool) -> str:
    """A key: a swatch and a name per kind drawn, then the colour of cross-tower edges.

    Swatches are fixed-size cells because graphviz stretches a nested table's cells to fill
    the title's width; fixed swatches and left-aligned names stay readable when it does.
    """
    cells = [
        f'<TD BGCOLOR="{k.fill}" COLOR="#707070" BORDER="1" FIXEDSIZE="TRUE" WIDTH="18" '
        f'HEIGHT="12"></TD><TD ALIGN="LEFT">{html.escape(k.legend)}</TD>'
        for k in kinds
    ]
    if cross:
        cells.append(
            f'<TD><FONT COLOR="{CROSS_COLOUR}"><B>⟶</B></FONT></TD>'
            f'<TD ALIGN="LEFT"><FONT COLOR="{CROSS_COLOUR}">crosses device groups</FONT></TD>'
        )
    return f'<TABLE BORDER="0" CELLSPACING="3"><TR>{"".join(cells)}</TR></TABLE>'


def use_summary(use: BlockUse) -> str:
    """`layer1.0 basic`: a block use's box, named as the use and its block (escaped)."""
    return f"<B>{html.escape(use.name)}</B> {html.escape(use.block)}"


def use_totals(shape: tuple[int, ...], layers: int, params: int) -> str:
    """The second line of a block use's box: what it holds and gives."""
    return f'<FONT POINT-SIZE="9">{layers} layers · {params:,} params → {fmt(shape)}</FONT>'
