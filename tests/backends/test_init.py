"""Each weight is drawn once, from the distribution the spec names, in the graph's order."""

import pytest
import torch
import torchvision

from netspec import compile, load_spec
from tests.conftest import ROOT


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_torch_init_is_torchvisions_draw_for_draw():
    """With one seed, torchvision's constructor and `compile` draw the same weights and
    leave the generator in the same state: torch's default, drawn once."""
    torch.manual_seed(3)
    reference = torchvision.models.alexnet(weights=None)
    after_reference = torch.random.get_rng_state()
    torch.manual_seed(3)
    ours = compile(load_spec(ROOT / "specs/torchvision-alexnet.yaml"))
    assert torch.equal(torch.random.get_rng_state(), after_reference)
    theirs = [p for p in reference.parameters()]
    mine = [p for p in ours.parameters()]
    assert len(theirs) == len(mine) == 16
    for a, b in zip(theirs, mine, strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_paper_init_draws_each_weight_once_and_sets_biases():
    torch.manual_seed(5)
    model = compile(load_spec(ROOT / "specs/alexnet.yaml"))
    after = torch.random.get_rng_state()
    torch.manual_seed(5)
    names = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
    for name in names:
        weight = model.get_submodule(name).weight
        assert torch.equal(weight, torch.empty(weight.shape).normal_(0.0, 0.01)), name
    assert torch.equal(torch.random.get_rng_state(), after)
    for name in names:
        one = name in ("conv2", "conv4", "conv5", "fc6", "fc7")
        assert torch.all(model.get_submodule(name).bias == (1.0 if one else 0.0))


def test_default_bias_with_a_named_weight_init(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ninput: [3, 8, 8]\ninit: {weight: xavier}\n"
        "layers:\n  - {name: c, type: conv, filters: 6, kernel: 3}\n"
    )
    torch.manual_seed(0)
    conv = compile(load_spec(spec)).get_submodule("c")
    torch.manual_seed(0)
    weight = torch.nn.init.xavier_uniform_(torch.empty(6, 3, 3, 3))
    bound = 1 / (3 * 3 * 3) ** 0.5  # torch's default bias: U(±1/√fan_in)
    bias = torch.empty(6).uniform_(-bound, bound)
    assert torch.equal(conv.weight, weight)
    assert torch.equal(conv.bias, bias)


def test_batchnorm_and_grouped_linear_start_as_torch_starts_them():
    torch.manual_seed(0)
    model = compile(load_spec(ROOT / "tests/nets/zoo.yaml"))
    bn = model.get_submodule("bn")
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.bias, torch.zeros(8))
    assert torch.equal(bn.running_mean, torch.zeros(8))
    assert torch.equal(bn.running_var, torch.ones(8))
    assert bn.num_batches_tracked.item() == 0
    fc1 = model.get_submodule("fc1")  # 12 units in 2 groups, each seeing 30 of 60 features
    state = torch.random.get_rng_state()
    fc1.reset_parameters()
    torch.random.set_rng_state(state)
    reference = torch.nn.Linear(30, 12)  # what each unit would start as, seeing 30 features
    assert torch.equal(fc1.weight, reference.weight) and torch.equal(fc1.bias, reference.bias)
