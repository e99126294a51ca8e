"""Where a command writes, checked before it does any work.

A command that finds out only at its end that it cannot write its result has wasted the
minutes (or hours) before: a folder given where a file goes, a file where a folder goes, a
folder the user may not write, or the kernel's /proc and /sys. Two kinds of output cover every
command: a file (draw -o, export -o) and a folder (train --out and --resume, ablate --out,
pack -o). Each check raises a UsageError whose one line names the path and the fix; what a
folder may already hold (a run, a store) is the command's own business.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from netspec.errors import UsageError

KERNEL = ("/proc", "/sys")  # file systems that show the kernel's state; nothing of ours goes there

# os.access asks about the effective user where it can: the one that will write.
_EFFECTIVE = os.access in os.supports_effective_ids


def check_file(path: Path) -> None:
    """`path` can be created, or replaced, as a file in a folder that exists."""
    mode = _mode(path)
    _not_kernel(path)
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"{path} is a folder: give the file to write in it, e.g. {path / 'out'}")
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{path} is not a regular file (a device, pipe or socket): give a file")
    folder = path.parent
    folder_mode = _mode(folder)
    if folder_mode is None:
        raise UsageError(f"{path}: there is no folder {folder}; create it first")
    if not stat.S_ISDIR(folder_mode):
        raise UsageError(f"{path}: {folder} is a file, not a folder")
    _writable(folder, path)
    if mode is not None and not _access(path, os.W_OK):
        raise UsageError(f"{path} is read-only: make it writable, or give another file")


def check_folder(path: Path) -> None:
    """`path` is a folder this process can write into, or one it can create."""
    existing, mode = path, _mode(path)
    _not_kernel(path)
    if mode is not None and not stat.S_ISDIR(mode):
        raise UsageError(f"{path} is a file, not a folder: give a folder")
    while mode is None and existing != existing.parent:
        existing = existing.parent
        mode = _mode(existing)
    if mode is not None and not stat.S_ISDIR(mode):
        raise UsageError(f"{path}: {existing} is a file, not a folder")
    _writable(existing, path)


def _mode(path: Path) -> int | None:
    """The file's type and permissions, or None where nothing is; a path that cannot be
    looked up (a folder on the way that may not be entered, a name too long, a symlink loop)
    is the user's to fix."""
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        fix = "; use a shorter name" if exc.errno == errno.ENAMETOOLONG else ""
        raise UsageError(f"{path}: {exc.strerror or exc}{fix}") from None


def _not_kernel(path: Path) -> None:
    real = os.path.realpath(path)
    for root in KERNEL:
        if real == root or real.startswith(f"{root}/"):
            raise UsageError(f"{path} is under {root}, the kernel's files: write elsewhere")


def _access(path: Path, mode: int) -> bool:
    return os.access(path, mode, effective_ids=_EFFECTIVE)


def _writable(folder: Path, path: Path) -> None:
    if not _access(folder, os.W_OK | os.X_OK):
        into = "it" if folder == path else str(folder)
        raise UsageError(f"{path}: no permission to write into {into}; give a path you may write")
