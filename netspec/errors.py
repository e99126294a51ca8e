"""The user's mistakes, located.

A spec error is part of netspec's interface: each problem is one line,
`WHERE: CONTEXT: what is wrong, and how to fix it`, and all problems are reported together.
WHERE is `FILE:LINE:COL` for something read from a file, or `--set KEY=VALUE` for an override.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
