"""Image folders for training: checked with one-line errors, fitted once, loaded per epoch.

The layout is torchvision's ImageFolder: ROOT/train/<class>/*.png|jpg and ROOT/val/<class>/…
(extensions in any case, nested folders allowed, files and folders named .* ignored). Each
access decodes and rescales one image (a split small enough keeps its decoded images in memory
after the first epoch, in the process that reads them); the training-set statistics (mean
image, RGB PCA) are fitted once and cached in a file keyed by everything they depend on.

Typical use, one loader per epoch so that epoch k is reproducible from (seed, k) alone:

    data = open_data(resolve_data_dir("shapes"), cfg, stats_cache=None)
    for epoch in range(epochs):
        for x, y in data.train_loader(batch_size, seed, epoch): ...
    for x, y in data.val_loader(batch_size): ...

With several data-parallel processes each passes its `replica` and the number of `replicas`:
it gets its slice of every global batch, and its share of the validation set
(`netspec.train.sampling`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder

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
    sample_generator,
    to_tensor,
)
from netspec.train.sampling import GlobalBatches, shard
from netspec.train.shapes_data import cache_root, ensure_shapes

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
PATTERN = "<class>/*.png|jpg"  # how messages show the layout a split needs
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


class ImageSplit(ImageFolder):
    """One split of an image folder: (image, class index) pairs, through `transform` if set.

    torchvision's ImageFolder, with folders and files whose names start with a dot left out
    (`.ipynb_checkpoints`, macOS's `._x.jpg`), `load_image` as its loader, and each class's
    files in path order, as `Path`s.
    """

    def __init__(self, folder: Path, resize: int) -> None:
        self.folder, self.resize = folder, resize
        loader = functools.partial(load_image, resize=resize)
        super().__init__(folder, loader=loader, is_valid_file=self._is_image, allow_empty=True)
        by_class = sorted((c, Path(p)) for p, c in self.samples)
        self.samples: list[tuple[Path, int]] = [(p, c) for c, p in by_class]
        self.imgs = self.samples
        self.targets: list[int] = [c for c, _ in by_class]
        self.transform: EvalTransform | None = None
        # a small split is decoded once, not every epoch; the pixels are the same either way
        small = len(self.samples) * 3 * resize * resize <= CACHE_BYTES
        self.decoded: dict[int, Tensor] | None = {} if small else None

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = sorted(
            d.name for d in Path(directory).iterdir() if d.is_dir() and not _hidden(d.name)
        )
        if not classes:
            raise DataError(
                f"{directory} has no class folders: put each class's images in {PATTERN}"
            )
        return classes, {name: i for i, name in enumerate(classes)}

    def _is_image(self, path: str) -> bool:
        file = Path(path)
        return (
            file.suffix.lower() in IMAGE_SUFFIXES
            and not any(_hidden(part) for part in file.relative_to(self.folder).parts)
            and file.is_file()
        )

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        img = self.decoded.get(index) if self.decoded is not None else None
        if img is None:
            img = load_image(path, self.resize)
            if self.decoded is not None:
                self.decoded[index] = img
        return (self.transform(img) if self.transform else img), label


def _hidden(name: str) -> bool:
    return name.startswith(".")


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


def shuffle_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's image order; each image's augmentation seed is a child of the
    same sequence (`sample_generator`), independent of this one."""
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0])


class EpochImages(Dataset):
    """The training split as one epoch sees it: image `index` augmented with its own
    generator, made from (seed, epoch, index) alone."""

    def __init__(self, split: ImageSplit, augment: TrainTransform, seed: int, epoch: int):
        self.split, self.augment, self.seed, self.epoch = split, augment, seed, epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        img, label = self.split[index]
        return self.augment(img, sample_generator(self.seed, self.epoch, index)), label


@dataclass
class Data:
    """A checked train/val pair with its transforms; makes the loaders."""

    train_set: ImageSplit
    val_set: ImageSplit
    augment: TrainTransform
    stats: Stats | None
    workers: int

    @property
    def classes(self) -> list[str]:
        return self.train_set.classes

    def train_loader(
        self, batch_size: int, seed: int, epoch: int, replica: int = 0, replicas: int = 1
    ) -> DataLoader:
        """Shuffled, augmented batches (float b×3×crop×crop, b = batch_size / replicas) for
        one epoch, reproducible from (seed, epoch) whatever came before: iterate it once,
        make a new one next epoch. The last partial global batch is dropped (a batch of one
        would break batch normalisation)."""
        images = EpochImages(self.train_set, self.augment, seed, epoch)
        batches = GlobalBatches(
            len(images), batch_size, shuffle_seed(seed, epoch), replica, replicas
        )
        return DataLoader(
            images,
            batch_sampler=batches,
            num_workers=self.workers,
            # the workers' own seeds feed no draw; a generator keeps them off torch's global one
            generator=torch.Generator().manual_seed(0),
            pin_memory=torch.cuda.is_available(),
        )

    def val_loader(self, batch_size: int, replica: int = 0, replicas: int = 1) -> DataLoader:
        """Batches in file order: B×3×crop×crop, or B×10×3×crop×crop with ten_crop; with
        several replicas, this replica's share of the images."""
        share: Subset[tuple[Tensor, int]] = Subset(
            self.val_set, shard(len(self.val_set), replica, replicas)
        )
        return loader(share, batch_size, self.workers)


def loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    """Every image once, in file order; worker processes load while the model computes."""
    return DataLoader(
        dataset,
        batch_size,
        num_workers=workers,
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
    val.transform = EvalTransform(cfg, stats)
    return Data(train, val, TrainTransform(cfg, stats), stats, cfg.workers)
