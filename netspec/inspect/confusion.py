"""`netspec eval … --confusion / --errors N`: where a network errs on the validation split.

The probabilities are the ones eval's own pass computes (a wrapper records them as
`evaluate` runs), so the per-class figures add up to eval's top-1 and cost no second pass.
`--confusion` prints each class's top-1 and the ten most confused pairs, and draws the
confusion matrix normalised per true class; `--errors N` shows the N most confident wrong
answers, as the left of the paper's Figure 4 shows some answers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from netspec.errors import UsageError
from netspec.inspect.pictures import check_output, labelled_grid, save
from netspec.inspect.probabilities import image_probabilities
from netspec.inspect.trained import image_name
from netspec.spec.settings import DataConfig
from netspec.train.split import Split

PAIRS = 10  # the most confused pairs listed
ERROR_COLUMNS = 8
ANNOTATED = 20  # up to this many classes, the picture writes each cell's share
LABELLED = 60  # up to this many classes, the picture names them on its axes


class Recording(nn.Module):
    """The network, keeping each image's class probabilities as it evaluates."""

    def __init__(self, net: nn.Module, views: int) -> None:
        super().__init__()
        self.net, self.views = net, views
        self.rows: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        logits = self.net(x)
        self.rows.append(image_probabilities(logits.detach(), self.views).cpu())
        return logits


@dataclass(frozen=True)
class Confusion:
    """Counts [C, C]: row = the true class, column = the top-1 answer."""

    counts: np.ndarray
    classes: list[str]

    @classmethod
    def of(cls, predicted: np.ndarray, labels: np.ndarray, classes: list[str]) -> Confusion:
        c = len(classes)
        counts = np.bincount(labels * c + predicted, minlength=c * c).reshape(c, c)
        return cls(counts, classes)

    @property
    def images(self) -> np.ndarray:
        return self.counts.sum(1)

    def per_class(self) -> list[float | None]:
        """Each class's top-1 (None for a class without validation images)."""
        return [float(self.counts[i, i] / n) if n else None for i, n in enumerate(self.images)]

    def normalised(self) -> np.ndarray:
        """Each row divided by its images: the share of a class given each answer."""
        n = self.images[:, None]
        return np.divide(self.counts, n, out=np.zeros(self.counts.shape), where=n > 0)

    def pairs(self, most: int = PAIRS) -> list[dict[str, Any]]:
        """The (true, predicted) pairs of different classes with the most images."""
        off = self.counts.copy()
        np.fill_diagonal(off, 0)
        true, pred = np.nonzero(off)
        # most images first, then the larger share of the true class, then class order
        order = sorted(
            zip(true.tolist(), pred.tolist(), strict=True),
            key=lambda tp: (-off[tp], -off[tp] / self.images[tp[0]], tp),
        )
        return [
            {
                "true": self.classes[t],
                "predicted": self.classes[p],
                "images": int(off[t, p]),
                "share": float(off[t, p] / self.images[t]),
            }
            for t, p in order[:most]
        ]


@dataclass
class Look:
    """What `--confusion`, `--errors N` and `-o` ask of an evaluation."""

    confusion: bool = False
    errors: int = 0
    output: Path | None = None
    recording: Recording | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Look:
        """The flags, checked before any work (argparse has checked each alone)."""
        confusion = bool(getattr(args, "confusion", False))
        errors = getattr(args, "errors", None)
        output = getattr(args, "output", None)
        if output is not None and not (confusion or errors):
            raise UsageError(f"-o {output}: names the picture of --confusion or --errors N")
        return cls(confusion, errors or 0, check_output(output) if output else None)

    @property
    def active(self) -> bool:
        return self.confusion or self.errors > 0

    def pictures(self) -> tuple[Path | None, Path | None]:
        """Where the confusion matrix and the errors go: -o for the one asked; with both, the
        errors beside the matrix as <name>-errors<suffix>."""
        out = self.output
        if out is None or not self.errors:
            return out, None
        if not self.confusion:
            return None, out
        return out, out.with_name(f"{out.stem}-errors{out.suffix}")

    def watch(self, model: nn.Module, data: DataConfig) -> nn.Module:
        """The model to evaluate: `model` itself, or a recording of it when asked to look."""
        if not self.active:
            return model
        self.recording = Recording(model, 10 if data.ten_crop else 1)
        return self.recording

    def report(self, split: Split, title: str) -> dict[str, Any]:
        """Print what was asked, draw the pictures; return the entries for eval's JSON."""
        if self.recording is None:
            return {}
        probs = torch.cat(self.recording.rows)
        top = probs.topk(1, dim=1)
        predicted = top.indices[:, 0].numpy()
        confidence = top.values[:, 0].numpy()
        labels = np.asarray(split.targets, dtype=np.int64)
        matrix_path, errors_path = self.pictures()
        found: dict[str, Any] = {}
        if self.confusion:
            confusion = Confusion.of(predicted, labels, split.classes)
            found |= _print_confusion(confusion)
            if matrix_path is not None:
                draw_confusion(confusion, title, matrix_path)
                print(f"wrote {matrix_path}")
        if self.errors:
            wrong = most_confident_errors(predicted, confidence, labels, self.errors)
            classes = split.classes
            found["errors"] = [
                {
                    "image": image_name(split, i),
                    "true": classes[labels[i]],
                    "predicted": classes[predicted[i]],
                    "probability": float(confidence[i]),
                }
                for i in wrong
            ]
            _print_errors(split, wrong, found["errors"])
            if errors_path is not None and wrong:
                draw_errors(split, wrong, found["errors"], title, errors_path)
                print(f"wrote {errors_path}")
        return found


def most_confident_errors(
    predicted: np.ndarray, confidence: np.ndarray, labels: np.ndarray, most: int
) -> list[int]:
    """The images answered wrongly with the highest probability, highest first."""
    wrong = np.flatnonzero(predicted != labels)
    order = np.argsort(-confidence[wrong], kind="stable")
    return [int(i) for i in wrong[order][:most]]


def _print_confusion(confusion: Confusion) -> dict[str, Any]:
    per_class = confusion.per_class()
    width = max([5, *(len(c) for c in confusion.classes)])
    print(f"{'class':<{width}}  images   top-1")
    for name, n, top1 in zip(confusion.classes, confusion.images, per_class, strict=True):
        shown = "-" if top1 is None else f"{top1:.1%}"
        print(f"{name:<{width}}  {n:>6}  {shown:>6}")
    pairs = confusion.pairs()
    print(f"most confused (true → predicted): {'none' if not pairs else ''}".rstrip())
    for p in pairs:
        said = f"{p['images']} images ({p['share']:.1%} of the class)"
        print(f"  {p['true']} → {p['predicted']}: {said}")
    return {
        "per_class_top1": dict(zip(confusion.classes, per_class, strict=True)),
        "confused": pairs,
    }


def _print_errors(split: Split, wrong: list[int], errors: list[dict[str, Any]]) -> None:
    print(f"the {len(errors)} most confident wrong answers, in {split.where}:")
    for i, e in zip(wrong, errors, strict=True):
        said = f"{e['true']}, answered {e['predicted']} {e['probability']:.1%}"
        print(f"  {image_name(split, i, short=True)}: {said}")


def draw_confusion(confusion: Confusion, title: str, path: Path) -> None:
    """The matrix normalised per true class, classes named where they fit."""
    c = len(confusion.classes)
    side = min(40.0, max(5.0, 0.4 * c + 2.5))
    fig = Figure(figsize=(side + 1.2, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shares = confusion.normalised()
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if c <= LABELLED:
        ax.set_xticks(range(c), confusion.classes, rotation=90)
        ax.set_yticks(range(c), confusion.classes)
    if c <= ANNOTATED:
        for (t, p), share in np.ndenumerate(shares):
            if confusion.counts[t, p]:
                colour = "white" if share > 0.5 else "black"
                ax.text(p, t, f"{share:.0%}", ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    save(fig, path)


def draw_errors(
    split: Split, wrong: list[int], errors: list[dict[str, Any]], title: str, path: Path
) -> None:
    images = torch.stack([torch.from_numpy(np.array(split.image(i))) for i in wrong])
    labels = [
        [(f"true: {e['true']}", "black"), (f"{e['predicted']} {e['probability']:.0%}", "tab:red")]
        for e in errors
    ]
    columns = min(ERROR_COLUMNS, len(wrong))
    labelled_grid(images, columns, labels, f"{title}: most confident wrong answers", path)
