"""What each run of a study came to, read back from its run folder; results.csv.

results.csv holds every run's curves, one row per epoch, so that a reader can recompute each
figure of summary.md; it holds nothing that depends on how fast the runs went, so a rerun of
the study from nothing writes the same file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from netspec.ablate.runs import Job, read_status
from netspec.atomic import atomic_write
from netspec.train.runfolder import RunFolder

LAST = 3  # epochs averaged for a run's final validation error: one epoch's is noisier
COLUMNS = [
    "variant",
    "role",
    "setting",
    "seed",
    "status",
    "epoch",
    "train_loss",
    "train_error",
    "val_top1_error",
    "val_top5_error",
]


@dataclass
class Result:
    """One run: its curves (one value per epoch), and what summary.md reads from them."""

    variant: str
    seed: int
    status: str  # finished, diverged, failed, or unfinished
    setting: str = ""  # the tuned override it trained with
    tuning: bool = False
    epochs_to_target: int | None = None
    seconds: float = 0.0
    trained_by: dict[str, str] = field(default_factory=dict)
    train_losses: list[float] = field(default_factory=list)
    train_errors: list[float] = field(default_factory=list)  # empty: metrics without train_top1
    val_errors: list[float] = field(default_factory=list)
    val5_errors: list[float] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.status == "finished"

    @property
    def epochs(self) -> int:
        return len(self.val_errors)

    @property
    def val_top1_error(self) -> float | None:
        """The mean of the last LAST epochs' validation top-1 error: the headline, chosen
        before looking, rather than the best epoch, which is picked on the same images."""
        return _last(self.val_errors)

    @property
    def val_top5_error(self) -> float | None:
        return _last(self.val5_errors)

    @property
    def best_val_top1_error(self) -> float | None:
        return min(self.val_errors) if self.val_errors else None

    @property
    def train_error(self) -> float | None:
        return self.train_errors[-1] if self.train_errors else None


def _last(curve: list[float]) -> float | None:
    return sum(curve[-LAST:]) / len(curve[-LAST:]) if curve else None


def read_result(job: Job, epochs: int, target: float) -> Result:
    """A run's curves; a run whose metrics lack `train_top1` has no training error."""
    folder = RunFolder(job.folder)
    rows = folder.rows() if folder.metrics.is_file() else []
    status = read_status(job)
    finished = bool(rows) and rows[-1]["epoch"] >= epochs
    said = "diverged" if status.get("status") == "diverged" else None
    result = Result(
        job.variant,
        job.seed,
        said or ("finished" if finished else "unfinished"),
        setting=job.setting,
        tuning=job.tuning,
        trained_by={k: str(status[k]) for k in ("netspec", "torch", "threads") if k in status},
    )
    if not rows:
        return result
    result.seconds = sum(r.get("seconds", 0.0) for r in rows)
    result.train_losses = [r["train_loss"] for r in rows]
    result.val_errors = [1 - r["val_top1"] for r in rows]
    result.val5_errors = [1 - r["val_top5"] for r in rows]
    if all("train_top1" in r for r in rows):
        result.train_errors = [1 - r["train_top1"] for r in rows]
        reached = [r["epoch"] for r in rows if 1 - r["train_top1"] <= target]
        result.epochs_to_target = reached[0] if reached else None
    return result


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(results: list[Result], path: Path) -> None:
    """One row per run and epoch (one row without an epoch for a run that has none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in results:
        head = [r.variant, "tune" if r.tuning else "report", r.setting, r.seed, r.status]
        if not r.val_errors:
            writer.writerow([_cell(v) for v in head] + [""] * (len(COLUMNS) - len(head)))
        for e in range(r.epochs):
            train = r.train_errors[e] if r.train_errors else None
            row = [*head, e + 1, r.train_losses[e], train, r.val_errors[e], r.val5_errors[e]]
            writer.writerow([_cell(v) for v in row])
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
