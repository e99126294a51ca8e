"""`netspec inspect RUN filters`: a layer's kernels, one band per device group, as the paper's
Figure 3 shows conv1's, and each group's colour fraction.

The paper saw one GPU's conv1 kernels come out largely colour-agnostic and the other's
colour-specific. The colour fraction puts a number on that. A kernel w (3×k×k) splits
orthogonally into its grey component g, the mean over its three channels at every pixel
repeated on each channel, and the rest, w − g, which sums to zero over the channels at every
pixel:

    colour fraction of w = ‖w − g‖² / ‖w‖²

0 for a kernel with equal RGB weights, 2/3 for one that sees a single channel, 1 for one that
sees only differences between channels (red against green); a kernel of zeros counts 0. A
group's figure is the mean over its kernels.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.utils import make_grid

from netspec.errors import UsageError
from netspec.inspect.pictures import CELL, bands, check_output, enlarge
from netspec.inspect.trained import Trained, open_trained

# Kernels a row, as the paper's Figure 3 lays out 48 a GPU.
ROW = 16
# A kernel is enlarged to at least this many pixels a side in the picture.
KERNEL_PIXELS = CELL // 2
# The name of the one group of a net (or layer) not split across device groups.
ALL = "all"


@dataclass(frozen=True)
class Group:
    """One device group's kernels of a layer: [n, C, k, k], C the input channels each reads."""

    name: str
    kernels: Tensor


def colour_fractions(kernels: Tensor) -> Tensor:
    """Each RGB kernel's share of energy outside its grey component (see the module's text)."""
    if kernels.dim() != 4 or kernels.shape[1] != 3:
        raise ValueError(f"expected kernels [n, 3, k, k], got {list(kernels.shape)}")
    w = kernels.to(torch.float64)
    grey = w.mean(dim=1, keepdim=True)
    energy = w.square().sum((1, 2, 3))
    colour = (w - grey).square().sum((1, 2, 3))
    return torch.where(energy > 0, colour / energy.clamp_min(torch.finfo(w.dtype).tiny), 0.0)


def colour_fraction(kernels: Tensor) -> float | None:
    """The mean colour fraction of RGB kernels; None for kernels that do not read RGB."""
    if kernels.shape[1] != 3 or len(kernels) == 0:
        return None
    return float(colour_fractions(kernels).mean())


def kernel_layer(trained: Trained, name: str) -> str:
    """`name`, checked to be a convolution (a layer with kernels)."""
    trained.layer(name)
    node = trained.graph.node(name)
    if node.type != "conv":
        convs = [n.name for n in trained.graph.layers() if n.type == "conv"]
        which = f"its convolutions: {', '.join(convs)}" if convs else "it has no convolutions"
        raise UsageError(f"--layer {name}: a {node.type} layer has no kernels to show; {which}")
    return name


def kernel_groups(trained: Trained, name: str, weight: Tensor) -> list[Group]:
    """A convolution's weight [F, C, k, k] cut into its device groups: group g owns filters
    g·F/G … (g+1)·F/G. A net (or a layer) not split across groups has one group, `all`."""
    names = trained.graph.net.device_groups
    node = trained.graph.node(name)
    if len(names) < 2 or not node.split:
        return [Group(ALL, weight)]
    parts = weight.chunk(len(names))
    return [Group(g, part) for g, part in zip(names, parts, strict=True)]


def shown(kernels: Tensor, channel: int) -> Tensor:
    """What the picture shows of each kernel: its RGB, or its input channel `channel` in grey."""
    return kernels if kernels.shape[1] == 3 else kernels[:, channel : channel + 1]


def band(kernels: Tensor) -> Tensor:
    """A group's kernels as one grid, each scaled to its own minimum and maximum."""
    big = enlarge(kernels.to(torch.float32), KERNEL_PIXELS)
    return make_grid(
        big, nrow=min(ROW, len(big)), padding=2, normalize=True, scale_each=True, pad_value=1.0
    )


def run_filters(args: argparse.Namespace) -> int:
    out = check_output(args.output) if args.output else None
    trained = open_trained(args.run)
    name = kernel_layer(trained, args.layer)
    model = trained.model(torch.device("cpu"))
    weight = model.get_submodule(name).get_parameter("weight").detach()
    groups = kernel_groups(trained, name, weight)
    channels = weight.shape[1]
    if channels != 3 and not 0 <= args.channel < channels:
        raise UsageError(
            f"--channel {args.channel}: {name}'s kernels read {channels} channels each; "
            f"give 0 … {channels - 1}"
        )
    channel = None if channels == 3 else args.channel
    fractions = {g.name: colour_fraction(g.kernels) for g in groups}
    if out is not None:
        rows = [
            (_band_label(g, fractions[g.name]), band(shown(g.kernels, args.channel)))
            for g in groups
        ]
        k = "×".join(str(s) for s in weight.shape[1:])
        seen = "" if channel is None else f", input channel {channel} of each"
        bands(rows, f"{trained.spec.name}: {name}, {len(weight)} kernels {k}{seen}", out)
    if args.json:
        report = {
            "layer": name,
            "input_channels": channels,
            "shown_channel": channel,
            "groups": {
                g.name: {"kernels": len(g.kernels), "colour_fraction": fractions[g.name]}
                for g in groups
            },
        }
        print(json.dumps(report))
        return 0
    k = "×".join(str(s) for s in weight.shape[1:])
    print(f"{name}: {len(weight)} kernels of {k} in {len(groups)} group(s)")
    for g in groups:
        fraction = fractions[g.name]
        shown_as = "-" if fraction is None else f"{fraction:.3f}"
        print(f"  {g.name:<8} {len(g.kernels):>5} kernels  colour fraction {shown_as}")
    if channel is not None:
        print(
            f"  (the colour fraction is for kernels that read RGB; the picture shows input "
            f"channel {channel} of each kernel: --channel to choose)"
        )
    if out is not None:
        print(f"wrote {out}")
    return 0


def _band_label(group: Group, fraction: float | None) -> str:
    said = f"{group.name}: {len(group.kernels)} kernels"
    if fraction is not None:
        said += f", colour fraction {fraction:.2f}"
    return said
