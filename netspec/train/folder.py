"""Image folders: torchvision's ImageFolder layout, checked with one-line errors.

The layout is ROOT/train/<class>/*.png|jpg and ROOT/val/<class>/… (extensions in any case,
nested folders allowed, files and folders named .* ignored). Each access decodes and rescales
one image (a split small enough keeps its decoded images in memory after the first epoch, in
the process that reads them); the training-set statistics (mean image, RGB PCA) are fitted
once and cached in a file keyed by everything they depend on.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from netspec.atomic import atomic_write
from netspec.errors import DataError
from netspec.train.augment import Stats, fit_stats
from netspec.train.decode import load_image
from netspec.train.split import Split, stats_sample

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
PATTERN = "<class>/*.png|jpg"  # how messages show the layout a split needs
CACHE_BYTES = 256 * 2**20  # a split whose decoded images fit in this stays in memory
STATS_VERSION = 1  # bump when fit_stats changes, so old cached stats are refitted
UNREADABLE_CACHE = (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError)


class ImageSplit(ImageFolder, Split):
    """One split of an image folder.

    torchvision's ImageFolder, with folders and files whose names start with a dot left out
    (`.ipynb_checkpoints`, macOS's `._x.jpg`), and each class's files in path order, as `Path`s.
    """

    def __init__(self, folder: Path, resize: int) -> None:
        self.folder = self.where = folder
        self.resize = resize
        super().__init__(folder, is_valid_file=self._is_image, allow_empty=True)
        by_class = sorted((c, Path(p)) for p, c in self.samples)
        self.samples: list[tuple[Path, int]] = [(p, c) for c, p in by_class]
        self.imgs = self.samples
        self.targets: list[int] = [c for c, _ in by_class]
        # a small split is decoded once, not every epoch; the pixels are the same either way
        small = len(self.samples) * 3 * resize * resize <= CACHE_BYTES
        self.decoded: dict[int, np.ndarray] | None = {} if small else None

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = sorted(
            d.name for d in Path(directory).iterdir() if d.is_dir() and not hidden(d.name)
        )
        if not classes:
            raise DataError(
                f"{directory} has no class folders: put each class's images in {PATTERN}"
            )
        return classes, {name: i for i, name in enumerate(classes)}

    def _is_image(self, path: str) -> bool:
        return is_image(Path(path), self.folder)

    def image(self, index: int) -> np.ndarray:
        img = self.decoded.get(index) if self.decoded is not None else None
        if img is None:
            img = load_image(self.samples[index][0], self.resize).numpy()
            if self.decoded is not None:
                self.decoded[index] = img
        return img

    def fit_stats(self, limit: int, cache_dir: Path) -> Stats:
        """Cached in `cache_dir` under a key made of the folder, the resize and each chosen
        file's name, size and mtime: any change refits. Fitting reads every chosen image, so
        a corrupt one fails here, before training starts."""
        chosen = stats_sample(len(self.samples), limit)
        files = [file_id(self.samples[i][0], self.folder) for i in chosen]
        key_data = [STATS_VERSION, str(self.folder.resolve()), self.resize, files]
        key = hashlib.sha256(json.dumps(key_data).encode()).hexdigest()
        return cached_stats(Path(cache_dir) / f"stats-{key[:16]}.pt", key, self, chosen)


def cached_stats(path: Path, key: str, split: Split, chosen: list[int]) -> Stats:
    """The statistics saved at `path` under `key`, or fitted on `chosen` and saved there."""
    try:
        saved = torch.load(path, weights_only=True)
        if saved["key"] == key:
            return Stats(saved["mean"], saved["eigvals"], saved["eigvecs"])
    except UNREADABLE_CACHE:
        pass  # missing or damaged: refit
    stats = fit_stats(torch.from_numpy(np.array(split.image(i))) for i in chosen)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:  # a reader never sees half a file
        torch.save({"key": key, **asdict(stats)}, f)
    return stats


def hidden(name: str) -> bool:
    return name.startswith(".")


def is_image(file: Path, folder: Path) -> bool:
    """Whether `file` under `folder` is one of the images a split holds."""
    return (
        file.suffix.lower() in IMAGE_SUFFIXES
        and not any(hidden(part) for part in file.relative_to(folder).parts)
        and file.is_file()
    )


def file_id(path: Path, folder: Path) -> tuple[str, int, int]:
    """What tells a changed file: its path under the split's folder, size and mtime."""
    stat = path.stat()
    return str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns


def open_split(root: Path, split: str, resize: int = 256) -> ImageSplit:
    """The `split` ("train" or "val") of ROOT, checked: folders exist, every class has images."""
    root = Path(root)
    if not root.is_dir():
        expected = f"{root}/train/{PATTERN} and {root}/val/{PATTERN}"
        raise DataError(f"data folder {root} not found: expected {expected}")
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder} not found: expected {folder}/{PATTERN}")
    images = ImageSplit(folder, resize)
    empty = sorted(set(range(len(images.classes))) - set(images.targets))
    if empty:
        raise DataError(
            f"{folder / images.classes[empty[0]]} has no images: "
            "add .png or .jpg files or remove the folder"
        )
    return images
