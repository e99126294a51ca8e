"""netspec: a declarative network-spec compiler.

spec = load_spec("specs/alexnet.yaml")   # YAML → validated Spec
graph = build_graph(spec)                 # shapes, parameters, MACs, device groups
model = compile(spec)                     # torch.nn.Module, one submodule per layer
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netspec.errors import Problem, SpecError
from netspec.ir.graph import build_graph
from netspec.spec.model import Spec, load_spec

if TYPE_CHECKING:
    import torch


def compile(spec: Spec, device: str | torch.device | None = None) -> torch.nn.Module:
    """The spec as a torch module; `device="meta"` builds it without allocating weights."""
    from netspec.backends.torch_module import to_module

    graph = build_graph(spec)
    return to_module(graph, spec.init, device)


__all__ = ["Problem", "Spec", "SpecError", "build_graph", "compile", "load_spec"]
