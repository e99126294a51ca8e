"""Every layer type of the spec language is handled by every per-type table.

A layer type's facts live on its model class (netspec/spec/layers.py); its back-end parts are
one entry in each table below, where an entry for a base class (`Activation`) serves the types
derived from it. A new type missing from any of them fails here, naming the table.
"""

import pytest
from netspec.backends import diagram_style
from netspec.backends.onnx_export import EMITTERS
from netspec.backends.torch_module import BUILDERS
from netspec.backends.torch_source import SOURCES

from netspec.ir.shapes import RULES
from netspec.spec import layers as L

TABLES = {
    "shape rules": RULES,
    "torch builders": BUILDERS,
    "ONNX emitters": EMITTERS,
    "PyTorch source rules": SOURCES,
    "diagram labels": diagram_style.DESCRIBE,
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_covers_every_layer_type(table):
    missing = [m.__name__ for m in L.LAYER_MODELS if not TABLES[table].covers(m)]
    assert missing == []


def test_every_layer_type_names_a_diagram_kind():
    for model in L.LAYER_MODELS:
        assert model.kind in diagram_style.KINDS, model.__name__


def test_the_facts_each_type_declares():
    keeps = {m.__name__ for m in L.LAYER_MODELS if m.keeps_width}
    assert keeps == {"ReLU", "Tanh", "GELU", "Sigmoid", "Dropout", "BatchNorm"}
    stays = {m.__name__ for m in L.LAYER_MODELS if not m.folds}
    assert stays == {"Conv", "Linear", "Concat", "Add"}  # weights and joins keep their boxes
    assert {m.kind for m in (L.ReLU, L.GELU, L.Sigmoid)} == {"activation"}


def test_a_table_without_an_entry_names_itself_and_the_type():
    with pytest.raises(KeyError, match="no ONNX emitter for layer type Layer"):
        EMITTERS[L.Layer]
