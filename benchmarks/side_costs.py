"""python -m benchmarks.side_costs: two costs the README's speed notes rest on, each a ratio
against its alternative in the same run.

- conv1 of the paper (96 filters of 11×11 at stride 4 over 3 channels), forward + weight
  gradient, as one convolution and as two 48-filter halves (`PerGroupConv2d`), batch 16 and 128;
- drawing 61 million weights from N(0, 0.01²) (`normal_`, the paper's init) against torch's
  default `uniform_` draw.

Freed memory is kept, as in `netspec train` on the CPU.
"""

from __future__ import annotations

import torch
from netspec.backends.torch_layers import PerGroupConv2d
from torch import nn

from benchmarks.timing import interleaved
from netspec.train.allocator import keep_freed_memory

WEIGHTS = 61_000_000


def conv1(batch: int) -> dict[str, float]:
    split = PerGroupConv2d(3, 96, 11, 4, parts=2)
    whole = nn.Conv2d(3, 96, 11, 4)
    x = torch.randn(batch, 3, 227, 227)
    g = torch.randn(batch, 96, 55, 55)
    return interleaved(
        {"whole": lambda: whole(x).backward(g), "halves": lambda: split(x).backward(g)}, 5
    )


def draws() -> dict[str, float]:
    w = torch.empty(WEIGHTS)
    return interleaved({"normal_": lambda: w.normal_(0, 0.01), "uniform_": lambda: w.uniform_()}, 5)


def main() -> None:
    keep_freed_memory()  # as netspec train on the CPU
    print(f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; medians of 5")
    for batch in (16, 128):
        s = conv1(batch)
        print(
            f"conv1 forward + backward, batch {batch}: one convolution {s['whole'] * 1000:.0f} ms, "
            f"two halves {s['halves'] * 1000:.0f} ms ({s['whole'] / s['halves']:.2f}×)"
        )
    s = draws()
    print(
        f"{WEIGHTS:,} weights: normal_ {s['normal_'] * 1000:.0f} ms, "
        f"uniform_ {s['uniform_'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
