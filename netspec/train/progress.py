"""Progress during an epoch: a bar on a terminal, a plain line every so often otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO = sys.stderr,
        every_s: float = 15,
        quiet: bool = False,
    ):
        self.total, self.label, self.stream, self.every_s = total, label, stream, every_s
        self.quiet = quiet  # counts, shows nothing: a process other than the main one
        self.tty = stream.isatty() and not quiet
        self.start = self.last = time.perf_counter()
        self.done = 0

    def update(self, images: int, loss: float) -> None:
        self.done += 1
        if self.quiet:
            return
        now = time.perf_counter()
        if self.tty:
            width = 30
            filled = int(width * self.done / max(1, self.total))
            rate = images / max(now - self.start, 1e-9)
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total} loss {loss:.4f} {rate:.0f} img/s"
            )
            self.stream.flush()
        elif now - self.last >= self.every_s:
            self.last = now
            print(
                f"{self.label} step {self.done}/{self.total} loss {loss:.4f}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()
