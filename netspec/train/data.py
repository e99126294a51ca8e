"""Training data: a folder or a packed store, checked, and loaded a batch of uint8 crops at a
time.

`--data` names an image folder (`netspec.train.folder`), a store that `netspec pack` wrote
(`netspec.train.store`), or `shapes`, the built-in set. Either way the splits hand out the same
uint8 squares, the loader's workers cut the crops, and `Finish` (netspec.train.augment) does
the float work on the model's device.

Typical use, one loader per epoch so that epoch k is reproducible from (seed, k) alone:

    data = open_data(resolve_data_dir("shapes"), cfg, stats_cache=None)
    finish = data.finish(device)
    for epoch in range(epochs):
        for batch in data.train_loader(batch_size, seed, epoch): x = finish(batch) …
    for batch in data.val_loader(batch_size): …

With several data-parallel processes each passes its `replica` and the number of `replicas`:
it gets its slice of every global batch, and its share of the validation set
(`netspec.train.sampling`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler, Subset

from netspec.interrupt import die_with_parent
from netspec.spec.settings import DataConfig
from netspec.train.augment import (
    Batch,
    EvalWindows,
    Finish,
    Stats,
    TrainWindows,
    Windows,
    needs_stats,
)
from netspec.train.folder import open_split
from netspec.train.sampling import GlobalBatches, shard
from netspec.train.shapes_data import cache_root, ensure_shapes
from netspec.train.split import Split, check_same_classes
from netspec.train.store import Stale, is_store, open_store

__all__ = ["open_data", "open_split", "open_val", "resolve_data_dir"]


def resolve_data_dir(arg: str) -> Path:
    """`shapes` is the built-in set (generated on first use); anything else is a folder or
    store path."""
    return ensure_shapes() if arg == "shapes" else Path(arg).expanduser()


def shuffle_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's image order, apart from every image's augmentation draws."""
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0])


class Crops(Dataset):
    """A split seen through windows: each fetch of a batch of indices returns one `Batch` of
    uint8 crops (DataLoader calls `__getitems__` with the whole batch's indices)."""

    def __init__(self, split: Split, windows: Callable[[np.ndarray], Windows], crop: int):
        self.split, self.windows, self.crop = split, windows, crop

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        w = self.windows(idx)
        b, c = len(idx), self.crop
        tops, lefts = w.top.reshape(b, -1).tolist(), w.left.reshape(b, -1).tolist()
        out = np.empty((b, len(tops[0]) if b else 1, 3, c, c), dtype=np.uint8)
        for j, i in enumerate(idx.tolist()):
            self.split.crop_into(out[j], i, tops[j], lefts[j])
        crops = torch.from_numpy(out if w.top.dim() == 2 else out[:, 0])
        labels = torch.tensor([self.split.targets[i] for i in idx.tolist()], dtype=torch.int64)
        return Batch(crops, labels, torch.from_numpy(idx), w)


def _as_is(batch: Any) -> Any:
    """The collate function: a fetch already returns a whole `Batch`."""
    return batch


def _worker_start(parent: int, worker: int) -> None:
    """A loader worker dies with the process it loads for, at once, even on kill -9 (torch's
    own check notices a dead parent only every few seconds)."""
    die_with_parent(parent)


def batch_loader(dataset: Dataset, batches: Iterable[list[int]], workers: int) -> DataLoader:
    """A DataLoader of `Batch`es; worker processes cut crops while the model computes."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_as_is,
        worker_init_fn=functools.partial(_worker_start, os.getpid()) if workers else None,
        pin_memory=torch.cuda.is_available(),
        # the workers' own seeds feed no draw; a generator keeps them off torch's global one
        generator=torch.Generator().manual_seed(0),
    )


def val_loader(
    split: Split, cfg: DataConfig, batch_size: int, replica: int = 0, replicas: int = 1
) -> DataLoader:
    """Batches in file order: the centre crop, or the ten crops with `cfg.ten_crop`; with
    several replicas, this replica's share of the images."""
    crops = Crops(split, EvalWindows(cfg), cfg.crop)
    share: Subset[Batch] = Subset(crops, shard(len(split), replica, replicas))
    in_order = BatchSampler(SequentialSampler(share), batch_size, drop_last=False)
    return batch_loader(share, in_order, cfg.workers)


@dataclass
class Data:
    """A checked train/val pair with the statistics fitted on the training split."""

    train_set: Split
    val_set: Split
    cfg: DataConfig
    stats: Stats | None

    @property
    def classes(self) -> list[str]:
        return self.train_set.classes

    def finish(self, device: torch.device) -> Finish:
        return Finish(self.cfg, self.stats, device)

    def train_loader(
        self, batch_size: int, seed: int, epoch: int, replica: int = 0, replicas: int = 1
    ) -> DataLoader:
        """Shuffled uint8 crops (b = batch_size / replicas a batch) with their draws, for one
        epoch, reproducible from (seed, epoch) whatever came before: iterate it once, make a
        new one next epoch. The last partial global batch is dropped (a batch of one would
        break batch normalisation)."""
        crops = Crops(self.train_set, TrainWindows(self.cfg, seed, epoch), self.cfg.crop)
        order = shuffle_seed(seed, epoch)
        batches = GlobalBatches(len(crops), batch_size, order, replica, replicas)
        return batch_loader(crops, batches, self.cfg.workers)

    def val_loader(self, batch_size: int, replica: int = 0, replicas: int = 1) -> DataLoader:
        return val_loader(self.val_set, self.cfg, batch_size, replica, replicas)


def open_splits(
    root: Path, cfg: DataConfig, splits: Sequence[str], stale: Stale = "refuse"
) -> list[Split]:
    """ROOT's named splits, from a store if ROOT is one, else from the image folder."""
    if is_store(root):
        store = open_store(root, cfg.resize, stale)
        return [store.split(name) for name in splits]
    return [open_split(root, name, cfg.resize) for name in splits]


def open_val(root: Path, cfg: DataConfig, stale: Stale = "refuse") -> Split:
    """ROOT's val split alone (statistics come from elsewhere, e.g. a checkpoint)."""
    (val,) = open_splits(root, cfg, ["val"], stale)
    return val


def open_data(
    root: Path, cfg: DataConfig, stats_cache: Path | None = None, stale: Stale = "refuse"
) -> Data:
    """Check ROOT's train and val splits and fit (or load) the statistics. `stats_cache`
    defaults to <cache_root()>/stats."""
    train, val = open_splits(root, cfg, ["train", "val"], stale)
    check_same_classes((train.where, train.classes), (val.where, val.classes))
    stats = None
    if needs_stats(cfg):
        cache = Path(stats_cache) if stats_cache is not None else cache_root() / "stats"
        stats = train.fit_stats(cfg.stats_images, cache)
    return Data(train, val, cfg, stats)
