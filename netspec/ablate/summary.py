"""summary.md: where the numbers came from, each variant over its seeds, each seed, and each
variant against the baseline, reported as a small-sample study should be.

The headline is each run's validation error averaged over its last epochs, not its best
epoch, which is picked on the same images it is scored on. Beside the t interval stands an
exact sign-flip p, which does not lean on normality, and Holm's adjustment of it over the
study's comparisons.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netspec.ablate.results import LAST, Result
from netspec.ablate.stats import EXACT_UP_TO, holm, interval, mean_std, sign_flip_p
from netspec.ablate.study import Plan
from netspec.ablate.tuning import choose, scores
from netspec.atomic import atomic_write

Metric = Callable[[Result], float | None]
HEADLINE: Metric = lambda r: r.val_top1_error  # noqa: E731
COMPARED: dict[str, Metric] = {
    "best-epoch val top-1 error": lambda r: r.best_val_top1_error,
    "val top-5 error": lambda r: r.val_top5_error,
    "train error": lambda r: r.train_error,
}


@dataclass(frozen=True)
class Provenance:
    """What the command that wrote the summary knew about itself."""

    command: list[str]
    seconds: float  # its wall time
    trained: int  # runs it trained or resumed
    data: str  # the data by name, with its counts
    val_images: int


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


def _pairs(
    base: dict[int, Result], runs: dict[int, Result], metric: Metric
) -> list[tuple[float, float]]:
    """(baseline, variant) by seed, where both runs finished."""
    return [
        (mb, mv)
        for seed, b in base.items()
        if b.usable and seed in runs and runs[seed].usable
        if (mb := metric(b)) is not None and (mv := metric(runs[seed])) is not None
    ]


def _difference(pairs: list[tuple[float, float]]) -> str:
    if not pairs:
        return "—"
    if all(b == 0 and v == 0 for b, v in pairs):
        return "saturated: 0 on both sides"
    differences = [v - b for b, v in pairs]
    mean, half = interval(differences)
    if half is None:
        return f"{100 * mean:+.2f} (one seed)"
    if max(differences) == min(differences):  # an interval of width 0 would read as certainty
        return f"{100 * mean:+.2f} on every seed"
    return f"{100 * mean:+.2f} [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}]"


def _p(pairs: list[tuple[float, float]]) -> float | None:
    if not pairs or len(pairs) > EXACT_UP_TO:
        return None
    return sign_flip_p([v - b for b, v in pairs])


def _reached(run: Result, epochs: int) -> str:
    return str(run.epochs_to_target) if run.epochs_to_target is not None else f">{epochs}"


def _epochs_cell(runs: dict[int, Result], epochs: int) -> str:
    usable = [r for r in runs.values() if r.usable and r.train_error is not None]
    reached = [float(r.epochs_to_target) for r in usable if r.epochs_to_target is not None]
    if not usable:
        return "—"
    if not reached:
        return f"never in {epochs}"
    mean, std = mean_std(reached)
    shown = f"{mean:.1f} ± {std:.1f}"
    if len(reached) == len(usable):
        return shown
    return f"{shown} ({len(reached)} of {len(usable)}; {len(usable) - len(reached)} censored)"


def _ratio(base: dict[int, Result], runs: dict[int, Result], epochs: int) -> str:
    """Mean epochs to the target, variant ÷ baseline, over the seeds where both reached it;
    the seeds where either did not are counted, not dropped silently."""
    pairs = [(b, runs[s]) for s, b in base.items() if b.usable and s in runs and runs[s].usable]
    both = [(b, v) for b, v in pairs if b.epochs_to_target and v.epochs_to_target]
    if not pairs:
        return "—"
    if not any(b.epochs_to_target for b, _ in pairs):
        return f"baseline never reached it in {epochs}"
    if not both:
        return f"never reached in {epochs}"
    mean_b = sum(b.epochs_to_target or 0 for b, _ in both) / len(both)
    mean_v = sum(v.epochs_to_target or 0 for _, v in both) / len(both)
    missed = sum(1 for b, v in pairs if b.epochs_to_target and not v.epochs_to_target)
    base_missed = sum(1 for b, v in pairs if v.epochs_to_target and not b.epochs_to_target)
    notes = [f"variant never reached it in {missed}"] if missed else []
    notes += [f"baseline never reached it in {base_missed}"] if base_missed else []
    note = "; " + "; ".join(notes) if notes else ""
    return f"{mean_v / mean_b:.2f}× ({len(both)} of {len(pairs)} seeds{note})"


def _seed_range(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _sizes(plan: Plan, chosen: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Each variant's parameters and multiply-accumulates per image, from its graph."""
    from netspec.ir.graph import build_graph
    from netspec.spec.model import load_spec

    out = {}
    for name in plan.study.variants:
        tuned = [chosen[name]] if chosen.get(name) else []
        net = build_graph(load_spec(plan.spec_path, [*plan.overrides(name), *tuned])).net
        out[name] = (net.params, net.macs)
    return out


def _provenance(
    plan: Plan, results: list[Result], tuned: list[Result], ran: Provenance
) -> list[str]:
    every = [*tuned, *results]
    made = Counter(
        (r.trained_by.get("netspec", "not recorded"), r.trained_by.get("torch", "not recorded"))
        for r in every
    )
    threads = sorted({r.trained_by.get("threads", "not recorded") for r in every})
    seeds = [f"seeds {_seed_range(plan.seeds)}"] + [
        f"{v}: {_seed_range(plan.seeds_of(v))}"
        for v in plan.study.variants
        if plan.seeds_of(v) != plan.seeds
    ]
    lines = ["## Provenance", "", f"- Command: `{shlex.join(ran.command)}`"]
    lines += [
        f"- Trained by netspec {code} with torch {torch}: {count} of {len(every)} runs"
        for (code, torch), count in sorted(made.items())
    ]
    lines += [
        f"- Threads per run: {', '.join(threads)} (a float32 result can depend on it)",
        f"- Spec `{plan.spec_path}`; data {ran.data}",
        f"- {plan.epochs} epochs; {'; '.join(seeds)}",
        f"- Wall time of this command: {ran.seconds:,.0f} s, in which it trained "
        f"{ran.trained} runs; the runs' epochs took {sum(r.seconds for r in every):,.0f} s "
        f"in all" + (f", {sum(r.seconds for r in tuned):,.0f} s of it tuning" if tuned else ""),
        "",
    ]
    return lines


def _tuning(plan: Plan, tuned: list[Result], chosen: dict[str, str]) -> list[str]:
    tune = plan.study.tune
    if tune is None:
        return []
    settings = plan.tuned()
    by = {
        "epochs_to_target": f"mean epochs to {100 * plan.study.target_train_error:g}% training "
        f"error (a run that never reached it counts as {plan.epochs + 1})",
        "final_val_top1": f"mean validation top-1 over the last {LAST} epochs",
    }[tune.by]
    lines = [
        f"## Tuning {tune.key}",
        "",
        f"Each variant trained with each value on seeds {_seed_range(tune.seed_list())}, "
        f"which are never reported, scored by {by}; ties go to the lower last-epoch training "
        "error, then to the earlier value. The reporting runs use the value in bold.",
        "",
        "| variant | " + " | ".join(s.partition("=")[2] for s in settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    found = scores(plan, tuned)
    for variant in plan.study.variants:
        cells = []
        for setting in settings:
            score = found.get(variant, {}).get(setting)
            said = score.said(tune.by) if score else "—"
            cells.append(f"**{said}**" if chosen.get(variant) == setting else said)
        lines.append(f"| {variant} | {' | '.join(cells)} |")
    return [*lines, ""]


def render(
    plan: Plan,
    results: list[Result],
    ran: Provenance,
    tuned: list[Result] | None = None,
) -> str:
    study, target = plan.study, plan.target
    groups = _by_variant(plan, results)
    base_name = plan.baseline
    chosen = choose(plan, tuned) if tuned else {r.variant: r.setting for r in results if r.setting}
    sizes = _sizes(plan, chosen)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("finished", "diverged")}
    others = len(results) - sum(counts.values())
    lines = [f"# Ablation study: {study.name}", ""]
    if study.description:
        lines += [study.description, ""]
    lines += [
        f"{len(results)} reported runs: {counts['finished']} finished, "
        f"{counts['diverged']} diverged" + (f", {others} not finished" if others else "") + ".",
        "",
        *_provenance(plan, results, tuned or [], ran),
        *_tuning(plan, tuned or [], chosen),
        "## Each variant",
        "",
        f"Errors in percent, mean ± standard deviation over the seeds whose runs finished. "
        f"The headline is validation top-1 error averaged over each run's last {LAST} epochs; "
        "the best epoch's is beside it, picked on the same validation images and so biased "
        "low. Training error is the last epoch's. Parameters and multiply-accumulates per "
        f"image are given as a share of {base_name}'s.",
        "",
        "| variant | overrides | parameters | MACs | runs | val top-1 error "
        f"| best epoch | val top-5 error | train error | epochs to {100 * target:g}% train error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_params, base_macs = sizes[base_name]
    for name, runs in groups.items():
        usable = sum(r.usable for r in runs.values())
        diverged = sum(r.status == "diverged" for r in runs.values())
        count = f"{usable}" + (f" ({diverged} diverged)" if diverged else "")
        sets = [*plan.overrides(name), *([chosen[name]] if name in chosen else [])]
        shown = ", ".join(f"`{o}`" for o in sets) or "—"
        params, macs = sizes[name]
        metrics = [HEADLINE, *COMPARED.values()]
        cells = [_pct(v) if (v := _values(runs, m)) else "—" for m in metrics]
        lines.append(
            f"| {name} | {shown} | {params:,} ({100 * params / base_params:.0f}%) | "
            f"{macs / 1e6:.2f}M ({100 * macs / base_macs:.0f}%) | {count} | "
            f"{' | '.join(cells)} | {_epochs_cell(runs, plan.epochs)} |"
        )
    lines += _each_seed(plan, groups)
    lines += _against(plan, groups, base_name, ran.val_images)
    lines += [
        "Training error is 1 − top-1 accuracy over each epoch's training batches as they were "
        "trained: with the spec's augmentation and dropout, if it has them, and the weights "
        "moving during the epoch. It is higher than the finished weights' error on clean "
        "training images would be.",
        "",
    ]
    return "\n".join(lines)


def _each_seed(plan: Plan, groups: dict[str, dict[int, Result]]) -> list[str]:
    lines = [
        "",
        "## Each seed",
        "",
        f"Validation top-1 error in percent (last {LAST} epochs), then the epoch each run first "
        f"reached {100 * plan.target:g}% training error (>{plan.epochs}: "
        "never), by seed; ÷: diverged, …: not finished.",
        "",
        "| variant | " + " | ".join(f"seed {s}" for s in plan.seeds) + " |",
        "|---|" + "---|" * len(plan.seeds),
    ]
    for name, runs in groups.items():
        cells = []
        for seed in plan.seeds:
            run = runs.get(seed)
            if run is None:
                cells.append("")
            elif not run.usable:
                cells.append("÷" if run.status == "diverged" else "…")
            else:
                error = run.val_top1_error
                shown = "—" if error is None else f"{100 * error:.2f}"
                if run.train_errors:
                    shown += f" · {_reached(run, plan.epochs)}"
                cells.append(shown)
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return [*lines, ""]


def _against(
    plan: Plan, groups: dict[str, dict[int, Result]], base_name: str, val_images: int
) -> list[str]:
    base = groups[base_name]
    others = list(groups.items())[1:]
    pairs = {name: _pairs(base, runs, HEADLINE) for name, runs in others}
    p = {name: _p(found) for name, found in pairs.items()}
    tested = [name for name in p if p[name] is not None]
    adjusted = dict(zip(tested, holm([p[n] or 0.0 for n in tested]), strict=True))
    target = plan.target
    image = f"{100 / val_images:.2f} points" if val_images else "100/N points for N images"
    lines = [
        f"## Against the baseline ({base_name})",
        "",
        "Variant minus baseline in percentage points, paired by seed: the mean difference and "
        "its 95% interval (Student's t, n − 1 degrees of freedom); positive means the "
        "variant's error is higher. p: the exact two-sided sign-flip test of the headline's "
        "paired differences (no normality assumed; with n pairs it cannot go below 2/2ⁿ). "
        f"Holm: that p adjusted over the study's {len(tested)} comparison"
        f"{'' if len(tested) == 1 else 's'}. An interval "
        "that includes 0 is no finding. The last column divides the variant's mean epochs "
        f"to {100 * target:g}% training error by the baseline's, over the seeds where both "
        "reached it. The intervals leave out the validation set's own sampling noise: one "
        f"validation image is {image}.",
        "",
        "| variant | pairs | Δ val top-1 error | p | Holm p | Δ best epoch | Δ val top-5 error "
        "| Δ train error | epochs to target, ÷ baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in others:
        cells = [
            str(len(pairs[name])),
            _difference(pairs[name]),
            "—" if p[name] is None else f"{p[name]:.3g}",
            f"{adjusted[name]:.3g}" if name in adjusted else "—",
            *[_difference(_pairs(base, runs, m)) for m in COMPARED.values()],
            _ratio(base, runs, plan.epochs),
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return [*lines, ""]


def write_summary(
    plan: Plan, results: list[Result], tuned: list[Result], ran: Provenance, path: Path
) -> None:
    with atomic_write(path) as f:
        f.write(render(plan, results, ran, tuned))
