"""ReLUs overwrite their input only where no other layer, and no backward, still needs it."""

import torch
from torch import nn

from netspec import compile, load_spec
from tests.conftest import ROOT

BRANCHY = """
name: branchy
input: [3, 9, 9]
classes: 5
layers:
  - {name: c1, type: conv, filters: 4, kernel: 3, padding: 1}
  - {name: r1, type: relu}                                   # c1's only reader
  - {name: c2, type: conv, filters: 4, kernel: 3, padding: 1}
  - {name: r2, type: relu}                                   # c2 is read by skip too
  - {name: skip, type: conv, filters: 4, kernel: 1, inputs: [c2]}
  - {name: sum, type: add, inputs: [r2, skip]}
  - {name: t, type: tanh}
  - {name: r3, type: relu}                                   # tanh's backward reads its output
  - {name: pool, type: maxpool, kernel: 3, stride: 2}
  - {name: r4, type: relu}                                   # after a pool
  - {name: fc, type: linear, units: classes}
"""


def in_place(model: nn.Module) -> dict[str, bool]:
    return {n: m.inplace for n, m in model.named_children() if isinstance(m, nn.ReLU)}


def test_only_a_sole_reader_of_an_output_no_backward_keeps_runs_in_place(tmp_path):
    spec = tmp_path / "branchy.yaml"
    spec.write_text(BRANCHY)
    model = compile(load_spec(spec))
    assert in_place(model) == {"r1": True, "r2": False, "r3": False, "r4": True}


def test_every_relu_of_the_paper_net_runs_in_place():
    model = compile(load_spec(ROOT / "specs/alexnet.yaml"), device="meta")
    assert in_place(model) == {f"relu{i}": True for i in range(1, 8)}


def test_in_place_relus_give_the_same_outputs_and_gradients(tmp_path):
    spec = tmp_path / "branchy.yaml"
    spec.write_text(BRANCHY)
    torch.manual_seed(0)
    model = compile(load_spec(spec))
    copy = compile(load_spec(spec))
    copy.load_state_dict(model.state_dict())
    for m in copy.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.randn(4, 3, 9, 9)
    grads = []
    for net in (model, copy):
        out = net(x)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1], strict=True))
    assert sum(g.abs().sum().item() for g in grads[0][1]) > 0
