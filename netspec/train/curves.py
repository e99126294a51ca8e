"""curves.png: loss and accuracy against epoch, redrawn after every epoch.

Drawn on a `Figure` with its own Agg canvas rather than through pyplot, so that importing
netspec never changes the matplotlib backend of the program that imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from netspec.atomic import atomic_write


def draw_curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    left.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
    left.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    right.plot(epochs, [r["val_top1"] for r in rows], "o-", label="top-1")
    right.plot(epochs, [r["val_top5"] for r in rows], "o-", label="top-5")
    right.set(xlabel="epoch", ylabel="validation accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
