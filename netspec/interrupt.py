"""Stopping a command from outside: Ctrl-C (SIGINT) and SIGTERM, handled alike.

SIGTERM is what `timeout`, batch schedulers and torch's launcher send. Turned into an
exception raised wherever the program is, it unwinds like Ctrl-C: a training run saves
interrupted.pt, half-generated data is removed, the command ends with one line. The exit
status says which it was: 130 for Ctrl-C, 143 for SIGTERM (128 + the signal, as shells do).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C does."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (in the main thread)."""

    def stop(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe(exc: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def exit_status(exc: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
