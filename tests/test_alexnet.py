"""The paper's numbers (docs/paper.md) and torchvision's AlexNet, reproduced from specs."""

import pytest
import torch
import torchvision

from netspec import build_graph, compile, load_spec
from netspec.ir.graph import order
from tests.conftest import ROOT

PAPER_SHAPES = {
    "conv1": (96, 55, 55),
    "pool1": (96, 27, 27),
    "conv2": (256, 27, 27),
    "pool2": (256, 13, 13),
    "conv3": (384, 13, 13),
    "conv4": (384, 13, 13),
    "conv5": (256, 13, 13),
    "pool5": (256, 6, 6),
    "fc6": (4096,),
    "fc7": (4096,),
    "fc8": (1000,),
}


def _conv(filters, fan_in, k):
    return filters * fan_in * k * k + filters


def test_paper_alexnet_counts_and_shapes():
    graph = build_graph(load_spec(ROOT / "specs/alexnet.yaml"))
    # Parameters computed separately from the paper's table: conv2/4/5 see half the channels.
    expected = (
        _conv(96, 3, 11)
        + _conv(256, 48, 5)
        + _conv(384, 256, 3)
        + _conv(384, 192, 3)
        + _conv(256, 192, 3)
        + (9216 * 4096 + 4096)
        + (4096 * 4096 + 4096)
        + (4096 * 1000 + 1000)
    )
    assert expected == 60_965_224
    assert graph.net.params == 60_965_224
    assert graph.net.macs == 724_406_816
    assert {n: graph.node(n).shape for n in PAPER_SHAPES} == PAPER_SHAPES
    assert graph.net.warnings == []
    assert [n for n in order(graph) if graph.node(n).type == "lrn"] == ["norm1", "norm2"]
    # conv → ReLU → LRN → pool, as the paper (not CaffeNet's swapped order)
    layers = [n for n in order(graph)][1:5]
    assert layers == ["conv1", "relu1", "norm1", "pool1"]


def test_paper_alexnet_without_groups_has_more_parameters():
    spec = load_spec(
        ROOT / "specs/alexnet.yaml",
        ["device_groups=null"] + [f"layers.{n}.connect=all" for n in ("conv2", "conv4", "conv5")],
    )
    assert build_graph(spec).net.params == 62_378_344


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_paper_alexnet_initialisation():
    torch.manual_seed(0)
    model = compile(load_spec(ROOT / "specs/alexnet.yaml"))
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        module = model.get_submodule(name)
        assert module.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert module.weight.mean().item() == pytest.approx(0.0, abs=2e-3)
        one = name in ("conv2", "conv4", "conv5", "fc6", "fc7")
        assert torch.all(module.bias == (1.0 if one else 0.0))


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_torchvision_alexnet_equivalence():
    spec = load_spec(ROOT / "specs/torchvision-alexnet.yaml")
    assert build_graph(spec).net.params == 61_100_840
    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None).eval()
    assert sum(p.numel() for p in reference.parameters()) == 61_100_840
    ours = compile(spec).eval()
    mapping = {
        "features.0": "conv1",
        "features.3": "conv2",
        "features.6": "conv3",
        "features.8": "conv4",
        "features.10": "conv5",
        "classifier.1": "fc6",
        "classifier.4": "fc7",
        "classifier.6": "fc8",
    }
    state = {}
    for theirs, mine in mapping.items():
        for kind in ("weight", "bias"):
            state[f"{mine}.{kind}"] = reference.get_submodule(theirs).get_parameter(kind)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        expected = reference(x)
        got = ours(x)
    assert got.shape == (3, 1000)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
