"""A training step and an inference step of the paper's spec against torchvision's AlexNet.

Both networks get the same synthetic batch size, loss and `torch.optim.SGD` (momentum 0.9); the
paper's network at its 227×227 input with its two device groups, torchvision's at 224×224.
On CUDA each step also runs with autocast and channels-last, as `train.amp` and
`train.channels_last` do. On the CPU the training steps run twice: first with glibc's own
allocation policy, then keeping freed memory as `netspec train` does on the CPU (see
netspec.train.allocator); both networks run under the same policy each time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from benchmarks.timing import Row, interleaved
from netspec import compile, load_spec
from netspec.train.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mode:
    label: str
    amp: bool
    channels_last: bool


FP32 = Mode("fp32", False, False)
AMP = Mode("amp + channels-last", True, True)


def networks(device: torch.device, mode: Mode) -> dict[str, tuple[nn.Module, int]]:
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    paper = compile(load_spec(ROOT / "specs/alexnet.yaml"), device=device)
    reference = torchvision.models.alexnet(weights=None).to(device)
    return {
        "netspec": (paper.to(memory_format=fmt), 227),
        "reference": (reference.to(memory_format=fmt), 224),
    }


def step(
    model: nn.Module, size: int, batch: int, device: torch.device, mode: Mode, train: bool
) -> Callable[[], object]:
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=mode.amp)

    def train_step() -> None:
        with torch.autocast(device.type, enabled=mode.amp):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    @torch.no_grad()
    def infer_step() -> None:
        with torch.autocast(device.type, enabled=mode.amp):
            model(x)

    model.train(train)
    return train_step if train else infer_step


def rows(device: torch.device, repeats: int, batches: list[int]) -> list[Row]:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        return _rows(device, repeats, batches, (True, False), "")
    unkept = _rows(device, repeats, batches, (True,), ", glibc's own allocation")
    keep_freed_memory()  # from here on, as in netspec train; glibc's default cannot come back
    return unkept + _rows(device, repeats, batches, (True, False), ", memory kept")


def _rows(
    device: torch.device, repeats: int, batches: list[int], kinds: tuple[bool, ...], policy: str
) -> list[Row]:
    modes = [FP32, AMP] if device.type == "cuda" else [FP32]
    table = []
    for train in kinds:
        for mode in modes:
            nets = networks(device, mode)
            for batch in batches:
                runs = {
                    name: step(model, size, batch, device, mode, train)
                    for name, (model, size) in nets.items()
                }
                seconds = interleaved(runs, repeats, device)
                kind = "training step" if train else "inference step"
                what = f"AlexNet {kind}, batch {batch}, {mode.label}{policy}"
                table.append(
                    Row(
                        f"{what} (paper spec, 2 groups)",
                        "torchvision alexnet()",
                        seconds["netspec"],
                        seconds["reference"],
                    )
                )
    return table
