"""`netspec train`: the paper's training loop, top to bottom.

Every epoch is reproducible from (seed, epoch) alone — the data order, the augmentation and
dropout are reseeded at its start — so a resumed run computes exactly what an uninterrupted
one does. What the run writes is described in `netspec.train.runfolder`.

The same loop runs in every process of a multi-process run; its `Parallel` strategy
(`netspec.train.parallel`) wraps the model, picks each process's share of the data and adds
up the figures, and the main process alone logs and writes the run folder.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netspec import build_graph, compile
from netspec.interrupt import interrupted, raise_pending
from netspec.ir.records import NetGraph
from netspec.spec.model import Spec
from netspec.train.augment import Batch
from netspec.train.checkpoint import restoring, rng_state, save_checkpoint, set_rng_state
from netspec.train.checks import open_training_data
from netspec.train.curves import draw_curves
from netspec.train.device import options_for
from netspec.train.evaluate import Options, evaluate
from netspec.train.finetune import copy_matching
from netspec.train.optim import make_optimizer
from netspec.train.parallel import OneProcess
from netspec.train.progress import After, Progress
from netspec.train.runfolder import RunFolder, spec_yaml
from netspec.train.schedule import apply_lr, make_schedule
from netspec.train.store import Stale
from netspec.train.tensorboard import Board, writer_class

Log = Callable[[str], None]


class Diverged(Exception):
    """The loss stopped being a finite number; the last good checkpoint is kept."""


# Figures that add up over data-parallel replicas; every other epoch figure is a mean over
# images, and as every replica trains on equally many images, the mean of the replicas' means.
ADDED_OVER_REPLICAS = frozenset({"images_per_s"})


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The seed of an epoch's dropout draws; the 7 keeps it apart from the data's seeds.
    Stream r > 0 (data-parallel replica r) draws its own masks; stream 0, one process's."""
    entropy = [seed % 2**63, epoch, 7, *([stream] if stream else [])]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def _quiet(message: str) -> None:
    pass


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    steps: int,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    opts: Options,
    label: str,
    on_step: Callable[[int, float], None] | None = None,
    show_progress: bool = True,
    after: After | None = None,
) -> dict[str, float]:
    """One pass over the training batches; the mean loss, the share of top-1 hits (counted on
    the augmented batches with dropout on, as they are trained), the speed and the waiting.
    `after` is the rest of the run, for the progress display's estimate of its end."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    progress = Progress(steps, label, quiet=not show_progress, after=after or After())
    total_loss = images = correct = 0.0
    wait = 0.0
    start = tick = time.perf_counter()
    for step, batch in enumerate(batches, 1):
        raise_pending()
        wait += time.perf_counter() - tick
        x, y = opts.prepare(batch), opts.labels(batch)
        with torch.autocast(opts.device.type, enabled=opts.amp):
            logits = model(x)
            loss = loss_fn(logits, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            progress.close()
            raise Diverged(f"step {step}: the loss is {value}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += value * len(y)
        correct += int((logits.detach().argmax(dim=1) == y).sum())
        images += len(y)
        progress.update(int(images), value)
        if on_step:
            on_step(step, value)
        tick = time.perf_counter()
    progress.close()
    elapsed = time.perf_counter() - start
    return {
        "train_loss": total_loss / max(images, 1),
        "train_top1": correct / max(images, 1),
        "images_per_s": images / elapsed,
        "data_wait": wait / elapsed,
    }


class Run:
    """One training run: the model, its optimiser and schedule, the data and the run folder."""

    def __init__(
        self,
        spec: Spec,
        data_root: Path,
        out: Path,
        device: torch.device,
        log: Log = print,
        parallel: OneProcess | None = None,
        stale: Stale = "refuse",
        init_from: Path | None = None,
        graph: NetGraph | None = None,
    ):
        self.parallel = parallel or OneProcess(spec, device)
        graph = graph or build_graph(spec)  # once, for every check and the module
        self.main = self.parallel.is_main
        tb = spec.train  # first: a missing tensorboard package is found before any work
        if tb.tensorboard:
            writer_class()
        board = tb.tensorboard and self.main
        self.board = Board(Path(out) / "tb", tb.tensorboard_every) if board else None
        with self.parallel.main_first():  # the main process fits (and caches) the statistics
            # the main process alone compares a store with its source folder
            checked: Stale = stale if self.main else "unchecked"
            self.data = open_training_data(spec, data_root, checked, graph)
        self.spec, self.cfg = spec, spec.train
        self.log = log if self.main else _quiet
        self.folder = RunFolder(out)
        self.data_root = data_root
        self.opts = options_for(spec, device, self.data.stats, note=self.main)
        torch.manual_seed(self.cfg.seed)
        model = compile(spec, graph=graph)
        if init_from is not None:  # before the model is split or replicated: every mode
            self.log(copy_matching(model, spec, init_from).line(init_from))
        model = model.to(device)
        if self.opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = self.parallel.wrap(model)
        self.optimizer = make_optimizer(self.parallel.module(self.model), self.cfg)
        self.schedule = make_schedule(self.cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.opts.amp)
        self.epoch, self.best = 0, -1.0
        self.rows: list[dict[str, Any]] = []

    @property
    def out(self) -> Path:
        return self.folder.path

    def start(self) -> None:
        if self.main:
            self.folder.start(self.spec)

    def resume(self) -> None:
        state = self.folder.resume_state(self.spec)
        self.epoch = state["epoch"]
        self.rows = self.folder.rows_until(self.epoch)
        with restoring(self.folder.last, "state"):
            self.parallel.load_model_state(self.model, state["model"])
            self.parallel.load_optimizer_state(self.optimizer, state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        self.best = state["best_top1"]
        if self.main:  # every check has passed: from here on the folder may change
            if self.folder.repair_best(state):
                best = self.folder.best
                self.log(f"{best} was older than the best epoch last.pt records; rewrote it")
            self.folder.write_rows(self.rows)  # drop an epoch logged after the last checkpoint
            self.folder.write_spec(self.spec)  # a new train.epochs sticks
        if self.epoch >= self.cfg.epochs:
            self.log(
                f"{self.out} has finished its {self.epoch} epochs; raise --epochs to train longer"
            )
        else:
            self.log(f"resuming {self.out} after epoch {self.epoch} of {self.cfg.epochs}")

    def run(self) -> list[dict[str, Any]]:
        apply_lr(self.optimizer, self.schedule.lr)
        d = self.data
        self.log(
            f"training {self.spec.name} on {self.data_root} ({len(d.train_set)} train, "
            f"{len(d.val_set)} val images, {len(d.classes)} classes) on "
            f"{self.opts.device.type}{self.parallel.describe()}; run folder {self.out}"
        )
        try:
            while self.epoch < self.cfg.epochs:
                raise_pending()
                self.run_epoch()
        except KeyboardInterrupt:
            self.save_interrupted()
            raise
        except Exception:
            # Ctrl-C reaches every process; one that stops first makes the others' collective
            # fail with a connection error: that is the interrupt, not a failure of its own
            if not interrupted():
                raise
            self.save_interrupted()
            raise_pending()
        if self.rows:
            self.log(self.summary())
        return self.rows

    def summary(self) -> str:
        """The run's last line: how good it got, where its checkpoints are, and the command
        that evaluates the best one, as it would be typed."""
        best = max(self.rows, key=lambda row: row["val_top1"])  # the first of equals: best.pt's
        f = self.folder
        evaluate = ["netspec", "eval", f.spec, "--checkpoint", f.best, "--data", self.data_root]
        return (
            f"finished: best top-1 {best['val_top1']:.2%} at epoch {best['epoch']} of "
            f"{self.cfg.epochs} in {f.best}, the last epoch in {f.last}; "
            f"next: {shlex.join(map(str, evaluate))}"
        )

    def save_interrupted(self) -> None:
        """last.pt stays the resume point; the unfinished epoch's weights go beside it."""
        state = self.parallel.model_state_alone(self.model) if self.main else None
        if state is not None:
            save_checkpoint(
                self.folder.interrupted,
                {
                    "model": state,
                    "epoch": self.epoch,
                    "spec": spec_yaml(self.spec),
                    "stats": asdict(self.data.stats) if self.data.stats else None,
                    "classes": self.data.classes,
                },
            )

    def run_epoch(self) -> None:
        began = time.perf_counter()
        lr = self.schedule.lr
        stats = self.train_one_epoch()
        p = self.parallel
        val_batches = self.data.val_loader(self.cfg.batch_size, p.replica, p.replicas)
        val = evaluate(p.module(self.model), val_batches, self.opts, p.sum_over_replicas)
        self.schedule.step(1.0 - val["val_top1"])
        apply_lr(self.optimizer, self.schedule.lr)
        row = {"epoch": self.epoch + 1, "lr": lr, **stats, **val}
        row["seconds"] = time.perf_counter() - began
        self.finish_epoch(row)

    def train_one_epoch(self) -> dict[str, float]:
        cfg, epoch, p = self.cfg, self.epoch, self.parallel
        # dropout draws, reproducible per epoch
        torch.manual_seed(epoch_seed(cfg.seed, epoch, p.dropout_stream))
        loader = self.data.train_loader(cfg.batch_size, cfg.seed, epoch, p.replica, p.replicas)
        label = f"epoch {epoch + 1}/{cfg.epochs}"
        hook = self.board.begin_epoch(epoch, len(loader), self.schedule.lr) if self.board else None
        try:
            stats = train_epoch(
                self.model,
                loader,
                len(loader),
                self.optimizer,
                self.scaler,
                self.opts,
                label,
                hook,
                show_progress=self.main,
                after=self.after(epoch),
            )
        except Diverged as exc:
            kept = f"{self.folder.last} (epoch {epoch})" if epoch else "none yet"
            raise Diverged(
                f"epoch {epoch + 1}, {exc}; stopped. Last good checkpoint: {kept}. "
                f"Try a lower learning rate, e.g. --set train.lr={cfg.lr / 10:g}"
            ) from None
        return self.over_replicas(stats)

    def after(self, epoch: int) -> After:
        """The run beyond `epoch` (0 is the first): the epochs left, and the mean length of
        those done (in earlier sessions too, for a resumed run)."""
        seconds = [row["seconds"] for row in self.rows if "seconds" in row]
        mean = sum(seconds) / len(seconds) if seconds else None
        return After(self.cfg.epochs - epoch - 1, mean)

    def over_replicas(self, stats: dict[str, float]) -> dict[str, float]:
        """One replica's epoch figures → the whole run's."""
        if self.parallel.replicas == 1:
            return stats
        keys, n = list(stats), self.parallel.replicas
        values = torch.tensor([stats[k] for k in keys], dtype=torch.float64)
        totals = zip(keys, self.parallel.sum_over_replicas(values).tolist(), strict=True)
        return {k: v if k in ADDED_OVER_REPLICAS else v / n for k, v in totals}

    def finish_epoch(self, row: dict[str, Any]) -> None:
        """Log the epoch's row, save the checkpoints, redraw the curves, say how it went."""
        self.rows.append(row)
        if self.main:
            self.folder.append_row(row)
        if self.board:
            self.board.end_epoch(row)
        self.epoch += 1
        self.save(row)
        if self.main:
            title = f"{self.spec.name} on {self.data_root.name}"
            draw_curves(self.rows, self.folder.curves, title)
        self.log(
            f"epoch {row['epoch']}/{self.cfg.epochs}  lr {row['lr']:.4g}  "
            f"train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"top-1 {row['val_top1']:.2%}  top-5 {row['val_top5']:.2%}  "
            f"{row['images_per_s']:.0f} img/s  data wait {row['data_wait']:.0%}  "
            f"{row['seconds']:.1f}s"
        )

    def save(self, row: dict[str, Any]) -> None:
        """Every process takes part (gathering the state may need them all); the main one
        writes."""
        improved = row["val_top1"] > self.best
        self.best = max(self.best, row["val_top1"])
        payload = {
            "model": self.parallel.model_state(self.model),
            "optimizer": self.parallel.optimizer_state(self.optimizer),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_top1": self.best,
            "rng": rng_state(),
            "spec": spec_yaml(self.spec),
            "stats": asdict(self.data.stats) if self.data.stats else None,
            "classes": self.data.classes,  # predict names them without the data at hand
            "metrics": row,
        }
        if not self.main:
            return
        if improved:  # best.pt first: a kill between the two never loses the best epoch
            save_checkpoint(self.folder.best, payload)
        save_checkpoint(self.folder.last, payload)


def train(
    spec: Spec,
    data_root: Path,
    out: Path,
    device: torch.device | str = "cpu",
    resume: bool = False,
    log: Log = print,
    parallel: OneProcess | None = None,
    stale: Stale = "refuse",
    init_from: Path | None = None,
    graph: NetGraph | None = None,
) -> list[dict[str, Any]]:
    """Train `spec` on the image folder or store `data_root`, writing the run into `out`;
    `parallel` is this process's part in a multi-process run (default: one process alone);
    `stale` says what a store whose source changed gets; a new run starts from the weights
    of `init_from` where they fit (netspec.train.finetune)."""
    first = None if resume else init_from
    run = Run(spec, data_root, out, torch.device(device), log, parallel, stale, first, graph)
    if resume:
        run.resume()
    else:
        run.start()
    return run.run()
