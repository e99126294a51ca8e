"""Training and inference throughput of compiled specs against torchvision's AlexNet.

    python benchmarks/throughput.py                 # CPU, small batch
    python benchmarks/throughput.py --device cuda   # batch 128, fp32 and amp + channels_last

Every row is measured in the same run as the reference (torchvision's `alexnet()`), and the
table gives ratios against it. The paper's two GTX 580s trained at about 210–250 images/s
(shared/PAPER.md, arithmetic from 90 epochs of 1.2M images in five to six days).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from netspec import compile, load_spec

ROOT = Path(__file__).resolve().parent.parent


def models() -> dict[str, tuple[nn.Module, int]]:
    torch.manual_seed(0)
    paper = load_spec(ROOT / "specs/alexnet.yaml")
    ungrouped = load_spec(
        ROOT / "specs/alexnet.yaml",
        ["device_groups=null"] + [f"layers.{n}.connect=all" for n in ("conv2", "conv4", "conv5")],
    )
    return {
        "torchvision alexnet (reference)": (torchvision.models.alexnet(weights=None), 224),
        "netspec torchvision-alexnet.yaml": (
            compile(load_spec(ROOT / "specs/torchvision-alexnet.yaml")),
            224,
        ),
        "netspec alexnet.yaml (paper, 2 groups)": (compile(paper), 227),
        "netspec alexnet.yaml, groups removed": (compile(ungrouped), 227),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(
    model: nn.Module,
    size: int,
    device: torch.device,
    batch: int,
    steps: int,
    train: bool,
    amp: bool,
    channels_last: bool,
) -> float:
    model = model.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    model.train(train)

    def step() -> None:
        with torch.autocast(device.type, enabled=amp), torch.set_grad_enabled(train):
            loss = nn.functional.cross_entropy(model(x), y)
        if train:
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    for _ in range(max(2, steps // 5)):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int)
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (128 if cuda else 16)
    steps = args.steps or (50 if cuda else 3)
    if cuda:
        torch.backends.cudnn.benchmark = True
    modes = [("fp32", False, False)] + ([("amp+cl", True, True)] if cuda else [])
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {batch}; {steps} timed steps; torch {torch.__version__}")
    print(
        f"{'model':42} {'mode':7} {'train img/s':>12} {'ratio':>6} {'infer img/s':>12} {'ratio':>6}"
    )
    for mode, amp, cl in modes:
        reference = None
        for label, (model, size) in models().items():
            t = rate(model, size, device, batch, steps, True, amp, cl)
            i = rate(model, size, device, batch, steps, False, amp, cl)
            reference = reference or (t, i)
            print(
                f"{label:42} {mode:7} {t:12.1f} {t / reference[0]:6.2f} "
                f"{i:12.1f} {i / reference[1]:6.2f}"
            )


if __name__ == "__main__":
    main()
