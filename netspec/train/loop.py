"""`netspec train` and `netspec eval`: the paper's training loop, top to bottom.

A run folder holds spec.yaml (the resolved spec), metrics.jsonl (one object per epoch),
last.pt and best.pt (atomic checkpoints) and curves.png. Every epoch is reproducible from
(seed, epoch) alone — the data order, the augmentation and dropout are reseeded at its start —
so a resumed run computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from netspec import build_graph, compile, load_spec
from netspec.atomic import atomic_write
from netspec.errors import Problem, SpecError, UsageError
from netspec.spec.model import Spec
from netspec.train.augment import Stats, needs_stats
from netspec.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from netspec.train.curves import draw_curves
from netspec.train.data import loader, open_data, open_val, resolve_data_dir
from netspec.train.evaluate import Options, evaluate
from netspec.train.optim import make_optimizer
from netspec.train.progress import Progress
from netspec.train.schedule import apply_lr, make_schedule


class Diverged(Exception):
    """The loss stopped being a finite number; the last good checkpoint is kept."""


def pick_device(name: str | None) -> torch.device:
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available[name]:
        raise UsageError(f"--device {name}: not available on this machine; use --device cpu")
    return torch.device(name)


def options_for(spec: Spec, device: torch.device) -> Options:
    cuda = device.type == "cuda"
    for flag in ("amp", "channels_last"):
        if getattr(spec.train, flag) and not cuda:
            print(
                f"note: train.{flag} applies on CUDA only; ignored on {device.type}",
                file=sys.stderr,
            )
    return Options(
        device, spec.data.pixel_scale, spec.train.amp and cuda, spec.train.channels_last and cuda
    )


def check_data_fits(spec: Spec, folder: Path, classes: list[str]) -> None:
    graph = build_graph(spec)
    units = graph.node(graph.net.output).shape[0]
    if len(classes) != units:
        shown = ", ".join(classes[:5]) + (", …" if len(classes) > 5 else "")
        raise UsageError(
            f"{folder} has {len(classes)} classes ({shown}) but the spec's output "
            f"has {units} units: add --set classes={len(classes)}"
        )


def check_sizes(spec: Spec) -> None:
    """The data section must produce what the input layer expects."""
    problems = []
    channels, h, w = spec.input
    if channels != 3:
        problems.append(
            Problem(
                spec.where(("input",)),
                f"image folders give 3 channels (RGB), but the input has {channels}; "
                f"set input: [3, {h}, {w}]",
            )
        )
    if spec.data.crop != h or h != w:
        problems.append(
            Problem(
                spec.where(("data", "crop")),
                f"data.crop is {spec.data.crop} but the input is "
                f"{spec.input[0]}×{h}×{w}; crops are square and must match: "
                f"set data.crop: {h} (and a square input)",
            )
        )
    if problems:
        raise SpecError(problems)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's dropout draws; the 7 keeps it apart from the data's seeds."""
    return int(np.random.SeedSequence([seed % 2**63, epoch, 7]).generate_state(1, np.uint64)[0])


def train_epoch(
    model: nn.Module, batches, optimizer, scaler, opts: Options, label: str
) -> dict[str, float]:
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    progress = Progress(len(batches), label)
    total_loss = images = 0.0
    wait = 0.0
    start = tick = time.perf_counter()
    for step, (x, y) in enumerate(batches, 1):
        wait += time.perf_counter() - tick
        x, y = opts.prepare(x), y.to(opts.device, non_blocking=True)
        with torch.autocast(opts.device.type, enabled=opts.amp):
            loss = loss_fn(model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            progress.close()
            raise Diverged(f"step {step}: the loss is {value}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += value * len(y)
        images += len(y)
        progress.update(int(images), value)
        tick = time.perf_counter()
    progress.close()
    elapsed = time.perf_counter() - start
    return {
        "train_loss": total_loss / max(images, 1),
        "images_per_s": images / elapsed,
        "data_wait": wait / elapsed,
    }


RESUME_MAY_CHANGE = {"train.epochs", "data.workers"}


def _changed(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain-data documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for key in sorted(old.keys() | new.keys(), key=str)
            for change in _changed(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


def _read_lines(path: Path) -> list[dict]:
    """metrics.jsonl's rows; a last line cut short by a kill is dropped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def _write_lines(path: Path, rows: list[dict]) -> None:
    _write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _append_line(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def spec_yaml(spec: Spec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)


class Run:
    """One training run: the model, its optimiser and schedule, the data and the run folder."""

    def __init__(self, spec: Spec, data_root: Path, out: Path, device: torch.device, log=print):
        check_sizes(spec)
        self.data = open_data(data_root, spec.data)
        check_data_fits(spec, self.data.train_set.folder, self.data.classes)
        if len(self.data.train_set) < spec.train.batch_size:
            raise UsageError(
                f"{self.data.train_set.folder} has {len(self.data.train_set)} images, fewer than "
                f"one batch ({spec.train.batch_size}): lower --batch-size"
            )
        self.spec, self.cfg, self.out, self.log = spec, spec.train, out, log
        self.data_root = data_root
        self.opts = options_for(spec, device)
        torch.manual_seed(self.cfg.seed)
        self.model = compile(spec).to(device)
        if self.opts.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.schedule = make_schedule(self.cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.opts.amp)
        self.metrics = out / "metrics.jsonl"
        self.epoch, self.best, self.rows = 0, -1.0, []

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        _write_text(self.out / "spec.yaml", spec_yaml(self.spec))
        _write_lines(self.metrics, [])

    def resume(self) -> None:
        state = load_checkpoint(self.out / "last.pt")
        changed = _changed(yaml.safe_load(state["spec"]), yaml.safe_load(spec_yaml(self.spec)))
        if set(changed) - RESUME_MAY_CHANGE:
            raise UsageError(
                f"--resume {self.out}: {', '.join(changed)} changed since the run started; "
                f"a resumed run may change only {' and '.join(sorted(RESUME_MAY_CHANGE))}: "
                "start a new run (--out) for other settings"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.best = state["epoch"], state["best_top1"]
        self.rows = [r for r in _read_lines(self.metrics) if r["epoch"] <= self.epoch]
        _write_lines(self.metrics, self.rows)  # drop an epoch logged after the last checkpoint
        _write_text(self.out / "spec.yaml", spec_yaml(self.spec))  # a new train.epochs sticks
        if self.epoch >= self.cfg.epochs:
            self.log(
                f"{self.out} has finished its {self.epoch} epochs; raise --epochs to train longer"
            )
        else:
            self.log(f"resuming {self.out} after epoch {self.epoch} of {self.cfg.epochs}")

    def run(self) -> list[dict]:
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
                self.out / "interrupted.pt",
                {
                    "model": self.model.state_dict(),
                    "epoch": self.epoch,
                    "spec": spec_yaml(self.spec),
                },
            )
            raise
        return self.rows

    def run_epoch(self) -> None:
        cfg, epoch = self.cfg, self.epoch
        torch.manual_seed(epoch_seed(cfg.seed, epoch))  # dropout draws, reproducible per epoch
        lr = self.schedule.lr
        began = time.perf_counter()
        loader = self.data.train_loader(cfg.batch_size, cfg.seed, epoch)
        try:
            stats = train_epoch(
                self.model,
                loader,
                self.optimizer,
                self.scaler,
                self.opts,
                f"epoch {epoch + 1}/{cfg.epochs}",
            )
        except Diverged as exc:
            kept = f"{self.out / 'last.pt'} (epoch {epoch})" if epoch else "none yet"
            raise Diverged(
                f"epoch {epoch + 1}, {exc}; stopped. Last good checkpoint: {kept}. "
                f"Try a lower learning rate, e.g. --set train.lr={cfg.lr / 10:g}"
            ) from None
        val = evaluate(self.model, self.data.val_loader(cfg.batch_size), self.opts)
        self.schedule.step(1.0 - val["val_top1"])
        apply_lr(self.optimizer, self.schedule.lr)
        row = {"epoch": epoch + 1, "lr": lr, **stats, **val, "seconds": time.perf_counter() - began}
        self.rows.append(row)
        _append_line(self.metrics, row)
        self.epoch += 1
        self.save(row)
        draw_curves(
            self.rows, self.out / "curves.png", f"{self.spec.name} on {self.data_root.name}"
        )
        self.log(
            f"epoch {row['epoch']}/{cfg.epochs}  lr {lr:.4g}  "
            f"train loss {row['train_loss']:.4f}  val loss {val['val_loss']:.4f}  "
            f"top-1 {val['val_top1']:.2%}  top-5 {val['val_top5']:.2%}  "
            f"{row['images_per_s']:.0f} img/s  data wait {row['data_wait']:.0%}  "
            f"{row['seconds']:.1f}s"
        )

    def save(self, row: dict) -> None:
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
        save_checkpoint(self.out / "last.pt", payload)
        if improved:
            save_checkpoint(self.out / "best.pt", payload)


def train(
    spec: Spec,
    data_root: Path,
    out: Path,
    device: torch.device | str = "cpu",
    resume: bool = False,
    log=print,
) -> list[dict]:
    """Train `spec` on the image folder `data_root`, writing the run into `out`."""
    run = Run(spec, data_root, out, torch.device(device), log)
    if resume:
        run.resume()
    else:
        run.start()
    return run.run()


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    flags = {"epochs": "train.epochs", "batch_size": "train.batch_size", "workers": "data.workers"}
    return [
        f"{key}={getattr(args, name)}"
        for name, key in flags.items()
        if getattr(args, name, None) is not None
    ]


def run_train(args: argparse.Namespace) -> int:
    overrides = [*args.overrides, *_flag_overrides(args)]
    if args.resume:
        out = Path(args.resume)
        if not (out / "last.pt").is_file() or not (out / "spec.yaml").is_file():
            raise UsageError(
                f"--resume {out}: no run there (it needs last.pt and spec.yaml); "
                "start a new run with --out"
            )
        spec = load_spec(out / "spec.yaml", overrides)
        print(
            f"note: a resumed run keeps its own {out / 'spec.yaml'} (plus any --set); "
            f"{args.spec} is not read",
            file=sys.stderr,
        )
    else:
        spec = load_spec(args.spec, overrides)
        out = Path(args.out or f"runs/{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if (out / "last.pt").exists():
            raise UsageError(
                f"--out {out} already holds a run; continue it with --resume {out} "
                "or choose another --out"
            )
    device = pick_device(args.device)
    root = resolve_data_dir(args.data)
    try:
        train(spec, root, out, device, resume=bool(args.resume))
    except Diverged as exc:
        print(f"netspec train: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if (out / "last.pt").exists():
            where = f"{out / 'last.pt'} holds the last finished epoch: continue with --resume {out}"
        else:
            where = "no epoch had finished, so there is nothing to resume"
        print(f"\nnetspec train: interrupted; {where}", file=sys.stderr)
        return 130
    return 0


def run_eval(args: argparse.Namespace) -> int:
    overrides = [*args.overrides, *_flag_overrides(args)]
    if args.ten_crop:
        overrides.append("data.ten_crop=true")
    spec = load_spec(args.spec, overrides)
    check_sizes(spec)
    state = load_checkpoint(Path(args.checkpoint))
    device = pick_device(args.device)
    model = compile(spec)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[1 if "\n" in str(exc) else 0].strip()
        raise UsageError(f"{args.checkpoint} does not fit {args.spec}: {first}") from None
    model.to(device)
    stats = Stats(**state["stats"]) if state.get("stats") else None
    if stats is None and needs_stats(spec.data):
        raise UsageError(
            f"{args.checkpoint} holds no training-set mean or PCA; "
            "evaluate with --set data.mean=none --set data.pca=none"
        )
    val_set = open_val(resolve_data_dir(args.data), spec.data, stats)
    check_data_fits(spec, val_set.folder, val_set.classes)
    batches = loader(val_set, spec.train.batch_size, spec.data.workers)
    val = evaluate(model, batches, options_for(spec, device))
    crops = "ten crops" if spec.data.ten_crop else "centre crop"
    print(
        f"{len(val_set)} images, {crops}: loss {val['val_loss']:.4f}  "
        f"top-1 {val['val_top1']:.2%}  top-5 {val['val_top5']:.2%}"
    )
    print(json.dumps(val))
    return 0
