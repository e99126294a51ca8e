"""`netspec build` answers without importing torch; `--check-module` still builds the module."""

import subprocess
import sys

import pytest

from netspec.cli import main
from tests.conftest import ROOT, SPECS, TEST_SPECS

LOADED = """
import sys
from netspec.cli import main
status = main(sys.argv[1:])
print(status, sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision"}))
"""

pytestmark = pytest.mark.slow  # fresh interpreters: about half a second each


def build_in_fresh_process(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", LOADED, "build", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["table", "json"])
def test_build_does_not_import_torch(fmt):
    assert build_in_fresh_process(str(ROOT / "specs/alexnet.yaml"), *fmt) == "0 []"


@pytest.mark.slow
def test_check_module_builds_the_torch_module():
    assert build_in_fresh_process(str(ROOT / "specs/alexnet.yaml"), "--check-module") == (
        "0 ['torch']"
    )


@pytest.mark.parametrize("path", SPECS + TEST_SPECS, ids=lambda p: p.name)
def test_check_module_leaves_the_output_unchanged(path, capsys):
    assert main(["build", str(path)]) == 0
    plain = capsys.readouterr()
    assert main(["build", str(path), "--check-module"]) == 0
    assert capsys.readouterr() == plain


def test_torch_attribute_names_are_refused_without_torch(tmp_path):
    spec = tmp_path / "named.yaml"
    spec.write_text("name: x\ninput: [3, 8, 8]\nlayers:\n  - {name: train, type: relu}\n")
    done = subprocess.run(
        [sys.executable, "-c", LOADED, "build", str(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.stdout.splitlines()[-1] == "2 []"
    assert done.stderr.strip() == (
        f"{spec}:4:12: layers[0] (train): name 'train' is the name of an attribute of every "
        "torch module; rename the layer"
    )
