"""LRN forward + backward against `torch.nn.LocalResponseNorm`, and LRN's first call."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from netspec.backends.torch_layers import LocalResponseNorm
from torch import nn

from benchmarks.timing import Row, cold_and_warm, interleaved, synchronize

SHAPE = (32, 96, 55, 55)  # conv1's output in AlexNet, batch 32
SIZE, ALPHA, BETA, K = 5, 1e-4, 0.75, 2.0
VARIANTS = {  # label: (convention, device groups)
    "paper, 2 groups": ("paper", 2),
    "caffe, 2 groups": ("caffe", 2),
    "caffe, 1 group": ("caffe", 1),
}


def _fwd_bwd(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> Callable[[], object]:
    return lambda: torch.autograd.grad(module(x), x, g)


def rows(device: torch.device, repeats: int) -> tuple[list[Row], list[str]]:
    x = torch.randn(SHAPE, device=device).relu_().requires_grad_()
    g = torch.randn_like(x)
    candidates = {"reference": _fwd_bwd(nn.LocalResponseNorm(SIZE, ALPHA, BETA, K), x, g)}
    notes = []
    for label, (convention, groups) in VARIANTS.items():
        run = _fwd_bwd(LocalResponseNorm(SIZE, ALPHA, BETA, K, convention, groups), x, g)
        start = time.perf_counter()
        run()
        synchronize(device)
        notes.append(f"{label} {time.perf_counter() - start:.1f} s")
        candidates[label] = run
    seconds = interleaved(candidates, repeats, device)
    shape = "×".join(map(str, SHAPE))
    table = [
        Row(
            f"LRN forward+backward, {label}, {shape} fp32",
            "nn.LocalResponseNorm",
            seconds[label],
            seconds["reference"],
        )
        for label in VARIANTS
    ]
    first = "LRN's first call in this run (compiling included): " + ", ".join(notes)
    return table, [first]


FIRST_CALL = f"""
import time
import torch
from netspec.backends.torch_layers import LocalResponseNorm
x = torch.randn{SHAPE}.relu_().requires_grad_()
start = time.perf_counter()
torch.autograd.grad(LocalResponseNorm({SIZE}, {ALPHA}, {BETA}, {K}, "paper", 2)(x), x, x)
print(time.perf_counter() - start)
"""


def first_call_in_fresh_processes() -> str:
    """Seconds to the first LRN forward + backward in a new process (torch already imported),
    with Inductor's on-disk cache empty, then with it filled by that first process."""
    cold, warm = cold_and_warm(FIRST_CALL, timeout=300)
    return (
        f"LRN's first call in a fresh process, compiling included: {cold:.1f} s with "
        f"Inductor's cache empty, {warm:.1f} s with it filled"
    )
