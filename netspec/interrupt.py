"""Stopping a command from outside: Ctrl-C (SIGINT) and SIGTERM, handled alike.

SIGTERM is what `timeout`, batch schedulers and torch's launcher send. Turned into an
exception raised wherever the program is, it unwinds like Ctrl-C: a training run saves
interrupted.pt, half-generated data is removed, the command ends with one line. The exit
status says which it was: 130 for Ctrl-C, 143 for SIGTERM (128 + the signal, as shells do).

An exception raised by a signal handler can land inside a finalizer (a DataLoader iterator's
`__del__`, a weakref callback), where Python prints it and carries on. So each signal is also
recorded, and `raise_pending` raises it again at the loop's next step: a Ctrl-C is never lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C does."""


STOPS: dict[int, type[KeyboardInterrupt]] = {
    signal.SIGINT: KeyboardInterrupt,
    signal.SIGTERM: Terminated,
}
_pending: list[type[KeyboardInterrupt]] = []  # signals received in the current block
_deferring: list[bool] = []  # inside `deferred()`: record, do not raise


def _stop(signum: int, frame: Any) -> None:
    _pending.append(STOPS[signum])
    if not _deferring:
        raise STOPS[signum]


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a signal is recorded, not raised; it is raised as the block ends.

    For imports: an exception raised by a signal handler while torch initialises a C++
    extension (torch.distributed's `_c10d_init`) crosses pybind11 and aborts the process
    ("terminate called after throwing an instance of 'pybind11::error_already_set'")."""
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
    raise_pending()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGINT raises KeyboardInterrupt and SIGTERM `Terminated` (in the main
    thread), and both are recorded for `raise_pending`."""
    previous = {signum: signal.signal(signum, _stop) for signum in STOPS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _pending.clear()


def interrupted() -> bool:
    """Whether a signal arrived in this block (an error may be its consequence, e.g. a
    collective that failed because another process stopped first)."""
    return bool(_pending)


def raise_pending() -> None:
    """Raise again a signal received in this block, in case a finalizer swallowed it."""
    if _pending:
        raise _pending[0]


def describe(exc: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def exit_status(exc: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """Make the kernel kill this process when `parent`, the process that started it, dies,
    however it dies (kill -9 included), so that no worker outlives its command; Linux only.
    Called first thing in a worker process."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def killed_with_this_process() -> Callable[[], None]:
    """A `preexec_fn` for subprocess.Popen: the child is killed (SIGKILL) when this process
    dies, however it dies (kill -9 included), so that no child outlives its command; Linux only.

    The kernel sends the signal when the thread that started the child ends, so a child must
    be started from a thread that outlives it (the main thread). libc's prctl is looked up
    here, in the parent: between fork and exec the child only makes system calls, and takes
    no lock (an import, a dlopen) that another thread of the parent may have held at the fork.
    """
    parent = os.getpid()
    prctl = None
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    kill = int(signal.SIGKILL)

    def in_child() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, kill)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return in_child
