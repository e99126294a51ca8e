"""Image files to the uint8 squares that training reads: the paper's preprocessing.

Every image, whatever its mode, becomes 8-bit RGB; its shorter side is scaled to `resize` and
the central `resize`×`resize` square kept (docs/paper.md, "Data and augmentation"). The image
folder's loader workers and `netspec pack` both call `load_image`, so a packed store holds
exactly the pixels a folder run decodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from netspec.errors import DataError

# Modes whose values are not 8-bit, and the value that is white in each: Pillow holds 16-bit
# PNGs and TIFFs as I;16 and 16-bit PGMs as I, and floating-point images hold intensities in
# [0, 1]. Pillow's own convert() clips all of them at 255, turning 16-bit images white.
WIDE_WHITE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of an image in any mode Pillow opens.

    Grey of more than 8 bits is scaled (value / white · 255, rounded, clipped), not clipped;
    transparency (an alpha channel, or a palette's transparent entry) is composited over
    white, as an image viewer shows it, rather than dropped to reveal whatever colour the
    transparent pixels happen to store; CMYK, 1-bit, palettes and the rest convert as Pillow
    converts them.
    """
    if img.mode in WIDE_WHITE:
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        grey = np.clip(np.rint(values * (255 / WIDE_WHITE[img.mode])), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    img = img.convert(PREMULTIPLIED[img.mode]) if img.mode in PREMULTIPLIED else img
    if img.mode in ("LA", "PA", "RGBA") or "transparency" in img.info:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def rescale_and_center(img: Image.Image, resize: int) -> Image.Image:
    """RGB image with the shorter side scaled to `resize`, then its central square."""
    img = to_rgb(img)
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


def load_image(path: Path, resize: int) -> Tensor:
    """Decode one image file to uint8 3×resize×resize (shorter side scaled, centre square)."""
    try:
        with Image.open(path) as img:
            return to_tensor(rescale_and_center(img, resize))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"cannot read image {path}: {reason}; replace or delete it") from None
