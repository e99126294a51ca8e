"""Training data, per loader worker: a packed store and an image folder against torchvision's
`ImageFolder` with `transforms.v2`, on ImageNet-like JPEGs (`benchmarks.imagenet_like`).

On ImageNet a loader worker spends nearly all its time in the JPEG decoder, so the question
for each row is how much of that a path avoids, and what it costs instead:

- store → uint8 crops + mirror: what a loader worker does for a batch when it reads a store.
  Its speed against the per-image torchvision pipeline says how many fewer workers, and
  cores, it takes to keep a network fed.
- store → finished float batches: the same, plus what `Finish` does (mean window, PCA noise,
  mirror, × 255), here on the CPU. On a GPU that work leaves the loader, so this is the
  slowest a store gets: the case of training on the CPU.
- folder → finished float batches: netspec reading the JPEGs themselves, decoding each time
  (the in-memory copy a small split keeps is switched off). Both sides pay for the decode,
  which dominates, so the two should be about even: netspec's own work does not hold a
  folder run back, and what a store saves is the decode alone.
- netspec pack: a store costs one decode per image, paid once. Packing at about the speed of
  one reference epoch means the store has paid for itself after one epoch.
- memcpy ceiling: a crop can cost no less than copying its bytes. How close the store's rate
  comes to this machine's copy bandwidth says how much is left to win.
- end to end: one epoch of a small, cheap network with one real loader worker process. The
  share of the epoch spent waiting for data is the figure a training run prints: from the
  folder the network waits for the decoder; from the store it should hardly wait at all.
  An epoch here is a few batches, so most of the store's wait is its worker process
  starting, which a real epoch spreads thin.
- on CUDA only (`--device cuda`): the paper's net, mixed precision, eight workers, from the
  store: whether a GPU is kept fed. Its ratio is the share of the GPU's speed the data lets
  it reach (1 − the data wait).

Everything is measured with one torch thread, as a DataLoader worker runs, on a folder
generated in a temporary directory and packed at resize 256.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets
from torchvision.transforms import v2

from benchmarks.imagenet_like import make_folder
from benchmarks.timing import Row, interleaved
from netspec import compile, load_spec
from netspec.spec.model import Spec
from netspec.spec.settings import DataConfig
from netspec.train.augment import Batch, Finish, TrainWindows
from netspec.train.data import Crops, Data, open_data
from netspec.train.device import options_for
from netspec.train.loop import train_epoch
from netspec.train.optim import make_optimizer
from netspec.train.pack import make_plan, pack
from netspec.train.split import Split

ROOT = Path(__file__).resolve().parent.parent
RESIZE = 256
COPY_BYTES = 64 * 2**20  # large enough to miss every cache: the copy runs at memory speed
STORE_PASSES = 5  # the store's paths are fast: several passes make each figure long enough
REFERENCE = "ImageFolder + transforms.v2"


@dataclass(frozen=True)
class Scale:
    """How much data the part generates, and the batch the loaders cut."""

    classes: int = 4
    train_per_class: int = 48
    val_per_class: int = 4
    batch: int = 32


# A cheap network at the paper's input size: conv1 as the paper's, then straight to the
# classes, so that an epoch is short and the loader's share of it shows. Its learning rate is
# small enough that epoch after epoch of 0–255 pixels never diverges: only its speed counts.
SMALL_NET = """\
name: small
input: [3, 227, 227]
classes: {classes}
layers:
  - {{name: conv1, type: conv, filters: 16, kernel: 11, stride: 4}}
  - {{name: relu1, type: relu}}
  - {{name: pool1, type: maxpool, kernel: 3, stride: 2}}
  - {{name: fc, type: linear, units: classes}}
train: {{batch_size: {batch}, lr: 1.0e-6, momentum: 0.9}}
data: {{resize: 256, crop: 227, mean: pixel, pca: dataset, pixel_scale: 255, workers: 1}}
"""


def small_net(folder: Path, classes: int, batch: int) -> Spec:
    path = folder / "small.yaml"
    path.write_text(SMALL_NET.format(classes=classes, batch=batch))
    return load_spec(path)


def reference_dataset(train: Path, crop: int, channel_mean: list[float]) -> datasets.ImageFolder:
    """torchvision's per-image pipeline doing the same work: decode, shorter side to 256, the
    centre square, a random crop, a mirror, float, minus the mean (per channel: what
    `Normalize` can do)."""
    return datasets.ImageFolder(
        train,
        transform=v2.Compose(
            [
                v2.Resize(RESIZE),
                v2.CenterCrop(RESIZE),
                v2.RandomCrop(crop),
                v2.RandomHorizontalFlip(),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(channel_mean, [1.0, 1.0, 1.0]),
            ]
        ),
    )


def batches_of(count: int, batch: int) -> list[list[int]]:
    """A shuffled epoch's batches of indices, as the loader hands them to a worker."""
    order = np.random.default_rng(0).permutation(count).tolist()
    return [order[i : i + batch] for i in range(0, count, batch)]


def mirrored(batch: Batch) -> torch.Tensor:
    """The mirror, on the uint8 crops, in place: what
    `torch.where(flip[:, None, None, None], crops.flip(-1), crops)` gives, but that select
    of uint8 costs over ten times the flips themselves, and would be measured instead."""
    crops = batch.crops
    for j in batch.windows.flip.nonzero().flatten().tolist():
        crops[j] = crops[j].flip(-1)
    return crops


def epochs_of(
    split: Split, cfg: DataConfig, batch: int, passes: int, work: Callable[[Batch], object]
) -> Callable[[], None]:
    """`passes` epochs of `split` in batches, each fetched as a loader worker fetches it and
    handed to `work`."""
    loaders = [Crops(split, TrainWindows(cfg, 0, epoch), cfg.crop) for epoch in range(passes)]
    order = batches_of(len(split), batch)

    def run() -> None:
        for crops in loaders:
            for indices in order:
                work(crops.__getitems__(indices))

    return run


def copy_bandwidth(repeats: int) -> float:
    """Bytes per second that one core copies, warm, over a buffer no cache holds."""
    src = np.ones(COPY_BYTES, dtype=np.uint8)
    dst = np.empty_like(src)
    seconds = interleaved({"copy": lambda: np.copyto(dst, src)}, max(repeats, 5))["copy"]
    return COPY_BYTES / seconds


class Packs:
    """`pack` with one worker process, into a new store each call. The listing of the folder,
    which `pack` makes first, is timed apart each call (`listing`), to be left out."""

    def __init__(self, folder: Path, out: Path, stats_images: int) -> None:
        self.folder, self.out, self.stats_images = folder, out, stats_images
        plan = make_plan(folder, out, RESIZE, stats_images)
        self.images = sum(len(listing.files) for listing in plan.listings.values())
        self.listing: list[float] = []

    def __call__(self) -> None:
        out = self.out.with_name(f"{self.out.name}-{len(self.listing)}")
        began = time.perf_counter()
        make_plan(self.folder, out, RESIZE, self.stats_images)
        self.listing.append(time.perf_counter() - began)
        with contextlib.redirect_stdout(io.StringIO()):
            pack(self.folder, out, RESIZE, 1, self.stats_images)

    def rate(self, seconds: float) -> float:
        """Images per second, given the median seconds of a call."""
        return self.images / (seconds - statistics.median(self.listing))


def end_to_end(
    sources: dict[str, Data], spec: Spec, repeats: int
) -> dict[str, tuple[float, float]]:
    """(images/s, data wait) of one training epoch from each source, medians of `repeats`
    epochs taken in turn after one unmeasured epoch each."""
    device = torch.device("cpu")
    model = compile(spec).to(device)
    optimizer = make_optimizer(model, spec.train)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in sources}
    batch = spec.train.batch_size
    for epoch in range(repeats + 1):
        for name, data in sources.items():
            opts = options_for(spec, device, data.stats, note=False)
            loader = data.train_loader(batch, spec.train.seed, epoch)
            done = train_epoch(
                model, loader, len(loader), optimizer, scaler, opts, name, show_progress=False
            )
            if epoch:
                figures[name].append((done["images_per_s"], done["data_wait"]))
    return {
        name: (statistics.median(f[0] for f in fs), statistics.median(f[1] for f in fs))
        for name, fs in figures.items()
    }


def rows(repeats: int, device: torch.device | None = None, scale: Scale | None = None) -> list[Row]:
    """The rows above, measured on a folder of `scale` generated for the purpose; the paper
    net's row too when `device` is CUDA."""
    device = device or torch.device("cpu")
    scale = scale or Scale()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return measure(Path(tmp), repeats, device, scale)
    finally:
        torch.set_num_threads(threads)


def measure(tmp: Path, repeats: int, device: torch.device, s: Scale) -> list[Row]:
    cores = os.cpu_count() or 1
    folder = make_folder(
        tmp / "folder", s.classes, s.train_per_class, s.val_per_class, seed=0, workers=cores
    )
    paper = load_spec(ROOT / "specs/alexnet.yaml").data
    with contextlib.redirect_stdout(io.StringIO()):
        pack(folder, tmp / "store", RESIZE, cores, paper.stats_images)
    packs = Packs(folder, tmp / "packed", paper.stats_images)
    stats_cache = tmp / "stats"
    store = open_data(tmp / "store", paper, stats_cache)
    from_folder = open_data(folder, paper, stats_cache)
    from_folder.train_set.decoded = None  # decode each time, as the reference does
    assert store.stats is not None  # the paper's `mean: pixel` is fitted
    channel_mean = store.stats.mean.mean((1, 2)).tolist()
    reference = reference_dataset(folder / "train", paper.crop, channel_mean)
    count = len(reference)
    assert count == len(store.train_set) == len(from_folder.train_set)
    finish = Finish(paper, store.stats, torch.device("cpu"))

    def each() -> None:
        for i in range(count):
            reference[i]

    def fetched(batch: Batch) -> None:
        pass

    b = s.batch
    seconds = interleaved(
        {
            "reference": each,
            "crops": epochs_of(store.train_set, paper, b, STORE_PASSES, fetched),
            "mirrored": epochs_of(store.train_set, paper, b, STORE_PASSES, mirrored),
            "finished": epochs_of(store.train_set, paper, b, STORE_PASSES, finish),
            "folder": epochs_of(from_folder.train_set, paper, b, 1, finish),
            "pack": packs,
        },
        repeats,
    )
    passes = {"reference": 1, "folder": 1}
    rate = {name: passes.get(name, STORE_PASSES) * count / t for name, t in seconds.items()}
    rate["pack"] = packs.rate(seconds["pack"])
    crop_bytes = 3 * paper.crop**2
    ceiling = copy_bandwidth(repeats) / crop_bytes

    spec = small_net(tmp, s.classes, b)
    e2e_folder = open_data(folder, spec.data, stats_cache)
    e2e_folder.train_set.decoded = None  # or the worker inherits the images fitting decoded
    e2e = end_to_end(
        {"store": open_data(tmp / "store", spec.data, stats_cache), "folder": e2e_folder},
        spec,
        repeats,
    )
    (store_rate, store_wait), (folder_rate, folder_wait) = e2e["store"], e2e["folder"]
    found = [
        Row(
            f"store → uint8 {paper.crop} crops + mirror, images/s per worker",
            REFERENCE,
            rate["mirrored"],
            rate["reference"],
            per_second=True,
        ),
        Row(
            "store → finished float batches (mean, PCA noise, mirror), CPU, per worker",
            REFERENCE,
            rate["finished"],
            rate["reference"],
            per_second=True,
        ),
        Row(
            "folder → finished float batches (JPEG decoded each time), per worker",
            REFERENCE,
            rate["folder"],
            rate["reference"],
            per_second=True,
        ),
        Row(
            "netspec pack, images/s per worker (decode once, write the store)",
            f"{REFERENCE}, one epoch",
            rate["pack"],
            rate["reference"],
            per_second=True,
        ),
        Row(
            f"store → uint8 {paper.crop} crops (no mirror), against the memcpy ceiling",
            f"a copy of {crop_bytes:,} B a crop at {ceiling * crop_bytes / 1e9:.1f} GB/s",
            rate["crops"],
            ceiling,
            per_second=True,
        ),
        Row(
            f"end to end, small net at {paper.crop}, batch {b}, 1 worker: store "
            f"(data wait {store_wait:.0%})",
            f"folder (data wait {folder_wait:.0%})",
            store_rate,
            folder_rate,
            per_second=True,
        ),
    ]
    return found + gpu_rows(tmp, device, s)


GPU_WORKERS = 8
GPU_TRAIN_PER_CLASS = 1024  # 32 batches of 128 with 4 classes: an epoch is more than its start


def gpu_rows(tmp: Path, device: torch.device, s: Scale) -> list[Row]:
    """The paper's net from a store on CUDA; nothing on the CPU."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return []
    cores = os.cpu_count() or 1
    folder = make_folder(tmp / "gpu-folder", s.classes, GPU_TRAIN_PER_CLASS, 1, workers=cores)
    overrides = [f"classes={s.classes}", "train.amp=true", f"data.workers={GPU_WORKERS}"]
    spec = load_spec(ROOT / "specs/alexnet.yaml", overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        pack(folder, tmp / "gpu-store", spec.data.resize, cores, spec.data.stats_images)
    data = open_data(tmp / "gpu-store", spec.data, tmp / "stats")
    model = compile(spec).to(device)
    optimizer = make_optimizer(model, spec.train)
    scaler = torch.amp.GradScaler("cuda", enabled=True)
    opts = options_for(spec, device, data.stats, note=False)
    done: dict[str, float] = {}
    for epoch in range(2):  # the first pays for the first calls
        loader = data.train_loader(spec.train.batch_size, spec.train.seed, epoch)
        done = train_epoch(
            model, loader, len(loader), optimizer, scaler, opts, "paper", show_progress=False
        )
        torch.cuda.synchronize(device)
    fed = done["images_per_s"]
    wait = done["data_wait"]
    return [
        Row(
            f"paper net, amp, from the store, {GPU_WORKERS} workers: data wait {wait:.0%}",
            "the same net never waiting for data",
            fed,
            fed / (1 - wait) if wait < 1 else float("inf"),
            per_second=True,
        )
    ]
