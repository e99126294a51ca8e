"""`shapes`: a small built-in image data set, drawn on first use, so training runs offline.

Ten classes of drawn shapes and textures in random places, sizes, angles and colours on noisy
backgrounds: easy enough for a small convnet on a laptop CPU, hard enough that cropping,
mirroring and colour noise visibly help. Every class is mirror-symmetric as a class (a
mirrored star is a star), as the paper's horizontal flips assume.

The set is an ordinary ImageFolder tree (`train/<class>/*.png`, `val/<class>/*.png`), so it
goes through exactly the same loading code as a user's folder. Each image is drawn from its
own numpy Generator seeded by (seed, split, class, index), so the bytes depend on the
settings alone, not on the order of drawing.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

VERSION = 1  # bump when the drawing changes, so old caches are not reused
SUPERSAMPLE = 2  # draw at twice the size and downscale: anti-aliased edges
Ink = tuple[int, int, int]
Draw = Callable[[ImageDraw.ImageDraw, np.random.Generator, int, Ink], None]


def cache_root() -> Path:
    """Where generated data lives: $NETSPEC_CACHE, else ~/.cache/netspec."""
    return Path(os.environ.get("NETSPEC_CACHE") or Path.home() / ".cache" / "netspec")


def ensure_shapes(
    root: Path | None = None,
    seed: int = 0,
    size: int = 64,
    train_per_class: int = 300,
    val_per_class: int = 60,
) -> Path:
    """Return the folder of the `shapes` set with these settings, generating it if missing.

    `root` is the cache folder (default `cache_root()`); the set goes in a sub-folder named by
    every setting, so different settings never share files. Generation writes to a hidden
    temporary folder and renames it into place at the end: a crash leaves no half data set,
    and a second call (or a concurrent one that lost the race) reuses the finished folder.
    """
    base = Path(root) if root is not None else cache_root()
    final = base / f"shapes-v{VERSION}-seed{seed}-{size}px-{train_per_class}+{val_per_class}"
    if final.is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=base))
    try:
        for split_index, (split, count) in enumerate(
            [("train", train_per_class), ("val", val_per_class)]
        ):
            for class_index, name in enumerate(CLASSES):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, split_index, class_index, i])
                    draw_image(name, rng, size).save(folder / f"{i:04d}.png")
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def draw_image(name: str, rng: np.random.Generator, size: int) -> Image.Image:
    """One `size`×`size` RGB image of class `name`: gradient background, shape, pixel noise."""
    big = size * SUPERSAMPLE
    background = rng.integers(0, 256, 3)
    second = np.clip(background + rng.integers(-60, 61, 3), 0, 255)  # gradient's other end
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:big, 0:big] / (big - 1)
    ramp = x * math.cos(angle) + y * math.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    grad = background + (second - background) * ramp[..., None]
    img = Image.fromarray(grad.astype(np.uint8))
    ink = _contrasting(rng, background)
    CLASSES[name](ImageDraw.Draw(img), rng, big, ink)
    img = img.resize((size, size), Image.Resampling.BOX)
    noise = rng.normal(0.0, rng.uniform(0, 20), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def _contrasting(rng: np.random.Generator, background: np.ndarray) -> Ink:
    """A random colour far enough from the background to be seen (L1 distance >= 160)."""
    while True:
        ink = rng.integers(0, 256, 3)
        if np.abs(ink - background).sum() >= 160:
            return (int(ink[0]), int(ink[1]), int(ink[2]))


def _centre(rng: np.random.Generator, size: int, radius: float) -> tuple[float, float]:
    """A random centre that keeps a shape of this radius inside the image."""
    return (rng.uniform(radius, size - radius), rng.uniform(radius, size - radius))


def _polygon(
    rng: np.random.Generator, size: int, sides: int, inner: float | None = None
) -> list[tuple[float, float]]:
    """Vertices of a randomly placed, scaled and rotated regular polygon (or star if inner)."""
    radius = rng.uniform(0.18, 0.42) * size
    cx, cy = _centre(rng, size, radius)
    turn = rng.uniform(0, 2 * math.pi)
    points = []
    for k in range(sides * (2 if inner else 1)):
        r = radius * (inner if inner and k % 2 else 1.0)
        a = turn + k * math.pi * (1 if inner else 2) / sides
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def _circle(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    radius = rng.uniform(0.15, 0.4) * size
    cx, cy = _centre(rng, size, radius)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=ink)


def _ring(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    radius = rng.uniform(0.2, 0.42) * size
    cx, cy = _centre(rng, size, radius)
    width = max(2, round(radius * rng.uniform(0.15, 0.35)))
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=ink, width=width)


def _square(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    draw.polygon(_polygon(rng, size, 4), fill=ink)


def _triangle(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    draw.polygon(_polygon(rng, size, 3), fill=ink)


def _star(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    draw.polygon(_polygon(rng, size, 5, inner=rng.uniform(0.35, 0.5)), fill=ink)


def _cross(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    """A plus sign: two bars through a centre, rotated at random."""
    corners = _polygon(rng, size, 4)  # a rotated square; its diagonals make the cross
    width = max(3, round(size * rng.uniform(0.06, 0.12)))
    draw.line([corners[0], corners[2]], fill=ink, width=width)
    draw.line([corners[1], corners[3]], fill=ink, width=width)


def _patch(rng: np.random.Generator, size: int) -> tuple[float, float, float, float]:
    """A random axis-aligned box covering at least half of each side, for textures."""
    w, h = rng.uniform(0.5, 1.0, 2) * size
    x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
    return x0, y0, x0 + w, y0 + h


def _stripes(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink, vertical: bool
) -> None:
    x0, y0, x1, y1 = _patch(rng, size)
    period = rng.uniform(0.08, 0.2) * size
    width = max(2, round(period * rng.uniform(0.3, 0.6)))
    start, stop = (x0, x1) if vertical else (y0, y1)
    pos = start + rng.uniform(0, period)
    while pos < stop:
        line = [(pos, y0), (pos, y1)] if vertical else [(x0, pos), (x1, pos)]
        draw.line(line, fill=ink, width=width)
        pos += period


def _hstripes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    _stripes(draw, rng, size, ink, vertical=False)


def _vstripes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    _stripes(draw, rng, size, ink, vertical=True)


def _checkerboard(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    x0, y0, x1, y1 = _patch(rng, size)
    cell = rng.uniform(0.07, 0.16) * size
    for row in range(math.ceil((y1 - y0) / cell)):
        for col in range(row % 2, math.ceil((x1 - x0) / cell), 2):
            left, top = x0 + col * cell, y0 + row * cell
            draw.rectangle((left, top, min(left + cell, x1), min(top + cell, y1)), fill=ink)


def _dots(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, ink: Ink) -> None:
    x0, y0, x1, y1 = _patch(rng, size)
    radius = rng.uniform(0.02, 0.05) * size
    for _ in range(rng.integers(8, 25)):
        cx, cy = rng.uniform(x0 + radius, x1 - radius), rng.uniform(y0 + radius, y1 - radius)
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=ink)


CLASSES: dict[str, Draw] = {
    "checkerboard": _checkerboard,
    "circle": _circle,
    "cross": _cross,
    "dots": _dots,
    "hstripes": _hstripes,
    "ring": _ring,
    "square": _square,
    "star": _star,
    "triangle": _triangle,
    "vstripes": _vstripes,
}
