"""Shapes and parameter counts from the graph equal what the compiled torch module does."""

import pytest
import torch

from netspec import build_graph, compile, load_spec
from netspec.ir.graph import INPUT, order
from tests.conftest import SPECS, TEST_SPECS

FULL_SIZE = {"alexnet.yaml", "torchvision-alexnet.yaml"}  # seconds each: the slow lane


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.slow) if p.name in FULL_SIZE else p
        for p in SPECS + TEST_SPECS
    ],
    ids=lambda p: p.name,
)
def test_static_shapes_and_params_match_real_module(path):
    spec = load_spec(path)
    graph = build_graph(spec)
    torch.manual_seed(0)
    model = compile(spec)
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda mod, args, out, name=name: seen.__setitem__(name, tuple(out.shape))
        )
        for name in order(graph)
        if name != INPUT
    ]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *spec.input))
    for h in hooks:
        h.remove()
    assert out.shape[0] == 2
    for name in order(graph):
        if name == INPUT:
            continue
        assert seen[name] == (2, *graph.node(name).shape), name
        real = sum(p.numel() for p in model.get_submodule(name).parameters())
        assert real == graph.node(name).params, name
    assert sum(p.numel() for p in model.parameters()) == graph.net.params


@pytest.mark.parametrize("batch", [1, 5])
def test_module_runs_on_any_batch_size(batch):
    from tests.conftest import ROOT

    model = compile(load_spec(ROOT / "specs/alexnet-mini.yaml")).eval()
    with torch.no_grad():
        assert model(torch.randn(batch, 3, 56, 56)).shape == (batch, 10)


def test_meta_compile_allocates_no_weights():
    from tests.conftest import ROOT

    model = compile(load_spec(ROOT / "specs/alexnet.yaml"), device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model.get_submodule("conv2").weight.shape == (256, 48, 5, 5)


def test_every_layer_type_is_in_the_test_zoo():
    from netspec.spec.layers import LAYER_TYPES
    from tests.conftest import ROOT

    zoo = load_spec(ROOT / "tests/nets/zoo.yaml")
    assert {layer.type for layer in zoo.layers} == set(LAYER_TYPES)
