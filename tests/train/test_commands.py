"""`netspec train` and `netspec eval` under signals, bad folders and mismatched settings."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from netspec import compile, load_spec
from netspec.cli import main
from netspec.train.augment import Stats
from netspec.train.checkpoint import load_checkpoint
from netspec.train.data import open_val, val_loader
from netspec.train.device import options_for
from netspec.train.evaluate import evaluate
from netspec.train.loop import train
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"


pytestmark = pytest.mark.usefixtures("own_cache")


def netspec(*args: str, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "netspec.cli", *args],
        cwd=ROOT,
        env={**os.environ, "NETSPEC_CACHE": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def run_main(capsys, *args: str) -> tuple[int, list[str]]:
    status = main(list(args))
    return status, capsys.readouterr().err.splitlines()


def quiet(*_):
    pass


# ------------------------------------------------------------ folders checked before work


def test_out_that_is_a_file_is_one_line_before_statistics(data, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    status, err = run_main(capsys, "train", str(TINY), "--data", str(data), "--out", str(target))
    assert (status, err) == (
        2,
        [f"netspec train: argument --out: {target} is a file, not a folder: give a folder"],
    )
    assert not (tmp_path / "cache").exists()  # no statistics were fitted (nor cached)


def test_out_under_proc_is_one_line(data, tmp_path, capsys):
    status, err = run_main(capsys, "train", str(TINY), "--data", str(data), "--out", "/proc/run")
    assert status == 2 and len(err) == 1
    assert err[0] == (
        "netspec train: argument --out: /proc/run is under /proc, the kernel's files: "
        "write elsewhere"
    )
    assert not (tmp_path / "cache").exists()


def test_unusable_cache_is_one_line_before_statistics(data, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    monkeypatch.setenv("NETSPEC_CACHE", str(blocker))
    out = tmp_path / "run"
    status, err = run_main(capsys, "train", str(TINY), "--data", str(data), "--out", str(out))
    assert (status, err) == (
        2,
        [
            f"netspec train: cache folder {blocker / 'stats'} is unusable (Not a directory): "
            "set NETSPEC_CACHE to a folder you can write"
        ],
    )
    assert not out.exists()  # the run folder it made for the lock is gone again


# --------------------------------------------------------------------------- signals


@pytest.mark.slow
def test_sigterm_saves_interrupted_pt_with_statistics_and_exits_143(data, tmp_path):
    run = tmp_path / "run"
    p = netspec(
        "train", str(TINY), "--data", str(data), "--out", str(run), "--epochs", "50",
        cache=tmp_path / "c",
    )  # fmt: skip
    wait_for(lambda: (run / "last.pt").exists())
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 143
    err = p.stderr.read()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"netspec train: terminated (SIGTERM); {run / 'last.pt'} holds the last finished "
        f"epoch: continue with --resume {run}"
    )
    last, interrupted = load_checkpoint(run / "last.pt"), load_checkpoint(run / "interrupted.pt")
    assert set(interrupted["stats"]) == {"mean", "eigvals", "eigvecs"}
    for key in ("mean", "eigvals", "eigvecs"):
        assert torch.equal(interrupted["stats"][key], last["stats"][key])

    # interrupted.pt evaluates like any checkpoint: the same numbers as its weights evaluated
    # here, with the statistics of the run
    p = netspec(
        "eval", str(TINY), "--checkpoint", str(run / "interrupted.pt"), "--data", str(data),
        cache=tmp_path / "c",
    )  # fmt: skip
    assert p.wait(timeout=120) == 0, p.stderr.read()
    got = json.loads(p.stdout.read().splitlines()[-1])
    assert got == pytest.approx(evaluate_here(run / "interrupted.pt", data), rel=1e-5)


def evaluate_here(checkpoint: Path, data: Path) -> dict[str, float]:
    state = load_checkpoint(checkpoint)
    spec = load_spec(TINY, ["data.workers=0"])
    model = compile(spec)
    model.load_state_dict(state["model"])
    batches = val_loader(open_val(data, spec.data), spec.data, spec.train.batch_size)
    return evaluate(model, batches, options_for(spec, torch.device("cpu"), Stats(**state["stats"])))


@pytest.mark.slow
def test_ctrl_c_while_starting_up_is_one_line(data, tmp_path):
    p = netspec("train", str(TINY), "--data", str(data), cache=tmp_path / "c")
    time.sleep(1.0)  # importing torch, reading the spec or fitting statistics
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    err = p.stderr.read().strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    # where the second lands depends on the machine's load: each place has its own one line
    assert err[0] in (
        "netspec train: interrupted",
        "netspec train: interrupted; stopped before training began; nothing to resume",
        "netspec train: interrupted; no epoch had finished, so there is nothing to resume",
    )


@pytest.mark.slow
def test_ctrl_c_while_generating_shapes_leaves_no_half_data_set(tmp_path):
    cache = tmp_path / "c"
    p = netspec("train", str(TINY), "--data", "shapes", "--out", str(tmp_path / "r"), cache=cache)
    wait_for(lambda: cache.is_dir() and any(cache.glob(".shapes-*")))  # generating
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    err = p.stderr.read().strip().splitlines()
    assert err == ["netspec train: interrupted; stopped before training began; nothing to resume"]
    left = [q.name for q in cache.iterdir() if "shapes" in q.name]
    assert left == [], "a half-written data set was left"
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_sigterm_during_evaluation_is_one_line(data, tmp_path):
    run = tmp_path / "run"
    train(load_spec(TINY, ["train.epochs=1", "data.workers=0"]), data, run, log=quiet)
    p = netspec(
        "eval", str(TINY), "--checkpoint", str(run / "best.pt"), "--data", str(data),
        "--ten-crop", "--workers", "0", cache=tmp_path / "c",
    )  # fmt: skip
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    status = p.wait(timeout=60)
    err = p.stderr.read().strip().splitlines()
    if status == 0:
        pytest.skip("the evaluation finished before the signal")
    assert status == 143 and len(err) == 1, err
    assert err[0] in (
        "netspec eval: terminated (SIGTERM)",
        "netspec eval: terminated (SIGTERM); no result",
    )


# ------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    train(load_spec(TINY, ["train.epochs=1", "data.workers=0"]), data, run, log=quiet)
    return run


@pytest.mark.slow  # seconds of work: the slow lane keeps the fast one under 30 s
def test_eval_takes_the_runs_data_settings_from_the_checkpoint(data, trained, tmp_path, capsys):
    # a spec file whose data section differs from the run's: the checkpoint's settings win
    other = tmp_path / "tiny-resize-40.yaml"
    other.write_text(TINY.read_text().replace("resize: 32", "resize: 40"))
    args = ["eval", "--checkpoint", str(trained / "best.pt"), "--data", str(data)]
    assert main([*args[:1], str(other), *args[1:]]) == 0
    from_other = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert main([*args[:1], str(TINY), *args[1:]]) == 0
    from_own = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert from_other == from_own == pytest.approx(evaluate_here(trained / "best.pt", data))


def test_eval_refuses_data_settings_the_checkpoint_cannot_serve(data, trained, tmp_path, capsys):
    ckpt = trained / "best.pt"
    base = ["eval", str(TINY), "--checkpoint", str(ckpt), "--data", str(data)]
    status, err = run_main(capsys, *base, "--set", "data.resize=40")
    assert (status, err) == (
        2,
        [
            f"netspec eval: data.resize is 40, but the mean image in {ckpt} is 32×32 (the "
            "run's resize): evaluate with --set data.resize=32, or with --set data.mean=none"
        ],
    )
    # valid in the spec file (resize 40), not with the run's resize of 32
    other = tmp_path / "tiny-resize-40.yaml"
    other.write_text(TINY.read_text().replace("resize: 32", "resize: 40"))
    base[1] = str(other)
    status, err = run_main(capsys, *base, "--set", "data.crop=36")
    assert (status, err) == (
        2,
        [
            f"netspec eval: --set crop does not fit the run's data settings in {ckpt}: "
            "data.crop (36) must not exceed data.resize (32): crops are cut from the resized image"
        ],
    )


def test_eval_of_a_checkpoint_without_weights_is_one_line(data, trained, tmp_path, capsys):
    ckpt = tmp_path / "empty.pt"
    torch.save({"epoch": 1}, ckpt)
    status, err = run_main(
        capsys, "eval", str(TINY), "--checkpoint", str(ckpt), "--data", str(data)
    )
    assert (status, err) == (
        2,
        [
            f"netspec eval: {ckpt}: has no 'model', which it needs to be evaluated; "
            "use a checkpoint written by netspec train"
        ],
    )
