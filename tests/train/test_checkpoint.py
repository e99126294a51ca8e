"""Checkpoints: survive a kill mid-write, refuse bad files in one line, restore the RNGs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.cli import main
from netspec.spec.settings import TrainConfig
from netspec.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from netspec.train.optim import make_optimizer
from netspec.train.schedule import make_schedule

ROOT = Path(__file__).resolve().parents[2]
N = 4_000_000  # 16 MB per save: a write takes long enough to be killed in the middle

WRITER = f"""
import sys, torch
from pathlib import Path
from netspec.train.checkpoint import save_checkpoint
x = torch.empty({N})
i = 0
while True:
    print(i, flush=True)  # about to write payload i
    save_checkpoint(Path(sys.argv[1]), {{"step": i, "x": x.fill_(i)}})
    i += 1
"""


@pytest.mark.slow
def test_a_kill_mid_write_leaves_a_complete_checkpoint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    paths = [tmp_path / f"run{k}" / "ckpt.pt" for k in range(4)]
    children = []
    try:
        for path in paths:  # in parallel, to pay torch's import time once
            path.parent.mkdir()
            cmd = [sys.executable, "-c", WRITER, str(path)]
            children.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
        delays = random.Random(0)
        leftovers = []
        for child, path in zip(children, paths, strict=True):
            kill_mid_write(child, path, delays.uniform(0, 0.02))

            payload = load_checkpoint(path)
            assert payload["step"] >= 1
            assert torch.equal(payload["x"], torch.full((N,), float(payload["step"])))
            temps = [p.name for p in path.parent.iterdir() if p != path]
            assert all(t.startswith(".ckpt.pt.") and t.endswith(".tmp") for t in temps)
            assert list(path.parent.glob("*.pt")) == [path]  # a leftover is not a checkpoint
            leftovers += temps

            save_checkpoint(path, {"step": -1})  # the next save clears the dead writer's temp
            assert list(path.parent.iterdir()) == [path]
            assert load_checkpoint(path) == {"step": -1}
        assert leftovers, "no kill landed mid-write; the test did not test atomicity"
    finally:
        for child in children:
            child.kill()
            child.wait()
            child.stdout.close()


def kill_mid_write(child: subprocess.Popen, path: Path, delay: float) -> None:
    """SIGKILL `child` `delay` seconds into a write, once two payloads are complete."""
    started = -1
    while started < 2:
        started = int(child.stdout.readline())
    deadline = time.monotonic() + 30
    while not any(path.parent.glob(".ckpt.pt.*.tmp")):  # a write is under way
        assert child.poll() is None and time.monotonic() < deadline, "the writer stopped"
        time.sleep(0.001)
    time.sleep(delay)  # somewhere in it, or just after it
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL


def test_optimizers_schedule_rng_and_spec_survive_weights_only_load(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    net(torch.randn(4, 3)).sum().backward()
    payload: dict = {"model": net.state_dict(), "epoch": 3, "spec": "train:\n  lr: 0.01\n"}
    for name in ("sgd_paper", "sgd_torch"):
        opt = make_optimizer(net, TrainConfig(optimizer=name))
        opt.step()
        payload[name] = opt.state_dict()
    schedule = make_schedule(TrainConfig())
    schedule.step(0.5)
    payload |= {"schedule": schedule.state_dict(), "rng": rng_state(), "metrics": {"top1": 0.4}}
    save_checkpoint(tmp_path / "c.pt", payload)

    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["schedule"] == {"epoch": 1, "lr": 0.01, "best": 0.5, "bad_epochs": 0, "drops": 0}
    for name in ("sgd_paper", "sgd_torch"):
        opt = make_optimizer(net, TrainConfig(optimizer=name))
        opt.load_state_dict(loaded[name])
        saved = payload[name]["state"][0]["momentum_buffer"]
        assert torch.equal(opt.state[net.weight]["momentum_buffer"], saved)
        assert opt.param_groups[1]["name"] == "biases"
    assert (loaded["epoch"], loaded["spec"], loaded["metrics"]) == (
        3,
        payload["spec"],
        {"top1": 0.4},
    )


def draws() -> tuple[list[float], list[float], list[float]]:
    return (
        torch.rand(4).tolist(),
        [random.random(), random.gauss(0, 1), random.gauss(0, 1)],
        np.random.standard_normal(3).tolist(),
    )


def test_rng_state_round_trip_restores_identical_draws(tmp_path: Path) -> None:
    random.gauss(0, 1)  # leave a cached Gaussian in Python's state and in numpy's
    np.random.standard_normal(1)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    first = draws()
    draws()  # move every generator on
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draws() == first


def test_missing_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert str(e.value).startswith(f"{tmp_path / 'nope.pt'}: no such checkpoint file; ")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_is_a_one_line_error_naming_it(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": torch.arange(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint" * 50)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a torch checkpoint, or a damaged one (")
    assert msg.endswith("point at a last.pt or best.pt written by netspec train")
    assert "\n" not in msg


def test_unsafe_payload_is_refused_by_weights_only_load(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"rng": np.random.get_state()})  # a numpy array: not allowed
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: holds a numpy.")
    assert str(e.value).endswith(
        "refuses; save only tensors, numbers, strings, and lists and dicts of them"
    )
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("make", "where", "what"),
    [
        (
            lambda: torch.empty(2, 3, device="meta"),
            "model['fc.weight']",
            "is a meta tensor, which holds no values; save the weights themselves (not a "
            "model built on the meta device)",
        ),
        (
            lambda: torch.eye(3).to_sparse(),
            "model['fc.weight']",
            "is a sparse tensor (sparse_coo); netspec reads dense tensors: save it with "
            ".to_dense()",
        ),
        (
            lambda: torch.eye(3).to_sparse_csr(),
            "model['fc.weight']",
            "is a sparse tensor (sparse_csr); netspec reads dense tensors: save it with "
            ".to_dense()",
        ),
    ],
    ids=["meta", "sparse_coo", "sparse_csr"],
)
def test_sparse_or_meta_tensor_in_a_checkpoint_is_one_line(
    tmp_path: Path, capsys, make: Callable[[], torch.Tensor], where: str, what: str
) -> None:
    path = tmp_path / "c.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note that sparse CSR is in beta
        tensor = make()
        torch.save({"model": {"fc.bias": torch.zeros(2), "fc.weight": tensor}, "epoch": 1}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"{path}: its {where} {what}"
    # nested deeper, in a plain state_dict, or in an optimizer's state: found all the same
    torch.save({"opt": {"state": [{"buf": torch.empty(1, device="meta")}]}}, path)
    with pytest.raises(CheckpointError, match=r"its opt\['state'\]\[0\]\['buf'\] is a meta"):
        load_checkpoint(path)
    # and one line from the command that reads it, with nothing else on stderr
    torch.save({"fc.weight": tensor}, path)
    spec = ROOT / "tests/nets/tiny.yaml"
    out = tmp_path / "net.onnx"
    assert main(["export", str(spec), "--checkpoint", str(path), "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"netspec export: {path}: its fc.weight {what}\n"
