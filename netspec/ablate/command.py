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
from typing import Any

from netspec.ablate import plot
from netspec.ablate.results import Result, read_result, write_csv
from netspec.ablate.runs import (
    LOG,
    Job,
    Outcome,
    Runner,
    State,
    jobs_of,
    state_of,
    thread_env,
    tuning_jobs,
)
from netspec.ablate.study import OUTPUTS, Plan, load_study
from netspec.ablate.summary import Provenance, write_summary
from netspec.ablate.tuning import choose
from netspec.errors import Problem, SpecError, UsageError
from netspec.interrupt import describe, exit_status
from netspec.outputs import check_folder
from netspec.spec.model import load_spec
from netspec.train.checks import check_data_fits, check_sizes, check_workers
from netspec.train.data import open_data, resolve_data_dir
from netspec.train.runfolder import holder_said

LOCK = ".lock"  # in the study's folder, held by the one netspec ablate working in it
CARRY_ON = "run the same command again to carry on"


def run_ablate(args: argparse.Namespace) -> int:
    """The flags were checked as netspec.cli read them; the study file is checked here."""
    began = time.perf_counter()
    plan = load_study(args.study, args.data, args.epochs, args.seeds, args.out, args.target)
    check_folder(plan.out)  # the default, runs/ablate-<name>, too (netspec.cli checks --out)
    data = plan.data if plan.data == "shapes" else str(Path(plan.data).resolve())
    flags = ["--allow-stale"] if args.allow_stale else []
    with holding(plan.out):
        checked: list[bool] = []  # the data is checked once, before the first run trains
        tuning = tuning_jobs(plan)
        try:
            tuned = _train(plan, data, args, tuning, flags, checked)
            if _unfinished(tuned):
                print(
                    "netspec ablate: the reporting runs wait for every tuning run to finish",
                    file=sys.stderr,
                )
                return 1
            chosen = choose(plan, _results(plan, tuning)) if tuning else {}
            jobs = jobs_of(plan, chosen)
            outcomes = _train(plan, data, args, jobs, flags, checked)
        except KeyboardInterrupt as exc:
            print(
                f"\nnetspec ablate: {describe(exc)}; each run keeps its last finished "
                f"epoch: {CARRY_ON}",
                file=sys.stderr,
            )
            return exit_status(exc)
        ran = Provenance(
            command=["netspec", *sys.argv[1:]],
            seconds=time.perf_counter() - began,
            trained=sum(o.status != "skipped" for o in [*tuned, *outcomes]),
            **_data_said(plan, data),
        )
        _report(plan, tuning, jobs, ran)
    print(f"study took {ran.seconds:.0f} s of wall time")
    return 1 if _unfinished(outcomes) else 0


def _train(
    plan: Plan,
    data: str,
    args: argparse.Namespace,
    jobs: list[Job],
    flags: list[str],
    checked: list[bool],
) -> list[Outcome]:
    """Train the jobs that are not done; a mistake every run would repeat is one line."""
    if not jobs:
        return []
    states = [(job, state_of(plan, job, data)) for job in jobs]
    todo = [(job, state) for job, state in states if state in ("new", "resume")]
    _say_plan(plan, states, args.jobs)
    if not todo:
        return []
    if not checked:
        _check_data(plan, data, args.allow_stale)
        checked.append(True)
    outcomes = Runner(plan, data, args.jobs, flags).run(todo)
    for outcome in outcomes:
        if outcome.status == "failed" and outcome.code == 2:
            raise UsageError(
                f"variant {outcome.job.label}: {outcome.message} (see {outcome.job.folder / LOG})"
            )
    return outcomes


def _unfinished(outcomes: list[Outcome]) -> bool:
    """Say each run that did not finish, with what to do; whether there was one."""
    unfinished = [o for o in outcomes if o.status in ("failed", "interrupted")]
    for o in unfinished:
        if o.status == "failed":
            said = f"exit status {o.code}: {o.message}; see {o.job.folder / LOG}"
        else:  # someone stopped the run itself
            said = f"it was stopped (exit status {o.code}); {CARRY_ON}"
        print(f"netspec ablate: variant {o.job.label} did not finish: {said}", file=sys.stderr)
    return bool(unfinished)


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
            pid = holder_said(fd)
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
    tune = plan.study.tune
    if states[0][0].tuning and tune is not None:
        what = (
            f"tuning {tune.key}: {_n(len(plan.study.variants), 'variant')} × "
            f"{_n(len(tune.values), 'value')} × {_n(len(tune.seed_list()), 'seed')}"
        )
    else:
        seeds = {len(plan.seeds_of(v)) for v in plan.study.variants}
        each = _n(seeds.pop(), "seed") if len(seeds) == 1 else "their seeds"
        what = f"{_n(len(plan.study.variants), 'variant')} × {each}"
    print(
        f"study {plan.study.name}, {what} = {_n(len(states), 'run')} of "
        f"{_n(plan.epochs, 'epoch')} in {plan.out}: "
        f"{count['new']} to train, {count['resume']} to resume, {done} done; "
        f"{jobs} at a time, {threads} thread{'' if threads == '1' else 's'} each"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _check_data(plan: Plan, data: str, allow_stale: bool) -> None:
    """Each variant, with each tuned value, fits the data and the machine, checked (and the
    statistics fitted) before any run; a mistake names the variant."""
    root = resolve_data_dir(data)
    for variant in plan.study.variants:
        for overrides in plan.variations(variant):
            try:
                spec = load_spec(plan.spec_path, overrides)
                check_sizes(spec)
                check_workers(spec)
                found = open_data(root, spec.data, stale="allow" if allow_stale else "refuse")
                check_data_fits(spec, found.train_set.where, found.classes)
            except SpecError as exc:
                problems = [plan.in_variant(variant, p) for p in exc.problems]
                raise SpecError(problems, exc.warnings) from None
            except UsageError as exc:
                raise UsageError(str(plan.in_variant(variant, Problem("", str(exc))))) from None


def _data_said(plan: Plan, data: str) -> dict[str, Any]:
    """The data by name, with its image and class counts, for the provenance block."""
    found = open_data(resolve_data_dir(data), load_spec(plan.spec_path).data, stale="unchecked")
    name = "the built-in shapes" if data == "shapes" else f"`{plan.data}`"
    said = (
        f"{name}: {len(found.train_set):,} training and {len(found.val_set):,} validation "
        f"images of {len(found.classes)} classes"
    )
    return {"data": said, "val_images": len(found.val_set)}


def _results(plan: Plan, jobs: list[Job]) -> list[Result]:
    """Tuning runs read at the study file's target, reported runs at the plan's."""
    return [
        read_result(job, plan.epochs, plan.study.target_train_error if job.tuning else plan.target)
        for job in jobs
    ]


def _report(plan: Plan, tuning: list[Job], jobs: list[Job], ran: Provenance) -> None:
    tuned, results = _results(plan, tuning), _results(plan, jobs)
    csv, summary, curves = (plan.out / name for name in OUTPUTS)
    write_csv([*tuned, *results], csv)
    write_summary(plan, results, tuned, ran, summary)
    title = f"{plan.study.name} on {Path(plan.data).name}"
    plot.draw(results, list(plan.study.variants), plan.target, title, curves)
    for path in (csv, summary, curves):
        print(f"wrote {path}")
