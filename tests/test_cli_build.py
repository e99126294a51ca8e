"""`netspec build` and `netspec schema` as a user runs them."""

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from netspec.cli import main
from tests.conftest import ROOT, SPECS, TEST_SPECS, ZOO_SPECS


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "netspec.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_build_prints_table_with_totals(capsys):
    assert main(["build", str(ROOT / "specs/alexnet.yaml")]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["conv2"][:4] == ["conv2", "conv", "group", "256×27×27"]
    assert rows["conv3"][2:4] == ["all", "⇄"]
    assert rows["norm1"][2:4] == ["per", "group"]
    assert rows["fc6"][-2:] == ["37,752,832", "37,748,736"]
    assert rows["total"][-2:] == ["60,965,224", "724,406,816"]


def test_build_json(capsys):
    assert main(["build", str(ROOT / "specs/alexnet.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "alexnet"
    assert info["input"] == [3, 227, 227]
    assert (info["params"], info["macs"]) == (60_965_224, 724_406_816)
    assert [layer["name"] for layer in info["layers"]][:4] == ["conv1", "relu1", "norm1", "pool1"]
    conv1 = info["layers"][0]
    assert conv1 == {
        "name": "conv1",
        "type": "conv",
        "inputs": ["input"],
        "output_shape": [96, 55, 55],
        "params": 34_944,
        "macs": 105_415_200,
        "connectivity": "all",
        "cross_bytes": 0,
    }
    assert sum(layer["params"] for layer in info["layers"]) == info["params"]


def test_build_with_overrides(capsys):
    spec = str(ROOT / "specs/alexnet.yaml")
    assert (
        main(["build", spec, "--json", "--set", "classes=10", "--set", "layers.conv1.filters=64"])
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    layers = {layer["name"]: layer for layer in info["layers"]}
    assert layers["fc8"]["output_shape"] == [10]
    assert layers["conv1"]["params"] == 64 * 3 * 11 * 11 + 64
    assert layers["conv2"]["params"] == 256 * 32 * 25 + 256


def test_build_exit_status_and_no_traceback_on_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    layer = "  - {name: c, type: conv, filters: 4, kernel: 0}"
    bad.write_text(f"name: x\ninput: [3, 8, 8]\nlayers:\n{layer}\n")
    result = run("build", str(bad))
    assert result.returncode == 2
    col = layer.index("0}") + 1  # the value that is wrong
    assert result.stderr.strip() == f"{bad}:4:{col}: layers[0] (c): kernel must be ≥ 1, got 0"
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # seconds of work: the slow lane keeps the fast one under 30 s
def test_schema_accepts_every_shipped_spec():
    result = run("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SPECS + TEST_SPECS + ZOO_SPECS:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], (path, errors[:1])
    assert not validator.is_valid(
        {"name": "x", "input": [3, 8, 8], "layers": [{"name": "a", "type": "convv"}]}
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_shipped_spec_builds_with_only_its_known_warning(path):
    result = run("build", str(path))
    assert result.returncode == 0, result.stderr
    expected_warnings = 1 if path.name == "torchvision-alexnet.yaml" else 0
    assert len(result.stderr.splitlines()) == expected_warnings
