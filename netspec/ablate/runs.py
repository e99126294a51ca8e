"""The runs of a study: one ordinary `netspec train` run folder per variant × seed.

Each run is trained by `python -m netspec train` in its own process, so a study computes
exactly what the user would by hand, and `--jobs N` runs N of them at once, each with its
share of the CPU's threads. A rerun reads the folders first: finished and diverged runs are
left alone, a run with a `last.pt` short of its epochs is resumed, the rest start afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from netspec.ablate.study import Plan, study_terms
from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.interrupt import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    deferred,
    killed_with_this_process,
)
from netspec.spec.model import load_spec
from netspec.train.runfolder import RunFolder, changed_keys, spec_yaml
from netspec.versions import netspec_source, torch_version

State = Literal["new", "resume", "finished", "diverged"]
STATUS = "ablate.json"  # beside the run's own files: the data it used, and whether it diverged
LOG = "train.log"  # what `netspec train` printed
DIVERGED = "the loss is"  # in the line `netspec train` ends a run with a non-finite loss on
MAY_DIFFER = {"data.workers"}  # between a run folder's spec and the study's: same results
# netspec train's exit status after Ctrl-C or SIGTERM, and death by either before it handled it
STOPPED = {EXIT_INTERRUPTED, EXIT_TERMINATED, -signal.SIGINT, -signal.SIGTERM}
GRACE = 30.0  # seconds a stopped run has to save interrupted.pt and exit before it is killed
POLL = 0.1  # seconds between looks at the running processes


@dataclass(frozen=True)
class Job:
    variant: str
    seed: int
    folder: Path
    setting: str = ""  # the tuned override it trains with, after the variant's own
    tuning: bool = False  # a run that picks the setting, not one that is reported

    @property
    def label(self) -> str:
        return f"{self.variant} seed {self.seed}" + (f" at {self.setting}" if self.setting else "")


def tuning_jobs(plan: Plan) -> list[Job]:
    """Every variant × tuned value × tuning seed, in `VARIANT/tune/KEY=VALUE/seedN`."""
    tune = plan.study.tune
    if tune is None:
        return []
    return [
        Job(variant, seed, plan.out / variant / "tune" / setting / f"seed{seed}", setting, True)
        for variant in plan.study.variants
        for setting in plan.tuned()
        for seed in tune.seed_list()
    ]


def jobs_of(plan: Plan, chosen: dict[str, str] | None = None) -> list[Job]:
    """Every variant × its reporting seeds, variants in the study's order; `chosen`: each
    variant's tuned override."""
    return [
        Job(variant, seed, plan.out / variant / f"seed{seed}", (chosen or {}).get(variant, ""))
        for variant in plan.study.variants
        for seed in plan.seeds_of(variant)
    ]


def train_overrides(plan: Plan, job: Job) -> list[str]:
    tuned = [job.setting] if job.setting else []
    return [
        *plan.overrides(job.variant),
        *tuned,
        f"train.seed={job.seed}",
        f"train.epochs={plan.epochs}",
    ]


def read_status(job: Job) -> dict:
    path = job.folder / STATUS
    try:
        status: dict = json.loads(path.read_text())
        return status
    except (OSError, ValueError):
        return {}


def state_of(plan: Plan, job: Job, data: str) -> State:
    """What a job needs; a folder left by a different study or data set is an error."""
    folder = RunFolder(job.folder)
    status = read_status(job)
    if status and status.get("data") != data:
        raise UsageError(
            f"{job.folder} was trained on {status.get('data')}, not {data}: "
            "choose another --out, or delete the folder"
        )
    if status.get("status") == "diverged":
        return "diverged"
    if not folder.last.is_file():
        return "new"
    wanted = spec_yaml(load_spec(plan.spec_path, train_overrides(plan, job)))
    changed = set(changed_keys(yaml.safe_load(folder.spec.read_text()), yaml.safe_load(wanted)))
    if changed - MAY_DIFFER:
        raise UsageError(
            f"{job.folder} was trained with a different spec ({', '.join(sorted(changed))} "
            "differ from the study's): choose another --out, or delete the folder"
        )
    rows = folder.rows()
    return "finished" if rows and rows[-1]["epoch"] >= plan.epochs else "resume"


def command(plan: Plan, job: Job, data: str, resume: bool, flags: Sequence[str] = ()) -> list[str]:
    """The `netspec train` command line of a job, as a user would type it; `flags` are the
    study's own (--allow-stale)."""
    train = [sys.executable, "-m", "netspec", "train", str(plan.spec_path), "--data", data]
    train += flags
    if resume:  # the run folder's spec.yaml holds the variant, the seed and the epochs
        return [*train, "--resume", str(job.folder)]
    sets = [arg for text in train_overrides(plan, job) for arg in ("--set", text)]
    return [*train, "--out", str(job.folder), *sets]


def thread_env(jobs: int) -> dict[str, str]:
    """The environment of each job: the cores shared out between the jobs that run at once."""
    env = dict(os.environ)
    share = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, share)
    return env


@dataclass
class Outcome:
    job: Job
    status: Literal["finished", "diverged", "failed", "interrupted", "skipped"]
    message: str = ""
    code: int = 0  # netspec train's exit status; 2: a mistake every run would repeat


@dataclass
class _Running:
    job: Job
    process: subprocess.Popen
    began: float


class Runner:
    """Runs jobs `jobs` at a time, each a `netspec train` process.

    The processes are this one's alone to stop: each is in a process group of its own (a
    Ctrl-C in the terminal reaches only this process) and is killed by the kernel if this
    process dies. A Ctrl-C or SIGTERM here is passed on to each run once (see `halt`), so
    that it saves interrupted.pt and exits as a `netspec train` does; last.pt stays its
    resume point. A Ctrl-Z stops the runs with this process (see `pause`). `run` is called
    from the main thread, which outlives the runs: the kernel's parent-death signal follows
    the thread that started a child, and only the main thread handles signals.
    """

    def __init__(
        self,
        plan: Plan,
        data: str,
        jobs: int,
        flags: Sequence[str] = (),
        log: Callable[[str], None] = print,
    ):
        self.plan, self.data, self.jobs, self.log = plan, data, jobs, log
        self.flags = flags
        self.env = thread_env(jobs)
        self.trained_by = {  # what a run's numbers depend on besides its spec and data
            "netspec": netspec_source(),
            "torch": torch_version(),
            "threads": self.env["OMP_NUM_THREADS"],
        }
        self.mistaken = False  # a run exited with status 2: the others would repeat it
        self.done = 0
        self.running: list[_Running] = []

    def run(self, todo: Sequence[tuple[Job, State]]) -> list[Outcome]:
        self.total = len(todo)
        waiting = list(reversed(todo))
        running = self.running
        outcomes: dict[Job, Outcome] = {}
        paused = signal.signal(signal.SIGTSTP, self.pause)
        try:
            while running or (waiting and not self.mistaken):
                while waiting and not self.mistaken and len(running) < self.jobs:
                    with deferred():  # a signal now is raised once the process is in `running`
                        running.append(self.start(*waiting.pop()))
                for run in [r for r in running if r.process.poll() is not None]:
                    running.remove(run)
                    outcomes[run.job] = self.finish(run, halted=False)
                time.sleep(POLL)
        except KeyboardInterrupt as exc:
            outcomes.update((o.job, o) for o in self.halt(running, exc))
            raise
        except BaseException:
            for run in running:
                run.process.kill()
            raise
        finally:
            signal.signal(signal.SIGTSTP, paused)
        return [outcomes.get(job, Outcome(job, "skipped")) for job, _ in todo]

    def start(self, job: Job, state: State) -> _Running:
        job.folder.mkdir(parents=True, exist_ok=True)
        self.mark(job, "running", **self.trained_by)
        with open(job.folder / LOG, "a") as log:
            process = subprocess.Popen(
                command(self.plan, job, self.data, state == "resume", self.flags),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                process_group=0,
                preexec_fn=killed_with_this_process(),
            )
        return _Running(job, process, time.perf_counter())

    def pause(self, signum: int, frame: object) -> None:
        """Ctrl-Z: the terminal stops this process's group, which the runs are not in, so
        this process stops each run's group (the run and its loader processes), then itself;
        the shell's fg or bg continues it, and it continues them."""
        for run in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)
        for run in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGCONT)

    def halt(self, running: list[_Running], exc: KeyboardInterrupt) -> list[Outcome]:
        """Pass the signal on to the running processes, give them GRACE seconds to save and
        exit, and kill the rest; a second Ctrl-C or SIGTERM kills them at once."""
        signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        for run in running:
            run.process.send_signal(signum)  # none to a process already waited for
        deadline = time.monotonic() + GRACE
        with contextlib.suppress(KeyboardInterrupt):
            for run in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.process.wait(max(0.0, deadline - time.monotonic()))
        for run in running:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()
        return [self.finish(run, halted=True) for run in running]

    def finish(self, run: _Running, halted: bool) -> Outcome:
        """The outcome of a run whose process has exited; `halted`: this process stopped it."""
        job, code = run.job, run.process.returncode
        last = study_terms(_last_line(job.folder / LOG).removeprefix("netspec train: "))
        outcome = Outcome(job, "finished")
        if code == 1 and DIVERGED in last:
            outcome = Outcome(job, "diverged", last)
        elif code in STOPPED or (halted and code == -signal.SIGKILL):
            outcome = Outcome(job, "interrupted", code=code)
        elif code:
            outcome = Outcome(job, "failed", last, code)
            self.mistaken = self.mistaken or code == 2  # the user's, not this run's bad luck
        self.mark(job, outcome.status)
        self.done += 1
        took = time.perf_counter() - run.began
        said = f": {outcome.message}" if outcome.message else ""
        self.log(f"[{self.done}/{self.total}] {job.label}: {outcome.status} in {took:.0f} s{said}")
        return outcome

    def mark(self, job: Job, status: str, **more: object) -> None:
        """ablate.json: the data and the status, and what the run was trained by (kept from
        its start, so that a summary can name the code behind every number)."""
        kept = {k: v for k, v in read_status(job).items() if k not in ("data", "status")}
        with atomic_write(job.folder / STATUS) as f:
            f.write(json.dumps({"data": self.data, "status": status, **kept, **more}))


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
