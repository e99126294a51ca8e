"""A training run's last line: the best top-1 and its epoch, the checkpoints, and the
`netspec eval` command to run next, which runs."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from netspec import load_spec
from netspec.cli import main
from netspec.train.checkpoint import load_checkpoint
from netspec.train.loop import Run
from netspec.train.parallel import OneProcess
from netspec.train.progress import After
from tests.conftest import ROOT

TINY = ROOT / "tests" / "nets" / "tiny.yaml"
SETTINGS = ["train.epochs=3", "data.workers=0", "train.lr=0.05"]


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_a_run_ends_with_its_best_epoch_its_checkpoints_and_the_eval_command(
    data, tmp_path, capsys
):
    out = tmp_path / "run dir"  # a space: the command must still be one to paste
    said: list[str] = []
    run = Run(load_spec(TINY, SETTINGS), data, out, torch.device("cpu"), log=said.append)
    run.start()
    run.run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda row: row["val_top1"])
    assert load_checkpoint(out / "best.pt")["epoch"] == best["epoch"]
    command = f"netspec eval '{out}/spec.yaml' --checkpoint '{out}/best.pt' --data {data}"
    assert said[-1] == (
        f"finished: best top-1 {best['val_top1']:.2%} at epoch {best['epoch']} of 3 in "
        f"{out}/best.pt, the last epoch in {out}/last.pt; next: {command}"
    )
    capsys.readouterr()
    assert main(shlex.split(command)[1:]) == 0  # the command it names evaluates best.pt
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert scores["val_top1"] == best["val_top1"]
    # what the progress display was told of the run after each epoch
    mean = sum(row["seconds"] for row in rows) / 3
    assert run.after(1) == After(1, mean)


class OtherProcess(OneProcess):
    """A process of a multi-process run other than the main one."""

    @property
    def is_main(self) -> bool:
        return False


def test_only_the_main_process_says_it(data, tmp_path):
    said: list[str] = []
    spec = load_spec(TINY, ["train.epochs=1", "data.workers=0"])
    device = torch.device("cpu")
    run = Run(spec, data, tmp_path / "run", device, said.append, OtherProcess(spec, device))
    run.start()
    assert len(run.run()) == 1
    assert said == []
