"""Max pooling on the CPU: the same result as aten's, from loops Inductor compiles.

aten's NCHW max pool on the CPU is a scalar loop over every window, slower than the
convolutions around it in AlexNet. Here the forward is the elementwise maximum of the k×k
strided slices of the input (−∞ beyond its edges), and, when a gradient is wanted, the offset
of each window's first maximum in row-major order (aten's choice among ties; ReLU outputs tie
at 0 all the time), one byte per output. The backward gathers instead of scattering: an input
element receives g from each window that holds it and whose saved offset points at it, at
most ⌈k/s⌉² windows, added in aten's order (windows in row-major order), so the gradient is
aten's to the bit. Inductor vectorises a loop only along contiguous memory, so the backward
computes each column class (input columns ≡ c mod s) contiguously and, for stride 2 in
float32, interleaves the two classes by packing each pair into one 64-bit word.

Where it does not pay (small inputs, other devices, NETSPEC_COMPILE=0, channels-last input,
for which aten's own kernel is vectorised) or cannot run (export, a failed compile), the pool
is exactly `F.max_pool2d`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from netspec.backends.torch_kernels import Kernels
from torch.autograd.function import FunctionCtx, once_differentiable

# Below this many input values aten takes a few milliseconds, and compiling (seconds, once per
# shape) would not pay for itself.
MIN_COMPILED = 1 << 20
NO_WINDOW = 255  # offset sentinel of the one-byte index: k_h·k_w ≤ 255 windows elements


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Pool:
    """A max pool's window along each axis: (rows, columns)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil: bool

    @classmethod
    def of(
        cls,
        kernel: int | tuple[int, int],
        stride: int | tuple[int, int] | None,
        padding: int | tuple[int, int],
        ceil: bool,
    ) -> Pool:
        """From `nn.MaxPool2d`'s arguments: an int for both axes; no stride, the kernel."""
        return cls(_pair(kernel), _pair(stride or kernel), _pair(padding), ceil)

    def out_size(self, size: int, axis: int) -> int:
        """aten's output size: with ceil, a last window must start inside the input or the
        left padding."""
        k, s, p = self.kernel[axis], self.stride[axis], self.padding[axis]
        out = (size + 2 * p - k + (s - 1 if self.ceil else 0)) // s + 1
        if self.ceil and (out - 1) * s >= size + p:
            out -= 1
        return out

    def aten(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil)


def _windows(x: torch.Tensor, pool: Pool) -> list[torch.Tensor]:
    """The k_h·k_w strided slices of x, one per window element in row-major order, each the
    output's size; −∞ where a window reaches past the input."""
    (kh, kw), (sh, sw), (ph, pw) = pool.kernel, pool.stride, pool.padding
    h, w = x.shape[-2:]
    ho, wo = pool.out_size(h, 0), pool.out_size(w, 1)
    bottom, right = (ho - 1) * sh + kh - h - ph, (wo - 1) * sw + kw - w - pw
    if ph or pw or bottom > 0 or right > 0:
        x = F.pad(x, (pw, max(0, right), ph, max(0, bottom)), value=float("-inf"))
    return [
        x[:, :, di : di + (ho - 1) * sh + 1 : sh, dj : dj + (wo - 1) * sw + 1 : sw]
        for di in range(kh)
        for dj in range(kw)
    ]


def forward(x: torch.Tensor, pool: Pool) -> torch.Tensor:
    slices = _windows(x, pool)
    y = slices[0]
    for s in slices[1:]:
        y = torch.maximum(y, s)
    return y


def forward_saving(x: torch.Tensor, pool: Pool) -> tuple[torch.Tensor, torch.Tensor]:
    """The output, and each window's offset of its first maximum (row-major)."""
    slices = _windows(x, pool)
    y = slices[0]
    for s in slices[1:]:
        y = torch.maximum(y, s)
    offset = torch.full_like(y, len(slices) - 1, dtype=torch.uint8)
    for o in range(len(slices) - 2, -1, -1):
        offset = torch.where(slices[o] == y, o, offset)
    return y, offset


def _packs(dtype: torch.dtype, stride: int) -> bool:
    """Two float32 column classes interleave as one int64 word per pair."""
    return stride == 2 and dtype == torch.float32


def backward(
    g: torch.Tensor, offset: torch.Tensor, pool: Pool, size: tuple[int, int]
) -> torch.Tensor:
    """∂L/∂x, laid out as `unpack` reads it: rows of ⌈(W+p)/s⌉·s columns, from the left
    padding on.

    Input row i (padded row i + p) lies in windows oh = (i+p)//s − t at row di = (i+p)%s + t·s
    for t < ⌈k/s⌉; likewise columns, per class c = (j+p)%s. Each window's contribution is
    g where its offset is (di, dj), shifted into place with zeros beyond g's edges."""
    (kh, kw), (sh, sw), (ph, pw) = pool.kernel, pool.stride, pool.padding
    h, w = size
    n, c, ho, wo = g.shape
    th, tw = _ceil_div(kh, sh), _ceil_div(kw, sw)
    rows, cols = _ceil_div(h + ph, sh), _ceil_div(w + pw, sw)
    # g and the offsets with th − 1 rows (tw − 1 columns) before them, and as many after as
    # the last window-row (column) any input element reaches
    pads = (tw - 1, cols - wo, th - 1, rows - ho)
    g = F.pad(g, pads)
    offset = F.pad(offset.to(torch.int32), pads, value=NO_WINDOW)
    row_class = (torch.arange(h, device=g.device) + ph) % sh

    def spread(t: torch.Tensor, down: int, right: int) -> torch.Tensor:
        """t shifted by whole windows, each row repeated for the s input rows it covers."""
        t = t[:, :, th - 1 - down : th - 1 - down + rows, tw - 1 - right : tw - 1 - right + cols]
        t = t[:, :, :, None, :].expand(n, c, rows, sh, cols).reshape(n, c, rows * sh, cols)
        return t[:, :, ph : ph + h]

    classes = []
    for cls in range(sw):
        total = None
        for down in reversed(range(th)):  # aten adds windows in row-major order
            di = row_class + down * sh
            for right in reversed(range(tw)):
                dj = cls + right * sw
                if dj >= kw:
                    continue
                wanted = torch.where(di < kh, di * kw + dj, NO_WINDOW).to(torch.int32)
                term = torch.where(
                    spread(offset, down, right) == wanted[:, None], spread(g, down, right), 0
                )
                total = term if total is None else total + term
        classes.append(total if total is not None else g.new_zeros(n, c, h, cols))
    if _packs(g.dtype, sw):
        low = classes[0].view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        return low | (classes[1].view(torch.int32).to(torch.int64) << 32)
    return torch.stack(classes, -1).reshape(n, c, h, cols * sw)


def unpack(packed: torch.Tensor, dtype: torch.dtype, pool: Pool, width: int) -> torch.Tensor:
    """The gradient, a view of `backward`'s result (rows padded to a whole number of strides)."""
    rows = packed.view(dtype) if packed.dtype != dtype else packed
    return rows[..., pool.padding[1] : pool.padding[1] + width]


class _Kernels(Kernels):
    def __init__(self) -> None:
        super().__init__(
            "max pool",
            lambda: MIN_COMPILED,
            devices=frozenset({"cpu"}),
            # fp16 and bf16 sums rounded after each add, as aten's backward does
            options={"emulate_precision_casts": True},
        )


KERNELS = _Kernels()


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, pool: Pool) -> torch.Tensor:
        y, offset = KERNELS.run(forward_saving, x, pool=pool)
        ctx.save_for_backward(offset)
        ctx.pool, ctx.size = pool, tuple(x.shape[-2:])  # type: ignore[attr-defined]
        ctx.values = x.numel()  # type: ignore[attr-defined]
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (offset,) = ctx.saved_tensors
        packed = KERNELS.run(
            backward, g.contiguous(), offset, values=ctx.values, pool=ctx.pool, size=ctx.size
        )
        return unpack(packed, g.dtype, ctx.pool, ctx.size[1]), None


def _fast(x: torch.Tensor, pool: Pool) -> bool:
    return (
        x.dim() == 4
        and x.is_floating_point()
        and x.is_contiguous()
        and pool.kernel[0] * pool.kernel[1] < NO_WINDOW
        and KERNELS.wanted(x)
    )


def max_pool2d(x: torch.Tensor, pool: Pool) -> torch.Tensor:
    if torch.compiler.is_compiling() or not _fast(x, pool):  # whole-network compile or export
        return pool.aten(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPool.apply(x, pool)
    return KERNELS.run(forward, x, pool=pool)
