"""Blocks: uses expand to layers named as torch names nested modules, every value keeping
where it was written; mistakes name the token, the block and the use; `build --expand`
prints a flat spec that builds the same network."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from netspec import SpecError, build_graph, load_spec
from netspec.cli import main
from netspec.spec.blocks import MAX_LAYERS, expand_blocks
from netspec.spec.document import BlockUse, read_yaml
from tests.conftest import ROOT, SPECS, TEST_SPECS

RESNET = ROOT / "specs/zoo/resnet18.yaml"
BLOCKS = ROOT / "tests/nets/blocks.yaml"

BASIC = """\
name: r
input: [3, 16, 16]
classes: 10
blocks:
  basic:
    params: [filters, stride]
    layers:
      - {name: conv1, type: conv, filters: $filters, kernel: 3, stride: $stride, padding: 1}
      - {name: bn1, type: batchnorm}
      - {name: add, type: add, inputs: [bn1, in]}
layers:
  - {name: stem, type: conv, filters: 8, kernel: 3, padding: 1}
  - {name: layer1, use: basic, with: {filters: 8, stride: 1}, repeat: 2}
  - {name: layer2, use: basic, with: {filters: 8, stride: 1}}
  - {name: fc, type: linear, units: classes}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def problems(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        build_graph(load_spec(path, overrides or []))
    return [str(p) for p in info.value.problems]


def build_json(capsys, *args: str) -> dict:
    assert main(["build", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------- expansion


def test_repeats_are_named_as_torchvision_names_them():
    graph = build_graph(load_spec(RESNET))
    names = [n.name for n in sorted(graph.layers(), key=lambda n: n.index)]
    assert names[:6] == ["conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer1.0.bn1"]
    assert names[-9:-2] == [f"layer4.1.{n}" for n in BASIC_LAYERS]
    assert len(names) == 4 + 2 * 7 + 3 * (9 + 7) + 2
    assert graph.net.params == 11_689_512  # torchvision's resnet18()


BASIC_LAYERS = ["conv1", "bn1", "relu1", "conv2", "bn2", "add", "relu2"]


def test_in_is_the_use_input_and_copies_chain():
    graph = build_graph(load_spec(RESNET))
    assert graph.inputs_of("layer1.0.conv1") == ["maxpool"]
    assert graph.inputs_of("layer1.0.add") == ["layer1.0.bn2", "maxpool"]
    assert graph.inputs_of("layer1.1.add") == ["layer1.1.bn2", "layer1.0.relu2"]
    assert graph.inputs_of("layer2.0.proj") == ["layer1.1.relu2"]  # `in` of the down copy
    assert graph.inputs_of("layer2.0.add") == ["layer2.0.bn2", "layer2.0.projbn"]
    assert graph.inputs_of("avgpool") == ["layer4.1.relu2"]
    assert graph.node("layer2.0.conv1").shape == (128, 28, 28)
    assert graph.node("layer2.1.conv1").layer.stride == (1, 1)  # the copy that uses basic


def test_weights_key_in_a_block_is_the_use_s():
    spec = load_spec(RESNET)
    keys = {layer.name: layer.weights_key for layer in spec.layers if layer.weights_key}
    assert keys == {
        f"layer{i}.0.{name}": f"layer{i}.0.downsample.{k}"
        for i in (2, 3, 4)
        for k, name in enumerate(["proj", "projbn"])
    }


KEYED = """\
name: k
input: [3, 8, 8]
classes: 4
blocks:
  conv:
    params: [key]
    layers:
      - {name: conv, type: conv, filters: 4, kernel: 3, padding: 1, weights_key: $key}
      - {name: bn, type: batchnorm, weights_key: norm}
  pair:
    params: [second]
    layers:
      - {name: a, use: conv, with: {key: first}}
      - {name: b, use: conv, with: {key: $second}}
layers:
  - {name: stem, use: conv, repeat: [{with: {key: features.0}}, {with: {key: features.2}}]}
  - {name: outer, use: pair, with: {second: features.5}}
  - {name: fc, type: linear, units: classes}
"""


def test_a_weights_key_is_read_where_it_was_written(tmp_path):
    spec = load_spec(write(tmp_path, KEYED))
    keys = {layer.name: layer.weights_key for layer in spec.layers if layer.weights_key}
    assert keys == {
        "stem.0.conv": "features.0",  # given in the spec's list: as written
        "stem.0.bn": "stem.0.norm",  # written in the block: under the copy's name
        "stem.1.conv": "features.2",
        "stem.1.bn": "stem.1.norm",
        "outer.a.conv": "outer.first",  # given by a use inside block pair: under outer
        "outer.a.bn": "outer.a.norm",
        "outer.b.conv": "features.5",  # passed down from the spec's list, through $second
        "outer.b.bn": "outer.b.norm",
    }


def test_nested_uses_a_repeat_list_and_explicit_inputs():
    graph = build_graph(load_spec(BLOCKS))
    assert graph.node("mix.0.b1.conv").shape == (4, 8, 8)
    assert graph.node("mix.1.b3.conv").shape == (6, 8, 8)  # the list item's own filters
    assert graph.inputs_of("mix.0.b3.conv") == ["pool"]  # `inputs: [in]` of a nested use
    assert graph.inputs_of("mix.1.b1.conv") == ["mix.0.cat"]
    assert graph.inputs_of("side.conv") == ["pool"]  # the use's own `inputs`
    assert graph.inputs_of("sum") == ["mix.1.cat", "side.relu"]  # a use read by its name
    assert graph.node("mix.1.b3.bn").uses == (
        BlockUse("mix.1", "mixed", f"{BLOCKS}:22:5"),
        BlockUse("mix.1.b3", "cbr", f"{BLOCKS}:17:9"),
    )
    assert graph.node("pool").uses == ()


def test_a_spec_without_blocks_is_left_as_it_is():
    for path in SPECS + TEST_SPECS:
        doc = read_yaml(path)
        if "blocks" in doc.data:
            continue
        before = (json.dumps(doc.data), dict(doc.values), dict(doc.keys))
        expand_blocks(doc)
        assert (json.dumps(doc.data), doc.values, doc.keys) == before, path
        assert doc.origins == {} and doc.notes == {}


def test_overrides_change_what_is_written(tmp_path):
    graph = build_graph(load_spec(BLOCKS, ["layers.mix.with.filters=2"]))
    assert graph.node("mix.0.b1.conv").shape == (2, 8, 8)
    assert graph.node("mix.1.b1.conv").shape == (6, 8, 8)  # its own value still wins
    graph = build_graph(load_spec(BLOCKS, ["blocks.cbr.layers.conv.bias=true"]))
    assert graph.node("side.conv").params == 12 * 8 + 12
    graph = build_graph(load_spec(write(tmp_path, BASIC), ["layers.layer2=null"]))
    assert graph.inputs_of("fc") == ["layer1.1.add"] and "layer2.conv1" not in graph


def test_a_mistake_through_a_parameter_names_the_value_the_parameter_and_the_use(tmp_path):
    path = write(tmp_path, BASIC)
    (line,) = problems(path, ["layers.layer2.with.stride=0"])
    assert line == (
        "--set layers.layer2.with.stride=0: conv1: stride must be ≥ 1, got 0 (as $stride in "
        f"block basic at {path}:8:73, used by layer2 at {path}:14:5) (overriding {path}:14:51)"
    )


def test_the_same_mistake_in_two_uses_is_reported_once_per_use(tmp_path):
    path = write(tmp_path, BASIC.replace("$stride, padding: 1}", "$stride, padding: 1, kernal: 3}"))
    at = f"{path}:8:94: conv1: unknown key 'kernal' (did you mean 'kernel'?)"
    got = problems(path)
    assert [line.split(";")[0] for line in got] == [at, at]  # layer1's two copies are one use
    assert got[0].endswith(f"(in block basic at {path}:5:3, used by layer1 at {path}:13:5)")
    assert got[1].endswith(f"(in block basic at {path}:5:3, used by layer2 at {path}:14:5)")


def test_nested_uses_list_every_expansion(tmp_path):
    path = write(tmp_path, BLOCKS.read_text().replace("with: {filters: 4}", "with: {filters: 0}"))
    got = problems(path)
    assert got == [
        f"{path}:22:45: conv: filters must be ≥ 1, got 0 (as $filters in block cbr at "
        f"{path}:10:43, used by {b} at {path}:{row}:9, as $filters in block mixed at "
        f"{path}:{row}:{col}, used by mix at {path}:22:5)"
        for b, row, col in [("b1", 16, 46), ("b3", 17, 46)]
    ]


def test_a_shape_mistake_names_the_copy(tmp_path):
    text = BASIC.replace("padding: 1}", "}").replace("repeat: 2", "repeat: 3")
    got = problems(write(tmp_path, text))
    assert got[0].startswith(f"{tmp_path / 'spec.yaml'}:10:9: layer1.0.add: add")
    assert len(got) == 1  # what reads a layer that failed is not checked again


def test_a_name_taken_by_a_use_and_a_layer(tmp_path):
    path = write(tmp_path, BASIC.replace("name: stem", "name: layer2"))
    assert problems(path) == [
        f"{path}:14:12: layers[2] (layer2): duplicate layer name 'layer2' (first at "
        f"{path}:12:12); names in layers must be unique"
    ]


def test_expansion_is_bounded_before_it_is_done(tmp_path):
    nest = "\n".join(
        f"  b{i}:\n    layers:\n      - {{name: x, use: b{i + 1}, repeat: 1000}}" for i in range(3)
    )
    text = f"name: bomb\ninput: [3, 8, 8]\nblocks:\n{nest}\n  b3:\n    layers:\n"
    text += "      - {name: r, type: relu}\nlayers:\n  - {name: top, use: b0}\n"
    start = time.perf_counter()
    (line,) = problems(write(tmp_path, text))
    assert time.perf_counter() - start < 1
    assert f"expand to more than {MAX_LAYERS:,} layers" in line


# ---------------------------------------------------------------- build --expand


@pytest.mark.parametrize("path", [RESNET, BLOCKS], ids=lambda p: p.stem)
def test_expand_prints_a_flat_spec_that_builds_the_same_network(path, tmp_path, capsys):
    assert main(["build", str(path), "--expand"]) == 0
    flat = tmp_path / "flat.yaml"
    flat.write_text(capsys.readouterr().out)
    assert "blocks:" not in flat.read_text() and "$" not in flat.read_text()
    assert build_json(capsys, str(flat)) == build_json(capsys, str(path))
    assert load_spec(flat).model_dump() == load_spec(path).model_dump()


def test_expand_shows_where_each_use_was_written(capsys):
    assert main(["build", str(BLOCKS), "--expand"]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = lines.index("  - {name: pool, type: maxpool, kernel: 2}")
    assert lines[i + 1] == (f"  # mix.0: block mixed › mix.0.b1: block cbr (used at {BLOCKS}:16:9)")
    assert lines[i + 2] == (
        "  - {name: mix.0.b1.conv, type: conv, filters: 4, kernel: 1, padding: 0, bias: false}"
    )
