"""The diagram back end: the graph as a `graphviz.Digraph`, rendered by graphviz's `dot`.

Every shape drawn is read off the graph: a node's `shape`, an edge's `shape`. The one number
derived here is a tower's share of a tensor whose channels are split across device groups:
its channel count divided by the number of groups, which is how `build_graph` splits them
(evenly; it refuses counts that do not divide).

With device groups each split layer is one node per group, inside one cluster per group, as
in the paper's Figure 2; a layer that reads every group's channels (edge `cross`) gets an
edge from each group, and those between different groups are drawn as cross-tower edges.

Each block use is a cluster labelled with its name and its block's, nested as the uses are,
its layers named inside it as the block names them (`conv1` in `layer1.0: basic`); a layer
split across device groups stays in its group's tower. `--compact` draws each use of the
spec's own list as one box.
"""

from __future__ import annotations

import errno
from pathlib import Path

import graphviz

from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.ir.records import NetGraph
from netspec.ir.shapes import fmt
from netspec.spec.document import BlockUse

from . import diagram_style as S

FORMATS = ("svg", "png", "pdf", "dot")
FOLDED_PER_LINE = 3  # keeps a folded node about as wide as its first line


def to_dot(graph: NetGraph, rankdir: str = "TB", compact: bool = False) -> str:
    """The graph as DOT text: one node per layer (or folded chain), one per group where split."""
    return digraph(graph, rankdir, compact).source


def digraph(graph: NetGraph, rankdir: str = "TB", compact: bool = False) -> graphviz.Digraph:
    """The drawing: titled canvas, then nodes (shared ones, then one cluster per group), then edges.

    Statements are added in that order on purpose: `dot` lays out in the order it reads.
    """
    chains = fold(graph, compact)
    boxes = _boxes(graph, chains)
    dot = _canvas(graph, chains, boxes, rankdir)
    clusters = {g: _cluster(f"cluster_{g}", g) for g in graph.net.device_groups}
    uses = _Uses()
    for head, chain in chains.items():
        if head in boxes:
            dot.node(head, **_box_attrs(graph, chain, boxes[head]))
            continue
        groups: list[str | None] = [*_towers(graph, head)] or [None]
        for group in groups:
            inner = graph.node(head).uses if not group else ()
            target = clusters[group] if group else uses.cluster(inner, dot)
            shown = _relative(head, inner)
            target.node(_node_id(head, group), **_node_attrs(graph, chain, group, shown))
    for cluster in clusters.values():
        dot.subgraph(cluster)
    uses.close(dot)
    drawn_as = {member: head for head, chain in chains.items() for member in chain}
    drawn: set[tuple[str, str, str]] = set()
    for head, chain in chains.items():
        for member in chain:
            for src in graph.inputs_of(member):
                edge = (drawn_as[src], src, head)
                if drawn_as[src] != head and edge not in drawn:  # a box draws a tensor once
                    drawn.add(edge)
                    _add_edges(dot, graph, boxes, edge, member)
    return dot


class _Uses:
    """The clusters of the block uses, made as their first layer is drawn and nested at the
    end, innermost first: graphviz copies a subgraph into its parent when it is added."""

    def __init__(self) -> None:
        self.clusters: dict[tuple[BlockUse, ...], graphviz.Digraph] = {}

    def cluster(self, uses: tuple[BlockUse, ...], top: graphviz.Digraph) -> graphviz.Digraph:
        if not uses:
            return top
        for n in range(1, len(uses) + 1):
            if uses[:n] not in self.clusters:
                use = uses[n - 1]
                self.clusters[uses[:n]] = _cluster(
                    f"cluster_use_{use.name}", f"{_relative(use.name, uses[: n - 1])}: {use.block}"
                )
        return self.clusters[uses]

    def close(self, top: graphviz.Digraph) -> None:
        for uses in sorted(self.clusters, key=len, reverse=True):  # stable: in drawing order
            (self.clusters[uses[:-1]] if len(uses) > 1 else top).subgraph(self.clusters[uses])


def _relative(name: str, uses: tuple[BlockUse, ...]) -> str:
    """A name as the innermost of `uses` knows it: `conv1` for `layer1.0.conv1`."""
    return name.removeprefix(f"{uses[-1].name}.") if uses else name


def _boxes(graph: NetGraph, chains: dict[str, list[str]]) -> dict[str, BlockUse]:
    """The drawn nodes that are a whole block use (--compact), with the use."""
    return {
        head: graph.node(chain[0]).uses[0]
        for head, chain in chains.items()
        if graph.node(chain[0]).uses and head not in graph
    }


def fold(graph: NetGraph, compact: bool) -> dict[str, list[str]]:
    """Each node drawn and the layers it shows, in order: itself, then what --compact folds.

    A chain folds while each link has one consumer and one producer, so the edges leaving the
    chain are exactly the edges leaving its last layer.
    """
    chains: dict[str, list[str]] = {}
    folded: set[str] = set()
    for name in graph.order():
        if name in folded:
            continue
        uses = graph.node(name).uses
        if compact and uses:  # one box for a use of the spec's list, named as the use
            chains.setdefault(uses[0].name, []).append(name)
            continue
        chain = [name]
        if compact and graph.node(name).has_weights:
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
    # what --compact folds into the weight layer before it, as papers draw a conv block
    layer = graph.node(after).layer
    foldable = graph.in_degree(after) == 1 and layer is not None and layer.folds
    foldable = foldable and not graph.node(after).uses  # that layer is in a block use's box
    return after if foldable else None


def _canvas(
    graph: NetGraph, chains: dict[str, list[str]], boxes: dict[str, BlockUse], rankdir: str
) -> graphviz.Digraph:
    """An empty digraph with the defaults for nodes and edges, and the title with its key."""
    kinds = list(dict.fromkeys(S.USE if h in boxes else S.kind_of(graph.node(h)) for h in chains))
    crosses = any(graph.edge(a, b).cross for a, b in graph.edges)
    title = S.title(graph, kinds, crosses)
    return graphviz.Digraph(
        # escape(): the name is the user's text, never HTML or a DOT escape sequence
        name=graphviz.escape(graph.net.name),
        graph_attr={"rankdir": rankdir, "label": _html(title), **S.GRAPH},
        node_attr=S.NODE,
        edge_attr=S.EDGE,
    )


def _cluster(name: str, label: str) -> graphviz.Digraph:
    """The box that holds a device group's tower or a block use's layers; the name's
    `cluster_` is what makes dot draw it."""
    return graphviz.Digraph(name=name, graph_attr={"label": label, **S.CLUSTER})


def _html(label: str) -> str:
    """An HTML-like label: the graphviz package writes a `<…>` string unquoted."""
    return f"<{label}>"


def _node_id(name: str, group: str | None) -> str:
    # `@` cannot occur in a layer name, so tower nodes never collide with layers.
    return f"{name}@{group}" if group else name


def _towers(graph: NetGraph, name: str) -> list[str]:
    """The device groups a node is drawn in: all of them when its channels are split, else none."""
    node = graph.node(name)
    return list(node.towers) if node.split and len(node.towers) > 1 else []


def _node_attrs(graph: NetGraph, chain: list[str], group: str | None, shown: str) -> dict[str, str]:
    """Label, colour and hover text of the node drawing `chain` (in one group's tower)."""
    head = graph.node(chain[0])
    attrs = {
        "label": _label(graph, chain, len(graph.net.device_groups) if group else 1, shown),
        "fillcolor": S.kind_of(head).fill,
        "tooltip": _tooltip(graph, chain),
    }
    if group:
        attrs["group"] = group  # nodes that share a graphviz `group` keep one straight column
    return attrs


def _box_attrs(graph: NetGraph, chain: list[str], use: BlockUse) -> dict[str, str]:
    """A whole block use as one node: its name, its block, its output and its counts."""
    out = graph.node(chain[-1])
    params = sum(graph.node(n).params for n in chain)
    macs = sum(graph.node(n).macs for n in chain)
    label = f"{S.use_summary(use)}<BR/>{S.use_totals(out.shape, len(chain), params)}"
    return {
        "label": _html(label),
        "fillcolor": S.USE.fill,
        "tooltip": f"{use.name} (block {use.block}): {len(chain)} layers, output "
        f"{fmt(out.shape)}, {params:,} parameters, {macs:,} MACs",
    }


def _label(graph: NetGraph, chain: list[str], towers: int, shown: str) -> str:
    head, *rest = chain
    lines = [S.summary(shown, graph.node(head), towers)]
    folded = [S.summary(n, graph.node(n), towers) for n in rest]
    for i in range(0, len(folded), FOLDED_PER_LINE):
        line = " → ".join(folded[i : i + FOLDED_PER_LINE])
        lines.append(f'<FONT POINT-SIZE="9">→ {line}</FONT>')
    return _html("<BR/>".join(lines))


def _tooltip(graph: NetGraph, chain: list[str]) -> str:
    """What an SVG shows on hover: the output and the counts of the layers in the node."""
    out = fmt(graph.node(chain[-1]).shape)
    params = sum(graph.node(n).params for n in chain)
    macs = sum(graph.node(n).macs for n in chain)
    groups = " (all device groups)" if _towers(graph, chain[0]) else ""
    return f"{' → '.join(chain)}: output {out}, {params:,} parameters, {macs:,} MACs{groups}"


def _add_edges(
    dot: graphviz.Digraph,
    graph: NetGraph,
    boxes: dict[str, BlockUse],
    edge: tuple[str, str, str],
    dst: str,
) -> None:
    """The drawn edges of the graph edge src → dst, from the node that shows `src` to the one
    that shows `dst` (`edge`: those two and src).

    Within one group a layer reads its own group's tensor; a layer that reads every group's
    channels (`cross`) or a shared tensor gets an edge from each node that holds a part. A
    block use's box is drawn once, outside the towers.
    """
    drawn_src, src, drawn_dst = edge
    shape = graph.edge(src, dst).shape
    from_groups: list[str | None] = [] if drawn_src in boxes else [*_towers(graph, src)]
    to_groups: list[str | None] = [] if drawn_dst in boxes else [*_towers(graph, dst)]
    for a, b in _tower_pairs(graph, src, dst, from_groups, to_groups):
        attrs = {"label": _shape(shape, len(from_groups) if a else 1)}
        if a and b and a != b:
            attrs |= S.CROSS
        dot.edge(_node_id(drawn_src, a), _node_id(drawn_dst, b), **attrs)


def _tower_pairs(
    graph: NetGraph, src: str, dst: str, from_groups: list[str | None], to_groups: list[str | None]
) -> list[tuple[str | None, str | None]]:
    """Which tower of `src` feeds which tower of `dst` (None: the node outside the towers)."""
    if from_groups and to_groups and not graph.edge(src, dst).cross:
        return list(zip(from_groups, to_groups, strict=True))
    return [(a, b) for a in from_groups or [None] for b in to_groups or [None]]


def _shape(shape: tuple[int, ...], towers: int) -> str:
    """`96×55×55`, or one tower's share of it: the channels divided by the number of towers."""
    return fmt((shape[0] // towers, *shape[1:]))


def output_format(path: Path) -> str:
    """The format the file's extension names; anything else is the user's mistake."""
    suffix = path.suffix[1:].lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"cannot tell the format of '{path}': end it in " + ", ".join(f".{f}" for f in FORMATS)
        )
    return suffix


def render(dot_text: str, path: Path) -> None:
    """Write `path` in the format its extension names; all or nothing, never a partial file.

    `dot` writes to memory and the bytes replace `path` in one rename, so a failing or
    interrupted `dot` leaves what was there before, if anything.
    """
    suffix = output_format(path)
    data = dot_text.encode() if suffix == "dot" else _layout(dot_text, suffix, path)
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {path}: the folder {path.parent} does not exist")
    try:
        with atomic_write(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        fix = "; use a shorter name" if exc.errno == errno.ENAMETOOLONG else ""
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}{fix}") from None


def _layout(dot_text: str, suffix: str, path: Path) -> bytes:
    """`dot -T<suffix>` of the text, with its failure said in one line."""
    try:
        data: bytes = graphviz.pipe("dot", suffix, dot_text.encode(), quiet=True)
    except graphviz.ExecutableNotFound:
        raise UsageError(
            "graphviz's `dot` is not installed: apt-get install graphviz (or brew install "
            f"graphviz), or write DOT text with -o {path.with_suffix('.dot')}"
        ) from None
    except graphviz.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        why = (stderr.strip() or "no message").splitlines()[0]
        raise UsageError(f"graphviz's dot failed on {path}: {why}") from None
    return data
