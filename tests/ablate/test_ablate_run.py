"""`netspec ablate` end to end on the tiny net and a tiny image folder: real training
processes, the three outputs, a diverging variant, a rerun that trains nothing, a resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from netspec.ablate import runs
from netspec.ablate.command import holding
from netspec.ablate.study import load_study
from netspec.cli import main
from netspec.spec.model import load_spec
from netspec.train.runfolder import spec_yaml
from netspec.train.shapes_data import ensure_shapes
from tests.conftest import ROOT

TINY = ROOT / "tests" / "nets" / "tiny.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


def study_file(tmp_path: Path, data: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(
        f"name: tiny\nspec: {TINY}\ndata: {data}\nepochs: 1\nseeds: 1\n"
        "target_train_error: 0.95\n"
        "variants:\n"
        "  baseline: []\n"
        "  no-lrn: [layers.norm1=null]\n"
        "  blowup: [train.lr=1.0e30]\n"
    )
    return path


def ablate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "netspec", "ablate", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/*") if p.is_file()}


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_study_trains_reports_skips_and_resumes(tmp_path, monkeypatch, capsys):
    data = ensure_shapes(tmp_path / "data", seed=3, size=32, train_per_class=6, val_per_class=3)
    study, out = study_file(tmp_path, data), tmp_path / "out"
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    env = dict(os.environ)

    first = ablate(str(study), "--out", str(out), "--jobs", "2", env=env)
    assert first.returncode == 0, first.stderr
    assert "3 to train, 0 to resume, 0 done; 2 at a time" in first.stdout
    table = rows(out / "results.csv")
    assert [(r["variant"], r["seed"], r["status"], r["epoch"]) for r in table] == [
        ("baseline", "0", "finished", "1"),
        ("no-lrn", "0", "finished", "1"),
        ("blowup", "0", "diverged", ""),  # netspec train stopped it at a non-finite loss
    ]
    metrics = [json.loads(line) for line in (out / "baseline/seed0/metrics.jsonl").open()]
    assert table[0]["val_top1_error"] == f"{1 - metrics[0]['val_top1']:.6g}"
    assert table[0]["train_error"] == f"{1 - metrics[0]['train_top1']:.6g}"
    assert "norm1" not in (out / "no-lrn/seed0/spec.yaml").read_text()  # the removal trained
    summary = (out / "summary.md").read_text()
    size = "4,618 (100%) | 0.09M (100%)"  # tests/nets/tiny.yaml; LRN has no parameters
    assert f"| no-lrn | `layers.norm1=null` | {size} | 1 |" in summary
    assert f"| blowup | `train.lr=1.0e30` | {size} | 0 (1 diverged) |" in summary
    assert f"- Command: `netspec ablate {study} --out {out} --jobs 2`" in summary
    said = json.loads((out / "baseline/seed0" / runs.STATUS).read_text())
    assert said["threads"] == "1" and said["torch"] == torch.__version__
    assert f"with torch {torch.__version__}: 3 of 3 runs" in summary
    assert (out / "curves.png").read_bytes()[:8] == PNG

    # a rerun starts no process and touches no run folder
    before = files(out)

    def no_training(*args, **kwargs):
        raise AssertionError(f"a rerun started {args}")

    monkeypatch.setattr(runs.subprocess, "Popen", no_training)
    assert main(["ablate", str(study), "--out", str(out), "--jobs", "2"]) == 0
    assert "0 to train, 0 to resume, 3 done" in capsys.readouterr().out
    assert files(out) == before
    assert rows(out / "results.csv") == table
    monkeypatch.undo()

    # runs cut short (as a kill after epoch 1 of 2 leaves them) are resumed, not restarted
    for variant in ("baseline", "no-lrn"):
        spec = out / variant / "seed0" / "spec.yaml"
        spec.write_text(spec.read_text().replace("epochs: 1\n", "epochs: 2\n"))
    second = ablate(str(study), "--out", str(out), "--epochs", "2", env=env)
    assert second.returncode == 0, second.stderr
    assert "0 to train, 2 to resume, 1 done" in second.stdout
    resumed = [json.loads(line) for line in (out / "baseline/seed0/metrics.jsonl").open()]
    assert [m["epoch"] for m in resumed] == [1, 2] and resumed[0] == metrics[0]
    assert "resuming" in (out / "baseline/seed0/train.log").read_text()
    assert [r["epoch"] for r in rows(out / "results.csv")] == ["1", "2", "1", "2", ""]


@pytest.mark.slow
def test_each_variant_trains_at_the_value_its_tuning_runs_picked(tmp_path, monkeypatch):
    data = ensure_shapes(tmp_path / "data", seed=3, size=32, train_per_class=6, val_per_class=3)
    study, out = tmp_path / "study.yaml", tmp_path / "out"
    study.write_text(
        f"name: tuned\nspec: {TINY}\ndata: {data}\nepochs: 1\nseeds: 1\n"
        "tune: {train.lr: [0.001, 0.2], seeds: 1, by: final_val_top1}\n"
        "variants:\n  baseline: []\n"
    )
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    done = ablate(str(study), "--out", str(out), "--jobs", "2", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "tuning train.lr: 1 variant × 2 values × 1 seed = 2 runs" in done.stdout
    top1 = {}
    for lr in ("0.001", "0.2"):
        run = out / "baseline" / "tune" / f"train.lr={lr}" / "seed1000"
        assert f"lr: {lr}\n" in (run / "spec.yaml").read_text()
        top1[lr] = json.loads((run / "metrics.jsonl").read_text())["val_top1"]
    best = max(top1, key=lambda lr: (top1[lr], lr == "0.001"))  # a tie: the earlier value
    assert f"lr: {best}\n" in (out / "baseline" / "seed0" / "spec.yaml").read_text()
    assert [r["role"] for r in rows(out / "results.csv")] == ["tune", "tune", "report"]
    summary = (out / "summary.md").read_text()
    assert f"**{100 * top1[best]:.2f}% top-1**" in summary
    assert f"| baseline | `train.lr={best}` |" in summary


def test_a_folder_trained_otherwise_is_refused_before_anything_trains(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    study = study_file(tmp_path, data)
    run = tmp_path / "out" / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")
    other = load_spec(TINY, ["layers.conv1.filters=4", "train.seed=0", "train.epochs=1"])
    (run / "spec.yaml").write_text(spec_yaml(other))
    assert main(["ablate", str(study), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"netspec ablate: {run} was trained with a different spec (layers differ from the "
        "study's): choose another --out, or delete the folder"
    ]


def test_each_run_is_an_ordinary_train_command(tmp_path):
    (tmp_path / "data").mkdir()
    plan = load_study(study_file(tmp_path, tmp_path / "data"), out=tmp_path / "out")
    job = runs.jobs_of(plan)[1]
    assert (job.variant, job.seed, job.folder) == ("no-lrn", 0, tmp_path / "out/no-lrn/seed0")
    train = [sys.executable, "-m", "netspec", "train", str(TINY), "--data", "D"]
    assert runs.command(plan, job, "D", resume=False) == [
        *train, "--out", str(job.folder), "--set", "layers.norm1=null",
        "--set", "train.seed=0", "--set", "train.epochs=1",
    ]  # fmt: skip
    assert runs.command(plan, job, "D", resume=True) == [*train, "--resume", str(job.folder)]


def test_thread_share(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert runs.thread_env(2)["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert runs.thread_env(cores * 4)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice stands
    assert runs.thread_env(2)["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "classes=8",
            "{train} has 10 classes (checkerboard, circle, cross, dots, hstripes, …) but the "
            "spec's output has 8 units: add the override classes=10",
        ),
        (
            "data.workers=100000",
            "data.workers is 100000, but this machine has {cores} CPU cores: use at most "
            "{limit} (8 per core), e.g. the override data.workers={workers}",
        ),
    ],
)
def test_a_variants_mistake_names_it_and_advises_an_override(
    tmp_path, capsys, monkeypatch, override, message
):
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    data = ensure_shapes(tmp_path / "data", seed=3, size=32, train_per_class=1, val_per_class=1)
    study, out = tmp_path / "study.yaml", tmp_path / "out"
    study.write_text(
        f"name: s\nspec: {TINY}\ndata: {data}\nseeds: 1\n"
        f"variants:\n  baseline: []\n  odd: [{override}]\n"
    )
    assert main(["ablate", str(study), "--out", str(out)]) == 2
    cores = os.cpu_count() or 1
    said = message.format(train=data / "train", cores=cores, limit=8 * cores, workers=min(cores, 8))
    assert capsys.readouterr().err.splitlines() == [f"netspec ablate: variant odd: {said}"]
    assert not out.exists()  # refused before any run folder was made


def test_two_ablates_into_one_out_report_the_lock(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    study, out = study_file(tmp_path, tmp_path / "data"), tmp_path / "out"
    with holding(out):  # as another netspec ablate, this process, holds it
        assert main(["ablate", str(study), "--out", str(out)]) == 2
        assert [p.name for p in out.iterdir()] == [".lock"]  # no run folder was made
    assert capsys.readouterr().err.splitlines() == [
        f"netspec ablate: {out} is in use by another netspec ablate (pid {os.getpid()}): "
        "wait for it to finish, or choose another --out"
    ]


@pytest.mark.parametrize(
    ("code", "halted", "last", "status", "message"),
    [
        (130, False, "netspec train: interrupted; …", "interrupted", ""),
        (143, False, "netspec train: terminated (SIGTERM); …", "interrupted", ""),
        (-signal.SIGKILL, True, "epoch 2/9 …", "interrupted", ""),  # killed after GRACE
        (-signal.SIGKILL, False, "epoch 2/9 …", "failed", "epoch 2/9 …"),  # the OOM killer
        (
            1,
            False,
            "netspec train: epoch 1, step 3: the loss is nan; stopped. Last good checkpoint: "
            "none yet. Try a lower learning rate, e.g. --set train.lr=0.1",
            "diverged",
            "epoch 1, step 3: the loss is nan; stopped. Last good checkpoint: none yet. "
            "Try a lower learning rate, e.g. the override train.lr=0.1",
        ),
        (
            2,
            False,
            "netspec train: data.workers is 99, but this machine has 2 CPU cores: use at most "
            "16 (8 per core), e.g. --workers 2",
            "failed",
            "data.workers is 99, but this machine has 2 CPU cores: use at most 16 (8 per core), "
            "e.g. the override data.workers=2",
        ),
    ],
)
def test_a_stopped_run_is_interrupted_not_failed(tmp_path, code, halted, last, status, message):
    (tmp_path / "data").mkdir()
    plan = load_study(study_file(tmp_path, tmp_path / "data"), out=tmp_path / "out")
    job = runs.jobs_of(plan)[0]
    job.folder.mkdir(parents=True)
    (job.folder / runs.LOG).write_text(f"epoch 1/9 …\n{last}\n")
    said: list[str] = []
    runner = runs.Runner(plan, "D", 1, log=said.append)
    runner.total = 1
    exited = runs._Running(job, SimpleNamespace(returncode=code), time.perf_counter())
    outcome = runner.finish(exited, halted)
    assert (outcome.status, outcome.message) == (status, message)
    assert json.loads((job.folder / runs.STATUS).read_text()) == {"data": "D", "status": status}
    assert said[0].startswith(f"[1/1] baseline seed 0: {status} in 0 s")
    assert runner.mistaken == (code == 2)  # a mistake every run would repeat stops the study


def test_a_run_stopped_from_outside_is_reported_to_carry_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    data = ensure_shapes(tmp_path / "data", seed=3, size=32, train_per_class=1, val_per_class=1)
    study, out = study_file(tmp_path, data), tmp_path / "out"

    def someone_stops_the_first(self, todo):  # `kill PID` of its netspec train, say
        (job, _), *rest = todo
        job.folder.mkdir(parents=True)
        return [runs.Outcome(job, "interrupted", code=143)] + [
            runs.Outcome(j, "finished") for j, _ in rest
        ]

    monkeypatch.setattr(runs.Runner, "run", someone_stops_the_first)
    assert main(["ablate", str(study), "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "netspec ablate: variant baseline seed 0 did not finish: it was stopped (exit status "
        "143); run the same command again to carry on"
    ]
    assert [r["status"] for r in rows(out / "results.csv")] == ["unfinished"] * 3
