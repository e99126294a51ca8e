from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TEST_SPECS = sorted((ROOT / "tests" / "nets").glob("*.yaml"))
ZOO_SPECS = sorted((ROOT / "specs" / "zoo").glob("*.yaml"))  # full size: tests/test_zoo.py


@pytest.fixture(autouse=True)
def _quiet_threads():
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """`shapes` at 32 pixels, 6 training and 3 validation images a class: the tiny image
    folder the training and inspection tests share."""
    from netspec.train.shapes_data import ensure_shapes

    return ensure_shapes(
        tmp_path_factory.mktemp("cache"), seed=3, size=32, train_per_class=6, val_per_class=3
    )


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """NETSPEC_CACHE in the test's own folder: no test sees another's cached statistics."""
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
