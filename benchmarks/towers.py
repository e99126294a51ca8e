"""Training-step time of the tower form (one process per device group) against the grouped
module in one process, measured in the same run on the same machine.

    python benchmarks/towers.py                               # paper AlexNet, CPU, batch 8
    python benchmarks/towers.py --spec specs/alexnet-mini.yaml --batch 64

The one-process reference gets as many threads as the towers together (one each on the CPU),
so the table compares the same cores used two ways. The two forms are timed in turn,
`--repeat` times, and the table gives the medians, so that a machine whose load changes
affects both alike. On a GPU machine pass `--device cuda`: each tower takes its own GPU
(nccl), the reference one GPU.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from netspec.backends.torch_towers import TowerNetwork
from netspec.backends.tower_state import slice_state
from torch import nn

from netspec import build_graph, compile, load_spec
from netspec.spec.model import Spec
from netspec.train.optim import make_optimizer

ROOT = Path(__file__).resolve().parent.parent


def steps_per_s(
    model: nn.Module, spec: Spec, batch: int, steps: int, device: torch.device
) -> float:
    optimizer = make_optimizer(model, spec.train)
    x = torch.randn(batch, *spec.input, device=device)
    y = torch.arange(batch, device=device) % (spec.classes or 1)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def tower_rank(rank: int, size: int, args: argparse.Namespace, folder: str) -> None:
    device = torch.device(args.device, rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"file://{folder}/store",
        rank=rank,
        world_size=size,
        timeout=datetime.timedelta(minutes=5),
    )
    spec = load_spec(args.spec)
    graph = build_graph(spec)
    torch.manual_seed(0)
    with torch.device("meta"):
        tower = TowerNetwork(graph, rank, size)
    state = slice_state(graph, compile(spec).state_dict(), rank, size)
    tower.load_state_dict({k: v.to(device) for k, v in state.items()}, assign=True)
    rate = steps_per_s(tower, spec, args.batch, args.steps, device)
    if rank == 0:
        Path(folder, "rate").write_text(str(rate))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs/alexnet.yaml"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    spec = load_spec(args.spec)
    towers = len(spec.groups)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = compile(spec).to(device)
    rates: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for threads in (towers, 1) if device.type == "cpu" else (0,):
            if threads:
                torch.set_num_threads(threads)
            name = f"grouped module, one process, {threads} thread{'s' * (threads > 1)}"
            rate = steps_per_s(model, spec, args.batch, args.steps, device)
            rates.setdefault(name if threads else "grouped module, one process", []).append(rate)
        with tempfile.TemporaryDirectory() as folder:
            mp.spawn(tower_rank, (towers, args, folder), nprocs=towers)
            rate = float(Path(folder, "rate").read_text())
            rates.setdefault(f"{towers} towers, one process each", []).append(rate)
    where = f"{towers} CPU cores" if device.type == "cpu" else f"{args.device}"
    print(
        f"{spec.name}, batch {args.batch}, {args.steps} training steps, {where}, "
        f"median of {args.repeat}\n"
    )
    print("| form | images/s | ratio |\n|---|---|---|")
    reference = statistics.median(next(iter(rates.values())))
    for k, (name, values) in enumerate(rates.items()):
        rate = statistics.median(values)
        label = f"{name} (reference)" if k == 0 else name
        print(f"| {label} | {rate * args.batch:.1f} | {rate / reference:.2f} |")


if __name__ == "__main__":
    main()
