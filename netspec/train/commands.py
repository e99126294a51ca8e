"""`netspec train` and `netspec eval` as commands: flags in, a run or a score out."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from netspec import compile, load_spec
from netspec.errors import UsageError
from netspec.train.augment import Stats, needs_stats
from netspec.train.checkpoint import load_checkpoint
from netspec.train.checks import check_data_fits, check_sizes
from netspec.train.data import loader, open_val, resolve_data_dir
from netspec.train.device import options_for, pick_device
from netspec.train.evaluate import evaluate
from netspec.train.loop import Diverged, train


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    flags = {"epochs": "train.epochs", "batch_size": "train.batch_size", "workers": "data.workers"}
    overrides = [
        f"{key}={getattr(args, name)}"
        for name, key in flags.items()
        if getattr(args, name, None) is not None
    ]
    return overrides + (["train.tensorboard=true"] if getattr(args, "tensorboard", False) else [])


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
