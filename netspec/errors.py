"""The user's mistakes, located.

A spec error is part of netspec's interface: each problem is one line,
`WHERE: CONTEXT: what is wrong, and how to fix it`, and all problems are reported together.
WHERE is `FILE:LINE:COL` for something read from a file, or `--set KEY=VALUE` for an override.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    where: str
    message: str
    context: str = ""

    def __str__(self) -> str:
        parts = [self.where, self.context, self.message]
        return ": ".join(p for p in parts if p)


class SpecError(Exception):
    """One or more mistakes in a spec; the CLI prints them and exits with status 2."""

    def __init__(self, problems: Iterable[Problem], warnings: Iterable[str] = ()):
        self.problems = list(problems)
        self.warnings = list(warnings)  # found before the problems stopped the build
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(Exception):
    """A mistake on the command line or in a data folder: one line, exit status 2."""


class DataError(UsageError):
    """A mistake in the user's data (a folder, a store); `str()` is one line naming the path
    and the fix.

    Raised from a DataLoader worker, it comes back inside a frame <-> exception cycle that
    holds the loader iterator: a caller that catches it and carries on should call
    `traceback.clear_frames(err.__traceback__)`, or the workers linger 5 s each at the next gc.
    """

    def __init__(self, message: str) -> None:
        # A DataLoader re-raises a worker's exception as DataError(<whole traceback text>),
        # whose last line is "netspec.errors.DataError: <message>": keep just the message.
        if "\n" in message:
            message = message.rstrip().splitlines()[-1]
            message = message.removeprefix(f"{__name__}.{type(self).__qualname__}: ")
        super().__init__(message)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


# Set by `netspec train --nproc` for the workers it starts: a folder where each leaves its
# one-line error, which the launcher prints once, however many workers found it.
WORKER_ERRORS = "NETSPEC_WORKER_ERRORS"


def tell(line: str) -> None:
    """Print a one-line error on stderr, or leave it for the launcher in one of its workers."""
    folder = os.environ.get(WORKER_ERRORS)
    if folder:
        try:
            (Path(folder) / f"rank{os.environ.get('RANK', '0')}.txt").write_text(line)
            return
        except OSError:
            pass  # the launcher is gone: say it here
    print(line, file=sys.stderr)


def told(folder: Path) -> list[str]:
    """The distinct lines the workers left in `folder`, in rank order."""
    lines = [p.read_text() for p in sorted(folder.glob("rank*.txt"), key=_rank)]
    return list(dict.fromkeys(lines))


def _rank(path: Path) -> int:
    return int(path.stem.removeprefix("rank") or 0)
