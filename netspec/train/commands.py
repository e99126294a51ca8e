"""`netspec train` and `netspec eval` as commands: flags in, a run or a score out."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from netspec import compile, load_spec
from netspec.errors import UsageError
from netspec.spec.model import Spec
from netspec.train.augment import Stats, needs_stats
from netspec.train.checkpoint import load_checkpoint
from netspec.train.checks import check_data_fits, check_sizes, open_training_data
from netspec.train.data import loader, open_val, resolve_data_dir
from netspec.train.device import options_for, pick_device
from netspec.train.distributed import (
    WorkersFailed,
    World,
    agree,
    check_devices,
    join,
    launch,
    leave,
    rank_zero_first,
)
from netspec.train.evaluate import evaluate
from netspec.train.loop import Diverged, train
from netspec.train.parallel import plan, strategy


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    flags = {"epochs": "train.epochs", "batch_size": "train.batch_size", "workers": "data.workers"}
    overrides = [
        f"{key}={getattr(args, name)}"
        for name, key in flags.items()
        if getattr(args, name, None) is not None
    ]
    return overrides + (["train.tensorboard=true"] if getattr(args, "tensorboard", False) else [])


@dataclass(frozen=True)
class Target:
    """What a `netspec train` command trains, and where."""

    spec: Spec
    out: Path
    resume: bool
    source: str  # the spec file it was read from, for messages


def resolve_target(args: argparse.Namespace, announce: bool, restarted: bool) -> Target:
    """The spec and run folder the flags name, checked. A worker the launcher `restarted`
    carries on from the run's last.pt by itself."""
    overrides = [*args.overrides, *_flag_overrides(args)]
    if args.resume:
        out = Path(args.resume)
        if not (out / "last.pt").is_file() or not (out / "spec.yaml").is_file():
            raise UsageError(
                f"--resume {out}: no run there (it needs last.pt and spec.yaml); "
                "start a new run with --out"
            )
        if announce:
            print(
                f"note: a resumed run keeps its own {out / 'spec.yaml'} (plus any --set); "
                f"{args.spec} is not read",
                file=sys.stderr,
            )
        return Target(load_spec(out / "spec.yaml", overrides), out, True, str(out / "spec.yaml"))
    spec = load_spec(args.spec, overrides)
    out = Path(args.out or f"runs/{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    resume = (out / "last.pt").exists()
    if resume and not restarted:
        raise UsageError(
            f"--out {out} already holds a run; continue it with --resume {out} "
            "or choose another --out"
        )
    return Target(spec, out, resume, args.spec)


def run_train(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        raise UsageError(f"--nproc {args.nproc}: give 1 or more processes")
    if args.max_restarts < 0:
        raise UsageError(f"--max-restarts {args.max_restarts}: give 0 or more restarts")
    world = World.from_env()
    if world is None and args.nproc > 1:
        return _launch(args)
    return _train_here(args, world)


def _launch(args: argparse.Namespace) -> int:
    """Check what every worker would check, then start `--nproc` workers and wait."""
    target = resolve_target(args, announce=False, restarted=False)
    plan(args.parallel or "data", target.spec, args.nproc, target.source)
    check_devices(pick_device(args.device), args.nproc)
    # a mistake in the data folder is one line here, not one per worker; and the workers
    # find the built-in set and the statistics cached
    open_training_data(target.spec, resolve_data_dir(args.data))
    argv = args.argv if args.resume or args.out else [*args.argv, "--out", str(target.out)]
    try:
        launch(argv, args.nproc, args.max_restarts)
    except WorkersFailed as exc:
        print(f"netspec train: {exc}; {_resume_hint(target.out)}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"\nnetspec train: interrupted; {_resume_hint(target.out)}", file=sys.stderr)
        return 130
    return 0


def _train_here(args: argparse.Namespace, world: World | None) -> int:
    """Train in this process: alone, or as one worker of several that a launcher started."""
    if world and args.nproc not in (1, world.size):
        raise UsageError(
            f"--nproc {args.nproc}, but the launcher started {world.size} processes: "
            "leave --nproc out when a launcher (torchrun) starts the processes"
        )
    if world and world.max_restarts and not (args.out or args.resume):
        raise UsageError(
            "restarted processes must find their run again: give --out DIR "
            "(a launcher with restarts needs a fixed run folder)"
        )
    device = pick_device(args.device)
    if world is None or world.size == 1:
        return _train(args, world, device)
    try:
        return _train(args, world, join(world, device))
    finally:
        leave()


def _train(args: argparse.Namespace, world: World | None, device: torch.device) -> int:
    """The run itself, once this process has its device (and its process group, if any)."""
    processes = world.size if world else 1
    main = world is None or world.rank == 0
    target = resolve_target(args, announce=main, restarted=bool(world and world.restarts))
    out = agree(target.out)  # the run folder rank 0 named, for a default --out
    parallel = None
    if processes > 1 or args.parallel:
        layout = plan(args.parallel or "data", target.spec, processes, target.source)
        if processes > 1:
            parallel = strategy(layout, target.spec, device)
    with rank_zero_first():  # the built-in set is generated once
        root = resolve_data_dir(args.data)
    try:
        train(target.spec, root, out, device, resume=target.resume, parallel=parallel)
    except Diverged as exc:
        print(f"netspec train: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if main and not (world and world.own_launcher):  # netspec's launcher says it itself
            print(f"\nnetspec train: interrupted; {_resume_hint(out)}", file=sys.stderr)
        return 130
    return 0


def _resume_hint(out: Path) -> str:
    if (out / "last.pt").exists():
        return f"{out / 'last.pt'} holds the last finished epoch: continue with --resume {out}"
    return "no epoch had finished, so there is nothing to resume"


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
