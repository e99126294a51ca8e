"""What a study reads back from its run folders, and what summary.md makes of it.

The run folders here are written by hand, so every expected figure is computed from numbers
the test itself chose.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest

from netspec.ablate.results import read_result, write_csv
from netspec.ablate.runs import STATUS, Job
from netspec.ablate.study import Plan, Study
from netspec.ablate.summary import render

EPOCHS = 3


def fake_run(folder: Path, val: list[float], train: list[float], status: str = "") -> None:
    folder.mkdir(parents=True)
    rows = [
        {"epoch": e + 1, "train_loss": 2.0 - e / 2, "train_top1": t, "val_top1": v,
         "val_top5": min(1.0, v + 0.2), "seconds": 1.5}
        for e, (v, t) in enumerate(zip(val, train, strict=True))
    ]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status:
        (folder / STATUS).write_text(json.dumps({"data": "d", "status": status}))


@pytest.fixture
def study(tmp_path) -> tuple[Plan, list[Job]]:
    plan = Plan(
        study=Study(
            name="s",
            spec="x.yaml",
            data="shapes",
            target_train_error=0.5,
            variants={"base": [], "worse": ["layers.norm1=null"]},
        ),
        path=tmp_path / "s.yaml",
        spec_path=tmp_path / "x.yaml",
        data="shapes",
        epochs=EPOCHS,
        seeds=[0, 1, 2],
        out=tmp_path / "out",
    )
    runs = {
        ("base", 0): ([0.5, 0.8, 0.7], [0.3, 0.6, 0.8]),
        ("base", 1): ([0.6, 0.7, 0.9], [0.4, 0.55, 0.7]),
        ("base", 2): ([0.4, 0.6, 0.8], [0.2, 0.4, 0.6]),
        ("worse", 0): ([0.3, 0.6, 0.65], [0.2, 0.3, 0.6]),
        ("worse", 1): ([0.5, 0.6, 0.7], [0.3, 0.4, 0.45]),
    }
    jobs = []
    for (variant, seed), (val, train) in runs.items():
        job = Job(variant, seed, plan.out / variant / f"seed{seed}")
        fake_run(job.folder, val, train)
        jobs.append(job)
    diverged = Job("worse", 2, plan.out / "worse" / "seed2")
    fake_run(diverged.folder, [0.2], [0.1], status="diverged")
    return plan, [*jobs, diverged]


def test_a_runs_row(study):
    _, jobs = study
    r = read_result(jobs[0], EPOCHS, 0.5)  # base seed 0
    assert (r.status, r.epochs, r.val_top1, r.val_top5) == ("finished", 3, 0.8, 1.0)
    assert r.train_error == pytest.approx(0.2) and r.train_loss == 1.0
    assert r.epochs_to_target == 2  # train error 0.7, 0.4, 0.2: first ≤ 0.5 at epoch 2
    assert r.seconds == 4.5
    assert read_result(jobs[4], EPOCHS, 0.5).epochs_to_target is None  # 0.7, 0.6, 0.55
    assert read_result(jobs[5], EPOCHS, 0.5).status == "diverged"


def test_results_csv_has_one_row_per_run(study, tmp_path):
    _, jobs = study
    results = [read_result(j, EPOCHS, 0.5) for j in jobs]
    write_csv(results, tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["seed"], r["status"]) for r in rows] == [
        ("base", "0", "finished"), ("base", "1", "finished"), ("base", "2", "finished"),
        ("worse", "0", "finished"), ("worse", "1", "finished"), ("worse", "2", "diverged"),
    ]  # fmt: skip
    assert rows[0]["val_top1"] == "0.8000" and rows[0]["epochs_to_target"] == "2"
    assert rows[4]["epochs_to_target"] == ""


def test_summary_means_differences_and_ratio(study):
    plan, jobs = study
    text = render(plan, [read_result(j, EPOCHS, 0.5) for j in jobs])
    base_err = [1 - 0.8, 1 - 0.9, 1 - 0.8]
    worse_err = [1 - 0.65, 1 - 0.7]
    mean, std = statistics.mean(base_err), statistics.stdev(base_err)
    assert f"| base | — | 3 | {100 * mean:.2f} ± {100 * std:.2f} |" in text
    assert "| worse | `layers.norm1=null` | 2 (1 diverged) |" in text
    diffs = [w - b for w, b in zip(worse_err, base_err[:2], strict=True)]  # seeds 0 and 1
    half = 12.706 * statistics.stdev(diffs) / math.sqrt(2)
    lo, hi = statistics.mean(diffs) - half, statistics.mean(diffs) + half
    expected = f"{100 * statistics.mean(diffs):+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    (row,) = [line for line in text.splitlines() if line.startswith("| worse | +")]
    assert row.split(" | ")[1] == expected
    # epochs to 50% train error: base 2, 2, 3; worse 3 (seed 0), never (seed 1)
    assert row.endswith("| 1.50× (1 of 2 seeds; never reached in 1) |")
    mean, std = statistics.mean([2, 2, 3]), statistics.stdev([2, 2, 3])
    assert f"| {mean:.1f} ± {std:.1f} |" in text and "| 3.0 ± 0.0 (1 of 2) |" in text
    assert "dropout on" in text  # the training error's caveat is stated
