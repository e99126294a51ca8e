"""`netspec predict CHECKPOINT IMAGE…`: a trained network's top classes for image files.

Each file is decoded and cropped as the run's validation images were (its `data.resize`, the
centre crop or ten crops, its mean and scale) and batched as `netspec eval` batches, so a
validation image gets the probabilities eval computed for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from netspec.errors import DataError
from netspec.inspect.probabilities import probabilities
from netspec.inspect.trained import Trained, note, open_trained
from netspec.train.augment import Stats
from netspec.train.data import val_loader
from netspec.train.decode import load_image
from netspec.train.device import options_for, pick_device
from netspec.train.split import Split


class Images(Split):
    """Decoded image files as a split, so that the validation loader crops and batches them."""

    def __init__(self, squares: list[np.ndarray], resize: int) -> None:
        self.squares, self.resize = squares, resize
        self.where, self.classes, self.targets = Path("."), [], [0] * len(squares)

    def image(self, index: int) -> np.ndarray:
        return self.squares[index]

    def fit_stats(self, limit: int, cache_dir: Path) -> Stats:
        raise NotImplementedError("predict uses the checkpoint's statistics")


def decode(path: Path, resize: int) -> np.ndarray:
    """One file as uint8 3×resize×resize; DataError (one line) for what is not an image."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image")
    try:
        return load_image(path, resize).numpy()
    except DataError as err:
        raise DataError(str(err).removesuffix("; replace or delete it")) from None


def class_names(trained: Trained) -> list[str]:
    names = trained.classes
    if names is None:
        note(f"{trained.path} keeps no class names (an older checkpoint): classes by number")
        names = [f"class {i}" for i in range(trained.outputs)]
    return names


def run_predict(args: argparse.Namespace) -> int:
    trained = open_trained(args.checkpoint)
    update = {"workers": 0, **({"ten_crop": True} if args.ten_crop else {})}
    cfg = trained.data.model_copy(update=update)
    names = class_names(trained)
    device = pick_device(args.device)
    model = trained.model(device)
    paths, squares, failed = [], [], 0
    for image in args.images:
        try:
            squares.append(decode(Path(image), cfg.resize))
            paths.append(image)
        except DataError as err:
            print(f"netspec predict: {err}", file=sys.stderr)
            failed += 1
    results = []
    if squares:
        opts = options_for(trained.spec, device, trained.stats, note=False)
        batches = val_loader(Images(squares, cfg.resize), cfg, trained.spec.train.batch_size)
        probs = probabilities(model, batches, opts)
        top = probs.topk(min(args.top, probs.shape[1]), dim=1)
        for path, p, i in zip(paths, top.values.tolist(), top.indices.tolist(), strict=True):
            ranked = [{"class": names[c], "probability": q} for c, q in zip(i, p, strict=True)]
            results.append({"image": path, "top": ranked})
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            said = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"])
            print(f"{r['image']}: {said}")
    return 1 if failed else 0
