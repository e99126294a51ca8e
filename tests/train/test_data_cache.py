"""A small split decodes each image once; a large one every time it is read."""

import pytest
import torch

from netspec.train import data as D
from netspec.train.shapes_data import ensure_shapes


def test_small_split_decodes_once_and_gives_the_same_pixels(tmp_path, monkeypatch):
    root = ensure_shapes(tmp_path, seed=3, size=32, train_per_class=2, val_per_class=1)
    split = D.open_split(root, "train", resize=32)
    assert split.decoded is not None
    first = [split[i][0] for i in range(len(split))]
    pairs = zip(first, split.samples, strict=True)
    assert all(torch.equal(img, D.load_image(path, 32)) for img, (path, _) in pairs)
    for path, _ in split.samples:
        path.unlink()  # a second epoch reads memory, not the files
    assert all(torch.equal(split[i][0], first[i]) for i in range(len(split)))


def test_large_split_is_not_kept(tmp_path, monkeypatch):
    root = ensure_shapes(tmp_path, seed=3, size=32, train_per_class=2, val_per_class=1)
    monkeypatch.setattr(D, "CACHE_BYTES", 20 * 3 * 32 * 32 - 1)  # one image short of the split
    split = D.open_split(root, "train", resize=32)
    assert split.decoded is None
    split[0]
    split.samples[0][0].unlink()
    with pytest.raises(D.DataError, match="cannot read image"):
        split[0]  # read from the file again, which is gone
