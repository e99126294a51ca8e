"""`--set layers.NAME=null` takes a layer out; whatever read it reads its input instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspec import SpecError, build_graph, load_spec
from netspec.cli import main
from netspec.ir.records import INPUT

ROOT = Path(__file__).resolve().parents[2]
ALEXNET = ROOT / "specs" / "alexnet.yaml"

BRANCHES = """\
name: branches
input: [3, 16, 16]
classes: 10
layers:
  - {name: conv1, type: conv, filters: 4, kernel: 3}
  - {name: relu1, type: relu}
  - {name: conv2, type: conv, filters: 4, kernel: 1, inputs: [conv1]}
  - {name: relu2, type: relu}
  - {name: cat, type: concat, inputs: [relu1, relu2]}
  - {name: drop, type: dropout, p: 0.5}
  - {name: fc, type: linear, units: classes}
"""


def edges(tmp_path: Path, text: str, overrides: list[str]) -> set[tuple[str, str]]:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    return set(build_graph(load_spec(path, overrides)).edges)


def errors(tmp_path: Path, text: str, overrides: list[str]) -> list[str]:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        build_graph(load_spec(path, overrides))
    return [str(p) for p in info.value.problems]


def test_the_next_layer_reads_the_removed_layers_input(tmp_path):
    got = edges(tmp_path, BRANCHES, ["layers.drop=null"])
    assert ("cat", "fc") in got
    assert not any("drop" in edge for edge in got)


def test_named_inputs_are_rewired(tmp_path):
    got = edges(tmp_path, BRANCHES, ["layers.relu1=null"])
    assert {("conv1", "cat"), ("relu2", "cat"), ("conv1", "conv2")} <= got
    assert not any("relu1" in edge for edge in got)


def test_the_next_layer_is_told_the_input_of_a_removed_branch(tmp_path):
    # conv2 reads conv1 by name; relu2 read conv2 by coming next, so it now reads conv1
    got = edges(tmp_path, BRANCHES, ["layers.conv2=null"])
    assert {("conv1", "relu1"), ("conv1", "relu2"), ("relu1", "cat"), ("relu2", "cat")} <= got
    assert ("relu1", "relu2") not in got


def test_removing_the_first_layer_feeds_the_input_to_its_readers(tmp_path):
    with pytest.raises(SpecError):  # conv2 keeps 4 filters but concat needs matching maps
        build_graph(load_spec(ALEXNET, ["layers.conv1=null"]))
    got = edges(tmp_path, BRANCHES, ["layers.conv1=null"])
    assert {(INPUT, "relu1"), (INPUT, "conv2")} <= got


def test_removing_by_index_and_chained_removals(tmp_path):
    got = edges(tmp_path, BRANCHES, ["layers.5=null", "layers.relu2=null", "layers.relu1=null"])
    assert {("conv1", "conv2"), ("conv1", "cat"), ("conv2", "cat"), ("cat", "fc")} == got - {
        (INPUT, "conv1")
    }


def test_the_table_loses_the_layer_and_keeps_the_rest():
    graph = build_graph(load_spec(ALEXNET, ["layers.norm1=null", "layers.norm2=null"]))
    names = [n.name for n in graph.layers()]
    assert "norm1" not in names and "norm2" not in names and len(names) == 20
    assert graph.inputs_of("pool1") == ["relu1"] and graph.inputs_of("pool2") == ["relu2"]
    assert graph.net.params == 60_965_224  # LRN has no weights: the same count as the paper's


def test_later_mistakes_keep_their_lines(tmp_path):
    text = BRANCHES.replace("p: 0.5", "p: 1.5")
    (line,) = errors(tmp_path, text, ["layers.conv1=null", "layers.relu1=null"])
    assert line == f"{tmp_path / 'net.yaml'}:10:36: layers[3] (drop): p must be < 1.0, got 1.5"


def test_a_removal_that_breaks_a_shape_names_the_override(capsys):
    status = main(["build", str(ALEXNET), "--set", "layers.pool5=null"])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2
    assert lines == [
        f"{ALEXNET}:38:5: layers[14] (fc6): in_features is 9216, but 'relu5' gives "
        "256×13×13 = 43264; set in_features: 43264 or change the layers before it "
        "(upstream of it, --set layers.pool5=null removed 'pool5')"
    ]


def test_a_problem_a_removal_did_not_cause_does_not_name_it(tmp_path):
    text = BRANCHES.replace("units: classes}", "units: classes, in_features: 7}")
    (line,) = errors(tmp_path, text, ["layers.drop=null"])
    assert line.endswith("set in_features: 1568 or change the layers before it (upstream of it, "
                         "--set layers.drop=null removed 'drop')")  # fmt: skip
    # conv2 sits upstream of drop: removing drop cannot have changed conv2's input
    text = BRANCHES.replace("kernel: 1, inputs", "kernel: 20, inputs")
    (line,) = errors(tmp_path, text, ["layers.drop=null"])
    assert "conv2" in line and "removed" not in line


def test_rewired_inputs_are_located_at_the_override(tmp_path):
    # without relu2, concat would read conv2... and without conv2, conv1 twice
    (line,) = errors(tmp_path, BRANCHES, ["layers.relu1=null", "layers.relu2=null",
                                          "layers.conv2=null"])  # fmt: skip
    assert line == (
        "--set layers.conv2=null: layers[1] (cat): inputs names conv1 more than once; "
        "each input is read once"
    )


def test_a_join_cannot_be_removed(tmp_path):
    (line,) = errors(tmp_path, BRANCHES, ["layers.cat=null"])
    assert line == (
        "--set layers.cat=null: cannot remove 'cat': it joins 2 inputs, so its readers would "
        "have none to read instead; remove or rewire the layers that read it too"
    )


def test_removing_an_unknown_layer(tmp_path):
    (line,) = errors(tmp_path, BRANCHES, ["layers.relu3=null"])
    assert line.startswith("--set layers.relu3=null: no layer named 'relu3'")
    assert "(did you mean 'relu" in line
