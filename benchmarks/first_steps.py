"""The first training steps of a spec, step by step: loss and the spread of each weight
layer's output. For seeing why a recipe diverges or stalls before spending a whole run on it.

    python benchmarks/first_steps.py specs/alexnet.yaml --data shapes --steps 25 \\
        --set classes=10 --set train.batch_size=32
"""

from __future__ import annotations

import argparse

import torch

from netspec import compile, load_spec
from netspec.train.data import open_data, resolve_data_dir
from netspec.train.evaluate import Options
from netspec.train.optim import make_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec")
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    spec = load_spec(args.spec, args.overrides)
    data = open_data(resolve_data_dir(args.data), spec.data)
    torch.manual_seed(spec.train.seed)
    model = compile(spec)
    optimizer = make_optimizer(model, spec.train)
    opts = Options(torch.device("cpu"), spec.data.pixel_scale)
    names = [layer.name for layer in spec.layers if layer.has_weights]
    spread: dict[str, float] = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: spread.__setitem__(name, float(out.detach().std()))
        )
    print("step     loss  " + "  ".join(f"{n:>7}" for n in names))
    batches = data.train_loader(spec.train.batch_size, spec.train.seed, 0)
    for step, (x, y) in zip(range(args.steps), batches, strict=False):
        loss = torch.nn.functional.cross_entropy(model(opts.prepare(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            cells = "  ".join(f"{v:7.3f}" for v in spread.values())
            print(f"{step:4d}  {float(loss.detach()):7.3f}  {cells}", flush=True)


if __name__ == "__main__":
    main()
