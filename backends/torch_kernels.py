"""Compiling a layer's arithmetic with Inductor where it pays, and running it eagerly where not.

A layer written as a few torch operations (LRN, max pooling) makes several passes over its
activation maps, each allocating a new map; `torch.compile` fuses them into one loop. Compiling
costs seconds per function and shape, so small inputs (below a layer's threshold) stay eager,
and `NETSPEC_COMPILE=0` switches compiling off; where compiling fails (no C++ compiler), the
layer says so once and runs uncompiled from then on.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

COMPILE_ENV = "NETSPEC_COMPILE"
COMPILED_DEVICES = frozenset({"cpu", "cuda"})


def _inductor_one_thread(
    gm: torch.fx.GraphModule, example_inputs: list[Any], **options: Any
) -> Any:
    """Inductor, compiling in this process: a pool of compile workers costs more to start
    than the one small kernel takes to build. `options` are more Inductor settings."""
    from torch._inductor import config
    from torch._inductor.compile_fx import compile_fx

    with config.patch(compile_threads=1, **options):
        return compile_fx(gm, example_inputs)


def compiling_enabled() -> bool:
    return os.environ.get(COMPILE_ENV, "1") != "0"


class Kernels:
    """A layer's functions, each eager and compiled on first use; compiling is given up, with
    one warning, the first time it fails.

    `layer` names the layer in that warning; `min_size` gives the fewest values an input needs
    to be worth compiling for (read at each call, so that tests may lower it); `dynamic` are the
    dimensions of every tensor argument that may change between calls without recompiling;
    `options` are Inductor settings for this layer's kernels."""

    def __init__(
        self,
        layer: str,
        min_size: Callable[[], int],
        devices: frozenset[str] = COMPILED_DEVICES,
        dynamic: tuple[int, ...] = (0,),
        options: dict[str, Any] | None = None,
    ) -> None:
        self.layer, self.min_size, self.devices, self.dynamic = layer, min_size, devices, dynamic
        self.options = options or {}
        self.compiled: dict[Callable[..., Any], Callable[..., Any]] = {}
        self.failed = False

    def wanted(self, x: torch.Tensor, values: int | None = None) -> bool:
        """Whether to compile for x, or for `values` values on x's device."""
        return (
            not self.failed
            and compiling_enabled()
            and x.device.type in self.devices
            and (x.numel() if values is None else values) >= self.min_size()
        )

    def run(
        self,
        fn: Callable[..., Any],
        *tensors: torch.Tensor,
        values: int | None = None,
        **static: Any,
    ) -> Any:
        """fn(*tensors, **static), compiled where `wanted`; the static arguments are constants
        of the compiled code (a new value compiles anew). Whether it pays is decided by the
        first tensor's size, or by `values` (a backward decides as its forward did)."""
        if not self.wanted(tensors[0], values):
            return fn(*tensors, **static)
        if fn not in self.compiled:
            backend = functools.partial(_inductor_one_thread, **self.options)
            self.compiled[fn] = torch.compile(fn, dynamic=False, backend=backend)
        for t in tensors:
            for dim in self.dynamic:
                torch._dynamo.maybe_mark_dynamic(t, dim)
        try:
            return self.compiled[fn](*tensors, **static)
        except torch._dynamo.exc.BackendCompilerFailed as exc:
            self.failed = True
            reason = str(exc).strip().splitlines()[0]
            warnings.warn(
                f"{self.layer} runs uncompiled, and so more slowly: torch.compile failed "
                f"({reason}). Set {COMPILE_ENV}=0 to skip the attempt.",
                RuntimeWarning,
                stacklevel=4,
            )
            return fn(*tensors, **static)
