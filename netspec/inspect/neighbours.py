"""`netspec inspect RUN neighbours`: the paper's Figure 4, right. Validation images, each with
the training images whose activations at a hidden layer lie nearest its own.

The search is exact: every training image's distance is computed, none estimated. Features
are kept as float16 (in memory, or in a temporary file beyond `MEMORY_BYTES`), and distances
are computed in float64 a chunk of training images at a time, so memory stays bounded
whatever the size of the training set.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from netspec.errors import UsageError
from netspec.inspect.pictures import check_output, labelled_grid
from netspec.inspect.trained import Trained, image_name, open_trained
from netspec.ir.records import INPUT
from netspec.spec.settings import DataConfig
from netspec.train.augment import EvalWindows
from netspec.train.checks import check_cache
from netspec.train.data import Crops, batch_loader, open_splits, resolve_data_dir
from netspec.train.device import options_for, pick_device
from netspec.train.evaluate import Options
from netspec.train.shapes_data import cache_root
from netspec.train.split import Split, check_same_classes
from netspec.train.store import Stale

# Features larger than this go to a temporary file rather than memory.
MEMORY_BYTES = 2**30
# The float64 block of training features one distance step reads.
CHUNK_BYTES = 64 * 2**20
FLOAT16_MAX = float(torch.finfo(torch.float16).max)
SAME, OTHER, QUIET = "tab:green", "tab:red", "0.35"


def hidden_layer(trained: Trained) -> str:
    """The default layer: what the output layer reads, the last hidden layer, as the paper
    compares images by."""
    graph = trained.graph
    source = graph.inputs_of(graph.net.output)[0]
    if source == INPUT:
        raise UsageError(f"{trained.spec.name} has no hidden layer; name one with --layer")
    return source


def feature_store(rows: int, width: int, folder: Path) -> np.ndarray:
    """A float16 [rows, width] array: in memory when small, else a file in `folder`."""
    if rows * width * 2 <= MEMORY_BYTES:
        return np.zeros((rows, width), dtype=np.float16)
    return np.lib.format.open_memmap(
        folder / "features.npy", mode="w+", dtype=np.float16, shape=(rows, width)
    )


@torch.no_grad()
def extract(
    model: nn.Module,
    layer: str,
    split: Split,
    indices: Sequence[int],
    cfg: DataConfig,
    opts: Options,
    batch_size: int,
    out: np.ndarray,
    label: str,
) -> None:
    """`layer`'s activations for the centre crops of images `indices` of `split`, flattened,
    into the rows of `out` in the same order."""
    captured: list[Tensor] = []

    def keep(module: nn.Module, inputs: object, output: Tensor) -> None:
        # a copy: a ReLU after the layer may overwrite its output in place
        captured.append(output.detach().flatten(1).to(torch.float32, copy=True))

    crops = Crops(split, EvalWindows(cfg), cfg.crop)
    batches = [list(indices[i : i + batch_size]) for i in range(0, len(indices), batch_size)]
    loader = batch_loader(crops, batches, cfg.workers)
    handle = model.get_submodule(layer).register_forward_hook(keep)
    row = 0
    try:
        for batch in tqdm(loader, total=len(batches), desc=label, unit="batch", disable=None):
            with torch.autocast(opts.device.type, enabled=opts.amp):
                model(opts.prepare(batch))
            values = captured.pop()
            if not bool(values.abs().max() <= FLOAT16_MAX):
                raise UsageError(
                    f"--layer {layer}: activations beyond float16's range (±{FLOAT16_MAX:g}) "
                    "or not finite; choose another layer"
                )
            out[row : row + len(values)] = values.to(torch.float16).cpu().numpy()
            row += len(values)
    finally:
        handle.remove()


def nearest(
    queries: np.ndarray, bank: np.ndarray, k: int, chunk_bytes: int = CHUNK_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows of `bank` nearest each query by Euclidean distance, and the distances:
    int64 and float64 [Q, k], nearest first, equal distances in row order."""
    q = torch.from_numpy(np.asarray(queries, dtype=np.float64))
    rows, width = bank.shape
    step = max(1, chunk_bytes // (8 * max(1, width)))
    best_d = torch.empty(len(q), 0, dtype=torch.float64)
    best_i = torch.empty(len(q), 0, dtype=torch.int64)
    for start in range(0, rows, step):
        x = torch.from_numpy(np.asarray(bank[start : start + step], dtype=np.float64))
        d2 = torch.stack([(x - one).square_().sum(1) for one in q]) if len(q) else best_d
        index = torch.arange(start, start + len(x)).expand(len(q), -1)
        cand_d, cand_i = torch.cat([best_d, d2], 1), torch.cat([best_i, index], 1)
        # earlier rows come first among the candidates, so a stable sort keeps row order
        order = torch.argsort(cand_d, dim=1, stable=True)[:, :k]
        best_d, best_i = cand_d.gather(1, order), cand_i.gather(1, order)
    return best_i.numpy(), best_d.sqrt().numpy()


def run_neighbours(args: argparse.Namespace) -> int:
    out = check_output(args.output) if args.output else None
    trained = open_trained(args.run)
    layer = trained.layer(args.layer) if args.layer else hidden_layer(trained)
    cfg = trained.data.model_copy(update={"ten_crop": False})
    if args.workers is not None:
        cfg = cfg.model_copy(update={"workers": args.workers})
    device = pick_device(args.device)
    if args.data == "shapes":
        check_cache(cache_root())
    stale: Stale = "allow" if args.allow_stale else "refuse"
    train_set, val_set = open_splits(resolve_data_dir(args.data), cfg, ["train", "val"], stale)
    check_same_classes((train_set.where, train_set.classes), (val_set.where, val_set.classes))
    trained.check_split(val_set)
    if args.k > len(train_set):
        raise UsageError(
            f"--k {args.k}: the training split has {len(train_set)} images; give at most that"
        )
    if args.images > len(val_set):
        raise UsageError(
            f"--images {args.images}: the validation split has {len(val_set)} images; "
            "give at most that"
        )
    chosen = np.random.default_rng(args.seed).choice(len(val_set), args.images, replace=False)
    queries = [int(i) for i in chosen]
    model = trained.model(device)
    opts = options_for(trained.spec, device, trained.stats, note=False)
    width = math.prod(trained.graph.node(layer).shape)
    batch = trained.spec.train.batch_size
    with tempfile.TemporaryDirectory(prefix="netspec-features-") as folder:
        bank = feature_store(len(train_set), width, Path(folder))
        label = f"{layer} of {len(train_set)} training images"
        extract(model, layer, train_set, range(len(train_set)), cfg, opts, batch, bank, label)
        asked = np.zeros((len(queries), width), dtype=np.float16)
        extract(model, layer, val_set, queries, cfg, opts, batch, asked, f"{layer} of queries")
        found, distances = nearest(asked, bank, args.k)
        del bank
    classes = val_set.classes
    result: list[dict[str, Any]] = [
        {
            "image": image_name(val_set, q),
            "class": classes[val_set.targets[q]],
            "neighbours": [
                {
                    "image": image_name(train_set, int(i)),
                    "class": classes[train_set.targets[int(i)]],
                    "distance": float(d),
                }
                for i, d in zip(found[row], distances[row], strict=True)
            ],
        }
        for row, q in enumerate(queries)
    ]
    if out is not None:
        _draw(result, val_set, train_set, queries, found, layer, out)
    if args.json:
        print(json.dumps({"layer": layer, "queries": result}))
        return 0
    same = sum(n["class"] == r["class"] for r in result for n in r["neighbours"])
    total = len(queries) * args.k
    print(
        f"{layer} ({width} values an image): {total} neighbours of {len(queries)} validation "
        f"images among {len(train_set)} training images; {same} of them ({same / total:.0%}) "
        "share the query's class"
    )
    for r, q in zip(result, queries, strict=True):
        names = ", ".join(n["class"] for n in r["neighbours"])
        print(f"  {image_name(val_set, q, short=True)} ({r['class']}): {names}")
    if out is not None:
        print(f"wrote {out}")
    return 0


def _draw(
    result: list[dict[str, Any]],
    val_set: Split,
    train_set: Split,
    queries: list[int],
    found: np.ndarray,
    layer: str,
    out: Path,
) -> None:
    images, labels = [], []
    for r, q, row in zip(result, queries, found, strict=True):
        images.append(torch.from_numpy(np.array(val_set.image(q))))
        labels.append([(r["class"], "black"), ("query", QUIET)])
        for n, i in zip(r["neighbours"], row, strict=True):
            images.append(torch.from_numpy(np.array(train_set.image(int(i)))))
            colour = SAME if n["class"] == r["class"] else OTHER
            labels.append([(n["class"], colour), (f"{n['distance']:.3g}", QUIET)])
    title = f"nearest training images by {layer} (first column: validation image)"
    labelled_grid(torch.stack(images), len(found[0]) + 1, labels, title, out)
