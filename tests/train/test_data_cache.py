"""A small split decodes each image once; a large one every time it is read."""

import numpy as np
import pytest

from netspec.train import folder as D
from netspec.train.decode import load_image
from netspec.train.shapes_data import ensure_shapes


def test_small_split_decodes_once_and_gives_the_same_pixels(tmp_path, monkeypatch):
    root = ensure_shapes(tmp_path, seed=3, size=32, train_per_class=2, val_per_class=1)
    split = D.open_split(root, "train", resize=32)
    assert split.decoded is not None
    first = [split.image(i) for i in range(len(split))]
    pairs = zip(first, split.samples, strict=True)
    assert all(np.array_equal(img, load_image(path, 32).numpy()) for img, (path, _) in pairs)
    for path, _ in split.samples:
        path.unlink()  # a second epoch reads memory, not the files
    assert all(np.array_equal(split.image(i), first[i]) for i in range(len(split)))


def test_large_split_is_not_kept(tmp_path, monkeypatch):
    root = ensure_shapes(tmp_path, seed=3, size=32, train_per_class=2, val_per_class=1)
    monkeypatch.setattr(D, "CACHE_BYTES", 20 * 3 * 32 * 32 - 1)  # one image short of the split
    split = D.open_split(root, "train", resize=32)
    assert split.decoded is None
    split.image(0)
    split.samples[0][0].unlink()
    with pytest.raises(D.DataError, match="cannot read image"):
        split.image(0)  # read from the file again, which is gone
