"""Training images per second per data-loading worker: netspec's dataset and transform against
torchvision's `ImageFolder` with `transforms.v2` doing the same work.

Both decode a PNG, scale the shorter side to 256 and keep the centre 256×256, cut a random
227×227 crop, mirror it with p = ½ and subtract a mean (netspec: the training set's mean image;
torchvision: its per-channel mean, which is what `Normalize` can do); netspec's second row adds
the paper's PCA colour noise. Measured on one thread, as a DataLoader worker runs, over a small
`shapes` folder generated in a temporary directory. Both decode every image every time: the
in-memory copy netspec keeps of a small split's decoded images is switched off here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torchvision import datasets
from torchvision.transforms import v2

from benchmarks.timing import Row, interleaved
from netspec import load_spec
from netspec.train.data import Data, EpochImages, open_data
from netspec.train.shapes_data import ensure_shapes

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SIZE = 320  # drawn size: the pipeline scales it down to 256, as with most photographs
PER_CLASS = 8  # 80 training images


def rows(repeats: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_shapes(Path(tmp), size=IMAGE_SIZE, train_per_class=PER_CLASS, val_per_class=1)
        paper = load_spec(ROOT / "specs/alexnet.yaml").data
        plain = open_data(root, paper.model_copy(update={"pca": "none"}), Path(tmp) / "stats")
        noisy = open_data(root, paper, Path(tmp) / "stats")
        assert plain.stats is not None  # the paper's `mean: pixel` is fitted
        channel_mean = plain.stats.mean.mean((1, 2)).tolist()
        reference = datasets.ImageFolder(
            root / "train",
            transform=v2.Compose(
                [
                    v2.Resize(paper.resize),
                    v2.CenterCrop(paper.resize),
                    v2.RandomCrop(paper.crop),
                    v2.RandomHorizontalFlip(),
                    v2.PILToTensor(),
                    v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize(channel_mean, [1.0, 1.0, 1.0]),
                ]
            ),
        )
        count = len(reference)
        assert count == len(plain.train_set) == len(noisy.train_set)

        def epoch(data: Data) -> EpochImages:
            data.train_set.decoded = None  # decode each time, as the reference does
            return EpochImages(data.train_set, data.augment, seed=0, epoch=0)

        def each(dataset: EpochImages | datasets.ImageFolder) -> None:
            for i in range(count):
                dataset[i]

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a DataLoader worker
        try:
            seconds = interleaved(
                {
                    "plain": lambda: each(epoch(plain)),
                    "noisy": lambda: each(epoch(noisy)),
                    "reference": lambda: each(reference),
                },
                repeats,
            )
        finally:
            torch.set_num_threads(threads)
    rate = {name: count / s for name, s in seconds.items()}
    reference_label = "ImageFolder + transforms.v2"
    return [
        Row(
            "data pipeline, images/s per worker: crop, mirror, mean",
            reference_label,
            rate["plain"],
            rate["reference"],
            per_second=True,
        ),
        Row(
            "data pipeline, images/s per worker: crop, mirror, mean, PCA noise",
            reference_label,
            rate["noisy"],
            rate["reference"],
            per_second=True,
        ),
    ]
