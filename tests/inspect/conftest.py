"""What the inspection tests share (beside tests/conftest.py's images): checkpoints made without
training (weights as drawn, or as a test sets them) for everything but the trained runs."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from netspec import compile, load_spec
from netspec.cli import main
from netspec.train.checkpoint import save_checkpoint
from netspec.train.runfolder import spec_yaml
from netspec.train.shapes_data import CLASSES
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"
# No statistics to fit and no loader processes to start: the fast tests stay fast.
PLAIN = ["data.mean=none", "data.pca=none", "data.workers=0"]
NAMES = sorted(CLASSES)


def make_checkpoint(
    path: Path,
    overrides: tuple[str, ...] = (),
    weights: Callable[[torch.nn.Module], None] | None = None,
    **extra: object,
) -> Path:
    """A checkpoint as train writes one, of the tiny spec's initial weights (or `weights`
    applied to them)."""
    spec = load_spec(TINY, [*PLAIN, *overrides])
    torch.manual_seed(0)
    model = compile(spec)
    if weights is not None:
        with torch.no_grad():
            weights(model)
    payload = {"model": model.state_dict(), "spec": spec_yaml(spec), "stats": None}
    save_checkpoint(path, {**payload, "classes": NAMES, **extra})
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


def run(capsys, *args: str) -> tuple[int, str, list[str]]:
    """`netspec ARGS…` in this process: status, stdout, stderr's lines."""
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()
