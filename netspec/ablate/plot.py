"""curves.png: training and validation error against epoch, every variant overlaid.

One colour per variant; each seed a thin line, the mean over seeds a bold one. Drawn with
matplotlib's Figure API, so it neither needs nor changes pyplot's global state or backend.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from netspec.ablate.results import Result
from netspec.atomic import atomic_write


def _mean_curve(curves: list[list[float]]) -> list[float]:
    """The mean at each epoch over the curves that reach it (a diverged run stops early)."""
    longest = max(len(c) for c in curves)
    return [
        sum(c[e] for c in curves if len(c) > e) / sum(1 for c in curves if len(c) > e)
        for e in range(longest)
    ]


def draw(results: list[Result], variants: list[str], target: float, title: str, path: Path) -> None:
    fig = Figure(figsize=(12, 4.8))
    train_ax, val_ax = fig.subplots(1, 2, sharey=True)
    for i, variant in enumerate(variants):
        colour = colormaps["tab10"](i % 10)
        runs = [r for r in results if r.variant == variant]
        for ax, curves in (
            (train_ax, [r.train_errors for r in runs if r.train_errors]),
            (val_ax, [r.val_errors for r in runs if r.val_errors]),
        ):
            for curve in curves:
                ax.plot(range(1, len(curve) + 1), curve, color=colour, lw=0.7, alpha=0.45)
            if curves:
                mean = _mean_curve(curves)
                ax.plot(range(1, len(mean) + 1), mean, color=colour, lw=2.2, label=variant)
    train_ax.axhline(target, color="0.4", ls=":", lw=1, label=f"target {100 * target:g}%")
    train_ax.set(
        xlabel="epoch", ylabel="top-1 error", title="training error (augmented, dropout on)"
    )
    val_ax.set(xlabel="epoch", title="validation error")
    for ax in (train_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.set_ylim(0, None)
    train_ax.legend(fontsize=8)
    fig.suptitle(f"{title}: thin lines one seed each, bold the mean")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
