"""The paper's data augmentation (shared/PAPER.md, "Data and augmentation") in torch.

One training image goes, in the paper's order:

    decode → shorter side to `resize`, centre `resize`×`resize` crop (once per load, as uint8)
    → random `crop`×`crop` window → float pixels in [0, 1] → minus the same window of the mean
    → PCA colour noise → horizontal mirror with p = 0.5

Evaluation uses the same scale and mean with the centre window, or ten crops. Every output is
therefore "pixels in [0, 1] minus the training mean" (just [0, 1] when `mean: none`); nothing
is divided by a standard deviation, as in the paper. The training loop then multiplies each
batch by `data.pixel_scale` (255: the paper's raw pixel values) on the device.

All randomness comes from a `torch.Generator` made for one image in one epoch,
`sample_generator(seed, epoch, index)`: an image's crop, mirror and colour noise depend on
(seed, epoch, image index) alone, never on which DataLoader worker or which process loads it.
So the number of workers or processes does not change what a run computes, and two workers
can never repeat each other's draws (a known bug in ports that copy one generator per worker).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from netspec.spec.settings import DataConfig

# The widely copied ImageNet values (PAPER.md), pixels in [0, 1]. PAPER.md lists the ROWS of
# the matrix below; its COLUMNS are the eigenvectors p1, p2, p3. The first column is nearly
# (1, 1, 1)/√3, brightness, as it must be for natural images; read as rows instead, the implied
# covariance would anti-correlate red and green (tests/test_augment.py checks this).
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


@dataclass(frozen=True)
class Window:
    """Where a training crop came from: its top-left corner, and whether it was mirrored."""

    top: int
    left: int
    flip: bool


def rescale_and_center(img: Image.Image, resize: int) -> Image.Image:
    """RGB image with the shorter side scaled to `resize`, then its central square."""
    img = img.convert("RGB")
    w, h = img.size
    scale = resize / min(w, h)
    size = (max(resize, round(w * scale)), max(resize, round(h * scale)))
    if size != img.size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - resize) // 2, (size[1] - resize) // 2
    return img.crop((left, top, left + resize, top + resize))


def to_tensor(img: Image.Image) -> Tensor:
    """uint8 C×H×W tensor of an RGB image (no scaling: that happens after cropping)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


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


def pca_noise(
    img: Tensor, eigvecs: Tensor, eigvals: Tensor, std: float, generator: torch.Generator
) -> Tensor:
    """`img` (float, 3×H×W, [0, 1] scale) plus [p1 p2 p3]·[α1λ1, α2λ2, α3λ3]ᵀ at every pixel.

    α = std · randn(3) from `generator`: normal, not uniform, one draw per call (per image, each
    time it is used). No clipping, as in the paper.
    """
    alpha = torch.randn(3, generator=generator) * std
    return img + (eigvecs @ (alpha * eigvals)).view(3, 1, 1)


def draw_window(size: int, crop: int, mirror: bool, generator: torch.Generator) -> Window:
    """A uniformly random crop position in a size×size image, and a mirror coin (p = 0.5)."""
    top, left = torch.randint(0, size - crop + 1, (2,), generator=generator).tolist()
    flip = mirror and bool(torch.rand((), generator=generator) < 0.5)
    return Window(top, left, flip)


def ten_crop(img: Tensor, crop: int) -> Tensor:
    """10×C×crop×crop: top-left, top-right, bottom-left, bottom-right, centre, then the same
    five mirrored (torchvision's order)."""
    h, w = img.shape[-2:]
    ct, cl = (h - crop) // 2, (w - crop) // 2
    corners = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop), (ct, cl)]
    five = torch.stack([img[:, t : t + crop, x : x + crop] for t, x in corners])
    return torch.cat([five, five.flip(-1)])


def mean_image(cfg: DataConfig, stats: Stats | None) -> Tensor | None:
    """What `cfg.mean` subtracts, as a 3×R×R image (per-channel means broadcast), or None."""
    if cfg.mean == "none":
        return None
    if stats is None:
        raise ValueError(f"data.mean: {cfg.mean} needs training-set statistics")
    if cfg.mean == "pixel":
        return stats.mean
    return stats.mean.mean((1, 2), keepdim=True).expand_as(stats.mean)


def needs_stats(cfg: DataConfig) -> bool:
    """Whether these settings use anything fitted on the training set."""
    return cfg.mean != "none" or cfg.pca == "dataset"


def _normalise(img: Tensor, mean: Tensor | None, top: int, left: int) -> Tensor:
    """uint8 crop at (top, left) → float [0, 1] minus the mean's matching window."""
    x = img.to(torch.float32) / 255
    if mean is None:
        return x
    h, w = x.shape[-2:]
    return x - mean[:, top : top + h, left : left + w]


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of image `index`'s augmentation in `epoch`.

    Its seed is the `index`-th child of the epoch's `SeedSequence([seed, epoch])` (what
    `.spawn()` would hand out), so it is independent of the epoch's shuffle seed, drawn from
    that sequence itself, and of every other image's.
    """
    sequence = np.random.SeedSequence([seed % 2**64, epoch], spawn_key=(index,))
    return torch.Generator().manual_seed(int(sequence.generate_state(1, np.uint64)[0]))


class TrainTransform:
    """uint8 3×R×R image → float 3×crop×crop: random window, mean, colour noise, mirror.

    It holds no random state: each call draws from the generator it is given.
    """

    def __init__(self, cfg: DataConfig, stats: Stats | None) -> None:
        self.crop, self.mirror, self.pca_std = cfg.crop, cfg.mirror, cfg.pca_std
        self.mean = mean_image(cfg, stats)
        if cfg.pca == "dataset":
            if stats is None:
                raise ValueError("data.pca: dataset needs training-set statistics")
            self.pca: tuple[Tensor, Tensor] | None = (stats.eigvals, stats.eigvecs)
        else:
            self.pca = IMAGENET_PCA if cfg.pca == "imagenet" else None

    def apply(self, img: Tensor, generator: torch.Generator) -> tuple[Tensor, Window]:
        """The augmented image and the window it came from. Draw order: window, then α."""
        window = draw_window(img.shape[-1], self.crop, self.mirror, generator)
        t, left, c = window.top, window.left, self.crop
        x = _normalise(img[:, t : t + c, left : left + c], self.mean, t, left)
        if self.pca is not None:
            eigvals, eigvecs = self.pca
            x = pca_noise(x, eigvecs, eigvals, self.pca_std, generator)
        return (x.flip(-1) if window.flip else x), window

    def __call__(self, img: Tensor, generator: torch.Generator) -> Tensor:
        return self.apply(img, generator)[0]


class EvalTransform:
    """uint8 3×R×R image → the centre crop (3×c×c), or the ten crops (10×3×c×c) when
    `cfg.ten_crop`; same scale and mean as training, no randomness."""

    def __init__(self, cfg: DataConfig, stats: Stats | None) -> None:
        self.crop, self.ten = cfg.crop, cfg.ten_crop
        self.mean = mean_image(cfg, stats)

    def __call__(self, img: Tensor) -> Tensor:
        if self.ten:
            return ten_crop(_normalise(img, self.mean, 0, 0), self.crop)
        top = left = (img.shape[-1] - self.crop) // 2
        c = self.crop
        return _normalise(img[:, top : top + c, left : left + c], self.mean, top, left)
