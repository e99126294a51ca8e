"""The diagram back end: the graph as graphviz DOT text, rendered by graphviz's `dot`.

Every shape drawn is read off the graph: a node's `shape`, an edge's `shape`. The one number
derived here is a tower's share of a tensor whose channels are split across device groups:
its channel count divided by the number of groups, which is how `build_graph` splits them
(evenly; it refuses counts that do not divide).

With device groups each split layer is one node per group, inside one cluster per group, as
in the paper's Figure 2; a layer that reads every group's channels (edge `cross`) gets an
edge from each group, and those between different groups are drawn as cross-tower edges.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from netspec.backends import diagram_style as S

from netspec.errors import UsageError
from netspec.ir.graph import inputs_of, order
from netspec.ir.records import NetGraph
from netspec.ir.shapes import fmt

FORMATS = ("svg", "png", "pdf", "dot")
# What --compact folds into the weight layer before it, as papers draw a conv block.
FOLDABLE = frozenset(
    {
        "relu",
        "tanh",
        "lrn",
        "batchnorm",
        "maxpool",
        "avgpool",
        "adaptive_avgpool",
        "dropout",
        "flatten",
    }
)
FOLDED_PER_LINE = 3  # keeps a folded node about as wide as its first line


class Html(str):
    """An HTML-like label: written between < > in DOT, not quoted."""


def _quote(value: str) -> str:
    if isinstance(value, Html):
        return f"<{value}>"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items()) + "]"


def _shape(shape: tuple[int, ...], towers: int) -> str:
    """`96×55×55`, or one tower's share of it: the channels divided by the number of towers."""
    return fmt((shape[0] // towers, *shape[1:]))


def _towers(graph: NetGraph, name: str) -> list[str]:
    """The device groups a node is drawn in: all of them when its channels are split, else none."""
    node = graph.node(name)
    return list(node.towers) if node.split and len(node.towers) > 1 else []


def _node_id(name: str, group: str | None) -> str:
    # `@` cannot occur in a layer name, so tower nodes never collide with layers.
    return f"{name}@{group}" if group else name


def fold(graph: NetGraph, compact: bool) -> dict[str, list[str]]:
    """Each node drawn and the layers it shows, in order: itself, then what --compact folds.

    A chain folds while each link has one consumer and one producer, so the edges leaving the
    chain are exactly the edges leaving its last layer.
    """
    chains: dict[str, list[str]] = {}
    folded: set[str] = set()
    for name in order(graph):
        if name in folded:
            continue
        chain = [name]
        layer = graph.node(name).layer
        if compact and layer is not None and layer.has_weights:
            while after := _follower(graph, chain[-1]):
                chain.append(after)
        folded.update(chain[1:])
        chains[name] = chain
    return chains


def _follower(graph: NetGraph, name: str) -> str | None:
    """The layer --compact folds after `name`: its only consumer, when it has no other input."""
    if graph.out_degree(name) != 1:
        return None
    (after,) = graph.successors(name)
    foldable = graph.in_degree(after) == 1 and graph.node(after).type in FOLDABLE
    return after if foldable else None


def _label(graph: NetGraph, chain: list[str], towers: int) -> Html:
    head, *rest = chain
    lines = [S.summary(head, graph.node(head), towers)]
    folded = [S.summary(n, graph.node(n), towers) for n in rest]
    for i in range(0, len(folded), FOLDED_PER_LINE):
        line = " → ".join(folded[i : i + FOLDED_PER_LINE])
        lines.append(f'<FONT POINT-SIZE="9">→ {line}</FONT>')
    return Html("<BR/>".join(lines))


def _tooltip(graph: NetGraph, chain: list[str]) -> str:
    """What an SVG shows on hover: the output and the counts of the layers in the node."""
    out = fmt(graph.node(chain[-1]).shape)
    params = sum(graph.node(n).params for n in chain)
    macs = sum(graph.node(n).macs for n in chain)
    groups = " (all device groups)" if _towers(graph, chain[0]) else ""
    return f"{' → '.join(chain)}: output {out}, {params:,} parameters, {macs:,} MACs{groups}"


def to_dot(graph: NetGraph, rankdir: str = "TB", compact: bool = False) -> str:
    """The graph as DOT text: one node per layer (or folded chain), one per group where split."""
    chains = fold(graph, compact)
    drawn_as = {member: head for head, chain in chains.items() for member in chain}
    groups = graph.net.device_groups
    clusters: dict[str | None, list[str]] = {None: [], **{g: [] for g in groups}}
    for head, chain in chains.items():
        style = {
            "fillcolor": S.KINDS[graph.node(head).type].fill,
            "tooltip": _tooltip(graph, chain),
        }
        for group in _towers(graph, head) or [None]:
            label = _label(graph, chain, len(groups) if group else 1)
            # Nodes that share a graphviz `group` are kept in one straight column.
            column = {"group": group} if group else {}
            node_id = _quote(_node_id(head, group))
            clusters[group].append(f"{node_id} {_attrs(label=label, **style, **column)};")
    edges = [
        edge
        for head in chains
        for src in inputs_of(graph, head)
        for edge in _edges(graph, drawn_as[src], src, head)
    ]
    kinds = list(dict.fromkeys(S.KINDS[graph.node(h).type] for h in chains))
    crosses = any(graph.edge(a, b).cross for a, b in graph.edges)
    title = Html(S.title(graph, kinds, crosses))
    lines = [
        f"digraph {_quote(graph.net.name)} {{",
        f"  graph {_attrs(rankdir=rankdir, label=title, **S.GRAPH)};",
        f"  node {_attrs(**S.NODE)};",
        f"  edge {_attrs(**S.EDGE)};",
        *(f"  {s}" for s in clusters.pop(None)),
    ]
    for group, statements in clusters.items():
        lines += [
            f"  subgraph {_quote(f'cluster_{group}')} {{",
            f"    graph {_attrs(label=group, **S.CLUSTER)};",
            *(f"    {s}" for s in statements),
            "  }",
        ]
    return "\n".join([*lines, *(f"  {e}" for e in edges), "}", ""])


def _edges(graph: NetGraph, drawn_src: str, src: str, dst: str) -> list[str]:
    """DOT edges for the graph edge src → dst, drawn from the node that shows `src`.

    Within one group a layer reads its own group's tensor; a layer that reads every group's
    channels (`cross`) or a shared tensor gets an edge from each node that holds a part.
    """
    data = graph.edge(src, dst)
    from_groups, to_groups = _towers(graph, src), _towers(graph, dst)
    if from_groups and to_groups and not data.cross:
        pairs = list(zip(from_groups, to_groups, strict=True))
    else:
        pairs = [(a, b) for a in from_groups or [None] for b in to_groups or [None]]
    out = []
    for a, b in pairs:
        attrs = {"label": _shape(data.shape, len(from_groups) if a else 1)}
        if a and b and a != b:
            attrs |= S.CROSS
        out.append(
            f"{_quote(_node_id(drawn_src, a))} -> {_quote(_node_id(dst, b))} {_attrs(**attrs)};"
        )
    return out


def _missing_dot(path: Path) -> str:
    return (
        "graphviz's `dot` is not installed: apt-get install graphviz (or brew install "
        f"graphviz), or write DOT text with -o {path.with_suffix('.dot')}"
    )


def output_format(path: Path) -> str:
    """The format the file's extension names; anything else is the user's mistake."""
    fmt = path.suffix[1:].lower()
    if fmt not in FORMATS:
        raise UsageError(
            f"cannot tell the format of '{path}': end it in " + ", ".join(f".{f}" for f in FORMATS)
        )
    return fmt


def render(dot_text: str, path: Path) -> None:
    """Write `path` in the format its extension names; all or nothing, never a partial file.

    The output goes to a hidden file in the same folder and is renamed into place, so a
    failing or interrupted `dot` leaves what was there before, if anything.
    """
    fmt = output_format(path)
    dot = shutil.which("dot")
    if fmt != "dot" and dot is None:
        raise UsageError(_missing_dot(path))
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {path}: the folder {path.parent} does not exist")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        if fmt == "dot":
            partial.write_text(dot_text, encoding="utf-8")
        else:
            done = subprocess.run(
                [dot, f"-T{fmt}", "-o", str(partial)],
                input=dot_text.encode(),
                capture_output=True,
            )
            if done.returncode:
                why = (done.stderr.decode(errors="replace").strip() or "no message").splitlines()
                raise UsageError(f"graphviz's dot failed on {path}: {why[0]}")
        os.replace(partial, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
