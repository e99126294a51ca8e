"""`netspec ablate STUDY`: train what is missing, then write results.csv, summary.md and
curves.png into the study's folder."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from netspec.ablate import plot
from netspec.ablate.results import read_result, write_csv
from netspec.ablate.runs import LOG, Job, Outcome, Runner, State, jobs_of, state_of, thread_env
from netspec.ablate.study import OUTPUTS, Plan, load_study
from netspec.ablate.summary import write_summary
from netspec.errors import Problem, SpecError, UsageError
from netspec.interrupt import describe, exit_status
from netspec.outputs import check_folder
from netspec.spec.model import load_spec
from netspec.train.checks import check_data_fits, check_sizes, check_workers
from netspec.train.data import open_data, resolve_data_dir

LOCK = ".lock"  # in the study's folder, held by the one netspec ablate working in it
CARRY_ON = "run the same command again to carry on"


def run_ablate(args: argparse.Namespace) -> int:
    """The flags were checked as netspec.cli read them; the study file is checked here."""
    began = time.perf_counter()
    plan = load_study(args.study, args.data, args.epochs, args.seeds, args.out, args.target)
    check_folder(plan.out)  # the default, runs/ablate-<name>, too (netspec.cli checks --out)
    data = plan.data if plan.data == "shapes" else str(Path(plan.data).resolve())
    with holding(plan.out):
        jobs = jobs_of(plan)
        states = [(job, state_of(plan, job, data)) for job in jobs]
        todo = [(job, state) for job, state in states if state in ("new", "resume")]
        _say_plan(plan, states, args.jobs)
        outcomes: list[Outcome] = []
        if todo:
            _check_data(plan, data, args.allow_stale)
            flags = ["--allow-stale"] if args.allow_stale else []
            try:
                outcomes = Runner(plan, data, args.jobs, flags).run(todo)
            except KeyboardInterrupt as exc:
                print(
                    f"\nnetspec ablate: {describe(exc)}; each run keeps its last finished "
                    f"epoch: {CARRY_ON}",
                    file=sys.stderr,
                )
                return exit_status(exc)
        for outcome in outcomes:
            if outcome.status == "failed" and outcome.code == 2:
                raise UsageError(
                    f"variant {outcome.job.label}: {outcome.message} "
                    f"(see {outcome.job.folder / LOG})"
                )
        _report(plan, jobs)
    print(f"study took {time.perf_counter() - began:.0f} s of wall time")
    unfinished = [o for o in outcomes if o.status in ("failed", "interrupted")]
    for o in unfinished:
        if o.status == "failed":
            said = f"exit status {o.code}: {o.message}; see {o.job.folder / LOG}"
        else:  # someone stopped the run itself
            said = f"it was stopped (exit status {o.code}); {CARRY_ON}"
        print(f"netspec ablate: variant {o.job.label} did not finish: {said}", file=sys.stderr)
    return 1 if unfinished else 0


@contextlib.contextmanager
def holding(out: Path) -> Iterator[None]:
    """The study's folder, held by this process while it reads and trains the runs: a second
    netspec ablate into it is refused at once, before it reads runs another is writing. The
    lock (flock) dies with the process, however it ends; a folder this call made and nothing
    was written into is removed again."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(
            f"--out {out}: cannot write the study's folder there ({exc.strerror or exc}); "
            "choose another --out"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise UsageError(
                f"{out} is in use by another netspec ablate{pid}: wait for it to finish, "
                "or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                if [p.name for p in out.iterdir()] == [LOCK]:
                    (out / LOCK).unlink()
                    out.rmdir()


def _say_plan(plan: Plan, states: list[tuple[Job, State]], jobs: int) -> None:
    count = {s: sum(1 for _, state in states if state == s) for s in ("new", "resume")}
    done = len(states) - count["new"] - count["resume"]
    threads = thread_env(jobs)["OMP_NUM_THREADS"]
    print(
        f"study {plan.study.name}: {_n(len(plan.study.variants), 'variant')} × "
        f"{_n(len(plan.seeds), 'seed')} = {_n(len(states), 'run')} of "
        f"{_n(plan.epochs, 'epoch')} in {plan.out}: "
        f"{count['new']} to train, {count['resume']} to resume, {done} done; "
        f"{jobs} at a time, {threads} thread{'' if threads == '1' else 's'} each"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _check_data(plan: Plan, data: str, allow_stale: bool) -> None:
    """Each variant fits the data and the machine, checked (and the statistics fitted) once,
    before any run; a mistake names the variant."""
    root = resolve_data_dir(data)
    for variant in plan.study.variants:
        try:
            spec = load_spec(plan.spec_path, plan.overrides(variant))
            check_sizes(spec)
            check_workers(spec)
            found = open_data(root, spec.data, stale="allow" if allow_stale else "refuse")
            check_data_fits(spec, found.train_set.where, found.classes)
        except SpecError as exc:
            problems = [plan.in_variant(variant, p) for p in exc.problems]
            raise SpecError(problems, exc.warnings) from None
        except UsageError as exc:
            raise UsageError(str(plan.in_variant(variant, Problem("", str(exc))))) from None


def _report(plan: Plan, jobs: list[Job]) -> None:
    target = plan.study.target_train_error
    results = [read_result(job, plan.epochs, target) for job in jobs]
    csv, summary, curves = (plan.out / name for name in OUTPUTS)
    write_csv(results, csv)
    write_summary(plan, results, summary)
    title = f"{plan.study.name} on {Path(plan.data).name}"
    plot.draw(results, list(plan.study.variants), target, title, curves)
    for path in (csv, summary, curves):
        print(f"wrote {path}")
