"""Each variant's own value of the tuned setting, picked on the tuning seeds.

A comparison at one shared learning rate favours whichever variant it happens to suit; the
paper chose the rate for each unit type on its own (Figure 1). Here every variant tries every
value on seeds that are never reported, and its reporting runs use the value that did best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netspec.ablate.results import Result
from netspec.ablate.study import Plan, Tune


@dataclass(frozen=True)
class Score:
    """A value's mean over its tuning seeds; lower is better in both parts."""

    value: float  # epochs to target (a miss counts as one past the last epoch), or −top-1
    tiebreak: float  # the last epoch's training error: whole epochs tie often
    diverged: int = 0  # runs that did not finish: any makes the value the worst there is
    runs: int = 1

    def said(self, by: str) -> str:
        if math.isinf(self.value):
            return f"diverged in {self.diverged} of {self.runs}"
        if by == "epochs_to_target":
            return f"{self.value:.1f} epochs"
        return f"{100 * -self.value:.2f}% top-1"


def _run_score(run: Result, tune: Tune, epochs: int) -> tuple[float, float]:
    if not run.usable:  # diverged: the worst a value can do
        return math.inf, math.inf
    train = run.train_error if run.train_error is not None else math.inf
    if tune.by == "epochs_to_target":
        reached = run.epochs_to_target
        return float(reached if reached is not None else epochs + 1), train
    top1 = 1 - (run.val_top1_error or 1.0)
    return -top1, train


def scores(plan: Plan, results: list[Result]) -> dict[str, dict[str, Score]]:
    """Each variant's score of each tuned setting, over the tuning runs given."""
    tune = plan.study.tune
    assert tune is not None
    out: dict[str, dict[str, Score]] = {}
    for variant in plan.study.variants:
        for setting in plan.tuned():
            runs = [r for r in results if r.variant == variant and r.setting == setting]
            if not runs:
                continue
            pairs = [_run_score(r, tune, plan.epochs) for r in runs]
            out.setdefault(variant, {})[setting] = Score(
                sum(p[0] for p in pairs) / len(pairs),
                sum(p[1] for p in pairs) / len(pairs),
                diverged=sum(not r.usable for r in runs),
                runs=len(runs),
            )
    return out


def choose(plan: Plan, results: list[Result]) -> dict[str, str]:
    """Each variant's best setting; a tie goes to the earlier value in the study's list."""
    chosen = {}
    for variant, by_setting in scores(plan, results).items():
        order = plan.tuned()
        chosen[variant] = min(
            by_setting, key=lambda s: (by_setting[s].value, by_setting[s].tiebreak, order.index(s))
        )
    return chosen
