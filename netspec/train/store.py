"""Packed stores: a data folder decoded once, as training reads it, for random access.

The paper resized ImageNet once (shorter side to 256, the central 256×256 kept) and trained
from that; `netspec pack` (netspec.train.pack) does the same and writes a folder:

    STORE/store.json          what the store holds; written last, so only a whole store has it
    STORE/train.npy           uint8 N×3×R×R, the squares in the folder's order (class, path)
    STORE/train-labels.npy    int64 N, each image's class
    STORE/train-crc32.npy     uint32 N, each square's CRC-32, checked whenever it is read
    STORE/train-files.json    each source file's path (under the split), size and mtime
    STORE/val…                the same for val
    STORE/stats.npz           mean image and RGB PCA of the training split (`stats_images`)

Every array is a plain `.npy` file (numpy's own format: a header, then the raw bytes), opened
memory-mapped: any process on the machine reads any image without loading the rest, and the
page cache shares one copy among all the processes of a run.

Each square is checked against its CRC-32 whenever it is read (about 40 µs for 256×256 on one
core), so a damaged store fails with one line instead of training on wrong pixels.
"""

from __future__ import annotations

import json
import sys
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from netspec.errors import DataError
from netspec.train.augment import Stats
from netspec.train.folder import cached_stats, open_split
from netspec.train.imagenet import Listing, imagenet_listing, is_imagenet
from netspec.train.split import Split, stats_sample

FORMAT, VERSION = "netspec-store", 1
MANIFEST, JOURNAL, STATS = "store.json", "pack.json", "stats.npz"
SPLITS = ("train", "val")
# What a store whose source folder changed since packing gets: refused (one line), used as
# packed with a note (--allow-stale), or not looked at (a process whose launcher checked).
Stale = Literal["refuse", "allow", "unchecked"]


def pixels_file(split: str) -> str:
    return f"{split}.npy"


def labels_file(split: str) -> str:
    return f"{split}-labels.npy"


def crc_file(split: str) -> str:
    return f"{split}-crc32.npy"


def files_file(split: str) -> str:
    return f"{split}-files.json"


def crc32(square: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(square).data)


def is_store(path: Path) -> bool:
    """Whether `path` is a store `netspec pack` wrote, finished or not."""
    return (path / MANIFEST).is_file() or (path / JOURNAL).is_file()


def source_listing(root: Path, split: str) -> Listing:
    """A data folder's split as pack reads it: ImageNet's layout (with its devkit), or an
    image folder read as training reads it."""
    if is_imagenet(root):
        return imagenet_listing(root, split)
    images = open_split(root, split)
    files = [path for path, _ in images.samples]
    return Listing(images.folder, files, list(images.targets), list(images.classes), [])


FileIds = dict[str, tuple[int, int]]


def file_ids(listing: Listing) -> FileIds:
    """Path under the split's folder → (size, mtime in ns), for every file of a listing."""
    ids = {}
    for path in listing.files:
        stat = path.stat()
        ids[str(path.relative_to(listing.folder))] = (stat.st_size, stat.st_mtime_ns)
    return ids


def changes(packed: FileIds, now: FileIds) -> tuple[int, int, int]:
    """(added, removed, modified) files between two listings of one split."""
    added = sum(1 for path in now if path not in packed)
    removed = sum(1 for path in packed if path not in now)
    modified = sum(1 for path, ident in now.items() if path in packed and packed[path] != ident)
    return added, removed, modified


class Store:
    """A finished store, checked: its manifest, and that it was packed as the run needs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path / MANIFEST).is_file():
            raise DataError(
                f"{path} is an unfinished pack (no {MANIFEST}): run netspec pack again with "
                f"-o {path} to finish it"
            )
        self.manifest = self._read_manifest()
        self.resize: int = self.manifest["resize"]
        self.classes: list[str] = self.manifest["classes"]
        self.source = Path(self.manifest["source"])

    def _read_manifest(self) -> dict[str, Any]:
        file = self.path / MANIFEST
        try:
            manifest = json.loads(file.read_text())
            ok = manifest.get("format") == FORMAT and isinstance(manifest.get("resize"), int)
            ok = ok and all(s in manifest["splits"] for s in SPLITS)
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            ok = False
        if not ok:
            raise DataError(f"{file} is not a store manifest netspec wrote: pack the folder again")
        if manifest.get("version") != VERSION:
            raise DataError(
                f"{file} is a store of format version {manifest.get('version')}; this netspec "
                f"reads version {VERSION}: pack the folder again"
            )
        return manifest

    def check_resize(self, resize: int) -> None:
        if resize != self.resize:
            raise DataError(
                f"{self.path} was packed at resize {self.resize}, but the spec's data.resize is "
                f"{resize}: pack again with --resize {resize}, or train with "
                f"--set data.resize={self.resize}"
            )

    def check_fresh(self, splits: Sequence[str], stale: Stale) -> None:
        """The source folder must hold the files it held at packing time, or one line says
        how it changed; "allow" uses the store as packed, with a note."""
        if stale == "unchecked":
            return
        if not self.source.is_dir():
            print(
                f"note: {self.path} was packed from {self.source}, which is not here; "
                "using the store as packed",
                file=sys.stderr,
            )
            return
        added = removed = modified = 0
        for split in splits:
            packed = self._packed_ids(split)
            try:
                now = file_ids(source_listing(self.source, split))
            except (DataError, OSError):
                now = {}
            a, r, m = changes(packed, now)
            added, removed, modified = added + a, removed + r, modified + m
        if added or removed or modified:
            what = f"{added} added, {removed} removed, {modified} modified"
            if stale == "refuse":
                raise DataError(
                    f"{self.path} is stale: {self.source} has changed since it was packed "
                    f"({what}): pack it again, or pass --allow-stale to use the store as packed"
                )
            print(f"note: {self.path} is stale ({what}); using it as packed", file=sys.stderr)

    def _packed_ids(self, split: str) -> FileIds:
        file = self.path / files_file(split)
        try:
            saved = json.loads(file.read_text())
            return {
                p: (s, t)
                for p, s, t in zip(saved["paths"], saved["sizes"], saved["mtimes"], strict=True)
            }
        except (OSError, ValueError, TypeError, KeyError):
            raise DataError(f"{file} is damaged or missing: pack the folder again") from None

    def split(self, name: str) -> StoreSplit:
        return StoreSplit(self, name)

    def stats(self) -> tuple[int, Stats]:
        """The statistics pack fitted, and on how many training images at most."""
        file = self.path / STATS
        try:
            with np.load(file) as saved:
                stats = Stats(*(torch.from_numpy(saved[k]) for k in ("mean", "eigvals", "eigvecs")))
            r = self.resize
            if stats.mean.shape != (3, r, r) or stats.eigvecs.shape != (3, 3):
                raise ValueError("shapes")
        except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile):
            raise DataError(f"{file} is damaged or missing: pack the folder again") from None
        return int(self.manifest["stats_images"]), stats


def open_store(path: Path, resize: int, stale: Stale = "refuse") -> Store:
    """The store at `path`, checked against the run's resize and against its source."""
    store = Store(path)
    store.check_resize(resize)
    store.check_fresh(SPLITS, stale)
    return store


class StoreSplit(Split):
    """One split of a store, memory-mapped; every square is checked as it is read."""

    def __init__(self, store: Store, name: str) -> None:
        self.store, self.name = store, name
        self.where = store.path / pixels_file(name)
        self.resize, self.classes = store.resize, store.classes
        count = store.manifest["splits"][name]["images"]
        r = store.resize
        self.pixels = self._array(pixels_file(name), (count, 3, r, r), np.uint8)
        labels = self._array(labels_file(name), (count,), np.int64)
        self.crcs = np.array(self._array(crc_file(name), (count,), np.uint32))
        if count and not (labels.min() >= 0 and labels.max() < len(self.classes)):
            raise DataError(
                f"{store.path / labels_file(name)} holds labels outside 0…{len(self.classes) - 1}"
                ": the store is damaged; pack the folder again"
            )
        self.targets = labels.tolist()

    def _array(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        file = self.store.path / name
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(
                f"{file} is truncated or damaged ({reason}): pack the folder again"
            ) from None
        if array.shape != shape or array.dtype != dtype:
            raise DataError(
                f"{file} holds {array.dtype} {list(array.shape)}, but the store's manifest says "
                f"{np.dtype(dtype)} {list(shape)}: the store is damaged; pack the folder again"
            )
        return array

    def image(self, index: int) -> np.ndarray:
        square = self.pixels[index]
        if crc32(square) != self.crcs[index]:
            raise DataError(
                f"{self.where}: image {index} does not match its checksum; the store is "
                "damaged: pack the folder again"
            )
        return square

    def fit_stats(self, limit: int, cache_dir: Path) -> Stats:
        """The statistics pack fitted when they were fitted on as many images as the spec
        asks (`data.stats_images`); otherwise fitted now from the store's own pixels (the
        same pixels a folder run decodes) and cached."""
        packed_limit, stats = self.store.stats()
        chosen = stats_sample(len(self), limit)
        if chosen == stats_sample(len(self), packed_limit):
            return stats
        key = f"{self.store.manifest['id']}-{self.name}-{limit}"
        return cached_stats(Path(cache_dir) / f"stats-store-{key}.pt", key, self, chosen)
