"""Torch modules that torch itself lacks (the paper's LRN, grouped linears, per-group joins)
or runs slowly (max pooling on the CPU)."""

from __future__ import annotations

from typing import Any

import torch
from netspec.backends.torch_lrn import Window, local_response_norm
from netspec.backends.torch_pool import Pool, max_pool2d
from torch import nn

from netspec.spec.layers import LRN_WINDOWS


class LocalResponseNorm(nn.Module):
    """b_i = a_i / (k + α' Σ_j a_j²)^β over a window of channels, per device group.

    `paper`: α' = α and the window runs ⌊n/2⌋ channels each side of i (so an even n sums n + 1
    channels, as the formula in the paper reads). `torch`: α' = α/n over n channels, ⌊n/2⌋
    before i and ⌊(n-1)/2⌋ after, as `nn.LocalResponseNorm` and cuda-convnet. `caffe`: α/n
    over ⌊(n-1)/2⌋ before and ⌊n/2⌋ after, as Caffe, cuDNN and ONNX (the same as `torch` for
    odd n). With `groups` > 1 each group's channels are normalised among themselves only, as
    on the paper's two GPUs. The arithmetic is in `torch_lrn`.
    """

    def __init__(
        self,
        size: int,
        alpha: float,
        beta: float,
        k: float,
        convention: str = "paper",
        groups: int = 1,
    ):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention, self.groups = convention, groups
        before, after = LRN_WINDOWS[convention](size)
        scale = alpha if convention == "paper" else alpha / size
        self.window = Window(before, after, groups, k, scale, beta)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"convention={self.convention}, groups={self.groups}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.window)


class PerGroupConv2d(nn.Conv2d):
    """A convolution whose device groups each compute their own filters from the whole input,
    as each of the paper's GPUs computed its half of conv1. On the CPU that is faster for a
    first layer at large batches: AlexNet's conv1 at batch 128 took 298 ms as two halves
    against 382 ms whole (`python -m benchmarks.side_costs`). Elsewhere (CUDA, a compiled
    or exported network) it is one convolution. Parameters and values are `nn.Conv2d`'s."""

    def __init__(self, *args: Any, parts: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.parts = parts

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, parts={self.parts}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return super().forward(x)
        weights = self.weight.chunk(self.parts)
        biases = self.bias.chunk(self.parts) if self.bias is not None else [None] * self.parts
        return torch.cat(
            [self._conv_forward(x, w, b) for w, b in zip(weights, biases, strict=True)], 1
        )


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d`, computed by `torch_pool`: the same values and gradients, faster on the
    CPU."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
    ):
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode)
        self.pool = Pool.of(kernel_size, stride, padding, ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.pool)


class GroupedLinear(nn.Module):
    """A linear layer whose units see only their own group's block of features."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        groups: int,
        bias: bool = True,
        flatten: bool = False,
    ):
        super().__init__()
        self.groups, self.flatten = groups, flatten
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features // groups))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default, for each unit's block of inputs."""
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            bound = (self.in_features // self.groups) ** -0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) if self.flatten else x
        g = self.groups
        xs = x.reshape(x.shape[0], g, -1)
        w = self.weight.reshape(g, self.out_features // g, -1)
        y = torch.einsum("ngi,goi->ngo", xs, w).reshape(x.shape[0], -1)
        return y + self.bias if self.bias is not None else y


class FlattenLinear(nn.Linear):
    """nn.Linear that flattens a C×H×W input first, so the spec needs no flatten layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class Concat(nn.Module):
    """Channel concatenation that keeps each device group's channels together."""

    def __init__(self, groups: int = 1):
        super().__init__()
        self.groups = groups

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        g = self.groups
        parts = [x.reshape(x.shape[0], g, x.shape[1] // g, *x.shape[2:]) for x in xs]
        out = torch.cat(parts, dim=2)
        return out.reshape(out.shape[0], -1, *out.shape[3:])


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
