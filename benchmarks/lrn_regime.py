"""How much each LRN layer of a spec does: constant factor, or competition between maps?

    python benchmarks/lrn_regime.py specs/alexnet-study.yaml --data shapes \\
        --checkpoint runs/ablate-paper/baseline/seed0/best.pt

LRN divides a_i by (k + α·Σ_j a_j²)^β. Where α·Σa² ≪ k the divisor is k^β at every position
and channel: a constant factor the next layer's weights absorb, and removing the layer changes
nothing but a scale. Where α·Σa² reaches k, strongly responding maps damp their neighbours.
For every positive input activation (ReLU'd maps are zero elsewhere) this prints the median,
90th and 99th percentiles of D = α·Σa² / k, and the matching gain relative to the constant
one, (1 + D)^-β: 1 means the constant factor, 0.5 that a position's output is halved by the
activity around it.
The window sum is computed here directly from the spec's LRN constants, channel by channel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from netspec import compile, load_spec
from netspec.spec.layers import LRN
from netspec.train.checkpoint import load_checkpoint
from netspec.train.data import open_data, resolve_data_dir

QUANTILES = (0.5, 0.9, 0.99)


def window_term(a: torch.Tensor, layer: LRN, groups: int) -> torch.Tensor:
    """α'·Σ_j a_j² for every (image, channel, position), each device group on its own."""
    c = a.shape[1]
    per = c // groups
    if layer.convention == "paper":
        before, after, scale = layer.size // 2, layer.size // 2, layer.alpha
    else:
        before, after, scale = layer.size // 2, (layer.size - 1) // 2, layer.alpha / layer.size
    out = torch.empty_like(a)
    for i in range(c):
        g0 = i // per * per
        lo, hi = max(g0, i - before), min(g0 + per - 1, i + after)
        out[:, i] = scale * a[:, lo : hi + 1].pow(2).sum(dim=1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec")
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", type=Path, help="trained weights; default: the initial ones")
    p.add_argument("--images", type=int, default=256, help="validation images to look at")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    spec = load_spec(args.spec, [*args.overrides, "data.ten_crop=false"])  # one crop is enough
    torch.manual_seed(spec.train.seed)
    model = compile(spec)
    if args.checkpoint:
        model.load_state_dict(load_checkpoint(args.checkpoint)["model"])
    model.eval()
    data = open_data(resolve_data_dir(args.data), spec.data)
    x = data.finish(torch.device("cpu"))(next(iter(data.val_loader(args.images))))
    norms = [layer for layer in spec.layers if isinstance(layer, LRN)]
    inputs: dict[str, torch.Tensor] = {}
    for layer in norms:
        model.get_submodule(layer.name).register_forward_pre_hook(
            lambda m, a, name=layer.name: inputs.__setitem__(name, a[0].detach())
        )
    with torch.no_grad():
        model(x)  # finished: the mean taken away and the pixel scale applied, as in training
    groups = max(1, len(spec.groups))
    print(
        f"{'layer':6}  {'α':>7}  {'k':>4}  {'D: median':>10}  {'90%':>8}  {'99%':>8}  "
        "gain: median  90%   99%"
    )
    for layer in norms:
        a = inputs[layer.name]
        d = (window_term(a, layer, groups) / layer.k)[a > 0]
        qs = torch.tensor(QUANTILES)
        dq = torch.quantile(d[torch.randperm(len(d))[:1_000_000]], qs)
        gq = (1 + dq).pow(-layer.beta)  # the gain falls as D rises: the same positions
        print(
            f"{layer.name:6}  {layer.alpha:7.3g}  {layer.k:4g}  "
            + "  ".join(f"{v:{10 if i == 0 else 8}.3g}" for i, v in enumerate(dq))
            + "        "
            + "  ".join(f"{v:4.2f}" for v in gq)
        )


if __name__ == "__main__":
    main()
