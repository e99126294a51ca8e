"""Shape rules: what each layer type makes of its inputs, computed before any tensor exists.

A rule gets the layer, its input tensors (shape without batch, and whether the channels are
split across device groups) and the number of groups; it returns the output, the parameter
and multiply-accumulate counts, and any warnings. A user's mistake is a `LayerProblem`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from netspec.ir.registry import LayerTable
from netspec.spec import layers as L


@dataclass(frozen=True)
class Tensor:
    shape: tuple[int, ...]
    split: bool  # channels partitioned across device groups (False: every group has all)
    source: str  # the layer that produced it, for messages


@dataclass
class Inferred:
    shape: tuple[int, ...]
    split: bool
    params: int = 0
    macs: int = 0
    groups: int = 1  # the grouped-convolution/linear factor the back ends use
    flatten: bool = False  # a linear that flattens a C×H×W input
    warnings: list[str] = field(default_factory=list)


class LayerProblem(Exception):
    """A layer that cannot be built as written; the message names the fix."""


@dataclass(frozen=True)
class Context:
    groups: int
    classes: int | None
    spec_input: str  # the name of the spec's input node, to suggest resizing it


Rule = Callable[[L.Layer, list[Tensor], Context], Inferred]
RULES: LayerTable[Rule] = LayerTable("shape rule")
LayerT = TypeVar("LayerT", bound=L.Layer)
RuleFor = Callable[[LayerT, list[Tensor], Context], Inferred]


def rule(*models: type[LayerT]) -> Callable[[RuleFor[LayerT]], RuleFor[LayerT]]:
    """Register the shape rule of `models`; a type checker sees that it takes each of them."""

    def add(fn: RuleFor[LayerT]) -> RuleFor[LayerT]:
        # `infer` calls it only with a layer of one of `models`, found by its exact type
        RULES.register(*models)(cast(Rule, fn))
        return fn

    return add


def infer(layer: L.Layer, inputs: list[Tensor], ctx: Context) -> Inferred:
    return RULES[type(layer)](layer, inputs, ctx)


def fmt(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def fmt_pair(pair: tuple[int, int]) -> str:
    """A kernel, stride or padding: `4` when square, `3×5` when not."""
    return str(pair[0]) if pair[0] == pair[1] else fmt(pair)


def _image(layer: L.Layer, t: Tensor) -> tuple[int, int, int]:
    if len(t.shape) != 3:
        raise LayerProblem(
            f"{layer.type} needs a C×H×W input, but '{t.source}' gives {fmt(t.shape)}"
        )
    c, h, w = t.shape
    return c, h, w


def _divides(groups: int, count: int, what: str) -> None:
    if count % groups:
        raise LayerProblem(
            f"{count} {what} do not split evenly across {groups} device groups; "
            f"use a multiple of {groups}"
        )


@dataclass(frozen=True)
class _Axis:
    """A sliding window along one axis of its input."""

    name: str  # "rows" or "columns": what the window moves over
    size: int
    kernel: int
    stride: int
    padding: int

    def dropped(self, ceil: bool) -> int:
        """Pixels at the far end that no window covers (none when rounding up)."""
        return 0 if ceil else (self.size + 2 * self.padding - self.kernel) % self.stride

    def lost(self, ceil: bool) -> str:
        """The dropped pixels in words: `1 row`, `3 columns`."""
        n = self.dropped(ceil)
        return f"{n} {self.name[:-1] if n == 1 else self.name}"


def _windows(
    layer: L.Layer,
    t: Tensor,
    ctx: Context,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    ceil: bool,
) -> tuple[tuple[int, int], list[str]]:
    """Output height and width of a sliding window, and a warning when it drops pixels."""
    _, h, w = _image(layer, t)
    rows = _Axis("rows", h, kernel[0], stride[0], padding[0])
    cols = _Axis("columns", w, kernel[1], stride[1], padding[1])
    for axis in (rows, cols):
        _check_window(layer, t, axis)
    out = (_output_size(rows, ceil), _output_size(cols, ceil))
    if not (rows.dropped(ceil) or cols.dropped(ceil)):
        return out, []
    return out, [_tiling_warning(layer, t, ctx, (rows, cols), ceil)]


def _check_window(layer: L.Layer, t: Tensor, axis: _Axis) -> None:
    """Refuse a window that pads more than half of itself (pools) or outgrows its input."""
    k, p = axis.kernel, axis.padding
    if 2 * p > k and not layer.has_weights:
        raise LayerProblem(f"padding {p} is more than half the kernel {k}; use at most {k // 2}")
    if axis.size + 2 * p - k < 0:
        raise LayerProblem(
            f"the {k}-pixel kernel is larger than its {axis.size}-pixel input"
            f"{f' padded by {p}' if p else ''} from '{t.source}': the output would be empty; "
            "use a smaller kernel or stride earlier, or a larger input"
        )


def _output_size(axis: _Axis, ceil: bool) -> int:
    """Windows along the axis: floor (PyTorch's) or ceil (Caffe's, never starting in padding)."""
    span, s = axis.size + 2 * axis.padding - axis.kernel, axis.stride
    if not ceil:
        return span // s + 1
    n = -(-span // s) + 1
    return n - 1 if (n - 1) * s >= axis.size + axis.padding else n


def _tiling_warning(
    layer: L.Layer, t: Tensor, ctx: Context, axes: tuple[_Axis, _Axis], ceil: bool
) -> str:
    """Which pixels a window never sees, and the fix: a larger input, padding, or ceil."""
    rows, cols = axes
    lost = [a.lost(ceil) for a in axes if a.dropped(ceil)]
    verb = "is" if lost in (["1 row"], ["1 column"]) else "are"
    if t.source == ctx.spec_input:
        grow = [(a.stride - a.dropped(ceil)) % a.stride for a in axes]
        fix = f"use input [{t.shape[0]}, {rows.size + grow[0]}, {cols.size + grow[1]}] or padding"
    else:
        fix = "add padding" + ("" if layer.has_weights else " or ceil: true")
    window = f"the {fmt((rows.kernel, cols.kernel))} window with stride "
    window += fmt_pair((rows.stride, cols.stride))
    return (
        f"{window} does not tile its {rows.size}×{cols.size} input: "
        f"the last {' and '.join(lost)} {verb} never seen; {fix}"
    )


def _weight_groups(
    layer: L.WeightLayer, t: Tensor, ctx: Context, channels: int, outputs: int, unit: str
) -> int:
    if ctx.groups == 1:
        return 1
    _divides(ctx.groups, outputs, unit)
    if layer.connect == "all":
        return 1
    if not t.split:
        raise LayerProblem(
            f"connect: group needs an input split across device groups, but '{t.source}' is "
            "shared by every group; use connect: all"
        )
    _divides(ctx.groups, channels, f"input {'channels' if unit == 'filters' else 'features'}")
    return ctx.groups


@rule(L.Conv)
def _conv(layer: L.Conv, ins: list[Tensor], ctx: Context) -> Inferred:
    (t,) = ins
    c, _, _ = _image(layer, t)
    groups = _weight_groups(layer, t, ctx, c, layer.filters, "filters")
    (oh, ow), warnings = _windows(layer, t, ctx, layer.kernel, layer.stride, layer.padding, False)
    fan_in = c // groups * layer.kernel[0] * layer.kernel[1]
    return Inferred(
        shape=(layer.filters, oh, ow),
        split=ctx.groups > 1,
        params=layer.filters * fan_in + (layer.filters if layer.bias else 0),
        macs=layer.filters * oh * ow * fan_in,
        groups=groups,
        warnings=warnings,
    )


@rule(L.Linear)
def _linear(layer: L.Linear, ins: list[Tensor], ctx: Context) -> Inferred:
    (t,) = ins
    features = math.prod(t.shape)
    if layer.in_features is not None and layer.in_features != features:
        raise LayerProblem(
            f"in_features is {layer.in_features}, but '{t.source}' gives "
            f"{fmt(t.shape)}{f' = {features}' if len(t.shape) > 1 else ''}; "
            f"set in_features: {features} or change the layers before it"
        )
    if layer.units == "classes":
        if ctx.classes is None:
            raise LayerProblem("units: classes, but the spec has no 'classes'; add classes: N")
        units = ctx.classes
    else:
        units = layer.units
    groups = _weight_groups(layer, t, ctx, features, units, "units")
    fan_in = features // groups
    return Inferred(
        shape=(units,),
        split=ctx.groups > 1,
        params=units * fan_in + (units if layer.bias else 0),
        macs=units * fan_in,
        groups=groups,
        flatten=len(t.shape) > 1,
    )


@rule(L.Activation, L.Dropout)
def _elementwise(layer: L.Layer, ins: list[Tensor], ctx: Context) -> Inferred:
    (t,) = ins
    return Inferred(shape=t.shape, split=t.split)


@rule(L.LRN)
def _lrn(layer: L.LRN, ins: list[Tensor], ctx: Context) -> Inferred:
    (t,) = ins
    c, _, _ = _image(layer, t)
    if t.split:
        _divides(ctx.groups, c, "channels")
    per = c // ctx.groups if t.split else c
    if layer.size > 2 * per - 1:
        where = " per device group" if t.split else ""
        raise LayerProblem(
            f"size {layer.size} is wider than its {per} channels{where} can use: a window of "
            f"{2 * per - 1} already reaches every channel from every channel; use at most that"
        )
    return Inferred(shape=t.shape, split=t.split)


@rule(L.MaxPool, L.AvgPool)
def _pool(layer: L.Pool, ins: list[Tensor], ctx: Context) -> Inferred:
    (t,) = ins
    stride = layer.stride or layer.kernel
    (oh, ow), warnings = _windows(layer, t, ctx, layer.kernel, stride, layer.padding, layer.ceil)
    return Inferred(shape=(t.shape[0], oh, ow), split=t.split, warnings=warnings)


@rule(L.AdaptiveAvgPool)
def _adaptive(layer: L.AdaptiveAvgPool, ins: list[Tensor], ctx: Context) -> Inferred:
    (t,) = ins
    c, _, _ = _image(layer, t)
    return Inferred(shape=(c, *layer.output_size), split=t.split)


@rule(L.Flatten)
def _flatten(layer: L.Flatten, ins: list[Tensor], ctx: Context) -> Inferred:
    (t,) = ins
    return Inferred(shape=(math.prod(t.shape),), split=t.split)


@rule(L.BatchNorm)
def _batchnorm(layer: L.BatchNorm, ins: list[Tensor], ctx: Context) -> Inferred:
    (t,) = ins
    if len(t.shape) not in (1, 3):
        raise LayerProblem(f"batchnorm needs a C×H×W or flat input, got {fmt(t.shape)}")
    return Inferred(shape=t.shape, split=t.split, params=2 * t.shape[0])


def _joined(layer: L.Layer, ins: list[Tensor]) -> bool:
    splits = {t.split for t in ins}
    if len(splits) > 1:
        raise LayerProblem(
            f"{layer.type} joins tensors split across device groups with ones shared by all "
            f"groups ({', '.join(t.source for t in ins)}); join tensors of one kind"
        )
    return splits.pop()


@rule(L.Concat)
def _concat(layer: L.Concat, ins: list[Tensor], ctx: Context) -> Inferred:
    split = _joined(layer, ins)
    rest = {t.shape[1:] for t in ins}
    if len(rest) > 1:
        shapes = ", ".join(f"{t.source} {fmt(t.shape)}" for t in ins)
        raise LayerProblem(f"concat joins channels, so all else must agree: {shapes}")
    if split:
        for t in ins:
            _divides(ctx.groups, t.shape[0], f"channels of '{t.source}'")
    return Inferred(shape=(sum(t.shape[0] for t in ins), *ins[0].shape[1:]), split=split)


@rule(L.Add)
def _add(layer: L.Add, ins: list[Tensor], ctx: Context) -> Inferred:
    split = _joined(layer, ins)
    if len({t.shape for t in ins}) > 1:
        shapes = ", ".join(f"{t.source} {fmt(t.shape)}" for t in ins)
        raise LayerProblem(f"add needs inputs of one shape: {shapes}")
    return Inferred(shape=ins[0].shape, split=split)
