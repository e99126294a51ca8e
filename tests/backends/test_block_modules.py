"""A block use compiles to nested modules, so the state_dict keys are torchvision's."""

from __future__ import annotations

import pytest
import torch
import torchvision
from netspec.backends.torch_module import Uses

from netspec import compile, load_spec
from netspec.train.finetune import by_spec_names
from tests.conftest import ROOT

RESNET = ROOT / "specs/zoo/resnet18.yaml"


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_torchvision_resnet18_weights_load_as_they_are_and_compute_the_same():
    spec = load_spec(RESNET)
    theirs = _filled(torchvision.models.resnet18)
    renamed = by_spec_names(theirs.state_dict(), spec)
    # every key but the projection's (which weights_key renames) is torchvision's own
    assert sorted(set(theirs.state_dict()) - set(renamed)) == sorted(
        f"layer{i}.0.downsample.{k}.{t}"
        for i in (2, 3, 4)
        for k, tensors in ((0, ["weight"]), (1, BN))
        for t in tensors
    )
    ours = compile(spec, device="meta")
    ours.load_state_dict(renamed, strict=True, assign=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours.eval()(x), expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 0.1  # not a net that computes next to nothing


def _filled(make: type[torch.nn.Module] | object) -> torch.nn.Module:
    """A torchvision model with values drawn quickly: weights ~ N(0, 1/fan_in), batch norm
    scales and variances around 1, shifts and means around 0."""
    with torch.device("meta"):
        model = make()  # type: ignore[operator]
    model.to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dim() > 1:
                t.normal_(0, t[0].numel() ** -0.5, generator=g)
            elif name.endswith(("bn1.weight", "bn2.weight", "1.weight", "running_var")):
                t.uniform_(0.5, 1.5, generator=g)
            elif t.is_floating_point():
                t.uniform_(-0.1, 0.1, generator=g)
            else:
                t.zero_()
    return model


BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def test_a_use_is_a_module_holding_its_layers():
    model = compile(load_spec(RESNET), device="meta")
    use = model.get_submodule("layer2.0")
    assert isinstance(use, Uses) and isinstance(model.get_submodule("layer2"), Uses)
    assert [name for name, _ in use.named_children()] == [
        "conv1", "bn1", "relu1", "conv2", "bn2", "proj", "projbn", "add", "relu2",
    ]  # fmt: skip
    assert model.get_submodule("layer2.0.proj").stride == (2, 2)
