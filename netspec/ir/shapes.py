"""Shape rules: what each layer type makes of its inputs, computed before any tensor exists.

A rule gets the layer, its input tensors (shape without batch, and whether the channels are
split across device groups) and the number of groups; it returns the output, the parameter
and multiply-accumulate counts, and any warnings. A user's mistake is a `LayerProblem`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

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
rule = RULES.register


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
    return t.shape  # type: ignore[return-value]


def _divides(groups: int, count: int, what: str) -> None:
    if count % groups:
        raise LayerProblem(
            f"{count} {what} do not split evenly across {groups} device groups; "
            f"use a multiple of {groups}"
        )


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
    out: list[int] = []
    lost: list[str] = []
    grow: list[int] = []
    for size, k, s, p, axis in zip(
        (h, w), kernel, stride, padding, ("rows", "columns"), strict=True
    ):
        if 2 * p > k and not layer.has_weights:
            raise LayerProblem(
                f"padding {p} is more than half the kernel {k}; use at most {k // 2}"
            )
        span = size + 2 * p - k
        if span < 0:
            raise LayerProblem(
                f"the {k}-pixel kernel is larger than its {size}-pixel input"
                f"{f' padded by {p}' if p else ''} from '{t.source}': the output would be empty; "
                "use a smaller kernel or stride earlier, or a larger input"
            )
        n = -(-span // s) + 1 if ceil else span // s + 1
        if ceil and (n - 1) * s >= size + p:
            n -= 1
        out.append(n)
        dropped = 0 if ceil else span % s
        grow.append((s - dropped) % s)
        if dropped:
            lost.append(f"{dropped} {axis[:-1] if dropped == 1 else axis}")
    warnings = []
    step = fmt_pair(stride)
    verb = "is" if lost in (["1 row"], ["1 column"]) else "are"
    if lost:
        if t.source == ctx.spec_input:
            fix = f"use input [{t.shape[0]}, {h + grow[0]}, {w + grow[1]}] or padding"
        else:
            fix = "add padding" + ("" if layer.has_weights else " or ceil: true")
        warnings.append(
            f"the {fmt(kernel)} window with stride {step} does not tile its {h}×{w} input: "
            f"the last {' and '.join(lost)} {verb} never seen; {fix}"
        )
    return (out[0], out[1]), warnings


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


@rule(L.ReLU, L.Tanh, L.Dropout)
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
