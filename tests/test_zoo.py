"""The classic nets as specs, each checked against torchvision's own model of it.

For each: the parameter count is torchvision's; the multiply-accumulates are half of what
torch's own FLOP counter counts (it counts a multiply-add as two); with torchvision's
state_dict loaded through --init-from's rule the outputs equal torchvision's; and the net
draws and exports to ONNX (onnxruntime agrees) and to a PyTorch file. One of them trains an
epoch on `shapes`.
"""

import importlib.util
import math
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from netspec import build_graph, compile, load_spec
from netspec.cli import main
from netspec.train.finetune import copy_matching
from netspec.train.loop import train
from netspec.train.shapes_data import ensure_shapes
from tests.conftest import ROOT, ZOO_SPECS

pytestmark = pytest.mark.slow  # full-size nets: seconds each to build and run

# each spec, and torchvision's model as the spec mirrors it
ZOO: dict[str, Callable[[], nn.Module]] = {
    "specs/torchvision-alexnet.yaml": partial(torchvision.models.alexnet, weights=None),
    "specs/zoo/vgg16.yaml": partial(torchvision.models.vgg16, weights=None),
    "specs/zoo/resnet18.yaml": partial(torchvision.models.resnet18, weights=None),
    # no auxiliary classifiers, and the input as given (see the spec's header)
    "specs/zoo/googlenet.yaml": partial(
        torchvision.models.googlenet,
        weights=None,
        aux_logits=False,
        transform_input=False,
        init_weights=False,
    ),
    "specs/zoo/squeezenet1_1.yaml": partial(torchvision.models.squeezenet1_1, weights=None),
}
# torchvision's own counts (its weights' `num_params`), which each spec's must equal
PARAMETERS = {
    "specs/torchvision-alexnet.yaml": 61_100_840,
    "specs/zoo/vgg16.yaml": 138_357_544,
    "specs/zoo/resnet18.yaml": 11_689_512,
    "specs/zoo/googlenet.yaml": 6_624_904,
    "specs/zoo/squeezenet1_1.yaml": 1_235_496,
}
# weights past which the export checks are skipped, to keep the slow lane under 15 minutes:
# VGG-16's 553 MB take 24 s to write and run here, and torchvision-alexnet.yaml's exports
# are checked by tests/backends/test_onnx_export.py and test_torch_source.py already
EXPORT_LIMIT = 100 * 2**20


def skip_if_large(spec) -> None:
    size = build_graph(spec).net.params * 4
    if size > EXPORT_LIMIT:
        pytest.skip(
            f"{spec.name}: {size / 2**20:.0f} MiB of weights, over the "
            f"{EXPORT_LIMIT / 2**20:.0f} MiB that keeps this module quick; the layer types it "
            "has are exported by the smaller nets"
        )


def test_every_spec_in_the_zoo_is_checked():
    assert sorted(ROOT / path for path in ZOO if path.startswith("specs/zoo/")) == ZOO_SPECS


def filled(make: Callable[[], nn.Module]) -> nn.Module:
    """torchvision's model with values that keep every layer's output near unit scale, so
    that 1e-5 is a tight tolerance: weights ~ N(0, 2/fan_in), batch norm scales and running
    variances in [0.5, 1.5], biases, shifts and running means in [-0.1, 0.1]."""
    with torch.device("meta"):
        model = make()
    model.to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            own = dict(module.named_parameters(recurse=False))
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.uniform_(-0.1, 0.1, generator=g)
                module.running_mean.uniform_(-0.1, 0.1, generator=g)
                module.running_var.uniform_(0.5, 1.5, generator=g)
                module.num_batches_tracked.zero_()
            elif isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.normal_(0, math.sqrt(2 / module.weight[0].numel()), generator=g)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1, generator=g)
            else:
                assert not own, f"{type(module).__name__} has parameters this does not fill"
    return model


@pytest.fixture(scope="module", params=sorted(ZOO))
def pair(request, tmp_path_factory):
    """A zoo spec, its compiled module with torchvision's weights, and torchvision's model."""
    reference = filled(ZOO[request.param])
    weights = tmp_path_factory.mktemp("zoo") / "weights.pt"
    torch.save(reference.state_dict(), weights)
    spec = load_spec(ROOT / request.param)
    model = compile(spec).eval()
    copied = copy_matching(model, spec, weights)
    assert copied.fresh == {}, copied.fresh
    assert copied.tensors == len(reference.state_dict())  # every tensor of the file, once
    return request.param, spec, model, reference


def test_parameters_are_torchvisions(pair):
    path, spec, _, reference = pair
    assert build_graph(spec).net.params == PARAMETERS[path]
    assert sum(p.numel() for p in reference.parameters()) == PARAMETERS[path]


def test_macs_are_half_of_torchs_flop_count(pair):
    _, spec, _, reference = pair
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(torch.randn(1, *spec.input))
    assert build_graph(spec).net.macs * 2 == counter.get_total_flops()


def test_outputs_equal_torchvisions_with_its_weights(pair):
    _, spec, model, reference = pair
    x = torch.randn(2, *spec.input, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert expected.shape == (2, 1000) and expected.std() > 0.1  # not next to nothing


def test_it_draws_and_exports_to_a_pytorch_file(pair, tmp_path):
    path, spec, model, _ = pair
    assert main(["draw", str(ROOT / path), "-o", str(tmp_path / "net.svg")]) == 0
    assert (tmp_path / "net.svg").read_text().count('<g id="node') >= len(spec.layers)
    skip_if_large(spec)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "net.py"
    assert main(["export", str(ROOT / path), "--checkpoint", str(weights), "-o", str(out)]) == 0
    weights.unlink()
    loader = importlib.util.spec_from_file_location("exported", out)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    exported = getattr(module, module.__all__[0])().eval()
    exported.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
    x = torch.randn(2, *spec.input)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-5)


def test_it_exports_to_onnx(pair, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path, spec, model, _ = pair
    skip_if_large(spec)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "net.onnx"
    assert main(["export", str(ROOT / path), "--checkpoint", str(weights), "-o", str(out)]) == 0
    x = torch.randn(2, *spec.input)
    session = onnxruntime.InferenceSession(str(out))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory):
    return ensure_shapes(
        tmp_path_factory.mktemp("shapes"), seed=3, size=72, train_per_class=8, val_per_class=2
    )


# SqueezeNet's classifier is a convolution of one map per class: its filters are the classes;
# VGG-16's 4096-unit layers narrowed, so that an epoch does not write 1.1 GB of checkpoints
TEN_CLASSES = {
    "specs/zoo/squeezenet1_1.yaml": ["layers.classifier.1.filters=10"],
    "specs/zoo/vgg16.yaml": [
        "classes=10",
        "layers.classifier.0.units=256",
        "layers.classifier.3.units=256",
    ],
}


@pytest.mark.parametrize("path", sorted(p for p in ZOO if p.startswith("specs/zoo/")))
def test_each_trains_an_epoch_on_shapes(path, small_shapes, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    small = ["input=[3,64,64]", "data.resize=72", "data.crop=64"]
    small += TEN_CLASSES.get(path, ["classes=10"])
    epoch = ["train.batch_size=16", "train.epochs=1", "data.workers=0"]
    spec = load_spec(ROOT / path, small + epoch)
    (row,) = train(spec, small_shapes, tmp_path / "run", log=lambda *_: None)
    assert row["epoch"] == 1
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    assert (tmp_path / "run" / "last.pt").is_file()
