"""The tower form (one process per device group) against the grouped one-process module.

The multi-process tests run 2 gloo processes on the CPU; the grouped reference is computed
here, in the test's own process, from the same weights, input and dropout seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from netspec.backends.torch_towers import TowerDropout, TowerNetwork
from netspec.backends.tower_state import (
    gather_optimizer,
    gather_state,
    join_optimizers,
    join_states,
    optimizer_param_names,
    slice_optimizer,
    slice_state,
)
from torch import nn

from netspec import build_graph, compile, load_spec
from netspec.errors import UsageError
from netspec.train.optim import make_optimizer
from tests.conftest import ROOT
from tests.spawn import run_ranks

# spec, batch, precision: the paper's net in fp32 at the paper's input size; the small nets
# in float64, so that a gradient that is zero but for rounding (a bias before a batchnorm)
# is compared at a precision where the two forms' rounding cannot tell them apart
NETS = {
    "alexnet": (ROOT / "specs/alexnet.yaml", 2, torch.float32),
    "zoo": (ROOT / "tests/nets/zoo.yaml", 4, torch.float64),
    "shared": (ROOT / "tests/nets/shared.yaml", 4, torch.float64),
}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
DROPOUT_SEED = 1


def test_tower_dropout_keeps_its_slice_of_the_grouped_mask():
    x = torch.rand(5, 8, 3)
    torch.manual_seed(4)
    whole = nn.Dropout(0.5).train()(x)
    for rank in range(2):
        torch.manual_seed(4)
        part = TowerDropout(0.5, rank, 2).train()(x[:, 4 * rank : 4 * rank + 4])
        assert torch.equal(part, whole[:, 4 * rank : 4 * rank + 4])
    assert 0 < int((whole == 0).sum()) < whole.numel()  # a real mask, not all or nothing


@pytest.mark.parametrize("net", [pytest.param("alexnet", marks=pytest.mark.slow), "zoo", "shared"])
def test_state_slices_fit_the_towers_and_join_back_exactly(net):
    spec = load_spec(NETS[net][0])
    graph = build_graph(spec)
    torch.manual_seed(0)
    model = compile(spec, device="meta" if net == "alexnet" else None)
    if net == "alexnet":
        model = model.to_empty(device="cpu")
        for t in model.state_dict().values():
            t.copy_(torch.arange(t.numel()).reshape(t.shape))  # each value says where it was
    state = model.state_dict()
    parts = [slice_state(graph, state, g, 2) for g in range(2)]
    for g, part in enumerate(parts):
        with torch.device("meta"):
            tower = TowerNetwork(graph, g, 2)
        tower.load_state_dict(part, assign=True)  # strict: every key, every shape fits
    joined = join_states(graph, parts)
    assert list(joined) == list(state)
    for key, t in state.items():
        assert torch.equal(joined[key], t), key
    if net == "alexnet":  # tower 1 holds the second 48 of conv1's 96 filters
        torch.testing.assert_close(parts[1]["conv1.weight"], state["conv1.weight"][48:])
        assert parts[1]["conv2.weight"].shape == (128, 48, 5, 5)
        assert parts[0]["fc6.weight"].shape == (2048, 9216)


def test_optimizer_state_slices_and_joins_back_exactly():
    spec = load_spec(NETS["shared"][0])
    graph = build_graph(spec)
    torch.manual_seed(0)
    model = compile(spec)
    optimizer = make_optimizer(model, spec.train)
    nn.CrossEntropyLoss()(model(torch.randn(4, 3, 13, 13)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    state = optimizer.state_dict()
    names = optimizer_param_names(model, optimizer)
    parts = [slice_optimizer(graph, state, names, g, 2) for g in range(2)]
    first = names.index("c1.weight")
    assert parts[1]["state"][first]["momentum_buffer"].shape == (4, 3, 3, 3)
    joined = join_optimizers(graph, parts, names)
    assert joined["param_groups"] == state["param_groups"]
    for i, slots in state["state"].items():
        for slot, v in slots.items():
            assert torch.equal(joined["state"][i][slot], v), (names[i], slot)


def test_towers_need_one_process_per_device_group():
    graph = build_graph(load_spec(NETS["zoo"][0]))
    with pytest.raises(UsageError) as exc:
        TowerNetwork(graph, 0, 4)
    assert str(exc.value) == (
        "zoo has 2 device groups (a, b) but 4 processes were started; towers need one "
        "process per group: use --nproc 2"
    )
    graph = build_graph(load_spec(ROOT / "specs/torchvision-alexnet.yaml"))
    with pytest.raises(UsageError, match="torchvision-alexnet has no device groups"):
        TowerNetwork(graph, 0, 2)


def _tower_rank(rank: int, size: int, cases: dict[str, str]) -> dict[str, Any]:
    """One tower's forward, backward and optimiser step for each net; the states gathered."""
    results = {}
    for net, reference in cases.items():
        ref = torch.load(reference, weights_only=True, mmap=True)
        spec = load_spec(NETS[net][0])
        graph = build_graph(spec)
        with torch.device("meta"):
            tower = TowerNetwork(graph, rank, size)
        tower.load_state_dict(slice_state(graph, ref["state"], rank, size), assign=True)
        initial = gather_state(graph, tower.state_dict())
        tower.train()
        torch.manual_seed(DROPOUT_SEED)
        out = tower(ref["x"])
        nn.CrossEntropyLoss()(out, ref["y"]).backward()
        grads = {n: p.grad for n, p in tower.named_parameters()}
        optimizer = make_optimizer(tower, spec.train)
        optimizer.step()
        names = optimizer_param_names(tower, optimizer)
        results[net] = {
            "out": out.detach(),
            "grads": grads,
            "initial": initial,
            "state": gather_state(graph, tower.state_dict()),
            "optimizer": gather_optimizer(graph, optimizer.state_dict(), names),
        }
    return results


def _grouped(net: str, folder: Path) -> tuple[Path, dict[str, Any]]:
    """The grouped module's run on the same batch; its starting state saved for the ranks."""
    path, batch, dtype = NETS[net]
    spec = load_spec(path)
    torch.manual_seed(0)
    model = compile(spec).to(dtype)
    x = torch.randn(batch, *spec.input, dtype=dtype) * (50 if net == "alexnet" else 1)
    y = torch.arange(batch) % (spec.classes or 1)
    reference = folder / f"{net}.pt"
    torch.save({"state": model.state_dict(), "x": x, "y": y}, reference)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    torch.manual_seed(DROPOUT_SEED)
    out = model(x)
    nn.CrossEntropyLoss()(out, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, spec.train)
    optimizer.step()
    return reference, {
        "out": out.detach(),
        "grads": grads,
        "initial": start,
        "state": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "split": {n: build_graph(spec).node(n.split(".")[0]).split for n in grads},
    }


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("towers")
    grouped, cases = {}, {}
    for net in NETS:
        cases[net], grouped[net] = _grouped(net, folder)
    ranks = run_ranks(_tower_rank, 2, folder / "ranks", cases, timeout=300)
    return {"grouped": grouped, "ranks": ranks}


def close(actual: torch.Tensor, expected: torch.Tensor, what: str, scale: float = 0) -> None:
    """Equal to 1e-5 (fp32) of `scale` or the tensor's own: sums taken in another order
    differ by rounding."""
    tol = TOLERANCE.get(expected.dtype, 0.0)
    scale = max(scale, float(expected.abs().max()), 1e-30)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale, msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("net", list(NETS))
def test_tower_forward_and_gradients_equal_the_grouped_module(towers, net):
    grouped = towers["grouped"][net]
    ranks = [r[net] for r in towers["ranks"]]
    for rank in ranks:  # every rank holds the whole output, dropout masks included
        close(rank["out"], grouped["out"], f"{net} output")
    assert float(grouped["out"].std()) > 0
    # a bias before a batchnorm has a gradient of zero but for rounding: compare every
    # gradient at the scale of the net's largest
    scale = max(float(g.abs().max()) for g in grouped["grads"].values())
    assert scale > 0
    for name, grad in grouped["grads"].items():
        what = f"{net} {name} grad"
        if grouped["split"][name]:
            close(torch.cat([r["grads"][name] for r in ranks]), grad, what, scale)
        else:  # a shared layer: every tower holds the whole, summed gradient
            for rank in ranks:
                close(rank["grads"][name], grad, what, scale)


@pytest.mark.slow
@pytest.mark.parametrize("net", list(NETS))
def test_gathered_state_is_the_grouped_state(towers, net):
    grouped = towers["grouped"][net]
    first, second = towers["ranks"][0][net], towers["ranks"][1][net]
    assert second["initial"] is None and second["state"] is None
    assert list(first["initial"]) == list(grouped["initial"])
    for key, t in grouped["initial"].items():  # slice, then gather: exactly the start
        assert torch.equal(first["initial"][key], t), key
    for key, t in grouped["state"].items():  # after one step, weights and running stats
        close(first["state"][key], t, f"{net} {key} after a step")
    optimizer = grouped["optimizer"]
    assert first["optimizer"]["param_groups"] == optimizer["param_groups"]
    scale = max(float(v.abs().max()) for s in optimizer["state"].values() for v in s.values())
    for i, slots in optimizer["state"].items():
        for slot, v in slots.items():
            close(first["optimizer"]["state"][i][slot], v, f"{net} optimiser {i} {slot}", scale)
