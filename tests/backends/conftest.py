import warnings
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch
from netspec.backends import torch_kernels


def compiling_everything(monkeypatch: pytest.MonkeyPatch, layer: ModuleType) -> Iterator:
    """A layer module's (torch_lrn's, torch_pool's) every call compiled, however small, with
    fresh kernels; the fallback's warning fails the test, and so does a failed compile."""
    kernels = layer._Kernels()
    monkeypatch.setattr(layer, "KERNELS", kernels)
    monkeypatch.setattr(layer, "MIN_COMPILED", 0)
    monkeypatch.delenv(torch_kernels.COMPILE_ENV, raising=False)
    with warnings.catch_warnings(), torch._dynamo.config.patch(recompile_limit=64):
        warnings.simplefilter("error", RuntimeWarning)
        yield kernels
    assert not kernels.failed
