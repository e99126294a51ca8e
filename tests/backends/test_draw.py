"""`netspec draw`: the DOT text is parsed back and its structure checked against the graph."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from netspec.backends import diagram

from netspec import build_graph, load_spec
from netspec.cli import main

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "specs" / "alexnet.yaml"
TORCHVISION = ROOT / "specs" / "torchvision-alexnet.yaml"
BLOCKS = ROOT / "tests" / "nets" / "blocks.yaml"
DOT = shutil.which("dot")


# A parser for the subset of DOT that `to_dot` writes: statements, attribute lists, subgraphs.
TOKEN = re.compile(
    r"""\s+|//[^\n]*|/\*.*?\*/
    |(?P<string>"(?:[^"\\]|\\.)*")
    |(?P<html><)
    |(?P<punct>->|[{}\[\]=;,])
    |(?P<id>[\w.]+)""",
    re.X | re.S,
)


def tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs; a quoted string or an HTML label is one `id` token, unwrapped."""
    out, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        assert m, f"cannot read DOT at {text[pos : pos + 40]!r}"
        if m["html"]:
            depth, end = 0, pos
            while True:
                depth += {"<": 1, ">": -1}.get(text[end], 0)
                end += 1
                if depth == 0:
                    break
            out.append(("id", text[pos + 1 : end - 1]))
            pos = end
            continue
        if m["string"]:
            out.append(("id", re.sub(r"\\(.)", r"\1", m["string"][1:-1])))
        elif m["punct"]:
            out.append(("punct", m["punct"]))
        elif m["id"]:
            out.append(("id", m["id"]))
        pos = m.end()
    return out


@dataclass
class Dot:
    name: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    clusters: dict[str, tuple[dict[str, str], list[str]]] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)  # a cluster → the one holding it


def parse_dot(text: str) -> Dot:
    toks = tokens(text)
    dot = Dot()

    def take(expected: str | None = None) -> str:
        _, value = toks.pop(0)
        assert expected is None or value == expected, f"expected {expected}, got {value}"
        return value

    def attr_list() -> dict[str, str]:
        attrs: dict[str, str] = {}
        if toks and toks[0] == ("punct", "["):
            take("[")
            while toks[0] != ("punct", "]"):
                key = take()
                take("=")
                attrs[key] = take()
                if toks[0][1] in ",;":
                    take()
            take("]")
        return attrs

    def statements(attrs: dict[str, str], members: list[str], name: str = "") -> None:
        take("{")
        while toks[0] != ("punct", "}"):
            word = take()
            if word in ("graph", "node", "edge"):
                found = attr_list()
                if word == "graph":
                    attrs.update(found)
            elif word == "subgraph":
                inner_name = take()
                inner: tuple[dict[str, str], list[str]] = ({}, [])
                if name:
                    dot.parents[inner_name] = name
                statements(*inner, inner_name)
                dot.clusters[inner_name] = inner
            elif toks[0] == ("punct", "->"):
                take("->")
                target = take()
                dot.edges.append((word, target, attr_list()))
            else:
                dot.nodes[word] = attr_list()
                members.append(word)
            if toks[0] == ("punct", ";"):
                take(";")
        take("}")

    take("digraph")
    dot.name = take()
    statements(dot.attrs, [])
    assert not toks
    return dot


def draw(spec: Path = PAPER, **kwargs) -> tuple[Dot, object]:
    graph = build_graph(load_spec(spec))
    return parse_dot(diagram.to_dot(graph, **kwargs)), graph


def layer(node_id: str) -> str:
    return node_id.partition("@")[0]


def text(label: str) -> str:
    """An HTML-like label as plain text."""
    return html.unescape(re.sub(r"<[^>]*>", " ", label))


def expected_shape(graph, src: str, dst: str) -> str:
    """The graph's edge shape, per tower (channels divided) where the tensor is split."""
    shape = graph.edge(src, dst).shape
    if graph.node(src).split and len(graph.net.device_groups) > 1:
        shape = (shape[0] // len(graph.net.device_groups), *shape[1:])
    return "×".join(map(str, shape))


@pytest.mark.parametrize("compact", [False, True])
def test_one_cluster_per_device_group(compact):
    dot, _ = draw(compact=compact)
    assert {name: attrs["label"] for name, (attrs, _) in dot.clusters.items()} == {
        "cluster_gpu0": "gpu0",
        "cluster_gpu1": "gpu1",
    }
    for name, (_, members) in dot.clusters.items():
        group = name.removeprefix("cluster_")
        assert members and all(m.endswith(f"@{group}") for m in members)
    inside = {m for _, members in dot.clusters.values() for m in members}
    assert set(dot.nodes) - inside == {"input"}  # the one tensor every group shares


@pytest.mark.parametrize("spec", [PAPER, TORCHVISION])
@pytest.mark.parametrize("compact", [False, True])
def test_every_spec_layer_is_drawn(spec, compact):
    dot, graph = draw(spec, compact=compact)
    words = set(" ".join(text(a["label"]) for a in dot.nodes.values()).split())
    assert set(graph.nodes) <= words
    heads = {layer(n) for n in dot.nodes}
    if compact:
        assert heads < set(graph.nodes)
    else:
        assert heads == set(graph.nodes)


def test_compact_folds_what_follows_a_weight_layer():
    dot, _ = draw(compact=True)
    weights = {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"}
    assert {layer(n) for n in dot.nodes} == {"input", *weights}
    label = text(dot.nodes["conv1@gpu0"]["label"]).split()
    chain = ["conv1", "relu1", "norm1", "pool1"]
    assert [w for w in label if w in chain] == chain


@pytest.mark.parametrize("compact", [False, True])
def test_cross_tower_edges_are_exactly_into_the_all_connected_layers(compact):
    dot, _ = draw(compact=compact)
    cross = [(a, b) for a, b, attrs in dot.edges if attrs.get("class") == "cross"]
    assert {layer(b) for _, b in cross} == {"conv3", "fc6", "fc7", "fc8"}
    assert all(a.partition("@")[2] != b.partition("@")[2] for a, b in cross)
    assert len(cross) == 4 * 2  # both directions between the two towers
    within = [(a, b) for a, b, attrs in dot.edges if "class" not in attrs and "@" in a]
    assert all(a.partition("@")[2] == b.partition("@")[2] for a, b in within)


@pytest.mark.parametrize("compact", [False, True])
def test_a_net_without_groups_is_one_column(compact):
    dot, _ = draw(TORCHVISION, compact=compact)
    assert not dot.clusters
    assert not any("@" in n for n in dot.nodes)
    assert not any("class" in attrs for _, _, attrs in dot.edges)
    assert all(sum(a == n for a, _, _ in dot.edges) <= 1 for n in dot.nodes)


@pytest.mark.parametrize("spec", [PAPER, TORCHVISION])
def test_edge_shapes_are_the_graphs(spec):
    dot, graph = draw(spec)
    assert {(layer(a), layer(b)) for a, b, _ in dot.edges} == set(graph.edges)
    for a, b, attrs in dot.edges:
        assert attrs["label"] == expected_shape(graph, layer(a), layer(b)), (a, b)


def test_the_shared_input_feeds_every_tower_whole():
    dot, _ = draw()
    into = {b: attrs["label"] for a, b, attrs in dot.edges if a == "input"}
    assert into == {"conv1@gpu0": "3×227×227", "conv1@gpu1": "3×227×227"}


def test_compact_edges_carry_the_shape_leaving_the_folded_chain():
    dot, graph = draw(compact=True)
    labels = {(a, b): attrs["label"] for a, b, attrs in dot.edges}
    assert labels["conv1@gpu0", "conv2@gpu0"] == "48×27×27"  # after pool1, not conv1's 55×55
    for (_, b), label in labels.items():
        (src,) = graph.predecessors(layer(b))
        assert label == expected_shape(graph, src, layer(b))


def test_rankdir_and_title():
    dot, graph = draw(rankdir="LR")
    assert dot.attrs["rankdir"] == "LR"
    assert draw()[0].attrs["rankdir"] == "TB"
    title = text(dot.attrs["label"])
    assert "alexnet" in title
    assert f"{graph.net.params:,} parameters" in title
    assert f"{graph.net.macs:,} MACs" in title
    assert "crosses device groups" in title
    assert "crosses" not in text(draw(TORCHVISION)[0].attrs["label"])


def test_tower_nodes_show_their_share():
    dot, _ = draw()
    assert " ".join(text(dot.nodes["conv2@gpu1"]["label"]).split()) == (
        "conv2 conv 5×5 · 128 of 256 · pad 2"
    )
    assert "2048 of 4096" in text(dot.nodes["fc6@gpu0"]["label"])


def test_names_are_quoted_and_escaped():
    graph = build_graph(load_spec(PAPER))
    graph.net.name = 'say "hi" \\ <b>&'
    dot = parse_dot(diagram.to_dot(graph))
    assert dot.name == 'say "hi" \\ <b>&'
    assert 'say "hi" \\ <b>&' in text(dot.attrs["label"])


def run_cli(*args: str, path: str) -> subprocess.CompletedProcess:
    env = {"PATH": path, "PYTHONPATH": str(ROOT), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [sys.executable, "-m", "netspec.cli", "draw", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_missing_dot_is_one_line_and_leaves_no_file(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    done = run_cli(str(PAPER), "-o", str(out / "alexnet.svg"), path=str(bare))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "apt-get install graphviz" in lines[0] and ".dot" in lines[0]
    assert list(out.iterdir()) == []


def test_dot_output_needs_no_binary(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    done = run_cli(str(PAPER), "-o", str(tmp_path / "a.dot"), "--compact", path=str(bare))
    assert done.returncode == 0, done.stderr
    assert parse_dot((tmp_path / "a.dot").read_text()).clusters
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dot", "bin"]


def test_unknown_extension_is_a_usage_error(tmp_path, capsys):
    assert main(["draw", str(PAPER), "-o", str(tmp_path / "a.jpg")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and all(f".{f}" in err[0] for f in ("svg", "png", "pdf", "dot"))
    assert not list(tmp_path.iterdir())


def test_missing_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["draw", str(PAPER), "-o", str(tmp_path / "no" / "a.dot")]) == 2
    assert "there is no folder" in capsys.readouterr().err


def test_overlong_file_name_is_one_line_and_leaves_no_file(tmp_path, capsys):
    out = tmp_path / ("a" * 300 + ".dot")
    assert main(["draw", str(PAPER), "-o", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].endswith("File name too long; use a shorter name")
    assert not list(tmp_path.iterdir())


def test_a_name_near_the_limit_still_has_room_for_its_temporary_file(tmp_path, capsys):
    out = tmp_path / ("a" * 251 + ".dot")  # 255 bytes: the most one name may have
    assert main(["draw", str(PAPER), "-o", str(out)]) == 0
    assert parse_dot(out.read_text()).name == "alexnet"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.skipif(DOT is None, reason="graphviz's dot is not installed")
def test_renders_svg(tmp_path, capsys):
    out = tmp_path / "alexnet.svg"
    assert main(["draw", str(PAPER), "-o", str(out), "--rankdir", "LR"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    svg = out.read_text()
    assert "<svg" in svg
    assert svg.count('class="edge cross"') == 8
    assert {"conv1", "conv3", "fc8", "gpu0", "gpu1"} <= set(re.findall(r"\w+", svg))
    assert [p.name for p in tmp_path.iterdir()] == ["alexnet.svg"]


@pytest.mark.skipif(DOT is None, reason="graphviz's dot is not installed")
def test_a_failing_dot_leaves_no_file(tmp_path):
    out = tmp_path / "broken.png"
    with pytest.raises(diagram.UsageError, match="dot failed"):
        diagram.render("digraph { this is not dot", out)
    assert not list(tmp_path.iterdir())


def test_each_block_use_is_a_cluster_named_for_its_use_and_block():
    dot, graph = draw(BLOCKS)
    labels = {name: attrs["label"] for name, (attrs, _) in dot.clusters.items()}
    assert labels == {
        "cluster_use_stem": "stem: cbr",
        "cluster_use_mix.0": "mix.0: mixed",
        "cluster_use_mix.0.b1": "b1: cbr",
        "cluster_use_mix.0.b3": "b3: cbr",
        "cluster_use_mix.1": "mix.1: mixed",
        "cluster_use_mix.1.b1": "b1: cbr",
        "cluster_use_mix.1.b3": "b3: cbr",
        "cluster_use_side": "side: cbr",
    }
    nested = {f"cluster_use_mix.{i}.b{k}": f"cluster_use_mix.{i}" for i in (0, 1) for k in (1, 3)}
    assert dot.parents == nested
    assert dot.clusters["cluster_use_mix.1.b3"][1] == [
        f"mix.1.b3.{n}" for n in ("conv", "bn", "relu")
    ]
    assert dot.clusters["cluster_use_mix.1"][1] == ["mix.1.cat"]  # its own layer, not its uses'
    inside = {m for _, members in dot.clusters.values() for m in members}
    assert set(dot.nodes) - inside == {"input", "pool", "sum", "gap", "fc"}
    # inside its use a layer is named as its block names it; the hover text names it in full
    assert text(dot.nodes["mix.1.b3.bn"]["label"]).split() == ["bn", "batchnorm"]
    assert dot.nodes["mix.1.b3.conv"]["tooltip"].startswith("mix.1.b3.conv: output 6×8×8")
    assert {(a, b) for a, b, _ in dot.edges} == set(graph.edges)


def test_compact_draws_each_use_as_one_box():
    dot, graph = draw(BLOCKS, compact=True)
    assert " ".join(dot.nodes) == "input stem pool mix.0 mix.1 side sum gap fc"
    assert not dot.clusters
    box = dot.nodes["mix.1"]
    assert " ".join(text(box["label"]).split()) == "mix.1 mixed 7 layers · 504 params → 12×8×8"
    assert box["tooltip"] == (
        "mix.1 (block mixed): 7 layers, output 12×8×8, 504 parameters, 30,720 MACs"
    )
    assert [(a, b, attrs["label"]) for a, b, attrs in dot.edges] == [
        ("input", "stem", "3×16×16"),
        ("stem", "pool", "8×16×16"),
        ("pool", "mix.0", "8×8×8"),  # read by both branches, drawn once
        ("mix.0", "mix.1", "8×8×8"),
        ("pool", "side", "8×8×8"),
        ("mix.1", "sum", "12×8×8"),
        ("side", "sum", "12×8×8"),
        ("sum", "gap", "12×8×8"),
        ("gap", "fc", "12×1×1"),
    ]
    assert "block use" in text(dot.attrs["label"])  # the key names the boxes' colour
    params = sum(graph.node(n).params for n in graph.nodes if n.startswith("mix.1."))
    assert params == 6 * 8 + 6 * 8 * 9 + 2 * 2 * 6  # two convolutions and two batch norms
