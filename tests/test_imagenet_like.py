"""The generated ImageNet-like folder: its layout, its JPEGs and that its bytes follow the seed."""

from pathlib import Path

import pytest
from PIL import Image

from benchmarks.imagenet_like import SIZES, make_folder


def _bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.JPEG"))}


@pytest.mark.slow  # photo-like JPEGs drawn and encoded: the slow lane
def test_folder_of_textured_jpegs_that_follow_the_seed(tmp_path: Path):
    root = make_folder(tmp_path / "a", classes=2, train_per_class=3, val_per_class=1)
    assert root == tmp_path / "a"
    files = _bytes(root)
    assert list(files) == [
        f"{split}/n0000000{c}/{i}.JPEG"
        for split, count in (("train", 3), ("val", 1))
        for c in range(2)
        for i in range(count)
    ]
    for name in files:
        with Image.open(root / name) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size in SIZES
    # Texture, not flat colour: a flat 500×375 image is a few KB at quality 90.
    assert sum(map(len, files.values())) / len(files) > 60_000

    again = make_folder(tmp_path / "b", classes=2, train_per_class=3, val_per_class=1)
    assert _bytes(again) == files
    other = _bytes(
        make_folder(tmp_path / "c", classes=2, train_per_class=3, val_per_class=1, seed=1)
    )
    assert other.keys() == files.keys()
    assert all(other[name] != files[name] for name in files)
