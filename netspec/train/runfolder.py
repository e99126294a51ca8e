"""The run folder: what a run writes and what a resumed run reads back.

spec.yaml       the resolved spec (a resumed run reads this, not the user's file)
metrics.jsonl   one JSON object per finished epoch, appended and fsynced
last.pt         the resume point, written atomically after every epoch
best.pt         the epoch with the best validation top-1, written before last.pt
interrupted.pt  the weights of an epoch cut short by Ctrl-C or SIGTERM
curves.png      loss and accuracy against epoch
tb/             TensorBoard event files, with train.tensorboard (a view of metrics.jsonl)
.lock           held (flock) by the one process writing the run

best.pt is written before last.pt, so a kill between the two leaves a best.pt one epoch
ahead of last.pt, which the resumed run simply writes again; a run folder from before that
order may hold a best.pt older than the epoch last.pt says was the best, and resuming
repairs it from last.pt, which is that epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.spec.document import dump_yaml, parse_yaml
from netspec.spec.model import Spec
from netspec.train.checkpoint import (
    RESUME_FIELDS,
    CheckpointError,
    load_checkpoint,
    require,
    save_checkpoint,
)

RESUME_MAY_CHANGE = {"train.epochs", "data.workers", "train.tensorboard", "train.tensorboard_every"}
_HELD: set[int] = set()  # lock descriptors this process holds


def _close_held_in_child() -> None:
    # A forked child (a DataLoader worker) must not keep the lock alive after its parent dies.
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def spec_yaml(spec: Spec) -> str:
    """The spec as YAML that reads back to the same spec (`name: '1e5'` stays a string)."""
    return dump_yaml(spec.model_dump(mode="json", exclude_none=True))


def default_out(spec: Spec, now: float | None = None) -> Path:
    """`runs/<name>-<time>`, the name reduced to characters every file system takes."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name).strip("._-")[:64] or "run"
    return Path("runs") / f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def changed_keys(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain-data documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for key in sorted(old.keys() | new.keys(), key=str)
            for change in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


HOLDER_WAIT = 1.0  # seconds a refused process waits for the holder to write its pid


def holder_said(fd: int) -> str:
    """` (pid N)` of the process holding a lock file, or "" if it has not said: the holder
    writes its pid just after taking the lock, so a process refused in between waits a
    moment for it rather than naming no one."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder.isdigit():
            return f" (pid {holder})"
        if time.monotonic() > deadline:
            return ""
        time.sleep(0.02)


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
        self.lock_file = self.path / ".lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Create the folder and hold it for this process: a second `netspec train` into it
        is refused at once. The lock dies with the process, however it ends."""
        fd = self._open_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = holder_said(fd)
            os.close(fd)
            raise UsageError(
                f"{self.path} is in use by another netspec train{pid}: wait for it to "
                "finish, or choose another --out"
            ) from None
        _HELD.add(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            _HELD.discard(fd)
            os.close(fd)

    def _open_lock(self) -> int:
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"{self.path} is a file, not a folder: choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(
                f"{self.path}: cannot write a run folder there ({exc.strerror or exc}); "
                "choose another --out"
            ) from None

    def start(self, spec: Spec) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_spec(spec)
        self.write_rows([])

    def write_spec(self, spec: Spec) -> None:
        with atomic_write(self.spec) as f:
            f.write(spec_yaml(spec))

    def check_resumable(self, saved_spec: str, spec: Spec) -> None:
        """A resumed run may change only what does not change what it computes."""
        try:
            saved = parse_yaml(saved_spec, str(self.last)).data
        except Exception:  # a spec string netspec did not write: it is not this run's
            raise CheckpointError(
                f"{self.last}: its 'spec' is not a spec netspec wrote; "
                "resume from a last.pt written by netspec train"
            ) from None
        changed = changed_keys(saved, parse_yaml(spec_yaml(spec), "").data)
        if set(changed) - RESUME_MAY_CHANGE:
            raise UsageError(
                f"--resume {self.path}: {', '.join(changed)} changed since the run started; "
                f"a resumed run may change only {', '.join(sorted(RESUME_MAY_CHANGE))}: "
                "start a new run (--out) for other settings"
            )

    def resume_state(self, spec: Spec) -> dict[str, Any]:
        """last.pt, checked to hold everything a resume needs and to be a run of `spec`
        (up to what a resume may change). Reads only: a refused resume changes nothing."""
        state = load_checkpoint(self.last)
        require(self.last, state, RESUME_FIELDS, "resume a run")
        self.check_resumable(state["spec"], spec)
        return state

    def repair_best(self, state: dict[str, Any]) -> bool:
        """Rewrite best.pt from last.pt when last.pt's epoch is the best one and best.pt
        (missing, damaged, or from an earlier epoch) does not hold it."""
        metrics = state.get("metrics")
        if not isinstance(metrics, dict) or metrics.get("val_top1") != state["best_top1"]:
            return False  # the best epoch is an earlier one, which best.pt has held since
        try:
            held = load_checkpoint(self.best, mmap=True).get("best_top1")
        except CheckpointError:
            held = None
        if isinstance(held, float) and held >= state["best_top1"]:
            return False
        save_checkpoint(self.best, state)
        return True

    def rows(self) -> list[dict[str, Any]]:
        """metrics.jsonl's rows; a last line cut short by a kill is dropped."""
        try:
            text = self.metrics.read_text()
        except FileNotFoundError:
            raise UsageError(
                f"{self.metrics} is missing, and with it the run's history: restore it, "
                "or start a new run with --out"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise UsageError(f"{self.metrics}: cannot read it ({reason})") from None
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def rows_until(self, epoch: int) -> list[dict[str, Any]]:
        """The rows of epochs 1 … `epoch`, which a resumed run keeps; later ones (logged
        after the last checkpoint) are dropped. Gaps or foreign lines are one-line errors."""
        rows = [r for r in self.rows() if not (isinstance(r, dict) and _after(r, epoch))]
        epochs = [r.get("epoch") if isinstance(r, dict) else None for r in rows]
        if epochs != list(range(1, epoch + 1)):
            raise UsageError(
                f"{self.metrics} does not hold epochs 1 to {epoch}, which last.pt follows: "
                "restore it, or start a new run with --out"
            )
        return rows

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        with atomic_write(self.metrics) as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))

    def append_row(self, row: dict[str, Any]) -> None:
        """Add an epoch's row; never a second row for an epoch already there, which would
        mean that another process is training this run too."""
        epochs = [r.get("epoch") for r in self.rows() if isinstance(r, dict)]
        if any(isinstance(e, int) and e >= row["epoch"] for e in epochs):
            raise UsageError(
                f"{self.metrics} already holds epoch {max(e for e in epochs if isinstance(e, int))}"
                f": another process is training {self.path} too; stop it and resume"
            )
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _after(row: dict[str, Any], epoch: int) -> bool:
    value = row.get("epoch")
    return isinstance(value, int) and value > epoch
