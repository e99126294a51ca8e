"""The run folder: what a run writes and what a resumed run reads back.

spec.yaml       the resolved spec (a resumed run reads this, not the user's file)
metrics.jsonl   one JSON object per finished epoch, appended and fsynced
last.pt         the resume point, written atomically after every epoch
best.pt         the epoch with the best validation top-1
interrupted.pt  the weights of an epoch cut short by Ctrl-C
curves.png      loss and accuracy against epoch
tb/             TensorBoard event files, with train.tensorboard (a view of metrics.jsonl)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.spec.model import Spec

RESUME_MAY_CHANGE = {"train.epochs", "data.workers", "train.tensorboard", "train.tensorboard_every"}


def spec_yaml(spec: Spec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)


def changed_keys(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain-data documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for key in sorted(old.keys() | new.keys(), key=str)
            for change in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


class RunFolder:
    """The files of one run, each written whole or appended line by line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.metrics = self.path / "metrics.jsonl"
        self.last = self.path / "last.pt"
        self.best = self.path / "best.pt"
        self.interrupted = self.path / "interrupted.pt"
        self.curves = self.path / "curves.png"
        self.spec = self.path / "spec.yaml"

    def start(self, spec: Spec) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_spec(spec)
        self.write_rows([])

    def write_spec(self, spec: Spec) -> None:
        with atomic_write(self.spec) as f:
            f.write(spec_yaml(spec))

    def check_resumable(self, saved_spec: str, spec: Spec) -> None:
        """A resumed run may change only what does not change what it computes."""
        changed = changed_keys(yaml.safe_load(saved_spec), yaml.safe_load(spec_yaml(spec)))
        if set(changed) - RESUME_MAY_CHANGE:
            raise UsageError(
                f"--resume {self.path}: {', '.join(changed)} changed since the run started; "
                f"a resumed run may change only {', '.join(sorted(RESUME_MAY_CHANGE))}: "
                "start a new run (--out) for other settings"
            )

    def rows(self) -> list[dict[str, Any]]:
        """metrics.jsonl's rows; a last line cut short by a kill is dropped."""
        rows = []
        for line in self.metrics.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        with atomic_write(self.metrics) as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))

    def append_row(self, row: dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
