"""Image folders, their errors, cached statistics, loader seeding, and the built-in `shapes`."""

import os
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import netspec.train.data
import netspec.train.folder
import netspec.train.shapes_data
from netspec.errors import DataError
from netspec.spec.settings import DataConfig
from netspec.train.augment import TrainWindows
from netspec.train.data import Crops, open_data, open_split, resolve_data_dir
from netspec.train.draws import draw
from netspec.train.sampling import GlobalBatches, shard
from netspec.train.shapes_data import CLASSES, ensure_shapes


def write_image(path: Path, seed: int, size=(12, 10), suffix_format="PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=suffix_format)


def make_folder(root: Path, per_class=(3, 2), same_image=False) -> Path:
    for split, count in zip(["train", "val"], per_class, strict=True):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(count):
                write_image(root / split / name / f"{i}.png", 0 if same_image else 100 * c + i)
    return root


def small_cfg(**kw) -> DataConfig:
    return DataConfig(**{"resize": 8, "crop": 6, "workers": 0, **kw})


def one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# --- bad folders -------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        open_split(missing, "train")
    msg = one_line_naming(err, missing)
    assert f"expected {missing}/train/<class>/*.png|jpg and {missing}/val/" in msg


def test_missing_split(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError) as err:
        open_split(tmp_path, "val")
    assert "not found" in one_line_naming(err, tmp_path / "val")


def test_no_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "stray.png").write_bytes(b"")
    with pytest.raises(DataError) as err:
        open_split(tmp_path, "train")
    assert "has no class folders" in one_line_naming(err, tmp_path / "train")


def test_class_without_images(tmp_path):
    write_image(tmp_path / "train" / "cat" / "a.png", 0)
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as err:
        open_split(tmp_path, "train")
    assert "has no images" in one_line_naming(err, tmp_path / "train" / "dog")


def test_train_and_val_classes_must_match(tmp_path):
    make_folder(tmp_path)
    write_image(tmp_path / "val" / "emu" / "0.png", 9)
    with pytest.raises(DataError) as err:
        open_data(tmp_path, small_cfg(), tmp_path / "cache")
    assert "only in train: -; only in val: emu" in one_line_naming(err, tmp_path / "val")


def test_corrupt_image_found_eagerly_when_fitting_stats(tmp_path):
    bad = make_folder(tmp_path) / "train" / "dog" / "x.png"
    bad.write_bytes(b"\x89PNG garbage, not an image")
    with pytest.raises(DataError) as err:
        open_data(tmp_path, small_cfg(), tmp_path / "cache")
    assert "cannot read image" in one_line_naming(err, bad)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_found_lazily_when_loading(tmp_path, workers):
    bad = make_folder(tmp_path) / "val" / "cat" / "x.png"
    bad.write_bytes(b"garbage")
    data = open_data(tmp_path, small_cfg(workers=workers), tmp_path / "c")
    train, val = data.train_loader(2, 0, 0), data.val_loader(2)
    assert len(list(train)) == 3  # 6 good training images
    with pytest.raises(DataError) as err:
        list(val)
    one_line_naming(err, bad)  # one line even when re-raised from a worker process
    # torch's re-raise leaves a frame <-> exception cycle holding the loader iterator; if gc
    # (not refcounting) frees it, its workers miss the stop signal and cost 5 s each.
    traceback.clear_frames(err.tb)


def test_jpeg_png_any_case_and_dotfiles_ignored(tmp_path):
    write_image(tmp_path / "train" / "cat" / "A.JPG", 1, suffix_format="JPEG")
    write_image(tmp_path / "train" / "cat" / "b.Png", 2)
    write_image(tmp_path / "train" / "cat" / "deep" / "c.jpeg", 3, suffix_format="JPEG")
    (tmp_path / "train" / "cat" / "._A.JPG").write_bytes(b"macOS resource fork")
    split = open_split(tmp_path, "train", resize=8)
    assert [p.name for p, _ in split.samples] == ["A.JPG", "b.Png", "c.jpeg"]
    assert [split.image(i).shape for i in range(3)] == [(3, 8, 8)] * 3


def test_hidden_folders_are_neither_classes_nor_images(tmp_path):
    make_folder(tmp_path)
    write_image(tmp_path / "train" / ".ipynb_checkpoints" / "0.png", 7)  # not a class
    write_image(tmp_path / "train" / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", 8)
    write_image(tmp_path / "train" / "cat" / "deep" / "5.png", 9)  # a visible sub-folder counts
    split = open_split(tmp_path, "train")
    assert split.classes == ["cat", "dog"]
    assert [str(p.relative_to(split.folder)) for p, _ in split.samples] == [
        "cat/0.png",
        "cat/1.png",
        "cat/2.png",
        "cat/deep/5.png",
        "dog/0.png",
        "dog/1.png",
        "dog/2.png",
    ]
    assert split.targets == [0, 0, 0, 0, 1, 1, 1]


def test_a_class_of_hidden_files_only_has_no_images(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "emu").mkdir()
    write_image(tmp_path / "train" / "emu" / ".ipynb_checkpoints" / "0.png", 7)
    with pytest.raises(DataError) as err:
        open_split(tmp_path, "train")
    assert "has no images" in one_line_naming(err, tmp_path / "train" / "emu")


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(netspec.train.data, "ensure_shapes", lambda: tmp_path / "built-in")
    assert resolve_data_dir("shapes") == tmp_path / "built-in"
    assert resolve_data_dir("some/dir") == Path("some/dir")
    assert resolve_data_dir("~/pics") == Path.home() / "pics"


# --- statistics ----------------------------------------------------------------------------


def test_stats_fitted_from_the_images_and_cached(tmp_path, monkeypatch):
    make_folder(tmp_path / "d")
    data = open_data(tmp_path / "d", small_cfg(), tmp_path / "cache")
    imgs = [
        np.asarray(Image.open(p).resize((10, 8), Image.Resampling.BILINEAR).crop((1, 0, 9, 8)))
        for p, _ in data.train_set.samples
    ]
    want = np.stack(imgs).astype(np.float64).mean(0).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(data.stats.mean.numpy(), want, atol=1e-6)
    assert len(list((tmp_path / "cache").glob("stats-*.pt"))) == 1

    def refit(_):
        raise AssertionError("refitted although cached")

    monkeypatch.setattr(netspec.train.folder, "fit_stats", refit)
    again = open_data(tmp_path / "d", small_cfg(), tmp_path / "cache")
    assert torch.equal(again.stats.mean, data.stats.mean)
    assert torch.equal(again.stats.eigvecs, data.stats.eigvecs)
    monkeypatch.undo()
    open_data(tmp_path / "d", small_cfg(resize=7), tmp_path / "cache")  # new resize: new key
    write_image(tmp_path / "d" / "train" / "cat" / "0.png", 55)  # changed file: new key
    changed = open_data(tmp_path / "d", small_cfg(), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("stats-*.pt"))) == 3
    assert not torch.equal(changed.stats.mean, data.stats.mean)


def test_no_stats_needed_without_mean_and_dataset_pca(tmp_path):
    make_folder(tmp_path / "d")
    data = open_data(tmp_path / "d", small_cfg(mean="none", pca="imagenet"), tmp_path / "c")
    assert data.stats is None
    assert not (tmp_path / "c").exists()


def test_stats_images_limits_the_images_read(tmp_path):
    make_folder(tmp_path / "d")
    bad = tmp_path / "d" / "train" / "dog" / "2.png"  # last image: not among 3 evenly spread
    bad.write_bytes(b"garbage")
    data = open_data(tmp_path / "d", small_cfg(stats_images=3), tmp_path / "c")
    assert data.stats is not None  # fitted on images 0, 2 and 4 only


# --- loaders and seeding -------------------------------------------------------------------


def epoch_batches(root: Path, cfg: DataConfig, seed: int, epoch: int) -> list:
    data = open_data(root, cfg, root / "cache")
    finish = data.finish(torch.device("cpu"))
    return [(finish(b), b.labels.clone()) for b in data.train_loader(1, seed, epoch)]


def test_loader_shapes_and_classes(tmp_path):
    make_folder(tmp_path)
    cfg = small_cfg(ten_crop=True, workers=2)
    data = open_data(tmp_path, cfg, tmp_path / "c")
    train, val, classes = data.train_loader(4, 0, 0), data.val_loader(4), data.classes
    assert classes == ["cat", "dog"]
    batch = next(iter(train))
    assert batch.crops.shape == (4, 3, 6, 6) and batch.crops.dtype == torch.uint8
    assert batch.windows.alpha.shape == (4, 3) and batch.windows.top.shape == (4,)
    assert data.finish(torch.device("cpu"))(batch).dtype == torch.float32
    labels = torch.cat([b.labels for b in train]).tolist()
    assert len(train) == 1 and len(labels) == 4  # 6 images: the partial batch of 2 is dropped
    assert labels.count(0) <= 3 and labels.count(1) <= 3
    batch = next(iter(val))
    assert batch.crops.shape == (4, 10, 3, 6, 6)
    assert batch.labels.tolist() == [0, 0, 1, 1] and batch.indices.tolist() == [0, 1, 2, 3]
    assert not train.persistent_workers and train.num_workers == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_and_epoch_reproduce_the_batches(tmp_path, workers):
    make_folder(tmp_path)
    cfg = small_cfg(workers=workers)
    first = epoch_batches(tmp_path, cfg, 1, 3)
    again = epoch_batches(tmp_path, cfg, 1, 3)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, again, strict=True)
    )
    other = epoch_batches(tmp_path, cfg, 1, 4)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_each_image_draws_from_its_own_key_whatever_the_workers(tmp_path):
    make_folder(tmp_path, same_image=True)  # every image identical: only augmentation differs
    cfg = small_cfg(pca="imagenet", mean="none")
    data = open_data(tmp_path, cfg, tmp_path / "c")
    crops = Crops(data.train_set, TrainWindows(cfg, 1, 3), cfg.crop)
    # Image i's draws are those of its key (seed, epoch, i) alone, whatever batch it is in
    for i in range(len(crops)):
        batch = crops.__getitems__([i])
        want = draw(1, 3, np.array([i]), room=2, mirror=True)
        assert batch.windows.top.tolist() == want.top.tolist()
        assert np.array_equal(batch.windows.alpha.numpy(), want.alpha)
    finish = data.finish(torch.device("cpu"))
    outputs = finish(crops.__getitems__(range(6)))
    for i in range(6):
        for j in range(i):
            assert not torch.equal(outputs[i], outputs[j]), (i, j)
    # ...so the batches do not depend on how many worker processes load them
    alone = epoch_batches(tmp_path, cfg, 1, 3)
    two = epoch_batches(tmp_path, small_cfg(pca="imagenet", mean="none", workers=2), 1, 3)
    assert len(alone) == 6
    for (xa, ya), (xb, yb) in zip(alone, two, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_replicas_take_contiguous_slices_of_the_same_global_batches(tmp_path):
    make_folder(tmp_path, per_class=(9, 2))  # 18 images: three global batches of 6
    data = open_data(tmp_path, small_cfg(workers=2), tmp_path / "c")
    finish = data.finish(torch.device("cpu"))
    whole = [(finish(b), b.labels) for b in data.train_loader(6, 5, 2)]
    data.cfg = small_cfg(workers=0)
    parts = [
        [(finish(b), b.labels) for b in data.train_loader(6, 5, 2, replica=r, replicas=3)]
        for r in range(3)
    ]
    assert len(whole) == 3 and all(len(p) == 3 for p in parts)
    for step, (x, y) in enumerate(whole):
        assert all(len(p[step][1]) == 2 for p in parts)
        assert torch.equal(torch.cat([p[step][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[step][1] for p in parts]), y)


def test_global_batches_cover_the_set_once_and_drop_the_partial_one():
    replicas = [list(GlobalBatches(23, 6, seed=4, replica=r, replicas=2)) for r in range(2)]
    steps = [a + b for a, b in zip(*replicas, strict=True)]
    assert [len(s) for s in steps] == [6, 6, 6]  # 23 = 3 × 6 + 5 dropped
    seen = [i for s in steps for i in s]
    assert len(set(seen)) == 18 and set(seen) <= set(range(23))
    assert steps != [list(range(k, k + 6)) for k in (0, 6, 12)]  # shuffled
    assert [i for s in GlobalBatches(23, 6, seed=4) for i in s] == seen  # one replica: same
    with pytest.raises(ValueError, match="does not split into 4 replicas"):
        GlobalBatches(23, 6, seed=4, replicas=4)


def test_validation_shards_hold_every_image_once():
    for n, k in [(30, 2), (31, 3), (2, 4)]:
        shards = [shard(n, r, k) for r in range(k)]
        assert [i for s in shards for i in s] == list(range(n))


# --- shapes --------------------------------------------------------------------------------


def shapes_pixels(folder: Path) -> dict[str, np.ndarray]:
    return {
        str(p.relative_to(folder)): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))
    }


def test_shapes_is_deterministic_complete_and_cached(tmp_path):
    a = ensure_shapes(tmp_path / "a", seed=3, size=32, train_per_class=2, val_per_class=1)
    b = ensure_shapes(tmp_path / "b", seed=3, size=32, train_per_class=2, val_per_class=1)
    pa, pb = shapes_pixels(a), shapes_pixels(b)
    assert len(pa) == 3 * len(CLASSES) and len(CLASSES) >= 10
    assert pa.keys() == pb.keys()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert all(v.shape == (32, 32, 3) for v in pa.values())
    assert open_split(a, "train").classes == open_split(a, "val").classes == sorted(CLASSES)

    other = ensure_shapes(tmp_path / "a", seed=4, size=32, train_per_class=2, val_per_class=1)
    assert other != a
    assert not np.array_equal(
        shapes_pixels(other)["train/star/0000.png"], pa["train/star/0000.png"]
    )

    stamp = a / "train" / "star" / "0000.png"
    os.utime(stamp, ns=(1, 1))
    assert ensure_shapes(tmp_path / "a", seed=3, size=32, train_per_class=2, val_per_class=1) == a
    assert stamp.stat().st_mtime_ns == 1  # not regenerated
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([a.name, other.name])


def test_shapes_crash_leaves_no_half_data_set(tmp_path, monkeypatch):
    calls = []

    def crash(name, rng, size):
        calls.append(name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return Image.new("RGB", (size, size))

    monkeypatch.setattr(netspec.train.shapes_data, "draw_image", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(tmp_path, size=8, train_per_class=1, val_per_class=1)
    assert list(tmp_path.iterdir()) == []


def test_shapes_default_cache_is_netspec_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path))
    folder = ensure_shapes(size=8, train_per_class=1, val_per_class=1)
    assert folder.parent == tmp_path
    assert folder.name == "shapes-v1-seed0-8px-1+1"


def test_damaged_stats_cache_is_refitted(tmp_path):
    make_folder(tmp_path / "d")
    first = open_data(tmp_path / "d", small_cfg(), tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("stats-*.pt")
    cached.write_bytes(b"half a file")
    again = open_data(tmp_path / "d", small_cfg(), tmp_path / "cache")
    assert torch.equal(again.stats.mean, first.stats.mean)
    assert torch.load(cached, weights_only=True)["mean"].shape == (3, 8, 8)
