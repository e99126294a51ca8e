"""One split of a training set, wherever its pixels live: what the loaders read.

An image folder decodes its files (`netspec.train.data.ImageSplit`); a packed store reads
them back from one memory-mapped array (`netspec.train.store.StoreSplit`). Both hand out the
same uint8 `resize`×`resize` squares under the same indices, so one loader and one batched
augmentation serve both, and a run computes the same whichever it was given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from netspec.errors import DataError
from netspec.train.augment import Stats


class Split(ABC):
    """Images 0 … N-1 of one split, sorted by (class, file path), with their class labels."""

    where: Path  # what messages name: the split's folder, or the store's file
    classes: list[str]
    targets: list[int]
    resize: int

    def __len__(self) -> int:
        return len(self.targets)

    @abstractmethod
    def image(self, index: int) -> np.ndarray:
        """Image `index` as uint8 3×resize×resize."""

    @abstractmethod
    def fit_stats(self, limit: int, cache_dir: Path) -> Stats:
        """The mean image and RGB PCA of the images `stats_sample` picks (see there)."""

    def crop_into(
        self, out: np.ndarray, index: int, tops: Sequence[int], lefts: Sequence[int]
    ) -> None:
        """Copy image `index`'s windows (one per corner) into `out`, [V, 3, c, c] uint8."""
        img, c = self.image(index), out.shape[-1]
        for view, (t, left) in enumerate(zip(tops, lefts, strict=True)):
            out[view] = img[:, t : t + c, left : left + c]


def stats_sample(images: int, limit: int) -> list[int]:
    """At most `limit` image indices, evenly spread over the (class-sorted) split so that
    every class counts: the images the mean and PCA are fitted on, in a folder or a store."""
    k = min(images, limit)
    return [i * images // k for i in range(k)]


def check_same_classes(train: tuple[Path, list[str]], val: tuple[Path, list[str]]) -> None:
    """Both splits must name the same classes, in the same order: (where, classes) each."""
    if train[1] != val[1]:
        only_train = sorted(set(train[1]) - set(val[1])) or ["-"]
        only_val = sorted(set(val[1]) - set(train[1])) or ["-"]
        raise DataError(
            f"{train[0]} and {val[0]} have different classes (only in train: "
            f"{', '.join(only_train)}; only in val: {', '.join(only_val)}): use the same in both"
        )
