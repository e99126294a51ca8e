"""Files written all at once: afterwards a path holds the old file or the new one, never half.

A run can be killed at any moment (out of time, out of memory, Ctrl-C). So every file netspec
writes whole — checkpoints, cached statistics, spec.yaml, metrics.jsonl, curves.png — goes to
a temporary file beside the target, is synced to disk, renamed over the target (atomic on
POSIX), and the directory is synced so that the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# How much of the target's name a temporary name keeps: 255 bytes (the usual limit of one
# name) less the dots, the pid, mkstemp's 8 random characters and ".tmp".
TEMP_NAME_BYTES = 255 - 40


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO]:
    """Yield a file to write; it replaces `path` only if the block finishes.

    One writer per path at a time. Temporary files left by a writer that was killed are
    removed on the next write to the same path.
    """
    path = Path(path)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _temp_prefix(path: Path) -> str:
    # Hidden and ending in .tmp, so a glob for the real files (*.pt) never matches one; the
    # writer's pid lets a later write tell a dead writer's leftover from a live one's. The name
    # is cut short where needed so that any name the file system takes has a temporary name.
    name = os.fsencode(path.name)[:TEMP_NAME_BYTES]
    return f".{os.fsdecode(name)}."


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    prefix = _temp_prefix(path)
    for tmp in path.parent.glob(f"{prefix}*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
