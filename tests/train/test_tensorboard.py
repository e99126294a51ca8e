"""TensorBoard scalars: read back with TensorBoard's own reader, against metrics.jsonl."""

import json
import sys

import numpy as np
import pytest

from netspec import load_spec
from netspec.cli import main
from netspec.train.data import open_data
from netspec.train.loop import train
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"


pytestmark = pytest.mark.usefixtures("own_cache")


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


@pytest.mark.slow  # a training run
def test_event_files_hold_the_epoch_rows_and_the_loss_every_n_steps(data, tmp_path):
    pytest.importorskip("tensorboard")
    spec = load_spec(
        TINY, ["train.epochs=2", "train.tensorboard=true", "train.tensorboard_every=2"]
    )
    run = tmp_path / "run"
    train(spec, data, run, log=lambda *_: None)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = len(open_data(data, spec.data).train_loader(spec.train.batch_size, 0, 0))
    got = scalars(run / "tb")
    for key in ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "images_per_s"):
        # TensorBoard keeps float32: the same numbers as metrics.jsonl, to that precision
        want = [(row["epoch"] * steps, np.float32(row[key])) for row in rows]
        assert got[f"epoch/{key}"] == want, key
    # within each epoch: every 2nd step, and its last step
    logged = [
        e * steps + k for e in (0, 1) for k in range(1, steps + 1) if k % 2 == 0 or k == steps
    ]
    assert [step for step, _ in got["step/train_loss"]] == logged
    assert {v for _, v in got["step/lr"]} == {np.float32(rows[0]["lr"]), np.float32(rows[1]["lr"])}


def test_loss_every_n_steps_is_the_mean_of_those_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from netspec.train.tensorboard import Board

    board = Board(tmp_path / "tb", log_every=3)
    on_step = board.begin_epoch(epoch=2, steps=5, lr=0.5)
    for step, loss in enumerate([1.0, 2.0, 6.0, 4.0, 5.0], 1):
        on_step(step, loss)
    board.end_epoch({"epoch": 3, "train_loss": 3.6, "note": "text is left out"})
    got = scalars(tmp_path / "tb")
    # epoch 2 (0-based) of 5 steps starts at global step 10
    assert got["step/train_loss"] == [(13, 3.0), (15, 4.5)]
    assert got["step/lr"] == [(13, 0.5), (15, 0.5)]
    assert got["epoch/train_loss"] == [(15, np.float32(3.6))]
    assert set(got) == {"step/train_loss", "step/lr", "epoch/train_loss"}


@pytest.mark.parametrize("processes", [[], ["--nproc", "2"]])
def test_without_the_package_the_flag_is_one_line_saying_how_to_install(
    data, tmp_path, monkeypatch, capsys, processes
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    args = ["train", str(TINY), "--data", str(data), "--out", str(tmp_path / "run")]
    assert main([*args, "--tensorboard", *processes]) == 2  # the launcher says it, once
    assert capsys.readouterr().err == (
        "netspec train: --tensorboard (train.tensorboard) needs the tensorboard package: "
        "pip install 'netspec[tensorboard]'\n"
    )
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_hides_what_was_logged_after_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from netspec.train.tensorboard import Board

    first = Board(tmp_path / "tb", log_every=1)
    for epoch in (0, 1):  # epoch 1's row was logged, but the run died before its checkpoint
        on_step = first.begin_epoch(epoch, steps=2, lr=0.1)
        on_step(1, 1.0 + epoch)
        on_step(2, 1.0 + epoch)
        first.end_epoch({"epoch": epoch + 1, "val_loss": 10.0 + epoch})
    first.writer.close()
    resumed = Board(tmp_path / "tb", log_every=1)  # resumes after epoch 1 (0-based: 1)
    on_step = resumed.begin_epoch(1, steps=2, lr=0.1)
    on_step(1, 7.0)
    on_step(2, 7.0)
    resumed.end_epoch({"epoch": 2, "val_loss": 17.0})
    got = scalars(tmp_path / "tb")
    assert got["epoch/val_loss"] == [(2, 10.0), (4, 17.0)]
    assert got["step/train_loss"] == [(1, 1.0), (2, 1.0), (3, 7.0), (4, 7.0)]
