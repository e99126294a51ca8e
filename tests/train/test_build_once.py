"""A command builds each spec's graph once and hands it to every check and back end."""

import pytest

import netspec.ir.graph
from netspec.cli import main
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"


@pytest.fixture
def builds(monkeypatch):
    """How many graphs were built: `_add_layers` is the first stage of every build."""
    count = []
    real = netspec.ir.graph._add_layers

    def counted(*args, **kwargs):
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(netspec.ir.graph, "_add_layers", counted)
    return count


@pytest.mark.slow
@pytest.mark.usefixtures("own_cache")
def test_train_builds_once_and_eval_once_per_spec(data, tmp_path, builds):
    run = tmp_path / "run"
    argv = ["train", str(TINY), "--data", str(data), "--epochs", "1", "--workers", "0"]
    assert main([*argv, "--out", str(run)]) == 0
    assert len(builds) == 1
    builds.clear()
    checkpoint = ["--checkpoint", str(run / "last.pt"), "--data", str(data), "--workers", "0"]
    assert main(["eval", str(run / "spec.yaml"), *checkpoint]) == 0
    assert len(builds) == 2  # the spec given, and the one the checkpoint was trained with
