"""PaperSGD against a hand computation, torch's SGD beside it, and the parameter groups."""

from __future__ import annotations

import io

import pytest
import torch

from netspec.spec.settings import TrainConfig
from netspec.train.optim import PaperSGD, make_optimizer
from netspec.train.schedule import apply_lr

W0 = [1.0, -2.0]
GRADS = [[0.5, -1.0], [0.25, 0.75], [-0.5, 0.125], [1.0, 1.0]]
LRS = [0.1, 0.1, 0.01, 0.01]  # a drop of the rate before the third step
M, WD = 0.9, 0.0005


def paper_by_hand() -> list[list[float]]:
    """v <- m*v - wd*lr*w - lr*g; w <- w + v, in plain Python floats, after each step."""
    w, v, out = list(W0), [0.0, 0.0], []
    for g, lr in zip(GRADS, LRS, strict=True):
        v = [M * vi + (-WD * lr) * wi + (-lr) * gi for vi, wi, gi in zip(v, w, g, strict=True)]
        w = [wi + vi for wi, vi in zip(w, v, strict=True)]
        out.append(w)
    return out


def torch_by_hand() -> list[list[float]]:
    """buf <- m*buf + g + wd*w; w <- w - lr*buf (torch.optim.SGD), after each step."""
    w, buf, out = list(W0), [0.0, 0.0], []
    for g, lr in zip(GRADS, LRS, strict=True):
        buf = [M * b + gi + WD * wi for b, wi, gi in zip(buf, w, g, strict=True)]
        w = [wi - lr * b for wi, b in zip(w, buf, strict=True)]
        out.append(w)
    return out


def run(make: type[torch.optim.Optimizer]) -> list[list[float]]:
    w = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    opt = make([w], lr=LRS[0], momentum=M, weight_decay=WD)
    out = []
    for g, lr in zip(GRADS, LRS, strict=True):
        apply_lr(opt, lr)
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(w.tolist())
    return out


def test_paper_sgd_matches_hand_computation_across_a_rate_drop() -> None:
    expected = paper_by_hand()
    got = run(PaperSGD)
    for step in range(len(LRS)):  # equal to the last bit or two (torch may fuse multiply-add)
        assert got[step] == pytest.approx(expected[step], rel=1e-14, abs=1e-15)
    # one value spelled out: step 1 is w - lr*(g + wd*w)
    assert got[0][0] == pytest.approx(1.0 - 0.1 * (0.5 + 0.0005 * 1.0), rel=1e-15)


def test_torch_sgd_agrees_at_constant_rate_and_differs_after_the_drop() -> None:
    paper, torch_sgd = run(PaperSGD), run(torch.optim.SGD)
    assert torch_sgd == [pytest.approx(w, rel=1e-14) for w in torch_by_hand()]
    for step in (0, 1):  # lr 0.1 throughout: the same rule (v = -lr * buf)
        assert torch_sgd[step] == pytest.approx(paper[step], rel=1e-12, abs=1e-15)
    for step in (2, 3):  # after the drop torch rescales the old velocity by 0.01/0.1
        diff = max(abs(a - b) for a, b in zip(torch_sgd[step], paper[step], strict=True))
        assert diff > 0.05


def test_paper_sgd_state_round_trips_through_weights_only_load() -> None:
    def fresh() -> tuple[torch.nn.Parameter, PaperSGD]:
        w = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float64))
        return w, PaperSGD([w], lr=0.1, momentum=M, weight_decay=WD)

    w, opt = fresh()
    for g in GRADS[:2]:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    buf = io.BytesIO()
    torch.save({"w": w.detach().clone(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    w2, opt2 = fresh()
    with torch.no_grad():
        w2.copy_(saved["w"])
    opt2.load_state_dict(saved["opt"])
    assert torch.equal(opt2.state[w2]["momentum_buffer"], opt.state[w]["momentum_buffer"])
    for g in GRADS[2:]:
        for p, o in ((w, opt), (w2, opt2)):
            p.grad = torch.tensor(g, dtype=torch.float64)
            o.step()
    assert torch.equal(w, w2)


def model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2), torch.nn.ReLU(), torch.nn.Linear(2, 1)
    )


@pytest.mark.parametrize(("name", "cls"), [("sgd_paper", PaperSGD), ("sgd_torch", torch.optim.SGD)])
def test_bias_group_gets_the_multipliers(name: str, cls: type) -> None:
    net = model()
    cfg = TrainConfig(
        optimizer=name, lr=0.01, weight_decay=0.0005, bias_lr_mult=2.0, bias_decay_mult=0.0
    )
    opt = make_optimizer(net, cfg)
    assert type(opt) is cls
    weights, biases = opt.param_groups
    assert (weights["name"], weights["lr"], weights["weight_decay"]) == ("weights", 0.01, 0.0005)
    assert (biases["name"], biases["lr"], biases["weight_decay"]) == ("biases", 0.02, 0.0)
    params = dict(net.named_parameters())
    assert {id(p) for p in biases["params"]} == {
        id(params[n]) for n in ("0.bias", "1.bias", "3.bias")
    }
    # a batchnorm scale is 1-D but not named bias: it is a weight (the paper has no batchnorm)
    assert {id(p) for p in weights["params"]} == {
        id(params[n]) for n in ("0.weight", "1.weight", "3.weight")
    }
    assert opt.param_groups[0]["momentum"] == 0.9
    apply_lr(opt, 0.001)
    assert (weights["lr"], biases["lr"]) == (0.001, 0.002)


def test_bias_multipliers_act_on_the_update() -> None:
    """With zero gradients only weight decay moves a parameter: weights shrink, biases don't."""
    net = torch.nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(2.0)
    cfg = TrainConfig(lr=0.1, weight_decay=0.5, bias_lr_mult=2.0, bias_decay_mult=0.0)
    opt = make_optimizer(net, cfg)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert net.weight.item() == pytest.approx(2.0 - 0.1 * 0.5 * 2.0)
    assert net.bias.item() == 2.0
    net.bias.grad.fill_(1.0)
    opt.step()  # bias: v = 0 - 0.2 * 1 (lr doubled), weight: v = 0.9 * v - 0.05 * w
    assert net.bias.item() == pytest.approx(2.0 - 0.2)
    assert net.weight.item() == pytest.approx(1.9 + 0.9 * -0.1 - 0.05 * 1.9)
