"""Layer names that torch, YAML or a file system would misread, refused or kept intact."""

from __future__ import annotations

import re

import pytest
from netspec.backends.torch_module import Network

from netspec import build_graph, compile, load_spec
from netspec.errors import SpecError
from netspec.spec.layers import NAME_PATTERN, TORCH_MODULE_ATTRIBUTES
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"


def test_reserved_names_are_every_attribute_of_a_compiled_module():
    # a real module instance: dir() of it sees what __init__ sets (training), not only the class's
    model = compile(load_spec(TINY), device="meta")
    assert isinstance(model, Network)
    attributes = {n for n in dir(model) if re.match(NAME_PATTERN, n)} - set(model._modules)
    assert attributes == TORCH_MODULE_ATTRIBUTES
    assert "training" in attributes and "training" not in dir(Network)


@pytest.mark.parametrize("name", ["training", "to", "eval", "forward", "T_destination"])
def test_a_reserved_name_is_refused_at_validation(name):
    with pytest.raises(SpecError) as info:
        load_spec(TINY, [f"layers.conv1.name={name}"])  # before any graph or torch module
    (problem,) = info.value.problems
    assert str(problem) == (
        f"--set layers.conv1.name={name}: layers[0] ({name}): name '{name}' is the name of an "
        f"attribute of every torch module; rename the layer (overriding {TINY}:8:6)"
    )


def test_names_close_to_reserved_ones_compile():
    spec = load_spec(TINY, ["layers.conv1.name=trainer", "layers.relu1.inputs=[trainer]"])
    graph = build_graph(spec)
    assert graph.node("trainer").shape == (8, 14, 14)
    assert compile(spec).get_submodule("trainer").out_channels == 8


FLAT = """\
name: flat
input: [3, 8, 8]
layers:
  - {name: stage.0.conv, type: conv, filters: 4, kernel: 3}
  - {name: stage.0.relu, type: relu}
  - {name: head, type: linear, units: 2}
"""


def test_a_dotted_name_is_a_path_of_modules_as_torch_nests_them(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text(FLAT)
    model = compile(load_spec(path), device="meta")
    assert list(model.state_dict()) == [
        "stage.0.conv.weight", "stage.0.conv.bias", "head.weight", "head.bias",
    ]  # fmt: skip
    assert [name for name, _ in model.get_submodule("stage.0").named_children()] == [
        "conv",
        "relu",
    ]


@pytest.mark.parametrize(
    ("name", "why"),
    [("stage.train.conv", "'train' is the name of an attribute"), ("stage..conv", "must be")],
)
def test_each_part_of_a_dotted_name_is_checked(tmp_path, name, why):
    path = tmp_path / "flat.yaml"
    path.write_text(FLAT.replace("stage.0.conv,", f"{name},").replace("stage.0.relu", "relu"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (problem,) = info.value.problems
    assert why in str(problem)


def test_set_reaches_a_layer_whose_name_is_dotted(tmp_path):
    spec = tmp_path / "dotted.yaml"
    spec.write_text(
        "name: dotted\ninput: [3, 8, 8]\nclasses: 4\nlayers:\n"
        "  - {name: classifier.0, type: conv, filters: 6, kernel: 3}\n"
        "  - {name: classifier.1, type: conv, filters: 2, kernel: 1}\n"
        "  - {name: flat, type: flatten}\n"
    )
    changed = load_spec(spec, ["layers.classifier.1.filters=4"])
    assert [layer.filters for layer in changed.layers[:2]] == [6, 4]
    removed = load_spec(spec, ["layers.classifier.1=null"])
    assert [layer.name for layer in removed.layers] == ["classifier.0", "flat"]
