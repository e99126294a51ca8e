"""`netspec train --nproc N`: data-parallel processes on gloo, against the one-process run.

The processes are real: torch's elastic launcher starts them, they join a gloo process
group and train with DDP. Dropout is off so that replicas and one process draw nothing
differently; everything else (data order, augmentation, evaluation) must agree exactly.
"""

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
from netspec.errors import WORKER_ERRORS, UsageError, tell, told
from netspec.train.checkpoint import load_checkpoint
from netspec.train.loop import train
from netspec.train.runfolder import RunFolder
from netspec.train.shapes_data import ensure_shapes
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"
NO_DROPOUT = "layers.drop.p=0"
TIMING = {"seconds", "images_per_s", "data_wait"}
JOB_TIMEOUT = 240  # seconds for any one launched job; a hang fails the test, never blocks it


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """60 training images (three global batches of 16), 30 validation images."""
    return ensure_shapes(
        tmp_path_factory.mktemp("small"), seed=3, size=32, train_per_class=6, val_per_class=3
    )


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """300 training images: epochs long enough to kill a process in the middle of one."""
    return ensure_shapes(
        tmp_path_factory.mktemp("larger"), seed=3, size=32, train_per_class=30, val_per_class=3
    )


pytestmark = pytest.mark.usefixtures("own_cache")


def quiet(*_: object) -> None:
    pass


def one_process(data: Path, out: Path, epochs: int, *overrides: str) -> list[dict]:
    """The reference: the same spec trained in this process alone."""
    spec = load_spec(TINY, [NO_DROPOUT, f"train.epochs={epochs}", *overrides])
    train(spec, data, out, log=quiet)
    return rows(out)


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_rows_close(got: list[dict], want: list[dict]) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        assert g == pytest.approx(w, rel=1e-5, abs=1e-6), g["epoch"]


def assert_weights_close(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)


def python_m(tmp_path: Path, *argv: str) -> subprocess.Popen:
    """`python -m ARGV…` in a process of its own, with this test's cache."""
    return subprocess.Popen(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        env={**os.environ, "NETSPEC_CACHE": str(tmp_path / "cache")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start(data: Path, tmp_path: Path, *args: str) -> subprocess.Popen:
    """`netspec train` on the tiny spec, dropout off."""
    return python_m(
        tmp_path, "netspec", "train", str(TINY), "--data", str(data), "--set", NO_DROPOUT, *args
    )


def children(pid: int) -> list[int]:
    """The processes `pid` started (the launcher's workers, from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def local_rank(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"LOCAL_RANK=")]
    return int(ranks[0]) if ranks else None


def finish(job: subprocess.Popen, timeout: float = JOB_TIMEOUT) -> tuple[int, str, str]:
    """Wait for a job; past `timeout` kill it and its workers and fail the test."""
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in children(job.pid):
            os.kill(pid, signal.SIGKILL)
        job.kill()
        out, err = job.communicate()
        pytest.fail(f"no exit within {timeout} s:\n{out}\n{err}")
    return job.returncode, out, err


def wait_for(path: Path, job: subprocess.Popen, timeout: float = JOB_TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if job.poll() is not None or time.time() > deadline:
            finish(job, 1)
            pytest.fail(f"{path} never appeared")
        time.sleep(0.02)


def kill_worker(job: subprocess.Popen, rank: int) -> None:
    (victim,) = [pid for pid in children(job.pid) if local_rank(pid) == rank]
    os.kill(victim, signal.SIGKILL)


# --- runs -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_data_parallel_processes_compute_the_one_process_epoch(small, tmp_path):
    want = one_process(small, tmp_path / "one", 1)
    job = start(small, tmp_path, "--nproc", "2", "--epochs", "1", "--out", str(tmp_path / "two"))
    status, out, err = finish(job)
    assert status == 0, err
    assert_rows_close(rows(tmp_path / "two"), want)  # train loss and sharded evaluation
    assert_weights_close(tmp_path / "two" / "last.pt", tmp_path / "one" / "last.pt")
    # one process logged and wrote: one row, one line per epoch, a plain state_dict
    assert out.count("epoch 1/1 ") == 1 and "in 2 data-parallel processes" in out
    spec = load_spec(TINY, [NO_DROPOUT])
    compile(spec).load_state_dict(load_checkpoint(tmp_path / "two" / "last.pt")["model"])


@pytest.mark.slow
def test_torchrun_runs_the_same_command(small, tmp_path):
    want = one_process(small, tmp_path / "one", 1)
    launcher = ["torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command = ["netspec", "train", str(TINY), "--data", str(small), "--set", NO_DROPOUT]
    job = python_m(
        tmp_path, *launcher, "-m", *command, "--epochs", "1", "--out", str(tmp_path / "two")
    )
    status, _, err = finish(job)
    assert status == 0, err
    assert_rows_close(rows(tmp_path / "two"), want)
    assert_weights_close(tmp_path / "two" / "last.pt", tmp_path / "one" / "last.pt")


@pytest.mark.slow
def test_nproc_1_is_the_one_process_run(small, tmp_path):
    want = one_process(small, tmp_path / "one", 1)
    status, out, err = finish(
        start(small, tmp_path, "--nproc", "1", "--epochs", "1", "--out", str(tmp_path / "cli"))
    )
    assert status == 0, err
    assert rows(tmp_path / "cli") == want  # exactly: the same path, no process group
    a = load_checkpoint(tmp_path / "cli" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "data-parallel" not in out


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_process_ends_the_job_and_the_run_resumes_in_one(larger, tmp_path):
    run = tmp_path / "run"
    job = start(
        larger, tmp_path, "--nproc", "2", "--epochs", "20", "--workers", "0", "--out", str(run)
    )
    wait_for(run / "last.pt", job)
    killed_at = time.time()
    kill_worker(job, 1)
    status, _, err = finish(job, timeout=60)
    assert time.time() - killed_at < 60
    assert status != 0
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"netspec train: process 1 of 2 was killed by SIGKILL; {run / 'last.pt'} holds the "
            f"last finished epoch: continue with --resume {run}"
        )
    )
    done = load_checkpoint(run / "last.pt")["epoch"]  # intact, and part-way
    assert 1 <= done < 3
    status, _, err = finish(
        start(larger, tmp_path, "--resume", str(run), "--epochs", str(done + 1))
    )
    assert status == 0, err
    assert_rows_close(rows(run), one_process(larger, tmp_path / "one", done + 1))


@pytest.mark.slow
def test_max_restarts_restart_the_processes_which_resume_by_themselves(larger, tmp_path):
    run = tmp_path / "run"
    args = ["--nproc", "2", "--max-restarts", "1", "--epochs", "3", "--workers", "0"]
    job = start(larger, tmp_path, *args, "--out", str(run))
    wait_for(run / "last.pt", job)
    kill_worker(job, 1)
    status, out, err = finish(job)
    assert status == 0, err
    assert "resuming" in out
    # each epoch logged once at most: the kill may fall between a checkpoint and its line
    counts = [out.count(f"epoch {e}/3 ") for e in (1, 2, 3)]
    assert max(counts) == 1 and counts[-1] == 1
    assert_rows_close(rows(run), one_process(larger, tmp_path / "one", 3))


# --- mistakes -------------------------------------------------------------------------------


def train_error(capsys, small, *args: str) -> str:
    assert main(["train", str(TINY), "--data", str(small), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


NO_GROUPS = ["--set", "device_groups=null", "--set", "layers.conv2.connect=all"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--nproc", "2", "--batch-size", "15"],
            "train.batch_size is the global batch, and 15 does not split evenly over 2 "
            "data-parallel processes: use a multiple of 2, e.g. --batch-size 14",
        ),
        (
            ["--parallel", "towers", "--nproc", "2", *NO_GROUPS],
            f"--parallel towers places device groups on processes, and {TINY} has none: use "
            "--parallel data, or give the spec two or more device_groups",
        ),
        (
            ["--parallel", "towers", "--nproc", "3"],
            f"--parallel towers runs one process per device group: {TINY} has 2 groups "
            "(g0, g1) but --nproc is 3; use --nproc 2",
        ),
        (
            ["--parallel", "towers"],
            f"--parallel towers runs one process per device group: {TINY} has 2 groups "
            "(g0, g1) but --nproc is 1; use --nproc 2",
        ),
        (
            ["--parallel", "towers,data", "--nproc", "5"],
            "--parallel towers,data runs 2 device groups × replicas: --nproc 5 is not a "
            "multiple of 2; use --nproc 4 or 6",
        ),
        (
            ["--parallel", "tower", "--nproc", "2"],
            "--parallel tower: unknown mode; choose one of data, towers, towers,data",
        ),
        (["--nproc", "0"], "argument --nproc: give 1 or more processes, got 0"),
        (
            ["--nproc", "2", "--max-restarts", "-1"],
            "argument --max-restarts: give 0 or more restarts, got -1",
        ),
    ],
)
def test_bad_combinations_are_one_line(capsys, small, tmp_path, args, message):
    assert train_error(capsys, small, "--out", str(tmp_path / "run"), *args) == (
        f"netspec train: {message}"
    )
    assert not (tmp_path / "run").exists()


# --- no process outlives the job; a run is written by one job at a time ---------------------


def descendants(pid: int, seconds: float = 1.0) -> set[int]:
    """Every process below `pid` seen over `seconds`: the workers, and the data loader
    workers that each epoch starts and ends."""
    found: set[int] = set()
    deadline = time.time() + seconds
    while time.time() < deadline:
        todo = [pid]
        while todo:
            for child in children(todo.pop()):
                found.add(child)
                todo.append(child)
        time.sleep(0.02)
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def none_left(pids: set[int], within: float = 10.0) -> bool:
    deadline = time.time() + within
    while any(running(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    return not any(running(p) for p in pids)


@pytest.mark.slow
def test_killing_the_launcher_leaves_no_process_and_the_run_resumes(larger, tmp_path):
    run = tmp_path / "run"
    job = start(larger, tmp_path, "--nproc", "2", "--epochs", "20", "--out", str(run))
    wait_for(run / "last.pt", job)
    processes = descendants(job.pid)
    assert len(processes) >= 4  # two workers, and loader workers of theirs
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=60)
    assert none_left(processes)  # the workers died with the launcher, and theirs with them
    done = len(rows(run))
    status, _, err = finish(
        start(larger, tmp_path, "--resume", str(run), "--epochs", str(done + 1), "--nproc", "2")
    )
    assert status == 0, err
    assert [r["epoch"] for r in rows(run)] == list(range(1, done + 2))  # each epoch once


@pytest.mark.slow
def test_killing_a_worker_leaves_no_process(larger, tmp_path):
    run = tmp_path / "run"
    job = start(larger, tmp_path, "--nproc", "2", "--epochs", "20", "--out", str(run))
    wait_for(run / "last.pt", job)
    processes = descendants(job.pid)
    kill_worker(job, 0)
    finish(job, timeout=60)
    assert none_left(processes)


def test_an_epoch_is_never_logged_twice(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write_rows([{"epoch": 1}, {"epoch": 2}])
    with pytest.raises(UsageError, match=r"already holds epoch 2: another process is training"):
        folder.append_row({"epoch": 2})
    folder.append_row({"epoch": 3})
    assert [r["epoch"] for r in folder.rows()] == [1, 2, 3]


# --- a mistake one process finds is one line, as in one process -----------------------------


@pytest.mark.slow
def test_a_refused_resume_under_nproc_is_one_line_and_changes_nothing(small, tmp_path):
    run = tmp_path / "run"
    one_process(small, run, 1)

    def files() -> dict[str, bytes]:  # all but the lock, which any command may create
        return {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}

    (run / "best.pt").unlink()  # a resume repairs a missing best.pt: not a refused one
    before = files()
    job = start(small, tmp_path, "--resume", str(run), "--nproc", "2", "--set", "train.lr=0.5")
    status, _, err = finish(job)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, lines
    assert "train.lr changed since the run started" in lines[0]
    assert f"--resume {run}" not in lines[0].split(":", 2)[-1]  # no advice to do it again
    assert files() == before


def test_workers_errors_are_said_once_by_the_launcher(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(WORKER_ERRORS, str(tmp_path))
    for rank in ("1", "0", "2"):
        monkeypatch.setenv("RANK", rank)
        tell("netspec train: the same mistake" if rank != "2" else "netspec train: another")
    assert capsys.readouterr().err == ""  # left for the launcher, not printed by each
    assert told(tmp_path) == ["netspec train: the same mistake", "netspec train: another"]
    monkeypatch.delenv(WORKER_ERRORS)
    tell("netspec train: alone")
    assert capsys.readouterr().err == "netspec train: alone\n"
