"""Per-step training losses of the grouped module and of the towers on the same batches.

    python benchmarks/tower_steps.py --data shapes                    # alexnet-mini, float64
    python benchmarks/tower_steps.py --data shapes --dtype float32 --steps 20

Both forms start from the same weights and train on the same epoch-0 batches of a real data
folder, with the training loop's dropout seed, one CPU thread each. In float64 their losses
agree to rounding at every step, which separates the towers' arithmetic from the drift that
fp32 rounding, summed in another order, starts in a long run.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from netspec.backends.torch_towers import TowerNetwork
from netspec.backends.tower_state import slice_state
from torch import nn

from netspec import build_graph, compile, load_spec
from netspec.spec.model import Spec
from netspec.train.checks import open_training_data
from netspec.train.data import Data, resolve_data_dir
from netspec.train.loop import epoch_seed
from netspec.train.optim import make_optimizer

ROOT = Path(__file__).resolve().parent.parent


def losses(model: nn.Module, spec: Spec, data: Data, args: argparse.Namespace) -> list[float]:
    dtype = getattr(torch, args.dtype)
    optimizer = make_optimizer(model, spec.train)
    torch.manual_seed(epoch_seed(spec.train.seed, 0))
    model.train()
    out = []
    batches = data.train_loader(spec.train.batch_size, spec.train.seed, 0)
    for step, (x, y) in enumerate(batches):
        if step == args.steps:
            break
        loss = nn.CrossEntropyLoss()(model(x.to(dtype) * spec.data.pixel_scale), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        out.append(float(loss.detach()))
    return out


def setup(args: argparse.Namespace) -> tuple[Spec, nn.Module, Data]:
    spec = load_spec(args.spec, ["data.workers=0"])
    torch.manual_seed(spec.train.seed)
    model = compile(spec).to(getattr(torch, args.dtype))
    return spec, model, open_training_data(spec, resolve_data_dir(args.data))


def tower_rank(rank: int, size: int, args: argparse.Namespace, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/store",
        rank=rank,
        world_size=size,
        timeout=datetime.timedelta(minutes=10),
    )
    spec, model, data = setup(args)
    graph = build_graph(spec)
    with torch.device("meta"):
        tower = TowerNetwork(graph, rank, size)
    tower.load_state_dict(slice_state(graph, model.state_dict(), rank, size), assign=True)
    result = losses(tower, spec, data, args)
    if rank == 0:
        torch.save(result, Path(folder, "towers.pt"))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs/alexnet-mini.yaml"))
    p.add_argument("--data", required=True, help="an image folder, or 'shapes'")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--steps", type=int, default=1000, help="at most one epoch")
    args = p.parse_args()
    torch.set_num_threads(1)
    spec, model, data = setup(args)
    grouped = losses(model, spec, data, args)
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(tower_rank, (len(spec.groups), args, folder), nprocs=len(spec.groups))
        towers = torch.load(Path(folder, "towers.pt"))
    print(f"{spec.name}, {args.dtype}, {len(grouped)} steps\n")
    print("| step | grouped loss | towers loss | difference |\n|---|---|---|---|")
    for step, (a, b) in enumerate(zip(grouped, towers, strict=True), 1):
        print(f"| {step} | {a:.12f} | {b:.12f} | {abs(a - b):.1e} |")
    worst = max(abs(a - b) for a, b in zip(grouped, towers, strict=True))
    print(f"\nlargest difference: {worst:.1e}")


if __name__ == "__main__":
    main()
