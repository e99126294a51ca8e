"""`netspec train --init-from FILE`: start a run from another's weights, by Caffe's rule.

Caffe's fine-tuning rule: every tensor whose key and shape match is copied, and every other
layer keeps the spec's own initialisation. So a net trained for 1000 classes starts a
10-class run with everything but its last layer, and one line says which layers start fresh.

FILE is a run's checkpoint (`last.pt`, `best.pt`) or a plain `state_dict` (torchvision's
weight files are plain state_dicts). A layer whose parameters are named otherwise in FILE
(`features.0` for torchvision's first convolution) says so in the spec with `weights_key`;
a spec whose layers are named as torchvision names its modules needs no key at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from netspec.errors import UsageError
from netspec.spec.model import Spec
from netspec.train.checkpoint import load_checkpoint, state_dict_in


def source_keys(spec: Spec) -> dict[str, str]:
    """Each layer's name in a weights file: its `weights_key`, or its own name."""
    return {layer.name: getattr(layer, "weights_key", None) or layer.name for layer in spec.layers}


def layer_of(key: str, names: Iterable[str]) -> str | None:
    """The layer a tensor key belongs to: the longest name that prefixes it (names may hold
    dots, as repeated blocks' do)."""
    owners = [name for name in names if key.startswith(f"{name}.")]
    return max(owners, key=len) if owners else None


def by_spec_names(weights: dict[str, torch.Tensor], spec: Spec) -> dict[str, torch.Tensor]:
    """`weights` with each tensor of a layer's `weights_key` under the layer's own name, so
    that a file named otherwise (torchvision's `features.0.weight`) reads as the spec's. A key
    that a longer layer name of the spec prefixes is that layer's own, as a file the spec
    wrote names it: `features.0.conv.weight` stays where `features.0` is another's key."""
    keys = source_keys(spec)
    renames = {key: name for name, key in keys.items() if key != name}
    named = {}
    for key, tensor in weights.items():
        source, own = layer_of(key, renames), layer_of(key, keys)
        if source and not (own and len(own) > len(source)):
            key = f"{renames[source]}{key[len(source) :]}"
        named[key] = tensor
    return named


@dataclass(frozen=True)
class Copied:
    """What `copy_matching` did: tensors copied, and the layers left as the spec made them,
    each with the reason."""

    tensors: int
    fresh: dict[str, str]

    def line(self, file: Path) -> str:
        fresh = "; ".join(f"{name} ({why})" for name, why in self.fresh.items()) or "none"
        return f"--init-from {file}: copied {self.tensors} tensors; initialised fresh: {fresh}"


def copy_matching(model: nn.Module, spec: Spec, file: Path) -> Copied:
    """Copy into `model` every tensor of FILE whose key (through `weights_key`) and shape
    match; the rest keep the spec's initialisation. FILE matching nothing is an error."""
    weights = by_spec_names(state_dict_in(file, load_checkpoint(file)), spec)
    keys = source_keys(spec)
    state = model.state_dict()
    fresh: dict[str, str] = {}
    copied = 0
    with torch.no_grad():
        for key, tensor in state.items():
            layer = layer_of(key, keys) or key
            source = f"{keys.get(layer, layer)}{key[len(layer) :]}"  # as the file names it
            found = weights.get(key)
            if found is None:
                fresh.setdefault(layer, f"no {source} in the file")
            elif found.shape != tensor.shape:
                fresh.setdefault(
                    layer,
                    f"{source} is {_shape(found)} in the file, {_shape(tensor)} in the spec",
                )
            else:
                tensor.copy_(found)
                copied += 1
    if not copied:
        raise UsageError(
            f"--init-from {file}: none of its {len(weights)} tensors matches a layer of "
            f"{spec.name} by name and shape (its first: {next(iter(weights), 'none')}); "
            "name the layers as the file does, or give them weights_key"
        )
    return Copied(copied, fresh)


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "a scalar"
