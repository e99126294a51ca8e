"""`netspec pack DATA -o STORE`: decode a data folder once into a packed store.

Each image is decoded and rescaled exactly as training decodes it (`netspec.train.decode`)
and written, in the folder's order, into one memory-mapped `.npy` array per split (the format
is described in `netspec.train.store`). Worker processes share the decoding; each writes its
images straight into the array, so nothing but a list of checksums crosses between processes
and memory stays flat however many images there are.

A pack that is killed or interrupted leaves no `store.json`, so nothing takes it for a whole
store. Its journal (`pack.json`) records how many images of each split are safely on disk;
the same command run again carries on from there, or starts over if the source or the
settings changed, and says which.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from tqdm import tqdm

from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.interrupt import describe, die_with_parent, exit_status
from netspec.train.augment import fit_stats
from netspec.train.decode import load_image
from netspec.train.imagenet import Listing, is_imagenet
from netspec.train.split import check_same_classes, stats_sample
from netspec.train.store import (
    FORMAT,
    JOURNAL,
    MANIFEST,
    SPLITS,
    STATS,
    VERSION,
    Store,
    crc32,
    crc_file,
    file_ids,
    files_file,
    labels_file,
    pixels_file,
    source_listing,
)

CHUNK = 32  # images one task decodes
LOCK = ".lock"
JOURNAL_EVERY_S = 2.0  # how often the journal records what is safely written
LINE_EVERY_S = 15.0  # progress lines when the output is not a terminal


@dataclass(frozen=True)
class Plan:
    """What a pack writes: each split's files in order, and a key of all the pixels depend on."""

    source: Path
    out: Path
    resize: int
    stats_images: int
    listings: dict[str, Listing]
    key: str

    def count(self, split: str) -> int:
        return len(self.listings[split].files)

    def bytes_needed(self) -> int:
        per_image = 3 * self.resize**2 + 8 + 4  # pixels, label, checksum
        return sum(self.count(s) for s in SPLITS) * per_image + 4 * 3 * self.resize**2


def make_plan(source: Path, out: Path, resize: int, stats_images: int) -> Plan:
    listings = {split: source_listing(source, split) for split in SPLITS}
    train, val = listings["train"], listings["val"]
    check_same_classes((train.folder, train.classes), (val.folder, val.classes))
    ids = {split: sorted(file_ids(listing).items()) for split, listing in listings.items()}
    labels = {split: listing.labels for split, listing in listings.items()}
    what = [VERSION, str(source.resolve()), resize, stats_images, train.classes, ids, labels]
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()
    return Plan(source, out, resize, stats_images, listings, key)


# --- the output folder ------------------------------------------------------------------


def our_files() -> list[str]:
    per_split = [f(s) for s in SPLITS for f in (pixels_file, labels_file, crc_file, files_file)]
    return [*per_split, STATS, JOURNAL, MANIFEST]


def claim(plan: Plan) -> dict[str, int] | None:
    """How much of the pack is already done ({split: images}), or None when it is finished
    already; refuses an -o that holds anything but this pack."""
    out = plan.out
    check_output(out)
    if (out / MANIFEST).is_file():
        store = Store(out)
        same = store.manifest.get("key") == plan.key
        if not same:
            raise UsageError(
                f"-o {out} already holds a store (packed from {store.source} at resize "
                f"{store.resize}): choose another -o, or delete it to pack again"
            )
        return None
    journal = _read_journal(out)
    if journal is not None:
        if journal.get("key") == plan.key:
            done = {s: int(journal["done"].get(s, 0)) for s in SPLITS}
            total = sum(plan.count(s) for s in SPLITS)
            print(
                f"resuming the unfinished pack in {out}: {sum(done.values()):,} of "
                f"{total:,} images were written",
                file=sys.stderr,
            )
            return done
        print(
            f"restarting the unfinished pack in {out}: it was started with other settings or "
            "its source has changed since",
            file=sys.stderr,
        )
        for name in our_files():
            (out / name).unlink(missing_ok=True)
    done = {s: 0 for s in SPLITS}
    write_journal(plan, done)  # from here on, the folder says it holds an unfinished pack
    return done


def check_output(out: Path) -> None:
    """-o must be a new or empty folder, or one a pack wrote: nothing of anyone else's."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file: give a new or empty folder for the store")
    if (out / MANIFEST).is_file() or (out / JOURNAL).is_file():
        return
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()):
        raise UsageError(
            f"-o {out} already holds other files: give a new or empty folder for the store"
        )


def _read_journal(out: Path) -> dict[str, Any] | None:
    try:
        journal = json.loads((out / JOURNAL).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # a damaged journal: start over
    return journal if isinstance(journal, dict) and isinstance(journal.get("done"), dict) else {}


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """One pack into a folder at a time."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"-o {out} is in use by another netspec pack") from None
        yield
    finally:
        os.close(fd)


def check_space(plan: Plan) -> None:
    """Before anything is written: the disk must have room for the whole store."""
    folder = plan.out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    need, free = plan.bytes_needed(), shutil.disk_usage(folder).free
    if need > free:
        raise UsageError(
            f"the store needs {_gb(need)} on disk, but {plan.out} has {_gb(free)} free: free "
            "some space, or give an -o on a larger disk (or a smaller --resize)"
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def create_arrays(plan: Plan) -> None:
    """Each split's arrays at full size, their blocks reserved now, so a disk that fills up
    fails here with one line and not halfway through (or, written through a memory map,
    with SIGBUS)."""
    for split in SPLITS:
        n, r = plan.count(split), plan.resize
        listing = plan.listings[split]
        pixels = plan.out / pixels_file(split)
        if not pixels.exists():
            np.lib.format.open_memmap(pixels, "w+", np.uint8, (n, 3, r, r))
        with open(pixels, "r+b") as f:  # again after a pack stopped by a full disk
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        if not (plan.out / crc_file(split)).exists():
            np.lib.format.open_memmap(plan.out / crc_file(split), "w+", np.uint32, (n,))
        with atomic_write(plan.out / labels_file(split), "wb") as f:
            np.save(f, np.asarray(listing.labels, dtype=np.int64))
        ids = file_ids(listing)
        paths = [str(p.relative_to(listing.folder)) for p in listing.files]
        saved = {
            "paths": paths,
            "sizes": [ids[p][0] for p in paths],
            "mtimes": [ids[p][1] for p in paths],
        }
        with atomic_write(plan.out / files_file(split), "w") as f:
            json.dump(saved, f)


# --- decoding ----------------------------------------------------------------------------

_open_arrays: dict[str, np.ndarray] = {}  # per worker process: the arrays it writes into


def decode_chunk(pixels: str, files: list[str], start: int, resize: int) -> list[int]:
    """Decode `files` into images start, start + 1, … of the array in `pixels`; their CRCs."""
    array = _open_arrays.get(pixels)
    if array is None:
        array = _open_arrays[pixels] = np.load(pixels, mmap_mode="r+")
    crcs = []
    for offset, file in enumerate(files):
        square = load_image(Path(file), resize).numpy()
        array[start + offset] = square
        crcs.append(crc32(square))
    return crcs


def _worker_start(parent: int) -> None:
    """A decoding process dies with pack and leaves Ctrl-C to it, which stops them all."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


class Decoder:
    """Runs `decode_chunk` in worker processes (or here, with 0 workers), in order, with a
    bounded number of chunks in flight."""

    def __init__(self, workers: int) -> None:
        self.pool = None
        if workers:
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=get_context("fork"),
                initializer=_worker_start,
                initargs=(os.getpid(),),
            )
        self.ahead = 4 * max(workers, 1)

    def run(self, tasks: Iterator[tuple[str, int, list[str]]], plan: Plan) -> Iterator[Any]:
        """Yield (task, crcs) for each task, in the order given."""
        queue: deque[tuple[tuple[str, int, list[str]], Future[list[int]] | list[int]]] = deque()
        for task in tasks:
            split, start, files = task
            args = (str(plan.out / pixels_file(split)), files, start, plan.resize)
            job = self.pool.submit(decode_chunk, *args) if self.pool else decode_chunk(*args)
            queue.append((task, job))
            while len(queue) >= self.ahead or (queue and not self.pool):
                yield self._next(queue)
        while queue:
            yield self._next(queue)

    @staticmethod
    def _next(queue: deque) -> tuple[Any, list[int]]:
        task, job = queue.popleft()
        return task, job.result() if isinstance(job, Future) else job

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown(wait=True, cancel_futures=True)


def decode_all(plan: Plan, done: dict[str, int], workers: int) -> None:
    """Decode every image not yet written, recording progress in the journal as it goes."""
    remaining = sum(plan.count(s) - done[s] for s in SPLITS)
    crcs = {s: np.lib.format.open_memmap(plan.out / crc_file(s), "r+") for s in SPLITS}
    tty = sys.stderr.isatty()
    bar = tqdm(total=remaining, desc="packing", unit="img", disable=not tty, smoothing=0.1)
    decoder = Decoder(workers)
    last_journal = -JOURNAL_EVERY_S  # the first chunk is recorded at once
    last_line = time.perf_counter()
    written = 0
    try:

        def tasks() -> Iterator[tuple[str, int, list[str]]]:
            for split in SPLITS:
                files = [str(f) for f in plan.listings[split].files]
                for start in range(done[split], len(files), CHUNK):
                    yield split, start, files[start : start + CHUNK]

        for (split, start, files), chunk_crcs in decoder.run(tasks(), plan):
            crcs[split][start : start + len(files)] = chunk_crcs
            done[split] = start + len(files)
            written += len(files)
            bar.update(len(files))
            now = time.perf_counter()
            if now - last_journal >= JOURNAL_EVERY_S:
                write_journal(plan, done, crcs)
                last_journal = now
            if not tty and now - last_line >= LINE_EVERY_S:
                print(f"packing: {written:,} of {remaining:,} images", file=sys.stderr)
                last_line = now
        write_journal(plan, done, crcs)
    except BaseException:
        with contextlib.suppress(OSError):  # keep what the finished chunks wrote
            write_journal(plan, done, crcs)
        raise
    finally:
        bar.close()
        decoder.close()


def write_journal(
    plan: Plan, done: dict[str, int], crcs: dict[str, np.memmap] | None = None
) -> None:
    """Record `done` once the pixels and checksums it counts are on disk."""
    for split, checksums in (crcs or {}).items():
        checksums.flush()
        with open(plan.out / pixels_file(split), "rb") as f:
            os.fsync(f.fileno())
    with atomic_write(plan.out / JOURNAL, "w") as f:
        json.dump({"key": plan.key, "done": done}, f)


def finish(plan: Plan) -> None:
    """The statistics, then the manifest: the last file, whose presence says "whole"."""
    train = np.load(plan.out / pixels_file("train"), mmap_mode="r")
    chosen = stats_sample(len(train), plan.stats_images)
    stats = fit_stats(torch.from_numpy(np.array(train[i])) for i in chosen)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        mean=stats.mean.numpy(),
        eigvals=stats.eigvals.numpy(),
        eigvecs=stats.eigvecs.numpy(),
    )
    with atomic_write(plan.out / STATS, "wb") as f:
        f.write(buffer.getvalue())
    listing = plan.listings["train"]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "id": uuid.uuid4().hex,
        "key": plan.key,
        "resize": plan.resize,
        "source": str(plan.source.resolve()),
        "layout": "imagenet" if is_imagenet(plan.source) else "folder",
        "classes": listing.classes,
        "wnids": listing.wnids,
        "stats_images": plan.stats_images,
        "splits": {s: {"images": plan.count(s)} for s in SPLITS},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "pillow": PIL.__version__,
    }
    readable_by_all(plan.out)
    with atomic_write(plan.out / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
    readable_by_all(plan.out)
    (plan.out / JOURNAL).unlink(missing_ok=True)


def readable_by_all(out: Path) -> None:
    """A store is often shared (one copy per node, read by every user's runs): its files get
    the permissions the umask gives new files, not the private ones of a temporary file."""
    umask = os.umask(0)
    os.umask(umask)
    for name in our_files():
        with contextlib.suppress(FileNotFoundError):
            os.chmod(out / name, 0o666 & ~umask)


def pack(source: Path, out: Path, resize: int, workers: int, stats_images: int) -> int:
    """Pack `source` into `out`; prints what it wrote. Exit status 0."""
    began = time.perf_counter()
    plan = make_plan(source, out, resize, stats_images)
    check_output(out)
    if not (out / JOURNAL).exists() and not (out / MANIFEST).exists():
        check_space(plan)
    created = not out.exists()
    with locked(out):
        done = claim(plan)
        if done is None:
            print(f"{out} already holds this store, packed from {source} and up to date")
            return 0
        try:
            create_arrays(plan)
            decode_all(plan, done, workers)
            finish(plan)
        except OSError as exc:
            if not any(done.values()):  # nothing decoded yet: give the space back
                for name in [*our_files(), LOCK]:
                    (out / name).unlink(missing_ok=True)
                if created:
                    out.rmdir()
            if exc.errno == errno.ENOSPC:
                raise UsageError(
                    f"the disk holding {out} is full: free some space, or give an -o on a "
                    "larger disk"
                ) from None
            raise UsageError(f"cannot write the store in {out}: {exc.strerror or exc}") from None
    seconds = time.perf_counter() - began
    counts = ", ".join(f"{s} {plan.count(s):,} images" for s in SPLITS)
    on_disk = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    total = sum(plan.count(s) for s in SPLITS)
    print(
        f"packed {source} into {out}: {counts}; {_gb(on_disk)} on disk; {seconds:.1f} s "
        f"({total / seconds:,.0f} images/s with {workers or 'no'} worker processes)"
    )
    return 0


def run_pack(args: argparse.Namespace) -> int:
    """netspec.cli checked the flags' values, before torch was imported."""
    from netspec.train.data import resolve_data_dir

    workers = (os.cpu_count() or 1) if args.workers is None else args.workers
    source = resolve_data_dir(args.data)
    try:
        return pack(source, Path(args.output), args.resize, workers, args.stats_images)
    except KeyboardInterrupt as exc:
        print(
            f"\nnetspec pack: {describe(exc)}; {args.output} keeps what was written, and the "
            "same command carries on from there",
            file=sys.stderr,
        )
        return exit_status(exc)
