"""The run folder under hostile conditions: two writers, kills between the two checkpoint
writes, crafted or missing files on resume, names that YAML or file systems misread."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from netspec import load_spec
from netspec.cli import main
from netspec.spec.document import parse_yaml
from netspec.train.checkpoint import load_checkpoint, save_checkpoint
from netspec.train.loop import train
from netspec.train.runfolder import default_out, spec_yaml
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"
TIMING = {"seconds", "images_per_s", "data_wait"}

# Runs netspec with save_checkpoint wrapped so that the process SIGKILLs itself right after
# writing best.pt for an epoch after the first: between the two checkpoint writes.
KILL_AFTER_BEST = """
import os, signal, sys
import netspec.train.loop as loop
real = loop.save_checkpoint
def save(path, payload):
    real(path, payload)
    if path.name == "best.pt" and payload["epoch"] >= 2:
        os.kill(os.getpid(), signal.SIGKILL)
loop.save_checkpoint = save
from netspec.cli import main
sys.exit(main(sys.argv[1:]))
"""


pytestmark = pytest.mark.usefixtures("own_cache")


def netspec(*args: str, code: str | None = None) -> subprocess.Popen:
    command = ["-c", code] if code else ["-m", "netspec.cli"]
    return subprocess.Popen(
        [sys.executable, *command, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def weights_equal(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def quiet(*_):
    pass


def errors(capsys) -> list[str]:
    """stderr's lines but the note a resumed run prints about its spec.yaml."""
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]


# --------------------------------------------------------------------------- one writer


@pytest.mark.slow
def test_two_runs_started_into_one_folder_at_once(data, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(TINY), "--data", str(data), "--workers", "0", "--out", str(run)]
    both = [netspec(*args), netspec(*args)]  # started together
    statuses = [p.wait(timeout=300) for p in both]
    assert sorted(statuses) == [0, 2], [p.stderr.read() for p in both]
    loser = both[statuses.index(2)]
    err = loser.stderr.read().strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"netspec train: {run} is in use by another netspec train (pid ")
    assert err[0].endswith("wait for it to finish, or choose another --out")
    assert [r["epoch"] for r in rows(run)] == [1, 2, 3]  # one run's epochs, once each


def test_a_held_folder_is_refused_and_freed_afterwards(data, tmp_path, capsys):
    from netspec.train.runfolder import RunFolder

    run = tmp_path / "run"
    with RunFolder(run).locked():
        status = main(["train", str(TINY), "--data", str(data), "--out", str(run)])
        err = capsys.readouterr().err.splitlines()
        assert (status, len(err)) == (2, 1)
        assert f"{run} is in use by another netspec train (pid {os.getpid()})" in err[0]
    with RunFolder(run).locked():  # released: taken again at once
        pass


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_a_finished_run_is_not_started_over(data, tmp_path, capsys):
    run = tmp_path / "run"
    train(load_spec(TINY, ["train.epochs=1"]), data, run, log=quiet)
    before = (run / "last.pt").read_bytes()
    status = main(["train", str(TINY), "--data", str(data), "--out", str(run)])
    assert status == 2
    assert errors(capsys) == [
        f"netspec train: --out {run} already holds a run; continue it with --resume {run} "
        "or choose another --out"
    ]
    assert (run / "last.pt").read_bytes() == before
    assert [r["epoch"] for r in rows(run)] == [1]


# ------------------------------------------------------- a kill between best.pt and last.pt


@pytest.mark.slow
def test_kill_between_best_and_last_loses_nothing(data, tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    args = ["train", str(TINY), "--data", str(data), "--workers", "0", "--set", "train.lr=0.05"]
    full = netspec(*args, "--out", str(whole))
    victim = netspec(*args, "--out", str(broken), code=KILL_AFTER_BEST)
    assert victim.wait(timeout=300) == -9, "no epoch after the first improved: nothing tested"
    assert full.wait(timeout=300) == 0, full.stderr.read()
    best, last = load_checkpoint(broken / "best.pt"), load_checkpoint(broken / "last.pt")
    assert best["epoch"] == last["epoch"] + 1  # killed between the two writes
    resumed = netspec("train", str(TINY), "--data", str(data), "--resume", str(broken))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert rows(broken) == rows(whole)
    assert weights_equal(broken / "best.pt", whole / "best.pt")
    assert weights_equal(broken / "last.pt", whole / "last.pt")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "older"])
def test_resume_repairs_a_best_pt_older_than_the_best_epoch(data, tmp_path, damage, capsys):
    # what a kill after last.pt and before best.pt left, when last.pt was written first
    run = tmp_path / "run"
    train(load_spec(TINY, ["train.epochs=1"]), data, run, log=quiet)
    last = load_checkpoint(run / "last.pt")
    assert last["metrics"]["val_top1"] == last["best_top1"]  # epoch 1 is the best so far
    if damage == "missing":
        (run / "best.pt").unlink()
    else:
        stale = {**last, "best_top1": last["best_top1"] - 0.1, "epoch": 0}
        stale["model"] = {k: torch.zeros_like(v) for k, v in last["model"].items()}
        save_checkpoint(run / "best.pt", stale)
    assert main(["train", str(TINY), "--data", str(data), "--resume", str(run)]) == 0
    assert (
        f"{run / 'best.pt'} was older than the best epoch last.pt records"
        in capsys.readouterr().out
    )
    assert weights_equal(run / "best.pt", run / "last.pt")
    assert load_checkpoint(run / "best.pt")["epoch"] == 1


# ----------------------------------------------------------- what resume reads, crafted


def crafted(last: dict, what: str) -> dict:
    match what:
        case "interrupted":  # an interrupted.pt copied over last.pt
            return {k: last[k] for k in ("model", "epoch", "spec", "stats")}
        case "epoch_text":
            return {**last, "epoch": "1"}
        case "spec_number":
            return {**last, "spec": 7}
        case "model_shapes":
            return {**last, "model": {k: v[..., :1] for k, v in last["model"].items()}}
        case "rng":
            return {**last, "rng": {"torch": "zero"}}
        case "optimizer":
            return {**last, "optimizer": {"state": {}, "param_groups": [{"params": [0]}]}}
    raise AssertionError(what)


EXPECTED = {
    "interrupted": "has no 'optimizer', 'schedule', 'scaler', 'rng', 'best_top1', which it "
    "needs to resume a run (an interrupted.pt or best.pt holds weights only)",
    "epoch_text": "its 'epoch' is str, not an integer",
    "spec_number": "its 'spec' is int, not a string",
    "model_shapes": "its state does not fit this run (RuntimeError: size mismatch for conv1.",
    "rng": "its state does not fit this run (",
    "optimizer": "its state does not fit this run (ValueError: loaded state dict has a different",
}


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A one-epoch run to resume from, crafted copies of its last.pt beside it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(load_spec(TINY, ["train.epochs=1", "data.workers=0"]), data, run, log=quiet)
    return run


@pytest.mark.parametrize("what", EXPECTED)
def test_crafted_last_pt_is_one_line_naming_what_is_wrong(data, finished, tmp_path, what, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    save_checkpoint(run / "last.pt", crafted(load_checkpoint(finished / "last.pt"), what))
    status = main(["train", str(TINY), "--data", str(data), "--resume", str(run), "--epochs", "2"])
    err = errors(capsys)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"netspec train: {run / 'last.pt'}: ")
    assert EXPECTED[what] in err[0]


@pytest.mark.parametrize("damage", ["missing", "gap", "foreign"])
def test_resume_without_its_metrics_is_one_line(data, finished, tmp_path, damage, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    metrics = run / "metrics.jsonl"
    if damage == "missing":
        metrics.unlink()
        expected = f"{metrics} is missing, and with it the run's history: restore it, or start"
    else:
        metrics.write_text("[1, 2]\n" if damage == "foreign" else "")
        expected = f"{metrics} does not hold epochs 1 to 1, which last.pt follows"
    status = main(["train", str(TINY), "--data", str(data), "--resume", str(run), "--epochs", "2"])
    err = errors(capsys)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"netspec train: {expected}")


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["1e5", "0x1F", "0o17", ".inf", "true", "null", "1_000", "~"])
def test_spec_yaml_reads_back_the_same_spec(name):
    spec = load_spec(TINY, [f"name='{name}'"])
    assert spec.name == name
    assert parse_yaml(spec_yaml(spec), "spec.yaml").data == spec.model_dump(
        mode="json", exclude_none=True
    )


@pytest.mark.slow
def test_a_run_named_like_a_number_can_be_resumed(data, tmp_path, capsys):
    run = tmp_path / "run"
    train(load_spec(TINY, ["name='1e5'", "train.epochs=1", "data.workers=0"]), data, run, log=quiet)
    assert load_spec(run / "spec.yaml").name == "1e5"
    assert (
        main(["train", str(TINY), "--data", str(data), "--resume", str(run), "--epochs", "2"]) == 0
    )
    assert [r["epoch"] for r in rows(run)] == [1, 2]


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("alexnet", "alexnet"),
        ("a\x00b\nc\td\x1b[31m", "a_b_c_d_31m"),
        ("../../etc/passwd", "etc_passwd"),
        ("résumé net", "r_sum_net"),
        ("\x00\x01", "run"),
        ("x" * 300, "x" * 64),
    ],
)
def test_default_run_folder_is_a_safe_name(name, slug):
    spec = load_spec(TINY, [f"name={json.dumps(name)}"])
    out = default_out(spec, now=0)
    assert out.parent == Path("runs")
    assert out.name.startswith(f"{slug}-") and len(out.name) == len(slug) + 16
    assert out.name.isprintable() and "/" not in out.name


# ------------------------------------------------------------- resume with other workers


@pytest.mark.slow
def test_resume_with_other_workers_reproduces_the_uninterrupted_run(data, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(load_spec(TINY, ["train.epochs=2", "data.workers=0"]), data, whole, log=quiet)
    train(load_spec(TINY, ["train.epochs=1", "data.workers=0"]), data, split, log=quiet)
    resumed = load_spec(split / "spec.yaml", ["train.epochs=2", "data.workers=2"])
    train(resumed, data, split, resume=True, log=quiet)
    assert rows(split) == rows(whole)


@pytest.mark.slow
def test_a_finished_cosine_run_given_more_epochs_trains_on_smoothly(data, tmp_path, capsys):
    run = tmp_path / "run"
    cosine = ["train.schedule={type: cosine}", "train.lr=0.02", "data.workers=0"]
    train(load_spec(TINY, [*cosine, "train.epochs=2"]), data, run, log=quiet)
    args = ["train", str(TINY), "--data", str(data), "--resume", str(run), "--epochs", "4"]
    assert main(args) == 0
    want = [0.02, 0.01] + [0.01 * (1 + math.cos(math.pi * k / 3)) / 2 for k in (1, 2)]
    assert [r["lr"] for r in rows(run)] == pytest.approx(want, abs=1e-9)  # 0.0075, 0.0025
