"""`netspec train`: the paper's training loop, top to bottom.

Every epoch is reproducible from (seed, epoch) alone — the data order, the augmentation and
dropout are reseeded at its start — so a resumed run computes exactly what an uninterrupted
one does. What the run writes is described in `netspec.train.runfolder`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netspec import compile
from netspec.errors import UsageError
from netspec.spec.model import Spec
from netspec.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from netspec.train.checks import check_data_fits, check_sizes
from netspec.train.curves import draw_curves
from netspec.train.data import open_data
from netspec.train.device import options_for
from netspec.train.evaluate import Options, evaluate
from netspec.train.optim import make_optimizer
from netspec.train.progress import Progress
from netspec.train.runfolder import RunFolder, spec_yaml
from netspec.train.schedule import apply_lr, make_schedule

Log = Callable[[str], None]


class Diverged(Exception):
    """The loss stopped being a finite number; the last good checkpoint is kept."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's dropout draws; the 7 keeps it apart from the data's seeds."""
    return int(np.random.SeedSequence([seed % 2**63, epoch, 7]).generate_state(1, np.uint64)[0])


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    opts: Options,
    label: str,
) -> dict[str, float]:
    """One pass over the training batches; the mean loss, the share of top-1 hits (counted on
    the augmented batches with dropout on, as they are trained), the speed and the waiting."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    progress = Progress(steps, label)
    total_loss = images = correct = 0.0
    wait = 0.0
    start = tick = time.perf_counter()
    for step, (x, y) in enumerate(batches, 1):
        wait += time.perf_counter() - tick
        x, y = opts.prepare(x), y.to(opts.device, non_blocking=True)
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
        self, spec: Spec, data_root: Path, out: Path, device: torch.device, log: Log = print
    ):
        check_sizes(spec)
        self.data = open_data(data_root, spec.data)
        check_data_fits(spec, self.data.train_set.folder, self.data.classes)
        if len(self.data.train_set) < spec.train.batch_size:
            raise UsageError(
                f"{self.data.train_set.folder} has {len(self.data.train_set)} images, fewer than "
                f"one batch ({spec.train.batch_size}): lower --batch-size"
            )
        self.spec, self.cfg, self.log = spec, spec.train, log
        self.folder = RunFolder(out)
        self.data_root = data_root
        self.opts = options_for(spec, device)
        torch.manual_seed(self.cfg.seed)
        self.model = compile(spec).to(device)
        if self.opts.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.schedule = make_schedule(self.cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.opts.amp)
        self.epoch, self.best = 0, -1.0
        self.rows: list[dict[str, Any]] = []

    @property
    def out(self) -> Path:
        return self.folder.path

    def start(self) -> None:
        self.folder.start(self.spec)

    def resume(self) -> None:
        state = load_checkpoint(self.folder.last)
        self.folder.check_resumable(state["spec"], self.spec)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.best = state["epoch"], state["best_top1"]
        self.rows = [r for r in self.folder.rows() if r["epoch"] <= self.epoch]
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
            f"{self.opts.device.type}; run folder {self.out}"
        )
        try:
            while self.epoch < self.cfg.epochs:
                self.run_epoch()
        except KeyboardInterrupt:
            # last.pt stays the resume point; keep the unfinished epoch's weights beside it
            save_checkpoint(
                self.folder.interrupted,
                {
                    "model": self.model.state_dict(),
                    "epoch": self.epoch,
                    "spec": spec_yaml(self.spec),
                },
            )
            raise
        return self.rows

    def run_epoch(self) -> None:
        began = time.perf_counter()
        lr = self.schedule.lr
        stats = self.train_one_epoch()
        val = evaluate(self.model, self.data.val_loader(self.cfg.batch_size), self.opts)
        self.schedule.step(1.0 - val["val_top1"])
        apply_lr(self.optimizer, self.schedule.lr)
        row = {"epoch": self.epoch + 1, "lr": lr, **stats, **val}
        row["seconds"] = time.perf_counter() - began
        self.finish_epoch(row)

    def train_one_epoch(self) -> dict[str, float]:
        cfg, epoch = self.cfg, self.epoch
        torch.manual_seed(epoch_seed(cfg.seed, epoch))  # dropout draws, reproducible per epoch
        loader = self.data.train_loader(cfg.batch_size, cfg.seed, epoch)
        label = f"epoch {epoch + 1}/{cfg.epochs}"
        try:
            return train_epoch(
                self.model, loader, len(loader), self.optimizer, self.scaler, self.opts, label
            )
        except Diverged as exc:
            kept = f"{self.folder.last} (epoch {epoch})" if epoch else "none yet"
            raise Diverged(
                f"epoch {epoch + 1}, {exc}; stopped. Last good checkpoint: {kept}. "
                f"Try a lower learning rate, e.g. --set train.lr={cfg.lr / 10:g}"
            ) from None

    def finish_epoch(self, row: dict[str, Any]) -> None:
        """Log the epoch's row, save the checkpoints, redraw the curves, say how it went."""
        self.rows.append(row)
        self.folder.append_row(row)
        self.epoch += 1
        self.save(row)
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
        improved = row["val_top1"] > self.best
        self.best = max(self.best, row["val_top1"])
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_top1": self.best,
            "rng": rng_state(),
            "spec": spec_yaml(self.spec),
            "stats": asdict(self.data.stats) if self.data.stats else None,
            "metrics": row,
        }
        save_checkpoint(self.folder.last, payload)
        if improved:
            save_checkpoint(self.folder.best, payload)


def train(
    spec: Spec,
    data_root: Path,
    out: Path,
    device: torch.device | str = "cpu",
    resume: bool = False,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Train `spec` on the image folder `data_root`, writing the run into `out`."""
    run = Run(spec, data_root, out, torch.device(device), log)
    if resume:
        run.resume()
    else:
        run.start()
    return run.run()
