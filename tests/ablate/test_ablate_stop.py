"""Stopping `netspec ablate`: its `netspec train` processes stop with it, however it is
stopped, and what they had trained is resumed by the next run of the same command.

The processes are real. Every wait has a deadline: a test that passes one kills what it
started (found in /proc) and fails, so that a hang never blocks the suite.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netspec.ablate import runs
from netspec.ablate.study import load_study
from netspec.interrupt import Terminated, sigterm_as_interrupt
from netspec.train.shapes_data import ensure_shapes
from tests.conftest import ROOT

TINY = ROOT / "tests" / "nets" / "tiny.yaml"
VARIANTS = ("baseline", "no-lrn")
DEADLINE = 240  # seconds for anything one of these tests waits on
PROMPT = runs.GRACE  # seconds from the signal to ablate's exit: sooner than a run is killed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 training images: epochs of a few seconds, long enough to stop a run inside one."""
    return ensure_shapes(
        tmp_path_factory.mktemp("larger"), seed=3, size=32, train_per_class=30, val_per_class=3
    )


def study_file(tmp_path: Path, data: Path, epochs: int, workers: int = 0) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(
        f"name: stop\nspec: {TINY}\ndata: {data}\nepochs: {epochs}\nseeds: 1\n"
        f"variants:\n  baseline: [data.workers={workers}]\n"
        f"  no-lrn: [layers.norm1=null, data.workers={workers}]\n"
    )
    return path


def ablate(tmp_path: Path, study: Path, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "netspec", "ablate", str(study), "--out", str(out), *flags],
        cwd=ROOT,
        env={**os.environ, "NETSPEC_CACHE": str(tmp_path / "cache")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def trains(out: Path) -> list[int]:
    """The `netspec train` processes (and their loader processes) of runs under `out`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[1:4] == ["-m", "netspec", "train"] and any(a.startswith(f"{out}/") for a in argv):
            found.append(int(cmdline.parent.name))
    return found


def kill_all(job: subprocess.Popen, out: Path) -> None:
    for pid in [job.pid, *trains(out)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.communicate()


def wait_until(ready: Callable[[], bool], job: subprocess.Popen, out: Path, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not ready():
        if job.poll() is not None or time.monotonic() > deadline:
            kill_all(job, out)
            pytest.fail(f"{what} never happened (ablate's status {job.returncode})")
        time.sleep(0.05)


def finish(job: subprocess.Popen, out: Path, timeout: float = DEADLINE) -> tuple[int, str, str]:
    try:
        stdout, stderr = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_all(job, out)
        pytest.fail(f"netspec ablate did not exit within {timeout} s")
    return job.returncode, stdout, stderr


def left_running(out: Path, within: float) -> list[int]:
    """The train processes still there after `within` seconds (none, once they are gone)."""
    deadline = time.monotonic() + within
    while (left := trains(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def status(out: Path, variant: str) -> str:
    return str(json.loads((out / variant / "seed0" / runs.STATUS).read_text())["status"])


def last_line(path: Path) -> str:
    return [line for line in path.read_text().splitlines() if line.strip()][-1]


def test_sigint_to_ablate_stops_its_runs_and_a_second_ablate_reports_the_lock(larger, tmp_path):
    study, out = study_file(tmp_path, larger, epochs=50), tmp_path / "out"
    job = ablate(tmp_path, study, out, "--jobs", "2")
    wait_until(lambda: len(trains(out)) == 2, job, out, "two train processes")

    second = ablate(tmp_path, study, out)
    code, _, err = finish(second, out)
    assert (code, err.splitlines()) == (
        2,
        [
            f"netspec ablate: {out} is in use by another netspec ablate (pid {job.pid}): "
            "wait for it to finish, or choose another --out"
        ],
    )

    job.send_signal(signal.SIGINT)  # to ablate alone: the runs are in their own groups
    sent = time.monotonic()
    code, stdout, stderr = finish(job, out)
    assert time.monotonic() - sent < PROMPT
    assert code == 130, stderr
    assert left_running(out, within=10) == []
    assert stderr.splitlines()[-1] == (
        "netspec ablate: interrupted; each run keeps its last finished epoch: "
        "run the same command again to carry on"
    )
    for variant in VARIANTS:
        assert f"{variant} seed 0: interrupted in" in stdout
        assert status(out, variant) == "interrupted"
        # the run itself was stopped by the Ctrl-C ablate passed on, not killed
        assert last_line(out / variant / "seed0" / runs.LOG).startswith(
            "netspec train: interrupted"
        )


def test_sigterm_to_ablate_stops_its_runs_which_the_rerun_resumes(larger, tmp_path):
    study, out = study_file(tmp_path, larger, epochs=3), tmp_path / "out"
    job = ablate(tmp_path, study, out, "--jobs", "2")
    lasts = [out / variant / "seed0" / "last.pt" for variant in VARIANTS]
    wait_until(lambda: any(p.exists() for p in lasts), job, out, "a finished epoch")

    job.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code, stdout, stderr = finish(job, out)
    assert time.monotonic() - sent < PROMPT
    assert code == 143, stderr
    assert left_running(out, within=10) == []
    assert stderr.splitlines()[-1].startswith("netspec ablate: terminated (SIGTERM); ")
    kept = {}
    for variant, last in zip(VARIANTS, lasts, strict=True):
        assert status(out, variant) == "interrupted"
        log = out / variant / "seed0" / runs.LOG
        assert last_line(log).startswith("netspec train: terminated (SIGTERM)")
        if last.exists():
            kept[variant] = (out / variant / "seed0" / "metrics.jsonl").read_text().splitlines()
    assert kept and all(1 <= len(rows) < 3 for rows in kept.values())

    code, stdout, stderr = finish(ablate(tmp_path, study, out, "--jobs", "2"), out)
    assert code == 0, stderr
    assert f"{len(kept)} to resume" in stdout
    for variant in VARIANTS:
        rows = (out / variant / "seed0" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
        if variant in kept:  # carried on from last.pt, not trained again
            assert rows[0] == kept[variant][0]
            assert "resuming" in (out / variant / "seed0" / runs.LOG).read_text()
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["status"], r["epoch"]) for r in table] == [("finished", e) for e in "123123"]


def state(pid: int) -> str:
    """R, S, T (stopped), …, or "" for a process that is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def test_ctrl_z_and_kill_9_of_ablate_take_its_runs_along(larger, tmp_path):
    study, out = study_file(tmp_path, larger, epochs=50, workers=2), tmp_path / "out"
    job = ablate(tmp_path, study, out, "--jobs", "2")
    # two runs, and loader processes of at least one: its children's children go too
    wait_until(lambda: len(trains(out)) > 2, job, out, "runs with loader processes")

    # Ctrl-Z: the terminal stops ablate's group; the runs, in groups of their own, with it
    job.send_signal(signal.SIGTSTP)

    def states() -> set[str]:
        return {state(pid) for pid in trains(out)}

    wait_until(lambda: state(job.pid) == "T" and states() == {"T"}, job, out, "all stopped")
    job.send_signal(signal.SIGCONT)  # fg
    wait_until(lambda: "T" not in states(), job, out, "the runs continued")

    job.kill()
    code, _, _ = finish(job, out)
    assert code == -signal.SIGKILL
    assert left_running(out, within=30) == []  # loaders notice their parent within 5 s


@pytest.mark.parametrize("signals", [1, 2])
def test_a_run_that_will_not_stop_is_killed(tmp_path, monkeypatch, signals):
    """One signal: the run has GRACE seconds, then is killed; a second signal kills it now."""
    (tmp_path / "data").mkdir()
    study = study_file(tmp_path, tmp_path / "data", epochs=1)
    plan = load_study(study, out=tmp_path / "out")
    ready = tmp_path / "ready"
    stubborn = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep({DEADLINE})"
    )
    monkeypatch.setattr(runs, "command", lambda *_: [sys.executable, "-c", stubborn])
    grace = 2.0 if signals == 1 else float(DEADLINE)
    monkeypatch.setattr(runs, "GRACE", grace)

    def terminate() -> None:
        deadline = time.monotonic() + DEADLINE
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)

    said: list[str] = []
    runner = runs.Runner(plan, "D", 1, log=said.append)
    job = runs.jobs_of(plan)[0]
    sender = threading.Thread(target=terminate)
    sender.start()
    began = time.monotonic()
    with sigterm_as_interrupt(), pytest.raises(Terminated):
        runner.run([(job, "new")])
    took = time.monotonic() - began
    sender.join()
    if signals == 1:
        assert grace <= took < grace + 15  # it had its grace, and no more
    else:
        assert took < 15
    assert len(said) == 1 and re.fullmatch(
        r"\[1/1\] baseline seed 0: interrupted in \d+ s", said[0]
    )
    assert status(plan.out, "baseline") == "interrupted"
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _holds(p, str(ready))]


def _holds(cmdline: Path, text: str) -> bool:
    try:
        return text in cmdline.read_text(errors="replace")
    except OSError:
        return False
