"""Where a run computes: the device, and the speed-ups that apply on it."""

from __future__ import annotations

import sys

import torch

from netspec.errors import UsageError
from netspec.spec.model import Spec
from netspec.train.allocator import keep_freed_memory
from netspec.train.augment import Finish, Stats
from netspec.train.evaluate import Options


def pick_device(name: str | None) -> torch.device:
    """The device a flag names (checked), or the best available one. On the CPU, where the
    activations live in host memory, freed maps are kept for the next step (see allocator)."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name is not None and not available[name]:
        raise UsageError(f"--device {name}: not available on this machine; use --device cpu")
    device = torch.device(name or next(d for d, ok in available.items() if ok))
    if device.type == "cpu":
        keep_freed_memory()
    return device


def options_for(
    spec: Spec, device: torch.device, stats: Stats | None, note: bool = True
) -> Options:
    """The spec's augmentation (with the training set's `stats`), amp and channels_last,
    which apply on CUDA only (a note says so elsewhere, unless `note` is off: a process other
    than the main one)."""
    cuda = device.type == "cuda"
    for flag in ("amp", "channels_last"):
        if getattr(spec.train, flag) and not cuda and note:
            print(
                f"note: train.{flag} applies on CUDA only; ignored on {device.type}",
                file=sys.stderr,
            )
    finish = Finish(spec.data, stats, device)
    return Options(device, finish, spec.train.amp and cuda, spec.train.channels_last and cuda)
