"""Max pooling, forward + backward and forward alone, against aten's `F.max_pool2d`."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from netspec.backends.torch_layers import MaxPool2d

from benchmarks.timing import Row, cold_and_warm, interleaved, synchronize

SHAPES = ((128, 96, 55, 55), (128, 256, 27, 27))  # AlexNet's pool1 and pool2 inputs, batch 128
KERNEL, STRIDE = 3, 2


Pool = Callable[[torch.Tensor], torch.Tensor]


def _training(pool: Pool, x: torch.Tensor, g: torch.Tensor) -> Callable[[], object]:
    return lambda: torch.autograd.grad(pool(x), x, g)


def _inference(pool: Pool, x: torch.Tensor, g: torch.Tensor) -> Callable[[], object]:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return pool(x)

    return run


def rows(device: torch.device, repeats: int) -> tuple[list[Row], list[str]]:
    ours = MaxPool2d(KERNEL, STRIDE)

    def aten(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, KERNEL, STRIDE)

    table, notes = [], []
    for shape in SHAPES:
        x = torch.randn(shape, device=device).relu_().requires_grad_()
        g = torch.randn_like(aten(x))
        label = "×".join(map(str, shape))
        for what, make in (("forward+backward", _training), ("forward, no grad", _inference)):
            candidates = {"netspec": make(ours, x, g), "aten": make(aten, x, g)}
            start = time.perf_counter()
            candidates["netspec"]()
            synchronize(device)
            notes.append(f"{what} {label} {time.perf_counter() - start:.1f} s")
            seconds = interleaved(candidates, repeats, device)
            table.append(
                Row(
                    f"max pool {KERNEL}/{STRIDE} {what}, {label} fp32",
                    "F.max_pool2d",
                    seconds["netspec"],
                    seconds["aten"],
                )
            )
    first = "max pool's first calls in this run (compiling included): " + ", ".join(notes)
    return table, [first]


FIRST_CALL = f"""
import time
import torch
from netspec.backends.torch_layers import MaxPool2d
pool = MaxPool2d({KERNEL}, {STRIDE})
start = time.perf_counter()
for shape in {SHAPES!r} + ((128, 256, 13, 13),):
    x = torch.randn(shape).relu_().requires_grad_()
    torch.autograd.grad(pool(x).sum(), x)
print(time.perf_counter() - start)
"""


def first_call_in_fresh_processes() -> str:
    """Seconds to the first forward + backward of AlexNet's three pools in a new process
    (torch already imported), with Inductor's cache empty, then filled by that first process."""
    cold, warm = cold_and_warm(FIRST_CALL, timeout=600)
    return (
        "max pool's first calls in a fresh process (pool1, pool2 and pool5 shapes, forward + "
        f"backward), compiling included: {cold:.1f} s with Inductor's cache empty, "
        f"{warm:.1f} s with it filled"
    )
