"""The classic nets as specs, each checked against torchvision's own model of it.

For each: the parameter count is torchvision's; the multiply-accumulates are half of what
torch's own FLOP counter counts (it counts a multiply-add as two); with torchvision's
state_dict loaded through --init-from's rule the outputs equal torchvision's; and the net
draws and exports to ONNX (onnxruntime agrees) and to a PyTorch file.
"""

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from netspec import build_graph, compile, load_spec
from netspec.train.finetune import copy_matching
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # full-size nets: seconds each to build and run

ZOO: dict[str, Callable[[], nn.Module]] = {
    "specs/torchvision-alexnet.yaml": torchvision.models.alexnet,
}


@pytest.fixture(scope="module", params=sorted(ZOO))
def pair(request, tmp_path_factory):
    """A zoo spec, its compiled module with torchvision's weights, and torchvision's model."""
    torch.manual_seed(0)
    reference = ZOO[request.param](weights=None).eval()
    weights = tmp_path_factory.mktemp("zoo") / "weights.pt"
    torch.save(reference.state_dict(), weights)
    spec = load_spec(ROOT / request.param)
    model = compile(spec).eval()
    copied = copy_matching(model, spec, weights)
    assert copied.fresh == {}, copied.fresh
    return spec, model, reference


def test_parameters_are_torchvisions(pair):
    spec, _, reference = pair
    assert build_graph(spec).net.params == sum(p.numel() for p in reference.parameters())


def test_macs_are_half_of_torchs_flop_count(pair):
    spec, _, reference = pair
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(torch.randn(1, *spec.input))
    assert build_graph(spec).net.macs * 2 == counter.get_total_flops()


def test_outputs_equal_torchvisions_with_its_weights(pair):
    spec, model, reference = pair
    x = torch.randn(2, *spec.input)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_it_draws_and_exports(pair, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from netspec.cli import main

    spec, model, _ = pair
    path = ROOT / next(p for p in ZOO if load_spec(ROOT / p).name == spec.name)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    assert main(["draw", str(path), "-o", str(tmp_path / "net.svg")]) == 0
    assert (tmp_path / "net.svg").read_text().count('<g id="node') >= len(spec.layers)
    assert (
        main(["export", str(path), "--checkpoint", str(weights), "-o", str(tmp_path / "n.onnx")])
        == 0
    )
    x = torch.randn(2, *spec.input)
    session = onnxruntime.InferenceSession(str(tmp_path / "n.onnx"))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)
