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
from netspec.ablate.study import Plan, Study, Tune
from netspec.ablate.summary import Provenance, render
from netspec.ablate.tuning import choose
from tests.conftest import ROOT

EPOCHS = 3
TINY = ROOT / "tests" / "nets" / "tiny.yaml"
RAN = Provenance(["netspec", "ablate", "s.yaml"], 12.3, 4, "`d`: 60 training images", 30)


def fake_run(folder: Path, val: list[float], train: list[float], status: dict | None = None):
    folder.mkdir(parents=True)
    rows = [
        {"epoch": e + 1, "train_loss": 2.0 - e / 2, "train_top1": t, "val_top1": v,
         "val_top5": min(1.0, v + 0.2), "seconds": 1.5}
        for e, (v, t) in enumerate(zip(val, train, strict=True))
    ]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status:
        (folder / STATUS).write_text(json.dumps({"data": "d", **status}))


def plan_of(tmp_path: Path, **study: object) -> Plan:
    return Plan(
        study=Study(
            name="s",
            spec=str(TINY),
            data="shapes",
            target_train_error=0.5,
            variants={"base": [], "worse": ["layers.norm1=null"]},
            **study,  # type: ignore[arg-type]
        ),
        path=tmp_path / "s.yaml",
        spec_path=TINY,
        data="shapes",
        epochs=EPOCHS,
        seeds=[0, 1, 2],
        out=tmp_path / "out",
        target=0.5,
    )


@pytest.fixture
def study(tmp_path) -> tuple[Plan, list[Job]]:
    plan = plan_of(tmp_path)
    runs = {
        ("base", 0): ([0.5, 0.8, 0.7], [0.3, 0.6, 0.8]),
        ("base", 1): ([0.6, 0.7, 0.9], [0.4, 0.55, 0.7]),
        ("base", 2): ([0.4, 0.6, 0.8], [0.2, 0.4, 0.6]),
        ("worse", 0): ([0.3, 0.6, 0.65], [0.2, 0.3, 0.6]),
        ("worse", 1): ([0.5, 0.6, 0.7], [0.3, 0.4, 0.45]),
    }
    made = {"netspec": "0.1.0 (commit abc)", "torch": "2.14.1", "threads": "1"}
    jobs = []
    for (variant, seed), (val, train) in runs.items():
        job = Job(variant, seed, plan.out / variant / f"seed{seed}")
        fake_run(job.folder, val, train, {"status": "finished", **made})
        jobs.append(job)
    diverged = Job("worse", 2, plan.out / "worse" / "seed2")
    fake_run(diverged.folder, [0.2], [0.1], status={"status": "diverged"})
    return plan, [*jobs, diverged]


def test_a_runs_row(study):
    _, jobs = study
    r = read_result(jobs[0], EPOCHS, 0.5)  # base seed 0: val top-1 0.5, 0.8, 0.7
    assert (r.status, r.epochs) == ("finished", 3)
    assert r.val_top1_error == pytest.approx((0.5 + 0.2 + 0.3) / 3)  # the last 3 epochs
    assert r.best_val_top1_error == pytest.approx(0.2)
    assert r.val_top5_error == pytest.approx((0.3 + 0.0 + 0.1) / 3)
    assert r.train_error == pytest.approx(0.2) and r.train_losses == [2.0, 1.5, 1.0]
    assert r.epochs_to_target == 2  # train error 0.7, 0.4, 0.2: first ≤ 0.5 at epoch 2
    assert r.seconds == 4.5
    assert r.trained_by == {"netspec": "0.1.0 (commit abc)", "torch": "2.14.1", "threads": "1"}
    assert read_result(jobs[4], EPOCHS, 0.5).epochs_to_target is None  # 0.7, 0.6, 0.55
    assert read_result(jobs[5], EPOCHS, 0.5).status == "diverged"


def test_results_csv_holds_every_epoch_and_no_timing(study, tmp_path):
    _, jobs = study
    results = [read_result(j, EPOCHS, 0.5) for j in jobs]
    write_csv(results, tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * 3 + 1  # five runs of three epochs, one diverged in its first
    assert "seconds" not in rows[0]  # a rerun from nothing writes the same file
    assert rows[0] == {
        "variant": "base", "role": "report", "setting": "", "seed": "0", "status": "finished",
        "epoch": "1", "train_loss": "2", "train_error": "0.7", "val_top1_error": "0.5",
        "val_top5_error": "0.3",
    }  # fmt: skip
    assert rows[-1]["status"] == "diverged" and rows[-1]["epoch"] == "1"
    # the headline recomputed from the file alone
    base0 = [float(r["val_top1_error"]) for r in rows if (r["variant"], r["seed"]) == ("base", "0")]
    assert statistics.mean(base0[-3:]) == pytest.approx(results[0].val_top1_error)


def test_summary_headline_pairs_p_and_ratio(study):
    plan, jobs = study
    text = render(plan, [read_result(j, EPOCHS, 0.5) for j in jobs], RAN)
    base_err = [(0.5 + 0.2 + 0.3) / 3, (0.4 + 0.3 + 0.1) / 3, (0.6 + 0.4 + 0.2) / 3]
    worse_err = [(0.7 + 0.4 + 0.35) / 3, (0.5 + 0.4 + 0.3) / 3]
    mean, std = statistics.mean(base_err), statistics.stdev(base_err)
    head = f"| base | — | 4,618 (100%) | 0.09M (100%) | 3 | {100 * mean:.2f} ± {100 * std:.2f} |"
    assert head in text  # tiny.yaml: 4,618 parameters, 93,296 multiply-accumulates
    diffs = [w - b for w, b in zip(worse_err, base_err[:2], strict=True)]  # seeds 0 and 1
    half = 12.706 * statistics.stdev(diffs) / math.sqrt(2)
    lo, hi = statistics.mean(diffs) - half, statistics.mean(diffs) + half
    expected = f"{100 * statistics.mean(diffs):+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    (row,) = [line for line in text.splitlines() if line.startswith("| worse | 2 |")]
    cells = row.split(" | ")
    # both differences positive: 2 of the 4 sign patterns are as far from 0; one comparison
    assert cells[2:5] == [expected, "0.5", "0.5"]
    # top-5 errors (last 3 epochs): base 0.3, 0, 0.1 and 0.2, 0.1, 0; worse 0.5, 0.2, 0.15 and
    # 0.3, 0.2, 0.1: differences 0.15 and 0.1
    top5 = [0.15, 0.1]
    half5 = 12.706 * statistics.stdev(top5) / math.sqrt(2)
    m5 = statistics.mean(top5)
    assert cells[6] == f"{100 * m5:+.2f} [{100 * (m5 - half5):+.2f}, {100 * (m5 + half5):+.2f}]"
    # epochs to 50% train error: base 2, 2, 3; worse 3 (seed 0), never (seed 1)
    assert row.endswith("| 1.50× (1 of 2 seeds; variant never reached it in 1) |")
    assert "| 3.0 ± 0.0 (1 of 2; 1 censored) |" in text
    assert f"| worse | {100 * worse_err[0]:.2f} · 3 | {100 * worse_err[1]:.2f} · >3 | ÷ |" in text
    assert "one validation image is 3.33 points" in text  # 30 images
    assert "the spec's augmentation and dropout" in text  # the training error's caveat


def test_summary_names_its_provenance(study):
    plan, jobs = study
    text = render(plan, [read_result(j, EPOCHS, 0.5) for j in jobs], RAN)
    assert "- Command: `netspec ablate s.yaml`" in text
    assert "- Trained by netspec 0.1.0 (commit abc) with torch 2.14.1: 5 of 6 runs" in text
    assert "- Trained by netspec not recorded with torch not recorded: 1 of 6 runs" in text
    assert "- Threads per run: 1, not recorded" in text
    assert f"- Spec `{TINY}`; data `d`: 60 training images" in text
    assert "- Wall time of this command: 12 s, in which it trained 4 runs" in text


def test_saturated_top5_is_said_not_shown_as_an_interval(tmp_path):
    plan = plan_of(tmp_path)
    jobs = []
    for variant in ("base", "worse"):
        for seed in (0, 1):
            job = Job(variant, seed, plan.out / variant / f"seed{seed}")
            fake_run(job.folder, [0.85, 0.9, 0.95], [0.3, 0.2, 0.1])  # top-5 at 100%
            jobs.append(job)
    text = render(plan, [read_result(j, EPOCHS, 0.5) for j in jobs], RAN)
    (row,) = [line for line in text.splitlines() if line.startswith("| worse | 2 |")]
    assert row.split(" | ")[6] == "saturated: 0 on both sides"


def test_each_variant_picks_its_own_value(tmp_path):
    plan = plan_of(tmp_path, tune=Tune(key="train.lr", values=[0.01, 0.1], seeds=1))
    curves = {  # train top-1 by epoch: base reaches 50% error at epoch 3 / 1, worse at 1 / never
        ("base", "train.lr=0.01"): [0.3, 0.4, 0.6],
        ("base", "train.lr=0.1"): [0.6, 0.7, 0.8],
        ("worse", "train.lr=0.01"): [0.7, 0.8, 0.9],
        ("worse", "train.lr=0.1"): [0.2, 0.3, 0.4],
    }
    jobs = []
    for (variant, setting), train in curves.items():
        job = Job(variant, 1000, plan.out / variant / "tune" / setting / "seed1000", setting, True)
        fake_run(job.folder, [0.5, 0.5, 0.5], train)
        jobs.append(job)
    results = [read_result(j, EPOCHS, 0.5) for j in jobs]
    assert choose(plan, results) == {"base": "train.lr=0.1", "worse": "train.lr=0.01"}
    report = Job("base", 0, plan.out / "base" / "seed0", "train.lr=0.1")
    fake_run(report.folder, [0.5, 0.5, 0.5], [0.6, 0.7, 0.8])
    text = render(plan, [read_result(report, EPOCHS, 0.5)], RAN, results)
    assert "| base | 3.0 epochs | **1.0 epochs** |" in text
    assert "| worse | **1.0 epochs** | 4.0 epochs |" in text  # never: one past the last epoch
    assert "| base | `train.lr=0.1` |" in text  # the value is named where the variant is
    failed = Job(
        "worse", 1001, plan.out / "worse" / "tune" / "train.lr=0.01" / "s", "train.lr=0.01", True
    )
    fake_run(failed.folder, [0.1], [0.1], status={"status": "diverged"})
    results.append(read_result(failed, EPOCHS, 0.5))
    assert choose(plan, results)["worse"] == "train.lr=0.1"  # a diverged run is the worst
    text = render(plan, [read_result(report, EPOCHS, 0.5)], RAN, results)
    assert "| worse | diverged in 1 of 2 | **4.0 epochs** |" in text


def test_a_difference_without_spread_is_said_not_shown_as_an_interval(tmp_path):
    plan = plan_of(tmp_path)
    jobs = []
    for variant, top1 in (("base", 0.5), ("worse", 0.4)):
        for seed in (0, 1):
            job = Job(variant, seed, plan.out / variant / f"seed{seed}")
            fake_run(job.folder, [top1] * 3, [0.3, 0.2, 0.1])
            jobs.append(job)
    text = render(plan, [read_result(j, EPOCHS, 0.5) for j in jobs], RAN)
    (row,) = [line for line in text.splitlines() if line.startswith("| worse | 2 |")]
    assert row.split(" | ")[2] == "+10.00 on every seed"
    assert row.split(" | ")[6] == "+10.00 on every seed"  # top-5: 0.7 against 0.6, each seed


def test_target_reads_reported_runs_again_and_leaves_the_tuning_alone(tmp_path):
    from dataclasses import replace

    from netspec.ablate.command import _results

    plan = replace(plan_of(tmp_path, tune=Tune(key="train.lr", values=[0.01, 0.1])), target=0.25)
    tuning = Job("base", 1000, plan.out / "t", "train.lr=0.1", tuning=True)
    report = Job("base", 0, plan.out / "r", "train.lr=0.1")
    for job in (tuning, report):
        fake_run(job.folder, [0.5, 0.5, 0.5], [0.6, 0.7, 0.8])  # train error 0.4, 0.3, 0.2
    tuned, reported = _results(plan, [tuning, report])
    assert tuned.epochs_to_target == 1  # at the file's 50%
    assert reported.epochs_to_target == 3  # at --target's 25%
