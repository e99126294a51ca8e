"""The inspection pictures: grids that torchvision's `make_grid` lays out, with labels that
matplotlib writes over them (on a `Figure` with its own canvas, as netspec.train.curves does,
so the caller's matplotlib backend is left alone)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from netspec.atomic import atomic_write
from netspec.errors import UsageError

FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
DPI = 100
PAD = 4  # pixels between the cells of a grid
LINE = 14  # pixels a label's line takes below an image (8-point text at 100 dpi)
TITLE = 26  # pixels above a grid for its title
CELL = 96  # images are enlarged (nearest neighbour) to at least this many pixels a side


def check_output(path: str, flag: str = "-o") -> Path:
    """The picture's format, from its extension, checked before any work (that it can be
    written, the command line's type has checked: netspec.outputs)."""
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise UsageError(
            f"{flag} {path}: the format comes from the extension; use one of {', '.join(FORMATS)}"
        )
    return out


def save(fig: Figure, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=FORMATS[path.suffix.lower()], dpi=DPI)


def enlarge(images: Tensor, size: int) -> Tensor:
    """Each image repeated pixel by pixel to at least `size` a side: small kernels and crops
    stay sharp, with no interpolation between their pixels."""
    factor = max(1, math.ceil(size / images.shape[-1]))
    return images.repeat_interleave(factor, -1).repeat_interleave(factor, -2)


def _as_array(grid: Tensor) -> np.ndarray:
    """[3, H, W] floats in [0, 1] → H×W×3 for imshow."""
    return grid.clamp(0, 1).permute(1, 2, 0).numpy()


def bands(rows: list[tuple[str, Tensor]], title: str, path: Path) -> None:
    """Grids ([3, H, W] floats in [0, 1]) one above another, each under its own label."""
    width = max(grid.shape[2] for _, grid in rows)
    height = TITLE + sum(LINE + 6 + grid.shape[1] + PAD for _, grid in rows)
    fig = Figure(figsize=(max(width, 360) / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.text(0.5, 1 - 6 / height, title, ha="center", va="top", fontsize=10)
    top = TITLE
    full = max(width, 360)
    for label, grid in rows:
        fig.text(4 / full, 1 - top / height, label, ha="left", va="top", fontsize=8)
        top += LINE + 6
        h, w = grid.shape[1:]
        ax = fig.add_axes((0, 1 - (top + h) / height, w / full, h / height))
        ax.imshow(_as_array(grid), interpolation="nearest")
        ax.set_axis_off()
        top += h + PAD
    save(fig, path)


def _fit(text: str, pixels: int) -> str:
    """`text` cut to what fits in `pixels` at 8 points (about 5 pixels a character)."""
    most = max(3, pixels // 5)
    return text if len(text) <= most else text[: most - 1] + "…"


def labelled_grid(
    images: Tensor,
    columns: int,
    labels: list[list[tuple[str, str]]],
    title: str,
    path: Path,
) -> None:
    """uint8 images [N, 3, H, W] in rows of `columns`, each with its lines of (text, colour)
    below it."""
    lines = max((len(cell) for cell in labels), default=0)
    big = enlarge(images.to(torch.float32) / 255, CELL)
    n, _, h, w = big.shape
    strip = LINE * lines + 4
    cells = torch.ones(n, 3, h + strip, w)
    cells[:, :, :h] = big
    grid = make_grid(cells, nrow=columns, padding=PAD, pad_value=1.0)
    gh, gw = grid.shape[1:]
    fig = Figure(figsize=(gw / DPI, (gh + TITLE) / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.text(0.5, 1 - 6 / (gh + TITLE), title, ha="center", va="top", fontsize=10)
    ax = fig.add_axes((0, 0, 1, gh / (gh + TITLE)))
    ax.imshow(_as_array(grid), interpolation="nearest")
    ax.set_axis_off()
    for i, cell in enumerate(labels):
        row, col = divmod(i, columns)
        x = PAD + col * (w + PAD) + w / 2
        y = PAD + row * (h + strip + PAD) + h + 2
        for j, (text, colour) in enumerate(cell):
            ax.text(x, y + j * LINE, _fit(text, w), ha="center", va="top", fontsize=8, color=colour)
    save(fig, path)
