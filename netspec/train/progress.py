"""Progress during an epoch: a tqdm bar on a terminal, a plain line every so often otherwise.

A bar redrawn with carriage returns turns a log file into one long line, so when the stream
is not a terminal (a file, a pipe, a job scheduler) it gets whole lines at most every
`every_s` seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """`update` once per training step; `close` at the end of the epoch (or when it stops)."""

    def __init__(
        self, total: int, label: str, stream: TextIO = sys.stderr, every_s: float = 15
    ) -> None:
        self.total, self.label, self.stream, self.every_s = total, label, stream, every_s
        self.start = self.last = time.perf_counter()
        self.done = 0
        self.bar: tqdm | None = None
        if stream.isatty():
            # leave=False: the finished bar is cleared, and the epoch's summary line follows
            self.bar = tqdm(total=total, desc=label, file=stream, leave=False, unit="step")

    def update(self, images: int, loss: float) -> None:
        """One more step done; `images` counts every image of the epoch so far."""
        self.done += 1
        now = time.perf_counter()
        if self.bar is not None:
            rate = images / max(now - self.start, 1e-9)
            self.bar.set_postfix_str(f"loss {loss:.4f} {rate:.0f} img/s", refresh=False)
            self.bar.update(1)
        elif now - self.last >= self.every_s:
            self.last = now
            print(
                f"{self.label} step {self.done}/{self.total} loss {loss:.4f}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
