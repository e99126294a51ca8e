"""summary.md: each variant over its seeds, and each variant against the baseline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from netspec.ablate.results import Result
from netspec.ablate.stats import interval, mean_std
from netspec.ablate.study import Plan
from netspec.atomic import atomic_write

Metric = Callable[[Result], float | None]
METRICS: dict[str, Metric] = {
    "val top-1 error": lambda r: None if r.val_top1 is None else 1 - r.val_top1,
    "val top-5 error": lambda r: None if r.val_top5 is None else 1 - r.val_top5,
    "train error": lambda r: r.train_error,
}


def _pct(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _by_variant(plan: Plan, results: list[Result]) -> dict[str, dict[int, Result]]:
    out: dict[str, dict[int, Result]] = {v: {} for v in plan.study.variants}
    for r in results:
        out[r.variant][r.seed] = r
    return out


def _values(runs: dict[int, Result], metric: Metric) -> list[float]:
    return [v for r in runs.values() if r.usable and (v := metric(r)) is not None]


def _epochs_cell(runs: dict[int, Result], epochs: int) -> str:
    usable = [r for r in runs.values() if r.usable and r.train_error is not None]
    reached = [float(r.epochs_to_target) for r in usable if r.epochs_to_target is not None]
    if not usable:
        return "—"
    if not reached:
        return f"never in {epochs}"
    mean, std = mean_std(reached)
    shown = f"{mean:.1f} ± {std:.1f}"
    return shown if len(reached) == len(usable) else f"{shown} ({len(reached)} of {len(usable)})"


def _difference(base: dict[int, Result], runs: dict[int, Result], metric: Metric) -> str:
    pairs = [
        (mb, mv)
        for seed, b in base.items()
        if b.usable and seed in runs and runs[seed].usable
        if (mb := metric(b)) is not None and (mv := metric(runs[seed])) is not None
    ]
    if not pairs:
        return "—"
    mean, half = interval([v - b for b, v in pairs])
    if half is None:
        return f"{100 * mean:+.2f} (one seed)"
    return f"{100 * mean:+.2f} [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}]"


def _ratio(base: dict[int, Result], runs: dict[int, Result]) -> str:
    pairs = [
        (b, runs[seed])
        for seed, b in base.items()
        if b.usable and seed in runs and runs[seed].usable
    ]
    both = [(b, v) for b, v in pairs if b.epochs_to_target and v.epochs_to_target]
    if not pairs:
        return "—"
    if not any(b.epochs_to_target for b, _ in pairs):
        return "baseline never reached it"
    if not both:
        return "never reached it"
    mean_b = sum(b.epochs_to_target or 0 for b, _ in both) / len(both)
    mean_v = sum(v.epochs_to_target or 0 for _, v in both) / len(both)
    missed = sum(1 for b, v in pairs if b.epochs_to_target and not v.epochs_to_target)
    note = f"; never reached in {missed}" if missed else ""
    return f"{mean_v / mean_b:.2f}× ({len(both)} of {len(pairs)} seeds{note})"


def render(plan: Plan, results: list[Result]) -> str:
    study, target = plan.study, plan.study.target_train_error
    groups = _by_variant(plan, results)
    base_name = plan.baseline
    counts = {s: sum(1 for r in results if r.status == s) for s in ("finished", "diverged")}
    others = len(results) - sum(counts.values())
    lines = [f"# Ablation study: {study.name}", ""]
    if study.description:
        lines += [study.description, ""]
    lines += [
        f"Spec `{plan.spec_path}`, data `{plan.data}`, {plan.epochs} epochs, "
        f"seeds {', '.join(map(str, plan.seeds))}. {len(results)} runs: "
        f"{counts['finished']} finished, {counts['diverged']} diverged"
        + (f", {others} not finished" if others else "")
        + f"; {sum(r.seconds for r in results):.0f} s of training in all.",
        "",
        "## Each variant",
        "",
        "Errors in percent, mean ± standard deviation over the seeds whose runs finished; "
        "validation errors are each run's best epoch, training error its last epoch's.",
        "",
        "| variant | overrides | runs | val top-1 error | val top-5 error | train error "
        f"| epochs to {100 * target:g}% train error |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in groups.items():
        usable = sum(r.usable for r in runs.values())
        diverged = sum(r.status == "diverged" for r in runs.values())
        count = f"{usable}" + (f" ({diverged} diverged)" if diverged else "")
        sets = ", ".join(f"`{o}`" for o in study.variants[name]) or "—"
        cells = [_pct(v) if (v := _values(runs, m)) else "—" for m in METRICS.values()]
        lines.append(
            f"| {name} | {sets} | {count} | {' | '.join(cells)} | "
            f"{_epochs_cell(runs, plan.epochs)} |"
        )
    lines += [
        "",
        f"## Against the baseline ({base_name})",
        "",
        "Variant minus baseline in percentage points, paired by seed: the mean difference "
        "and its 95% interval (Student's t, n − 1 degrees of freedom). A positive difference "
        "means the variant's error is higher. The last column divides the variant's mean "
        f"epochs to {100 * target:g}% training error by the baseline's, over the seeds where "
        "both reached it.",
        "",
        "| variant | Δ val top-1 error | Δ val top-5 error | Δ train error "
        "| epochs to target, ÷ baseline |",
        "|---|---|---|---|---|",
    ]
    base = groups[base_name]
    for name, runs in list(groups.items())[1:]:
        cells = [_difference(base, runs, m) for m in METRICS.values()]
        lines.append(f"| {name} | {' | '.join(cells)} | {_ratio(base, runs)} |")
    lines += [
        "",
        "Training error is 1 − top-1 accuracy over each epoch's training batches as they were "
        "trained: random crops, mirrors, colour noise and dropout on, and the weights moving "
        "during the epoch. It is higher than the finished weights' error on clean training "
        "images would be.",
        "",
    ]
    return "\n".join(lines)


def write_summary(plan: Plan, results: list[Result], path: Path) -> None:
    with atomic_write(path) as f:
        f.write(render(plan, results))
