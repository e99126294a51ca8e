"""The LRN's arithmetic: one pass forward, one pass back, fused by Inductor when it pays.

Written as a chain of torch operations, LRN makes a dozen passes over the two largest activation
maps of AlexNet, each allocating a new map, and autograd adds as many again going back. Here the
forward computes b = a·s^-β with s = k + α·Σ_window a² and keeps only q = s^(-β-1); the
backward is the closed form Caffe uses,

    ∂L/∂a_j = g_j·s_j^-β − 2αβ·a_j·Σ_{i: j in window(i)} g_i·a_i·s_i^(-β-1),

with s recomputed from a (a cheap sum of squares, no power). `torch.compile` turns each of the
two functions into one loop over the map; on inputs too small to repay compiling, where
compiling is switched off (NETSPEC_COMPILE=0), or where it fails (no C++ compiler), the same
functions run eagerly. Arithmetic is in float32 at least, as squares of fp16 activations
overflow past 256.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from netspec.backends.torch_kernels import COMPILE_ENV as COMPILE_ENV
from netspec.backends.torch_kernels import Kernels
from torch.autograd.function import FunctionCtx, once_differentiable

# Below this many values a call is over in a millisecond or two, and compiling (seconds, once
# per shape) would not pay for itself; tests and tiny nets stay eager.
MIN_COMPILED = 1 << 20


@dataclass(frozen=True)
class Window:
    """b = a·(k + alpha·Σ a²)^-beta, the sum over `before` channels before each channel and
    `after` after it, within each of `groups` equal blocks of channels."""

    before: int
    after: int
    groups: int
    k: float
    alpha: float
    beta: float

    def transposed(self) -> Window:
        """The window of the backward sum: channel j receives from every i whose window holds j."""
        return Window(self.after, self.before, self.groups, self.k, self.alpha, self.beta)


def window_sum(t: torch.Tensor, w: Window) -> torch.Tensor:
    """Σ over each channel's window (channel axis 1), zero beyond its group's ends."""
    if torch.compiler.is_compiling():
        return _masked_window_sum(t, w)
    return _grouped_window_sum(t, w)


def _grouped_window_sum(t: torch.Tensor, w: Window) -> torch.Tensor:
    """Shifted adds over a per-group view padded with zeros: the fewest passes, eagerly."""
    per = t.shape[1] // w.groups
    spatial = (0, 0) * (t.dim() - 2)
    blocks = F.pad(t.unflatten(1, (w.groups, per)), (*spatial, w.before, w.after))
    total = blocks[:, :, :per].clone()
    for shift in range(1, w.before + w.after + 1):
        total += blocks[:, :, shift : shift + per]
    return total.flatten(1, 2)


def _masked_window_sum(t: torch.Tensor, w: Window) -> torch.Tensor:
    """Shifted adds over the whole map, each masked where the shift leaves the group: one loop
    that Inductor fuses with what comes before and after (a per-group view splits it in two)."""
    channels = t.shape[1]
    spatial = (1,) * (t.dim() - 2)
    place = (torch.arange(channels, device=t.device) % (channels // w.groups)).view(-1, *spatial)
    padded = F.pad(t, (0, 0) * len(spatial) + (w.before, w.after))
    total = padded[:, w.before : w.before + channels]
    for shift in (*range(-w.before, 0), *range(1, w.after + 1)):
        inside = (place + shift >= 0) & (place + shift < channels // w.groups)
        start = w.before + shift
        total = total + torch.where(inside, padded[:, start : start + channels], 0.0)
    return total


def _wide(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def layout(x: torch.Tensor) -> torch.memory_format:
    """Channels-last input gives channels-last output; anything else, contiguous."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _like(result: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return result.to(x.dtype).contiguous(memory_format=layout(x))


def _scale(a: torch.Tensor, w: Window) -> torch.Tensor:
    return w.k + w.alpha * window_sum(a * a, w)


# s^-β: `pow` costs more than the rest of the forward together; for the usual β these exact
# forms cost a third of it, and exp(-β·log s) two thirds (s ≥ k > 0).
INVERSE_POWERS: dict[float, Callable[[torch.Tensor], torch.Tensor]] = {
    0.5: torch.rsqrt,
    0.75: lambda s: torch.rsqrt(s * torch.sqrt(s)),
    1.0: torch.reciprocal,
}


def _inverse_power(s: torch.Tensor, beta: float) -> torch.Tensor:
    exact = INVERSE_POWERS.get(beta)
    return exact(s) if exact is not None else torch.exp(-beta * torch.log(s))


def forward(x: torch.Tensor, w: Window) -> torch.Tensor:
    a = _wide(x)
    return _like(a * _inverse_power(_scale(a, w), w.beta), x)


def forward_saving(x: torch.Tensor, w: Window) -> tuple[torch.Tensor, torch.Tensor]:
    """The output, and q = s^(-β-1), all the backward needs besides the input."""
    a = _wide(x)
    s = _scale(a, w)
    p = _inverse_power(s, w.beta)
    return _like(a * p, x), p / s


def backward(g: torch.Tensor, x: torch.Tensor, q: torch.Tensor, w: Window) -> torch.Tensor:
    a, gq = _wide(x), _wide(g) * q
    s = _scale(a, w)
    return _like(gq * s - (2 * w.alpha * w.beta) * a * window_sum(gq * a, w.transposed()), x)


class _Kernels(Kernels):
    def __init__(self) -> None:
        super().__init__("LRN", lambda: MIN_COMPILED)


KERNELS = _Kernels()


class _LRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, w: Window) -> torch.Tensor:
        y, q = KERNELS.run(forward_saving, x, w=w)
        ctx.save_for_backward(x, q)
        ctx.window = w  # type: ignore[attr-defined]
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, q = ctx.saved_tensors  # g as it comes: a compiled kernel reads any strides in place
        return KERNELS.run(backward, g, x, q, w=ctx.window), None


def local_response_norm(x: torch.Tensor, w: Window) -> torch.Tensor:
    if torch.compiler.is_compiling():  # torch.compile or torch.export of a whole network
        return forward(x, w)
    if torch.is_grad_enabled() and x.requires_grad:
        return _LRN.apply(x, w)
    return KERNELS.run(forward, x, w=w)
