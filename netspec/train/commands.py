"""`netspec train` and `netspec eval` as commands: flags in, a run or a score out.

Everything a command can check is checked before the slow work starts (fitting statistics,
generating `shapes`, training): the spec, the memory it needs, the run folder, the cache.
Ctrl-C or SIGTERM (see netspec.interrupt) ends a command with one line; during training it
keeps last.pt as the resume point and saves interrupted.pt beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from netspec import build_graph, compile, load_spec
from netspec.errors import UsageError
from netspec.inspect.confusion import Look
from netspec.interrupt import describe, exit_status
from netspec.ir.records import NetGraph
from netspec.spec.document import parse_yaml
from netspec.spec.model import Spec, validate
from netspec.spec.settings import DataConfig
from netspec.train.augment import Stats, needs_stats
from netspec.train.checkpoint import (
    EVAL_FIELDS,
    CheckpointError,
    load_checkpoint,
    require,
    restoring,
    stats_from,
)
from netspec.train.checks import (
    check_cache,
    check_data_fits,
    check_memory,
    check_sizes,
    check_workers,
    open_training_data,
)
from netspec.train.data import open_val, resolve_data_dir, val_loader
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
    tie_to_launcher,
)
from netspec.train.evaluate import evaluate
from netspec.train.loop import Diverged, train
from netspec.train.parallel import plan, strategy
from netspec.train.runfolder import RunFolder, default_out
from netspec.train.shapes_data import cache_root
from netspec.train.store import Stale
from netspec.train.tensorboard import writer_class


def _stopped(command: str, exc: KeyboardInterrupt, what: str) -> int:
    print(f"\nnetspec {command}: {describe(exc)}; {what}", file=sys.stderr)
    return exit_status(exc)


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
    fresh: bool = False  # a new run: the folder must not already hold one

    def check_unclaimed(self) -> None:
        """A new run never writes over an old one. The owner checks this holding the lock,
        so a folder another run is writing into is reported as in use, not as finished."""
        if self.fresh and (self.out / "last.pt").exists():
            raise UsageError(
                f"--out {self.out} already holds a run; continue it with --resume {self.out} "
                "or choose another --out"
            )


def resolve_target(args: argparse.Namespace, announce: bool, restarted: bool) -> Target:
    """The spec and run folder the flags name, checked. A worker the launcher `restarted`
    carries on from the run's last.pt by itself."""
    overrides = [*args.overrides, *_flag_overrides(args)]
    if args.resume is not None:
        out = Path(args.resume)
        spec_file = out / "spec.yaml"
        if not (out / "last.pt").is_file() or not spec_file.is_file():
            raise UsageError(
                f"--resume {out}: no run there (it needs last.pt and spec.yaml); "
                "start a new run with --out"
            )
        if announce:
            print(
                f"note: a resumed run keeps its own {spec_file} (plus any --set); "
                f"{args.spec} is not read",
                file=sys.stderr,
            )
        return Target(load_spec(spec_file, overrides), out, True, str(spec_file))
    spec = load_spec(args.spec, overrides)
    out = Path(args.out) if args.out else default_out(spec)
    return Target(spec, out, (out / "last.pt").exists(), args.spec, fresh=not restarted)


def check_run(spec: Spec, device: torch.device, graph: NetGraph) -> None:
    """What can be known wrong before any work: sizes, loader processes, memory."""
    check_sizes(spec, graph=graph)
    check_workers(spec)
    check_memory(spec, device, graph=graph)


def check_caches(spec: Spec, data: str) -> None:
    """The folders `shapes` and the statistics are cached in must be usable: checked before
    minutes are spent generating or fitting what they would keep."""
    if data == "shapes":
        check_cache(cache_root())
    if needs_stats(spec.data):
        check_cache(cache_root() / "stats")


@contextlib.contextmanager
def holding(out: Path) -> Iterator[RunFolder]:
    """The run folder, locked by this process for the run's length (a second `netspec
    train` into it is refused at once); removed again if the run never wrote into it."""
    folder = RunFolder(out)
    created = not out.exists()
    try:
        with folder.locked():
            yield folder
    finally:
        if created:
            _remove_if_unused(folder)


def _remove_if_unused(folder: RunFolder) -> None:
    """A run folder this command made and then wrote nothing into (it stopped before the
    run started) is removed, so it does not look like a run."""
    with contextlib.suppress(OSError):
        if {p.name for p in folder.path.iterdir()} <= {folder.lock_file.name}:
            folder.lock_file.unlink(missing_ok=True)
            folder.path.rmdir()


def run_train(args: argparse.Namespace) -> int:
    try:
        return _run_train(args)
    except KeyboardInterrupt as exc:
        return _stopped("train", exc, "stopped before training began; nothing to resume")


def _run_train(args: argparse.Namespace) -> int:
    if args.init_from and args.resume:
        raise UsageError(
            "--init-from starts a new run from other weights, and --resume continues a run "
            "from its own last.pt: give one of them"
        )
    world = World.from_env()
    if world is None and args.nproc > 1:
        return _launch(args)
    return _train_here(args, world)


def _launch(args: argparse.Namespace) -> int:
    """Check what every worker would check, then start `--nproc` workers and wait; this
    process holds the run folder for them."""
    target = resolve_target(args, announce=False, restarted=False)
    plan(args.parallel or "data", target.spec, args.nproc, target.source)
    device = pick_device(args.device)
    check_devices(device, args.nproc)
    graph = build_graph(target.spec)  # once, for every check
    check_run(target.spec, device, graph)
    if target.spec.train.tensorboard:
        writer_class()
    with holding(target.out):
        target.check_unclaimed()
        if target.resume:  # refused here once, not by every worker
            RunFolder(target.out).resume_state(target.spec)
        check_caches(target.spec, args.data)
        # a mistake in the data folder is one line here, not one per worker; and the workers
        # find the built-in set and the statistics cached
        open_training_data(target.spec, resolve_data_dir(args.data), _stale(args), graph)
        argv = args.argv if args.resume or args.out else [*args.argv, "--out", str(target.out)]
        try:
            launch(argv, args.nproc, args.max_restarts)
        except WorkersFailed as exc:
            for line in exc.said:  # the workers' own one-line reasons, each once
                print(line, file=sys.stderr)
            if not exc.said:
                print(f"netspec train: {exc}; {_resume_hint(target.out)}", file=sys.stderr)
            return exc.status
        except KeyboardInterrupt as exc:
            return _stopped("train", exc, _resume_hint(target.out))
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
    if world:
        tie_to_launcher()
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
    graph = build_graph(target.spec)  # once, for every check and the module
    check_run(target.spec, device, graph)
    parallel = None
    if processes > 1 or args.parallel:
        layout = plan(args.parallel or "data", target.spec, processes, target.source)
        if processes > 1:
            parallel = strategy(layout, target.spec, device)
    # netspec's own launcher holds the folder for its workers; under torchrun rank 0 does
    owner = main and not (world and world.own_launcher)
    with holding(out) if owner else contextlib.nullcontext():
        target.check_unclaimed()
        check_caches(target.spec, args.data)
        with rank_zero_first():  # the built-in set is generated once
            root = resolve_data_dir(args.data)
        try:
            # netspec's launcher compared a store with its source before it started the workers
            stale = "unchecked" if world and world.own_launcher else _stale(args)
            init_from = Path(args.init_from) if args.init_from else None
            train(
                target.spec,
                root,
                out,
                device,
                target.resume,
                parallel=parallel,
                stale=stale,
                init_from=init_from,
                graph=graph,
            )
        except Diverged as exc:
            print(f"netspec train: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:
            if owner:  # netspec's launcher says it itself
                return _stopped("train", exc, _resume_hint(out))
            return exit_status(exc)
    return 0


def _stale(args: argparse.Namespace) -> Stale:
    return "allow" if args.allow_stale else "refuse"


def _resume_hint(out: Path) -> str:
    if (out / "last.pt").exists():
        return f"{out / 'last.pt'} holds the last finished epoch: continue with --resume {out}"
    return "no epoch had finished, so there is nothing to resume"


def run_eval(args: argparse.Namespace) -> int:
    try:
        return _eval(args)
    except KeyboardInterrupt as exc:
        return _stopped("eval", exc, "no result")


def _eval(args: argparse.Namespace) -> int:
    from netspec.train.checkpoint import check_trained_with

    look = Look.from_args(args)  # --confusion, --errors: checked before any work
    overrides = [*args.overrides, *_flag_overrides(args)]
    if args.ten_crop:
        overrides.append("data.ten_crop=true")
    checkpoint = Path(args.checkpoint)
    state = load_checkpoint(checkpoint)
    require(checkpoint, state, EVAL_FIELDS, "be evaluated")
    stats = stats_from(checkpoint, state)
    spec = load_spec(args.spec, overrides)
    graph = build_graph(spec)  # once, for every check and the module
    check_trained_with(checkpoint, state, spec, args.spec, overrides, "evaluate", graph)
    spec.data = _run_data(checkpoint, state, spec.data, overrides)
    _check_stats_fit(checkpoint, spec.data, stats)
    check_sizes(spec, training=False, graph=graph)
    check_workers(spec)
    device = pick_device(args.device)
    check_memory(spec, device, training=False, graph=graph)
    model = compile(spec, graph=graph)
    with restoring(checkpoint, f"model (for {args.spec})"):
        model.load_state_dict(state["model"])
    model.to(device)
    if args.data == "shapes":
        check_cache(cache_root())
    val_set = open_val(resolve_data_dir(args.data), spec.data, _stale(args))
    check_data_fits(spec, val_set.where, val_set.classes, graph)
    batches = val_loader(val_set, spec.data, spec.train.batch_size)
    val = evaluate(look.watch(model, spec.data), batches, options_for(spec, device, stats))
    crops = "ten crops" if spec.data.ten_crop else "centre crop"
    print(
        f"{len(val_set)} images, {crops}: loss {val['val_loss']:.4f}  "
        f"top-1 {val['val_top1']:.2%}  top-5 {val['val_top5']:.2%}"
    )
    print(json.dumps({**val, **look.report(val_set, f"{spec.name}, {len(val_set)} images")}))
    return 0


def _run_data(
    checkpoint: Path, state: dict[str, Any], data: DataConfig, overrides: list[str]
) -> DataConfig:
    """The data settings the checkpoint's run used, but for those an override names: a
    model is evaluated on what it was trained on unless told otherwise."""
    saved = state.get("spec")
    if not isinstance(saved, str):
        return data  # a checkpoint without its spec: the spec file's settings
    try:
        run_data = validate(parse_yaml(saved, str(checkpoint))).data
    except Exception:
        raise CheckpointError(
            f"{checkpoint}: its 'spec' is not a spec netspec wrote; "
            "use a checkpoint written by netspec train"
        ) from None
    told = set()
    for text in overrides:
        key = text.partition("=")[0].strip().split(".")
        if key[0] == "data":
            told |= set(DataConfig.model_fields) if len(key) == 1 else {key[1]}
    chosen = {k: getattr(data, k) for k in told & set(DataConfig.model_fields)}
    try:
        return DataConfig.model_validate({**run_data.model_dump(), **chosen})
    except ValidationError as exc:
        detail = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(
            f"--set {', '.join(sorted(told))} does not fit the run's data settings in "
            f"{checkpoint}: {detail}"
        ) from None


def _check_stats_fit(checkpoint: Path, data: DataConfig, stats: Stats | None) -> None:
    """The mean the data settings subtract must be one the checkpoint holds, at that size."""
    if data.mean not in ("pixel", "channel"):  # none, or the spec's own three values
        return
    if stats is None:
        raise UsageError(
            f"{checkpoint} holds no training-set mean (its run used none): evaluate without "
            f"--set data.mean={data.mean}"
        )
    size = stats.mean.shape[-1]
    if size != data.resize:
        raise UsageError(
            f"data.resize is {data.resize}, but the mean image in {checkpoint} is {size}×{size} "
            f"(the run's resize): evaluate with --set data.resize={size}, or with "
            "--set data.mean=none"
        )
