"""What the training tests share: a tiny generated image folder, and a cache of their own."""

import pytest

from netspec.train.shapes_data import ensure_shapes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """`shapes` at 32 pixels, 6 training and 3 validation images a class."""
    return ensure_shapes(
        tmp_path_factory.mktemp("cache"), seed=3, size=32, train_per_class=6, val_per_class=3
    )


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """NETSPEC_CACHE in the test's own folder: no test sees another's cached statistics."""
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
