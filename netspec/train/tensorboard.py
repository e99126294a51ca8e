"""TensorBoard scalars for a run, in its folder's `tb/`: a view for TensorBoard, not a record.

metrics.jsonl stays the source of truth; this writes the same values. Each epoch's row goes
in as `epoch/<key>` (train_loss, val_loss, val_top1, val_top5, lr, images_per_s, …: every
number in the row), and every `log_every` steps the mean training loss of those steps and the
learning rate in force go in as `step/train_loss` and `step/lr`. Every scalar is placed at the
global step (epoch × steps per epoch + step), so the two kinds share one axis; an epoch's row
sits at the step that ends it.

A resumed run purges what was logged after the checkpoint it resumes from, so an epoch cut
short and run again is not shown twice. `tensorboard` is an optional extra.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from netspec.errors import UsageError

INSTALL = "pip install 'netspec[tensorboard]'"


def writer_class() -> Any:
    """TensorBoard's SummaryWriter, or one line saying how to install it. Every process of a
    run asks, not only the one that writes: a mistake found by one process alone would leave
    the others waiting for it in a collective."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            f"--tensorboard (train.tensorboard) needs the tensorboard package: {INSTALL}"
        ) from None
    return SummaryWriter


class Board:
    """The run's event files; created when the first epoch starts, flushed after each."""

    def __init__(self, path: Path, log_every: int):
        self._open = writer_class()
        self.path, self.log_every = path, log_every
        self.writer: Any = None
        self.step = 0

    def begin_epoch(self, epoch: int, steps: int, lr: float) -> Callable[[int, float], None]:
        """Start epoch `epoch` (0-based) of `steps` steps; returns what to call after each."""
        start = epoch * steps
        if self.writer is None:
            # a resumed run hides what the killed one logged after its last checkpoint
            self.writer = self._open(str(self.path), purge_step=start + 1 if epoch else None)
        losses: list[float] = []

        def on_step(step: int, loss: float) -> None:
            losses.append(loss)
            if step % self.log_every == 0 or step == steps:
                at = start + step
                self.writer.add_scalar("step/train_loss", sum(losses) / len(losses), at)
                self.writer.add_scalar("step/lr", lr, at)
                losses.clear()

        self.step = start + steps
        return on_step

    def end_epoch(self, row: dict[str, Any]) -> None:
        """The epoch's metrics.jsonl row, at the step that ended the epoch."""
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{key}", value, self.step)
        self.writer.flush()
