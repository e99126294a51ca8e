"""The paper's data augmentation (docs/paper.md, "Data and augmentation"), a batch at a time.

A training image is a uint8 `resize`×`resize` square (`netspec.train.decode`, or a packed
store). It goes, in the paper's order:

    random `crop`×`crop` window → float pixels in [0, 1] → minus the same window of the mean
    → PCA colour noise → horizontal mirror with p = 0.5 → × `data.pixel_scale`

The work is split where it is cheapest. The loader (in its worker processes) only cuts the
uint8 windows out of the squares: a memory copy, four times smaller than float pixels.
`Finish` does everything else to the whole batch on the device the model is on, CPU or CUDA
(and divides by `data.std` after the noise where a spec asks, as torchvision's nets expect).
Whether the squares came from an image folder or a packed store, the same `Finish` code
completes the batch, so the two give the same numbers bit for bit.

Every random choice comes from `netspec.train.draws`: a function of (seed, epoch, image
index) alone. Evaluation uses the same scale and mean with the centre window, or ten crops,
and no noise. Every output is "(pixels in [0, 1] minus the training mean) × pixel_scale";
nothing is divided by a standard deviation, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from netspec.spec.settings import DataConfig
from netspec.train.draws import draw

# The widely copied ImageNet values (docs/paper.md), pixels in [0, 1]. docs/paper.md lists the
# ROWS of the matrix below; its COLUMNS are the eigenvectors p1, p2, p3. The first column is
# nearly (1, 1, 1)/√3, brightness, as it must be for natural images; read as rows instead, the
# implied covariance would anti-correlate red and green (tests/train/test_augment.py checks it).
IMAGENET_PCA: tuple[Tensor, Tensor] = (
    torch.tensor([0.2175, 0.0188, 0.0045]),
    torch.tensor(
        [
            [-0.5675, 0.7192, 0.4009],
            [-0.5808, -0.0045, -0.8140],
            [-0.5836, -0.6948, 0.4203],
        ]
    ),
)


@dataclass(frozen=True)
class Stats:
    """What augmentation needs from the training set, fitted once (pixel scale [0, 1])."""

    mean: Tensor  # 3×resize×resize mean image, float32
    eigvals: Tensor  # (3,) RGB covariance eigenvalues, descending
    eigvecs: Tensor  # 3×3, column i is the eigenvector of eigvals[i]


def fit_pca(pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending) and eigenvectors (as columns) of the covariance of N×3 pixels."""
    x = pixels.to(torch.float64)
    x = x - x.mean(0)
    return _eig_descending(x.T @ x / len(x))


def fit_stats(images: Iterable[Tensor]) -> Stats:
    """Mean image and RGB PCA of uint8 3×R×R images, in one pass, pixels scaled to [0, 1].

    Sums are kept in float64 so thousands of images add up without rounding drift.
    """
    total, n_images = None, 0
    rgb_sum = torch.zeros(3, dtype=torch.float64)
    rgb_outer = torch.zeros(3, 3, dtype=torch.float64)
    for img in images:
        x = img.to(torch.float64) / 255
        total = x if total is None else total + x
        n_images += 1
        flat = x.reshape(3, -1)
        rgb_sum += flat.sum(1)
        rgb_outer += flat @ flat.T
    if total is None:
        raise ValueError("fit_stats needs at least one image")
    n_pixels = n_images * total[0].numel()
    mu = rgb_sum / n_pixels
    eigvals, eigvecs = _eig_descending(rgb_outer / n_pixels - torch.outer(mu, mu))
    return Stats((total / n_images).to(torch.float32), eigvals, eigvecs)


def _eig_descending(cov: Tensor) -> tuple[Tensor, Tensor]:
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending; the paper lists λ1 ≥ λ2 ≥ λ3
    return eigvals.flip(0).to(torch.float32), eigvecs.flip(1).to(torch.float32)


def mean_image(cfg: DataConfig, stats: Stats | None) -> Tensor | None:
    """What `cfg.mean` subtracts, as a 3×R×R image (per-channel means broadcast), or None."""
    if cfg.mean == "none":
        return None
    r = cfg.resize
    if not isinstance(cfg.mean, str):  # the user's three values
        return torch.tensor(cfg.mean, dtype=torch.float32).view(3, 1, 1).expand(3, r, r)
    if stats is None:
        raise ValueError(f"data.mean: {cfg.mean} needs training-set statistics")
    if cfg.mean == "pixel":
        return stats.mean
    return stats.mean.mean((1, 2), keepdim=True).expand_as(stats.mean)


def needs_stats(cfg: DataConfig) -> bool:
    """Whether these settings use anything fitted on the training set."""
    return cfg.mean in ("pixel", "channel") or cfg.pca == "dataset"


class Windows(NamedTuple):
    """Where each crop of a batch is cut and whether it is mirrored: int64 corners and bool
    flips of shape [B] (one crop an image) or [B, V] (V views, as ten-crop testing takes),
    and each image's colour-noise weights α ~ N(0, 1)³ (float32 [B, 3]) when training."""

    top: Tensor
    left: Tensor
    flip: Tensor
    alpha: Tensor | None


class Batch(NamedTuple):
    """What a loader hands over: uint8 crops ([B, 3, c, c], or [B, V, 3, c, c]), the class
    labels and dataset indices of the B images, and the windows the crops came from."""

    crops: Tensor
    labels: Tensor
    indices: Tensor
    windows: Windows


class TrainWindows:
    """An epoch's training windows: a random crop and mirror per image, drawn from
    (seed, epoch, index) by `netspec.train.draws`."""

    def __init__(self, cfg: DataConfig, seed: int, epoch: int) -> None:
        self.room, self.mirror = cfg.resize - cfg.crop, cfg.mirror
        self.seed, self.epoch = seed, epoch

    def __call__(self, indices: np.ndarray) -> Windows:
        d = draw(self.seed, self.epoch, indices, self.room, self.mirror)
        tensors = (torch.from_numpy(a) for a in (d.top, d.left, d.flip, d.alpha))
        return Windows(*tensors)


class EvalWindows:
    """The centre window, or the ten crops: four corners and the centre, then the same five
    mirrored (torchvision's order)."""

    def __init__(self, cfg: DataConfig) -> None:
        room, mid = cfg.resize - cfg.crop, (cfg.resize - cfg.crop) // 2
        corners = [(0, 0), (0, room), (room, 0), (room, room), (mid, mid)]
        views = corners * 2 if cfg.ten_crop else [(mid, mid)]
        self.top = torch.tensor([t for t, _ in views])
        self.left = torch.tensor([x for _, x in views])
        self.flip = torch.arange(len(views)) >= 5
        self.ten = cfg.ten_crop

    def __call__(self, indices: np.ndarray) -> Windows:
        b = len(indices)
        top, left, flip = (t.expand(b, -1).contiguous() for t in (self.top, self.left, self.flip))
        if not self.ten:
            top, left, flip = top[:, 0], left[:, 0], flip[:, 0]
        return Windows(top, left, flip, None)


class Finish:
    """Completes a loader's batch on `device`: float, mean window, colour noise, mirror, scale.

    Every step works on each image alone (no sum over the batch), so an image's result does
    not depend on which batch, process or loader worker carried it.
    """

    def __init__(self, cfg: DataConfig, stats: Stats | None, device: torch.device) -> None:
        self.device, self.scale, self.crop = device, cfg.pixel_scale, cfg.crop
        mean = mean_image(cfg, stats)
        self.mean = None if mean is None else mean.to(device)
        if cfg.pca == "dataset":
            if stats is None:
                raise ValueError("data.pca: dataset needs training-set statistics")
            pca: tuple[Tensor, Tensor] | None = (stats.eigvals, stats.eigvecs)
        else:
            pca = IMAGENET_PCA if cfg.pca == "imagenet" else None
        # p_i · λ_i · σ: the colour noise is Σ_i α_i (p_i λ_i σ), one RGB offset an image
        self.pca = None if pca is None else (pca[1] * pca[0] * cfg.pca_std).to(device)
        std = None if cfg.std is None else torch.tensor(cfg.std, dtype=torch.float32)
        self.std = None if std is None else std.view(1, 3, 1, 1).to(device)

    def __call__(self, batch: Batch) -> Tensor:
        """float [N, 3, c, c] on the device, N = B (one crop an image) or B·V (views in order)."""
        w = batch.windows
        x = batch.crops.to(self.device, non_blocking=True).flatten(0, -4)
        x = x.to(torch.float32).div_(255)
        c, mean = self.crop, self.mean
        tops, lefts, flips = (v.flatten().tolist() for v in (w.top, w.left, w.flip))
        for j, (t, left, flip) in enumerate(zip(tops, lefts, flips, strict=True)):
            if mean is not None:
                x[j].sub_(mean[:, t : t + c, left : left + c])
            if flip:  # before the colour noise, which is the same at every pixel of an image
                x[j] = x[j].flip(-1)
        if self.pca is not None and w.alpha is not None:
            a, p = w.alpha.to(self.device, non_blocking=True), self.pca
            # written out term by term: a matrix product may sum in an order that depends on
            # the batch size, and one image's pixels must not
            noise = a[:, 0:1] * p[:, 0] + a[:, 1:2] * p[:, 1] + a[:, 2:3] * p[:, 2]
            x.add_(noise[:, :, None, None])
        if self.std is not None:
            x.div_(self.std)
        return x.mul_(self.scale)
