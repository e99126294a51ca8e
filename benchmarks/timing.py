"""Interleaved medians: every candidate runs once per round, rounds repeat."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Row:
    """One line of the table: netspec's figure, the reference's, and netspec's speed ratio."""

    what: str
    reference: str
    ours: float  # seconds per call, or images/s when `per_second`
    theirs: float
    per_second: bool = False

    @property
    def ratio(self) -> float:
        """How many times faster netspec is (below 1: slower)."""
        return self.ours / self.theirs if self.per_second else self.theirs / self.ours


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device | None = None,
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds per call of each candidate, run in turn `repeats` times after `warmup`."""
    device = device or torch.device("cpu")
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def cold_and_warm(code: str, timeout: float) -> tuple[float, float]:
    """Seconds `code` prints (its last word) in a new process, first with Inductor's on-disk
    cache empty, then with it filled by that first process."""
    seconds = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache},
                capture_output=True,
                text=True,
                check=True,
                timeout=timeout,
            )
            seconds.append(float(done.stdout.split()[-1]))
    return seconds[0], seconds[1]
