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

    from netspec.ir.records import NetGraph


def compile(
    spec: Spec, device: str | torch.device | None = None, graph: NetGraph | None = None
) -> torch.nn.Module:
    """The spec as a torch module; `device="meta"` builds it without allocating weights.
    A caller that has the spec's graph already passes it, so it is built once."""
    from netspec.backends.torch_module import to_module

    return to_module(graph or build_graph(spec), spec.init, device)


__all__ = ["Problem", "Spec", "SpecError", "build_graph", "compile", "load_spec"]
