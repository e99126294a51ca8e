"""Device groups on one device compute what the paper's two GPUs compute, half by half."""

import torch
import torch.nn.functional as F

from netspec import build_graph, compile, load_spec
from tests.conftest import ROOT


def lrn_paper(x: torch.Tensor, n: int = 5, alpha=1e-4, beta=0.75, k=2.0) -> torch.Tensor:
    channels = x.shape[1]
    out = torch.empty_like(x)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[:, i] = x[:, i] / (k + alpha * (x[:, lo : hi + 1] ** 2).sum(1)) ** beta
    return out


def two_towers(model, x: torch.Tensor) -> torch.Tensor:
    """The mini net as two GPUs would run it: each tower holds half of every weight layer."""

    def half(name, g):
        m = model.get_submodule(name)
        per = m.weight.shape[0] // 2
        return m.weight[g * per : (g + 1) * per], m.bias[g * per : (g + 1) * per]

    def pool(t, ceil=False):
        return F.max_pool2d(t, 3, 2, ceil_mode=ceil)

    towers = []
    for g in range(2):
        w, b = half("conv1", g)  # sees the whole image
        t = pool(lrn_paper(F.relu(F.conv2d(x, w, b, stride=2))))  # LRN over its 16 maps only
        w, b = half("conv2", g)
        towers.append(pool(lrn_paper(F.relu(F.conv2d(t, w, b, padding=2)))))
    both = torch.cat(towers, 1)
    towers = []
    for g in range(2):
        w, b = half("conv3", g)  # crosses: sees both towers
        t = F.relu(F.conv2d(both, w, b, padding=1))
        w, b = half("conv4", g)
        t = F.relu(F.conv2d(t, w, b, padding=1))
        w, b = half("conv5", g)
        towers.append(pool(F.relu(F.conv2d(t, w, b, padding=1)), ceil=True))
    flat = torch.cat([t.flatten(1) for t in towers], 1)
    for name in ("fc6", "fc7"):
        flat = torch.cat([F.relu(F.linear(flat, *half(name, g))) for g in range(2)], 1)
    return torch.cat([F.linear(flat, *half("fc8", g)) for g in range(2)], 1)


def test_grouped_module_equals_two_towers():
    torch.manual_seed(1)
    spec = load_spec(ROOT / "specs/alexnet-mini.yaml")
    model = compile(spec).double().eval()
    x = torch.randn(3, 3, 56, 56, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), two_towers(model, x), rtol=1e-10, atol=1e-10)


def test_grouped_layers_compile_to_grouped_convolutions():
    spec = load_spec(ROOT / "specs/alexnet.yaml")
    model = compile(spec, device="meta")
    groups = {n: model.get_submodule(n).groups for n in ("conv1", "conv2", "conv3", "conv4")}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2}
    graph = build_graph(spec)
    assert graph.node("norm1").split and not graph.node("input").split
    assert model.get_submodule("norm1").groups == 2


def test_grouped_linear_is_block_diagonal():
    spec = load_spec(ROOT / "tests/nets/zoo.yaml")
    torch.manual_seed(0)
    fc1 = compile(spec).get_submodule("fc1")
    x = torch.randn(4, 60)
    w = fc1.weight  # (12, 30): units 0-5 see features 0-29, units 6-11 features 30-59
    expected = torch.cat([x[:, :30] @ w[:6].T, x[:, 30:] @ w[6:].T], 1) + fc1.bias
    torch.testing.assert_close(fc1(x), expected)


def test_first_layer_computes_each_groups_filters_on_its_own():
    from netspec.backends.torch_layers import PerGroupConv2d

    model = compile(load_spec(ROOT / "specs/alexnet.yaml"), device="meta")
    assert isinstance(model.conv1, PerGroupConv2d) and model.conv1.parts == 2
    assert type(model.conv3) is torch.nn.Conv2d  # 256 channels in: one convolution
    torch.manual_seed(0)
    split = PerGroupConv2d(3, 8, 5, 2, 1, parts=2)
    whole = torch.nn.Conv2d(3, 8, 5, 2, 1)
    whole.load_state_dict(split.state_dict())
    x = torch.randn(4, 3, 21, 21)
    outs = [m(x) for m in (split, whole)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
    g = torch.randn_like(outs[0])
    for out in outs:
        out.backward(g)
    for name in ("weight", "bias"):
        a, b = getattr(split, name).grad, getattr(whole, name).grad
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
