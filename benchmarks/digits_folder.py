"""Write scikit-learn's bundled handwritten digits as a 64×64 ImageFolder tree.

    python benchmarks/digits_folder.py /tmp/digits
    netspec train specs/alexnet-mini.yaml --data /tmp/digits

A second small folder of real images, nothing like `shapes`, to check that
specs/alexnet-mini.yaml learns out of the box on other data. scikit-learn ships the 1,797
8×8 images inside its package, so nothing is downloaded; it is needed only for this script
(`pip install scikit-learn`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    from sklearn.datasets import load_digits

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--val-share", type=float, default=0.2)
    args = p.parse_args()
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    val = set(order[: int(len(order) * args.val_share)].tolist())
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "val" if i in val else "train"
        folder = args.out / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image / 16 * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((64, 64), Image.BILINEAR).convert("RGB").save(
            folder / f"{i:04d}.png"
        )
    print(f"wrote {len(digits.images)} images ({len(val)} val) into {args.out}")


if __name__ == "__main__":
    main()
