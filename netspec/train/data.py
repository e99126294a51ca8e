"""Image folders for training: checked with one-line errors, fitted once, loaded per epoch.

The layout is torchvision's ImageFolder: ROOT/train/<class>/*.png|jpg and ROOT/val/<class>/…
(extensions in any case, nested folders allowed, dot-files ignored). Each access decodes and
rescales one image (a split small enough keeps its decoded images in memory after the first
epoch, in the process that reads them); the training-set statistics (mean image, RGB PCA)
are fitted once and cached in a file keyed by everything they depend on.

Typical use, one loader per epoch so that epoch k is reproducible from (seed, k) alone:

    data = open_data(resolve_data_dir("shapes"), cfg, stats_cache=None)
    for epoch in range(epochs):
        for x, y in data.train_loader(batch_size, seed, epoch): ...
    for x, y in data.val_loader(batch_size): ...
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.spec.settings import DataConfig
from netspec.train.augment import (
    EvalTransform,
    Stats,
    TrainTransform,
    fit_stats,
    needs_stats,
    rescale_and_center,
    seed_worker,
    to_tensor,
)
from netspec.train.shapes_data import cache_root, ensure_shapes

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
CACHE_BYTES = 256 * 2**20  # a split whose decoded images fit in this stays in memory
STATS_VERSION = 1  # bump when fit_stats changes, so old cached stats are refitted
UNREADABLE_CACHE = (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError)


class DataError(UsageError):
    """A mistake in the user's data folder; `str()` is one line naming the path and the fix.

    Raised from a DataLoader worker, it comes back inside a frame <-> exception cycle that
    holds the loader iterator: a caller that catches it and carries on should call
    `traceback.clear_frames(err.__traceback__)`, or the workers linger 5 s each at the next gc.
    """

    def __init__(self, message: str) -> None:
        # A DataLoader re-raises a worker's exception as DataError(<whole traceback text>),
        # whose last line is "netspec.train.data.DataError: <message>": keep just the message.
        if "\n" in message:
            message = message.rstrip().splitlines()[-1]
            message = message.removeprefix(f"{__name__}.{type(self).__qualname__}: ")
        super().__init__(message)


def load_image(path: Path, resize: int) -> Tensor:
    """Decode one image file to uint8 3×resize×resize (shorter side scaled, centre square)."""
    try:
        with Image.open(path) as img:
            return to_tensor(rescale_and_center(img, resize))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"cannot read image {path}: {reason}; replace or delete it") from None


class ImageSplit(Dataset):
    """One split of an image folder: (image, class index) pairs, through `transform` if set."""

    def __init__(
        self, folder: Path, classes: list[str], samples: list[tuple[Path, int]], resize: int
    ) -> None:
        self.folder, self.classes, self.samples, self.resize = folder, classes, samples, resize
        self.transform: TrainTransform | EvalTransform | None = None
        # a small split is decoded once, not every epoch; the pixels are the same either way
        small = len(samples) * 3 * resize * resize <= CACHE_BYTES
        self.decoded: dict[int, Tensor] | None = {} if small else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        img = self.decoded.get(index) if self.decoded is not None else None
        if img is None:
            img = load_image(path, self.resize)
            if self.decoded is not None:
                self.decoded[index] = img
        return (self.transform(img) if self.transform else img), label


def open_split(root: Path, split: str, resize: int = 256) -> ImageSplit:
    """The `split` ("train" or "val") of ROOT, checked: folders exist, every class has images."""
    root = Path(root)
    pattern = "<class>/*.png|jpg"
    if not root.is_dir():
        expected = f"{root}/train/{pattern} and {root}/val/{pattern}"
        raise DataError(f"data folder {root} not found: expected {expected}")
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder} not found: expected {folder}/{pattern}")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} has no class folders: put each class's images in {pattern}")
    samples = []
    for label, name in enumerate(classes):
        images = sorted(
            p
            for p in (folder / name).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
        if not images:
            raise DataError(
                f"{folder / name} has no images: add .png or .jpg files or remove the folder"
            )
        samples += [(p, label) for p in images]
    return ImageSplit(folder, classes, samples, resize)


def resolve_data_dir(arg: str) -> Path:
    """`shapes` is the built-in set (generated on first use); anything else is a folder path."""
    return ensure_shapes() if arg == "shapes" else Path(arg).expanduser()


def fit_split_stats(split: ImageSplit, limit: int, cache_dir: Path) -> Stats:
    """Mean image and RGB PCA of at most `limit` training images, evenly spread over the
    (class-sorted) list so every class counts. Cached in `cache_dir` under a key made of the
    folder, the resize and each chosen file's name, size and mtime: any change refits.
    Fitting reads every chosen image, so a corrupt one fails here, before training starts."""
    n = len(split.samples)
    k = min(n, limit)
    chosen = [split.samples[i * n // k][0] for i in range(k)]
    files = [_file_id(p, split.folder) for p in chosen]
    key_data = [STATS_VERSION, str(split.folder.resolve()), split.resize, files]
    key = hashlib.sha256(json.dumps(key_data).encode()).hexdigest()
    path = Path(cache_dir) / f"stats-{key[:16]}.pt"
    try:
        saved = torch.load(path, weights_only=True)
        if saved["key"] == key:
            return Stats(saved["mean"], saved["eigvals"], saved["eigvecs"])
    except UNREADABLE_CACHE:
        pass  # missing or damaged: refit
    stats = fit_stats(load_image(p, split.resize) for p in chosen)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:  # a reader never sees half a file
        torch.save({"key": key, **asdict(stats)}, f)
    return stats


def _file_id(path: Path, folder: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns


def epoch_seeds(seed: int, epoch: int) -> tuple[int, int]:
    """Two independent seeds for (seed, epoch): the loader's generator (shuffle order and the
    workers' seeds) and the main-process transform (used when there are no workers)."""
    loader, main = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(2, np.uint64)
    return int(loader), int(main)


@dataclass
class Data:
    """A checked train/val pair with its transforms; makes the loaders."""

    train_set: ImageSplit
    val_set: ImageSplit
    stats: Stats | None
    workers: int

    @property
    def classes(self) -> list[str]:
        return self.train_set.classes

    def train_loader(self, batch_size: int, seed: int, epoch: int) -> DataLoader:
        """Shuffled, augmented batches (float B×3×crop×crop) for one epoch, reproducible from
        (seed, epoch) whatever came before: iterate it once, make a new one next epoch."""
        loader_seed, main_seed = epoch_seeds(seed, epoch)
        self.train_set.transform.reseed(main_seed)  # workers reseed their copies themselves
        generator = torch.Generator().manual_seed(loader_seed)
        return loader(self.train_set, batch_size, self.workers, generator)

    def val_loader(self, batch_size: int) -> DataLoader:
        """Batches in file order: B×3×crop×crop, or B×10×3×crop×crop with ten_crop."""
        return loader(self.val_set, batch_size, self.workers)


def loader(
    dataset: ImageSplit, batch_size: int, workers: int, generator: torch.Generator | None = None
) -> DataLoader:
    """Worker processes load and augment while the model trains, as in the paper.

    With a generator the batches are shuffled and a last partial batch is dropped (a batch of
    one would break batch normalisation); without one, every image is used in file order.
    """
    return DataLoader(
        dataset,
        batch_size,
        shuffle=generator is not None,
        drop_last=generator is not None,
        generator=generator,
        num_workers=workers,
        worker_init_fn=seed_worker,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def open_val(root: Path, cfg: DataConfig, stats: Stats | None) -> ImageSplit:
    """ROOT's val split alone, with statistics fitted earlier (e.g. kept in a checkpoint)."""
    val = open_split(root, "val", cfg.resize)
    val.transform = EvalTransform(cfg, stats)
    return val


def open_data(root: Path, cfg: DataConfig, stats_cache: Path | None = None) -> Data:
    """Check ROOT's train and val folders, fit (or load) the statistics, attach transforms.
    `stats_cache` defaults to <cache_root()>/stats."""
    train = open_split(root, "train", cfg.resize)
    val = open_split(root, "val", cfg.resize)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes)) or ["-"]
        only_val = sorted(set(val.classes) - set(train.classes)) or ["-"]
        raise DataError(
            f"{train.folder} and {val.folder} have different class folders (only in train: "
            f"{', '.join(only_train)}; only in val: {', '.join(only_val)}): use the same in both"
        )
    stats = None
    if needs_stats(cfg):
        cache = Path(stats_cache) if stats_cache is not None else cache_root() / "stats"
        stats = fit_split_stats(train, cfg.stats_images, cache)
    train.transform = TrainTransform(cfg, stats)
    val.transform = EvalTransform(cfg, stats)
    return Data(train, val, stats, cfg.workers)
