"""What each run of a study came to, read back from its run folder; results.csv."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from netspec.ablate.runs import Job, read_status
from netspec.atomic import atomic_write
from netspec.train.runfolder import RunFolder

COLUMNS = [
    "variant",
    "seed",
    "epochs",
    "val_top1",
    "val_top5",
    "train_loss",
    "train_error",
    "epochs_to_target",
    "seconds",
    "status",
]


@dataclass
class Result:
    """One run: its best validation accuracies, its last epoch's training numbers, and its
    curves (training and validation top-1 error, one value per epoch)."""

    variant: str
    seed: int
    status: str  # finished, diverged, failed, or unfinished
    epochs: int = 0
    val_top1: float | None = None
    val_top5: float | None = None
    train_loss: float | None = None
    train_error: float | None = None
    epochs_to_target: int | None = None
    seconds: float = 0.0
    train_errors: list[float] = field(default_factory=list)
    val_errors: list[float] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.status == "finished"


def read_result(job: Job, epochs: int, target: float) -> Result:
    """A run's row; a run whose metrics lack `train_top1` has no training error."""
    folder = RunFolder(job.folder)
    rows = folder.rows() if folder.metrics.is_file() else []
    diverged = read_status(job).get("status") == "diverged"
    finished = bool(rows) and rows[-1]["epoch"] >= epochs
    status = "diverged" if diverged else "finished" if finished else "unfinished"
    result = Result(job.variant, job.seed, status, epochs=len(rows))
    if not rows:
        return result
    result.val_top1 = max(r["val_top1"] for r in rows)
    result.val_top5 = max(r["val_top5"] for r in rows)
    result.train_loss = rows[-1]["train_loss"]
    result.seconds = sum(r.get("seconds", 0.0) for r in rows)
    result.val_errors = [1 - r["val_top1"] for r in rows]
    if all("train_top1" in r for r in rows):
        result.train_errors = [1 - r["train_top1"] for r in rows]
        result.train_error = result.train_errors[-1]
        reached = [r["epoch"] for r in rows if 1 - r["train_top1"] <= target]
        result.epochs_to_target = reached[0] if reached else None
    return result


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_csv(results: list[Result], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in results:
        row = [getattr(r, c) for c in COLUMNS]
        row[COLUMNS.index("seconds")] = f"{r.seconds:.1f}"
        writer.writerow([_cell(v) for v in row])
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
