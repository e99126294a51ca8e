"""The JSON Schema steers a standard validator to the real mistake: a layer's schema is chosen
by its `type` (`if`/`then`), so a misspelt key is one error about that layer, not one per
layer type; and it describes blocks and their uses."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml
from jsonschema.exceptions import best_match

from netspec.spec.model import Spec
from netspec.spec.schema import spec_schema
from tests.conftest import ROOT

RESNET = yaml.safe_load((ROOT / "specs/zoo/resnet18.yaml").read_text())
CONV = {"name": "c", "type": "conv", "filters": 8, "kernel": 3}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def spec(*layers: dict) -> dict:
    return {"name": "x", "input": [3, 8, 8], "layers": list(layers)}


def errors(validator, instance) -> list[tuple[str, list]]:
    return [(e.message, list(e.absolute_path)) for e in validator.iter_errors(instance)]


def test_no_openapi_discriminator_is_left():
    text = json.dumps(spec_schema())
    assert "discriminator" not in text and '"oneOf"' not in text
    assert '"discriminator"' in json.dumps(Spec.model_json_schema())  # what pydantic writes


def test_a_misspelt_key_is_one_error_about_its_layer(validator):
    wrong = spec({**CONV, "kernal": 3})
    assert errors(validator, wrong) == [
        ("Additional properties are not allowed ('kernal' was unexpected)", ["layers", 0])
    ]
    assert best_match(validator.iter_errors(wrong)).message == (
        "Additional properties are not allowed ('kernal' was unexpected)"
    )
    # pydantic's own schema: one `oneOf` failure, the conv's mistake among those of 14 others
    (only,) = jsonschema.Draft202012Validator(Spec.model_json_schema()).iter_errors(wrong)
    assert only.validator == "oneOf" and len(only.context) > 20


def test_a_key_misspelt_in_place_of_a_required_one_is_the_two_facts(validator):
    layer = {k: v for k, v in CONV.items() if k != "kernel"} | {"kernal": 3}
    assert sorted(errors(validator, spec(layer))) == [
        ("'kernel' is a required property", ["layers", 0]),
        ("Additional properties are not allowed ('kernal' was unexpected)", ["layers", 0]),
    ]


def test_an_unknown_type_is_one_error(validator):
    ((message, path),) = errors(validator, spec({**CONV, "type": "cnov"}))
    assert message.startswith("'cnov' is not one of ['conv', 'linear'") and path[-1] == "type"


def test_blocks_and_uses_are_described(validator):
    assert errors(validator, RESNET) == []
    bad = copy.deepcopy(RESNET)
    bad["blocks"]["basic"]["layers"][0]["kernal"] = 3
    bad["layers"][4]["wiht"] = {}
    bad["layers"][5]["repeat"] = 0
    assert sorted(errors(validator, bad), key=lambda e: e[1]) == [
        (
            "Additional properties are not allowed ('kernal' was unexpected)",
            ["blocks", "basic", "layers", 0],
        ),
        ("Additional properties are not allowed ('wiht' was unexpected)", ["layers", 4]),
        ("0 is not valid under any of the given schemas", ["layers", 5, "repeat"]),
    ]


def test_params_are_values_inside_blocks_only(validator):
    in_block = copy.deepcopy(RESNET)
    in_block["blocks"]["basic"]["layers"][0]["kernel"] = "$k"
    assert errors(validator, in_block) == []
    in_block["blocks"]["basic"]["layers"][0]["type"] = "$t"  # a type is written out
    assert len(errors(validator, in_block)) == 1
    ((message, path),) = errors(validator, spec({**CONV, "filters": "$f"}))
    assert path == ["layers", 0, "filters"] and "'$f'" in message
