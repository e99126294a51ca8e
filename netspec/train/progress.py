"""Progress during an epoch: a tqdm bar on a terminal, a plain line every so often otherwise.

A bar redrawn with carriage returns turns a log file into one long line, so when the stream
is not a terminal (a file, a pipe, a job scheduler) it gets whole lines at most every
`every_s` seconds instead.

Both show when the whole run will end, not only the epoch: what is left of this epoch at its
pace so far, and each epoch after it at the mean length of the epochs done (validation
included), or at this epoch's projected length before the first one ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm


@dataclass(frozen=True)
class After:
    """The run beyond the current epoch: how many epochs are left, and the mean length in
    seconds of the epochs done (None before the first has ended)."""

    epochs: int = 0
    epoch_s: float | None = None


class Progress:
    """`update` once per training step; `close` at the end of the epoch (or when it stops)."""

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO = sys.stderr,
        every_s: float = 15,
        quiet: bool = False,
        after: After = After(),
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.label, self.stream, self.every_s = total, label, stream, every_s
        self.quiet = quiet  # counts, shows nothing: a process other than the main one
        self.after, self.clock = after, clock
        self.start = self.last = clock()
        self.done = 0
        self.bar: tqdm | None = None
        if stream.isatty() and not quiet:
            # leave=False: the finished bar is cleared, and the epoch's summary line follows
            self.bar = tqdm(total=total, desc=label, file=stream, leave=False, unit="step")

    def update(self, images: int, loss: float) -> None:
        """One more step done; `images` counts every image of the epoch so far."""
        self.done += 1
        if self.quiet:
            return
        now = self.clock()
        eta = tqdm.format_interval(self.run_left(now))
        if self.bar is not None:
            rate = images / max(now - self.start, 1e-9)
            postfix = f"loss {loss:.4f} {rate:.0f} img/s, run ETA {eta}"
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(1)
        elif now - self.last >= self.every_s:
            self.last = now
            print(
                f"{self.label} step {self.done}/{self.total} loss {loss:.4f}, run ETA {eta}",
                file=self.stream,
                flush=True,
            )

    def run_left(self, now: float) -> float:
        """Seconds until the run's last epoch ends, at the pace so far."""
        per_step = (now - self.start) / max(self.done, 1)
        epoch_s = self.after.epoch_s if self.after.epoch_s is not None else per_step * self.total
        return per_step * (self.total - self.done) + self.after.epochs * epoch_s

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
