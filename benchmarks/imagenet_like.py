"""Write a generated ImageNet-like folder of JPEGs that decode like photographs.

    python -m benchmarks.imagenet_like /tmp/imagenet-like --classes 10 --workers 4

For benchmarks that compare data pipelines. A pipeline's speed on ImageNet is mostly its JPEG
decoder's, and a decoder's cost follows the bytes it has to entropy-decode: a flat or cartoon
image of the same size decodes two or three times faster than a photograph and flatters
whichever pipeline decodes most. So these images are drawn to compress like photographs:
ImageNet's usual sizes (500×375 and 500×333 landscape, some 375×500 portrait, a few square),
saved at quality 90, with texture at every scale (1/f noise, as in natural images), colour that
varies slowly, light falling across the frame, a few soft-edged objects and grain, which makes
them about 140 KB each at 500×375, as heavy as real ImageNet photographs of that size. The
folder is laid out as ImageNet's is (`train/n00000000/0.JPEG`), so `ImageFolder` and netspec
read it as they would the real one. Each image comes from its own generator seeded by (seed,
split, class, index), so the bytes depend on the arguments alone, however many worker
processes write them.
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = ((500, 375), (500, 333), (375, 500), (400, 400))  # (width, height), as PIL has it
SHARES = (0.5, 0.25, 0.17, 0.08)
SPLITS = ("train", "val")
QUALITY = 90
LUMINANCE = 60.0  # standard deviation of the 1/f texture, in 0–255 levels
COLOUR = 16.0  # of each channel's slow colour variation
GRAIN = 26.0  # of the per-pixel grain, where a scene is of average busyness
COLOUR_GRAIN = 8.0  # of each channel's own grain on top

# One image: (path, seed, split index, class, index).
Job = tuple[Path, int, int, int, int]


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance noise. Uniform rather than normal: four times cheaper to draw,
    and after the bicubic upsampling, or in a JPEG's 8×8 blocks, no different."""
    return (rng.random(shape, dtype=np.float32) - np.float32(0.5)) * np.float32(12**0.5)


def _upsample(field: np.ndarray, width: int, height: int) -> np.ndarray:
    channels = [
        np.asarray(Image.fromarray(field[..., c], "F").resize((width, height), Image.BICUBIC))
        for c in range(field.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def _field(
    rng: np.random.Generator, width: int, height: int, channels: int, skip: int
) -> np.ndarray:
    """Noise of unit deviation added at every level of a halving pyramid, with about equal
    variance per level: the 1/f amplitude spectrum of natural images. The `skip` finest levels
    are left out, so that the field is smooth below 2**skip pixels."""
    sizes = [(width, height)]
    while min(sizes[-1]) > 6:
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    sizes.reverse()
    slope = rng.uniform(-0.4, 0.1)  # some scenes smoother, some busier
    field = np.zeros((sizes[0][1], sizes[0][0], channels), np.float32)
    for level, (w, h) in enumerate(sizes[: len(sizes) - skip]):
        if level:
            field = _upsample(field, w, h)
        field += np.float32(2.0 ** (slope * (len(sizes) - level))) * _noise(rng, (h, w, channels))
    if skip:
        field = _upsample(field, width, height)
    field /= field.std()
    return field


def _objects(rng: np.random.Generator, image: np.ndarray, texture: np.ndarray) -> None:
    """A few soft-edged shapes, each its own colour over a share of the texture: the edges and
    regions that a photograph's objects give, drawn only over their own bounding boxes."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(3, 10))):
        blur = float(rng.uniform(0.6, 3.0))
        w, h = rng.uniform(0.1, 0.6, 2) * (width, height)
        x, y = rng.uniform(-0.1, 1.0, 2) * (width, height) - (w / 2, h / 2)
        pad = 3 * blur + 2
        x0, y0 = max(0, int(x - pad)), max(0, int(y - pad))
        x1, y1 = min(width, int(x + w + pad)), min(height, int(y + h + pad))
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        mask = Image.new("L", (x1 - x0, y1 - y0))
        draw = ImageDraw.Draw(mask)
        box = (x - x0, y - y0, x - x0 + w, y - y0 + h)
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse(box, fill=255)
        else:
            corners = rng.uniform(0, 1, (4 if kind == 1 else int(rng.integers(3, 8)), 2))
            if kind == 1:  # a skewed quadrilateral, corners in order
                corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]]) + 0.3 * (corners - 0.5)
            points = corners * (w, h) + (box[0], box[1])
            draw.polygon([(float(px), float(py)) for px, py in points], fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
        alpha = np.asarray(mask, np.float32)[..., None] * np.float32(rng.uniform(0.5, 0.95) / 255)
        colour = rng.uniform(20, 235, 3).astype(np.float32)
        own = colour + rng.uniform(0.4, 1.2) * texture[y0:y1, x0:x1]
        region = image[y0:y1, x0:x1]
        region += alpha * (own - region)


def draw(rng: np.random.Generator) -> Image.Image:
    """One image, from `rng` alone: a scene's texture in shades of one tint, its colour varying
    slowly across it, light falling across the frame, a few objects, then grain, heavier where
    the scene is busy (foliage, fur) than where it is plain (sky, walls)."""
    width, height = SIZES[int(rng.choice(len(SIZES), p=SHARES))]
    texture = _field(rng, width, height, 1, skip=0) * np.float32(LUMINANCE)
    texture = texture * rng.uniform(0.7, 1.3, 3).astype(np.float32)
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    light = rng.uniform(-25, 25, 2).astype(np.float32)
    image = rng.uniform(60, 190, 3).astype(np.float32) + light[0] * xs + light[1] * ys
    image += texture
    image += _field(rng, width, height, 3, skip=3) * np.float32(COLOUR)
    _objects(rng, image, texture)
    busy = np.exp(np.float32(0.5) * _field(rng, width, height, 1, skip=4))
    grain = _noise(rng, (height, width, 1)) * np.float32(GRAIN)
    grain = grain + _noise(rng, (height, width, 3)) * np.float32(COLOUR_GRAIN)
    image += grain * busy
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def _write(job: Job) -> None:
    path, seed, split, cls, index = job
    draw(np.random.default_rng((seed, split, cls, index))).save(path, "JPEG", quality=QUALITY)


def _jobs(
    root: Path, classes: int, train_per_class: int, val_per_class: int, seed: int
) -> list[Job]:
    jobs: list[Job] = []
    for split, count in enumerate((train_per_class, val_per_class)):
        for cls in range(classes):
            folder = root / SPLITS[split] / f"n{cls:08d}"
            jobs += [(folder / f"{i}.JPEG", seed, split, cls, i) for i in range(count)]
    return jobs


def make_folder(
    root: Path,
    classes: int = 4,
    train_per_class: int = 64,
    val_per_class: int = 16,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Write `root/{train,val}/n0000000c/<i>.JPEG` and return `root`."""
    jobs = _jobs(root, classes, train_per_class, val_per_class, seed)
    for folder in {path.parent for path, *_ in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        with Pool(workers) as pool:
            pool.map(_write, jobs, chunksize=8)
    else:
        for job in jobs:
            _write(job)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--train-per-class", type=int, default=64)
    p.add_argument("--val-per-class", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    root = make_folder(
        args.out, args.classes, args.train_per_class, args.val_per_class, args.seed, args.workers
    )
    jobs = _jobs(root, args.classes, args.train_per_class, args.val_per_class, args.seed)
    paths = [job[0] for job in jobs]
    total = sum(path.stat().st_size for path in paths)
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append(image.size)
    width, height = np.mean(sizes, axis=0)
    train = args.classes * args.train_per_class
    print(
        f"wrote {train} train and {len(paths) - train} val images into {root}: "
        f"{total / 1e6:.1f} MB, {total / len(paths) / 1e3:.0f} KB an image, "
        f"mean size {width:.0f}×{height:.0f}"
    )


if __name__ == "__main__":
    main()
