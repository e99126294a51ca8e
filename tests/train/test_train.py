"""`netspec train` and `netspec eval` on a tiny generated image folder."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from netspec import compile, load_spec
from netspec.cli import main
from netspec.errors import UsageError
from netspec.train.augment import Finish
from netspec.train.checkpoint import load_checkpoint
from netspec.train.data import open_data
from netspec.train.device import options_for
from netspec.train.evaluate import evaluate
from netspec.train.loop import Diverged, Run, train
from netspec.train.schedule import apply_lr
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"
TIMING = {"seconds", "images_per_s", "data_wait"}


pytestmark = pytest.mark.usefixtures("own_cache")


def netspec(*args: str, env_cache=None, **kw) -> subprocess.Popen:
    env = {**os.environ, "NETSPEC_CACHE": str(env_cache)} if env_cache else None
    return subprocess.Popen(
        [sys.executable, "-m", "netspec.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def train_tiny(data, tmp_path, *args: str) -> subprocess.Popen:
    return netspec("train", str(TINY), "--data", str(data), *args, env_cache=tmp_path / "c")


def rows(run) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.mark.slow
def test_run_folder_holds_spec_metrics_checkpoints_and_curves(data, tmp_path):
    spec = load_spec(TINY, ["train.epochs=2"])
    history = train(spec, data, tmp_path / "run", log=lambda *_: None)
    run = tmp_path / "run"
    assert len(history) == 2
    for row in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()):
        assert {
            "epoch",
            "lr",
            "train_loss",
            "val_loss",
            "val_top1",
            "val_top5",
            "images_per_s",
            "data_wait",
        } <= row.keys()
        assert 0 <= row["val_top1"] <= row["val_top5"] <= 1
        assert 0 <= row["data_wait"] < 1
    assert load_spec(run / "spec.yaml").model_dump() == spec.model_dump()
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and set(last["model"]) == set(compile(spec).state_dict())
    assert (run / "best.pt").is_file()
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_metrics(data, tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    args = [str(TINY), "--data", str(data)]
    full = netspec("train", *args, "--out", str(whole), env_cache=tmp_path / "c")
    victim = netspec("train", *args, "--out", str(broken), env_cache=tmp_path / "c")
    deadline = time.time() + 120
    while time.time() < deadline:
        if (broken / "last.pt").exists():
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert full.wait(timeout=300) == 0, full.stderr.read()
    killed_after = load_checkpoint(broken / "last.pt")["epoch"]  # the kill left a valid file
    assert 1 <= killed_after < 3  # killed part-way: resuming has epochs left to run
    resumed = netspec("train", *args, "--resume", str(broken), env_cache=tmp_path / "c")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert len(rows(whole)) == 3
    assert rows(broken) == rows(whole)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    run = Run(load_spec(TINY), data, tmp_path / "run", torch.device("cpu"), log=lambda *_: None)
    run.start()
    run.run_epoch()
    before = (tmp_path / "run" / "last.pt").read_bytes()
    apply_lr(run.optimizer, 1e30)  # the next steps blow the weights up
    with pytest.raises(
        Diverged, match=r"epoch 2, step \d+: the loss is (nan|inf).*last.pt \(epoch 1\)"
    ):
        run.run_epoch()
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


@pytest.mark.slow
def test_nan_loss_from_the_start_exits_1_with_one_line(data, tmp_path):
    p = train_tiny(data, tmp_path, "--out", str(tmp_path / "run"), "--set", "train.lr=1e30")
    assert p.wait(timeout=120) == 1
    err = p.stderr.read().strip().splitlines()
    assert len(err) == 1 and "epoch 1" in err[0] and "Last good checkpoint: none yet" in err[0]
    assert "--set train.lr=1e+29" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_resume_refuses_changed_settings_and_keeps_new_epochs(data, tmp_path):
    run = tmp_path / "run"
    train(load_spec(TINY, ["train.epochs=1"]), data, run, log=lambda *_: None)
    p = train_tiny(data, tmp_path, "--resume", str(run), "--set", "train.momentum=0.5")
    assert p.wait(timeout=120) == 2
    assert p.stderr.read().strip().splitlines()[-1] == (
        f"netspec train: --resume {run}: train.momentum changed since the run started; a "
        "resumed run may change only data.workers, train.epochs, train.tensorboard, "
        "train.tensorboard_every: start a new run (--out) for other settings"
    )
    p = train_tiny(data, tmp_path, "--resume", str(run), "--epochs", "2")
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert load_spec(run / "spec.yaml").train.epochs == 2  # a later --resume keeps it
    assert [r["epoch"] for r in rows(run)] == [1, 2]


@pytest.mark.slow
def test_ctrl_c_exits_cleanly_and_keeps_last_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    p = train_tiny(data, tmp_path, "--out", str(run), "--epochs", "50")
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "last.pt").exists():
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    err = p.stderr.read()
    assert "Traceback" not in err and f"--resume {run}" in err
    assert load_checkpoint(run / "last.pt")["epoch"] >= 1
    assert set(load_checkpoint(run / "interrupted.pt")["model"]) == set(
        load_checkpoint(run / "last.pt")["model"]
    )


def test_class_count_must_match_the_folder(data, tmp_path):
    spec = load_spec(TINY, ["classes=4"])
    with pytest.raises(UsageError, match=r"has 10 classes .* add --set classes=10"):
        train(spec, data, tmp_path / "run", log=lambda *_: None)


def test_crop_must_match_input(data, capsys):
    assert main(["train", str(TINY), "--data", str(data), "--set", "data.crop=24"]) == 2
    assert capsys.readouterr().err.strip() == (
        "--set data.crop=24: data.crop is 24 but the input is 3×28×28; crops are square and "
        "must match: set data.crop: 28 (and a square input)"
    )


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    assert main(["train", str(TINY), "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "nope") in err[0]


def test_ten_crop_evaluation_averages_softmax_over_crops(data):
    spec = load_spec(TINY, ["data.ten_crop=true", "data.workers=0"])
    torch.manual_seed(0)
    model = compile(spec).eval()
    found = open_data(data, spec.data)
    loader = found.val_loader(8)
    opts = options_for(spec, torch.device("cpu"), found.stats)
    got = evaluate(model, loader, opts)
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            assert batch.crops.shape[1:] == (10, 3, 28, 28)
            x, y = opts.finish(batch).unflatten(0, (-1, 10)), batch.labels
            probs = torch.stack([model(x[:, i]).softmax(1) for i in range(10)]).mean(0)
            correct += int((probs.argmax(1) == y).sum())
            total += len(y)
    assert got["val_top1"] == pytest.approx(correct / total)


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_pixel_scale_multiplies_what_the_network_sees(data):
    spec = load_spec(TINY, ["data.workers=0", "data.pixel_scale=255"])
    torch.manual_seed(0)
    model = compile(spec).eval()
    found = open_data(data, spec.data)
    loader = found.val_loader(8)
    opts = options_for(spec, torch.device("cpu"), found.stats)
    unscaled = Finish(spec.data.model_copy(update={"pixel_scale": 1}), found.stats, opts.device)
    with torch.no_grad():
        batch = next(iter(loader))
        assert torch.equal(opts.prepare(batch), unscaled(batch) * 255)
        loss = sum(
            float(F.cross_entropy(model(unscaled(b) * 255), b.labels, reduction="sum"))
            for b in loader
        )
    assert evaluate(model, loader, opts)["val_loss"] == pytest.approx(loss / 30, rel=1e-5)


@pytest.mark.slow
def test_eval_command_reads_a_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    train(load_spec(TINY, ["train.epochs=1"]), data, run, log=lambda *_: None)
    val_only = tmp_path / "val-only"
    shutil.copytree(data / "val", val_only / "val")  # the mean and PCA come from the checkpoint
    p = netspec(
        "eval",
        str(TINY),
        "--checkpoint",
        str(run / "best.pt"),
        "--data",
        str(val_only),
        "--ten-crop",
        env_cache=tmp_path / "c",
    )
    assert p.wait(timeout=60) == 0, p.stderr.read()
    out = p.stdout.read().splitlines()
    assert "ten crops" in out[0]
    result = json.loads(out[-1])
    assert 0 <= result["val_top1"] <= result["val_top5"] <= 1
