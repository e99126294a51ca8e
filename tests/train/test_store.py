"""`netspec pack` and packed stores: the pixels, the statistics, and every bad input as one line.

Each store is checked against the folder it was packed from, read through netspec's own folder
path (which decodes with PIL): same squares, same labels, same statistics, same batches.
"""

import errno
import json
import os
import shutil
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import netspec.train.pack
from netspec.cli import main
from netspec.errors import DataError, UsageError
from netspec.spec.settings import DataConfig
from netspec.train.data import open_data, open_split, open_val
from netspec.train.decode import load_image
from netspec.train.pack import pack
from netspec.train.store import open_store


def write_image(path: Path, seed: int, size=(40, 30), fmt="PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def make_folder(root: Path, per_class=(4, 2)) -> Path:
    """Two classes of PNGs and JPEGs, landscape and portrait, a hidden file in each class."""
    for split, count in zip(["train", "val"], per_class, strict=True):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(count):
                fmt, size = ("JPEG", (30, 40)) if i % 2 else ("PNG", (40, 30))
                suffix = ".jpg" if fmt == "JPEG" else ".png"
                write_image(root / split / name / f"{i}{suffix}", 100 * c + i + 7, size, fmt)
            (root / split / name / ".hidden.png").write_bytes(b"not read")
    return root


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"resize": 16, "crop": 12, "workers": 0, **kw})


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "pics")


@pytest.fixture
def store(folder, tmp_path) -> Path:
    pack(folder, tmp_path / "store", resize=16, workers=0, stats_images=10000)
    return tmp_path / "store"


def one_line(err: pytest.ExceptionInfo, *names: object) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    for name in names:
        assert str(name) in msg, msg
    return msg


# --- what a store holds ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_store_holds_the_folders_squares_labels_and_files(folder, tmp_path, workers, capsys):
    out = tmp_path / "s"
    pack(folder, out, resize=16, workers=workers, stats_images=10000)
    said = capsys.readouterr().out
    assert f"packed {folder} into {out}: train 8 images, val 4 images;" in said
    assert " MB on disk; " in said and " s (" in said
    for split in ("train", "val"):
        source = open_split(folder, split, 16)
        pixels = np.load(out / f"{split}.npy")
        assert pixels.shape == (len(source), 3, 16, 16) and pixels.dtype == np.uint8
        for i, (path, _) in enumerate(source.samples):
            assert np.array_equal(pixels[i], load_image(path, 16).numpy()), path
        assert np.load(out / f"{split}-labels.npy").tolist() == source.targets
        files = json.loads((out / f"{split}-files.json").read_text())
        assert files["paths"] == [str(p.relative_to(source.folder)) for p, _ in source.samples]
        assert files["sizes"] == [p.stat().st_size for p, _ in source.samples]
    manifest = json.loads((out / "store.json").read_text())
    assert manifest["classes"] == ["cat", "dog"] and manifest["resize"] == 16
    assert manifest["splits"] == {"train": {"images": 8}, "val": {"images": 4}}
    assert manifest["source"] == str(folder.resolve()) and manifest["version"] == 1
    assert not (out / "pack.json").exists()
    assert oct((out / "store.json").stat().st_mode & 0o044) == oct(0o044)  # others may read


def test_store_and_folder_give_the_same_statistics_and_batches(folder, store, tmp_path):
    c = cfg(pca="dataset", ten_crop=True)
    from_folder = open_data(folder, c, tmp_path / "c1")
    from_store = open_data(store, c, tmp_path / "c2")
    for field in ("mean", "eigvals", "eigvecs"):
        assert torch.equal(getattr(from_folder.stats, field), getattr(from_store.stats, field))
    assert not (tmp_path / "c2").exists()  # the store's own statistics: nothing fitted
    assert from_store.classes == from_folder.classes == ["cat", "dog"]
    finish = from_folder.finish(torch.device("cpu"))
    for loaders in [
        (from_folder.train_loader(4, 3, 1), from_store.train_loader(4, 3, 1)),
        (from_folder.val_loader(3), from_store.val_loader(3)),
    ]:
        pairs = list(zip(*loaders, strict=True))
        assert len(pairs) == 2
        for a, b in pairs:
            assert torch.equal(a.crops, b.crops) and torch.equal(a.labels, b.labels)
            assert torch.equal(finish(a), finish(b))


def test_other_stats_images_are_fitted_from_the_store_and_cached(folder, store, tmp_path):
    c = cfg(stats_images=3)
    want = open_data(folder, c, tmp_path / "c1").stats
    got = open_data(store, c, tmp_path / "c2").stats
    assert torch.equal(got.mean, want.mean) and torch.equal(got.eigvecs, want.eigvecs)
    assert len(list((tmp_path / "c2").glob("stats-store-*.pt"))) == 1
    packed = open_data(store, cfg(), tmp_path / "c2").stats
    assert not torch.equal(packed.mean, got.mean)  # 8 images, not 3
    np.save(store / "train.npy", np.zeros((8, 3, 16, 16), np.uint8))  # would refit otherwise
    again = open_data(store, c, tmp_path / "c2").stats
    assert torch.equal(again.mean, got.mean)


# --- bad stores ---------------------------------------------------------------------------


def test_a_store_packed_at_another_resize_is_one_line(store):
    with pytest.raises(DataError) as err:
        open_store(store, 32)
    assert "packed at resize 16, but the spec's data.resize is 32" in one_line(err, store)
    assert "--resize 32" in str(err.value) and "--set data.resize=16" in str(err.value)


def test_a_stale_store_is_one_line_with_the_counts(folder, store, capsys):
    (folder / "train" / "cat" / "0.png").unlink()
    write_image(folder / "train" / "cat" / "new.png", 1)
    write_image(folder / "val" / "dog" / "0.png", 2)  # modified: other size and mtime
    os.utime(folder / "val" / "dog" / "0.png", ns=(1, 1))
    with pytest.raises(DataError) as err:
        open_store(store, 16)
    msg = one_line(err, store, folder.resolve())
    assert "(1 added, 1 removed, 1 modified)" in msg and "--allow-stale" in msg
    open_store(store, 16, stale="allow")
    assert (
        "is stale (1 added, 1 removed, 1 modified); using it as packed" in capsys.readouterr().err
    )


def test_a_store_whose_source_is_gone_is_used_with_a_note(folder, store, capsys):
    shutil.rmtree(folder)
    assert len(open_store(store, 16).split("train")) == 8
    assert f"packed from {folder.resolve()}, which is not here" in capsys.readouterr().err


def test_a_truncated_array_is_one_line(store):
    data = (store / "train.npy").read_bytes()
    (store / "train.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError) as err:
        open_data(store, cfg(mean="none"))
    assert "is truncated or damaged" in one_line(err, store / "train.npy")


def test_a_damaged_pixel_fails_when_read_never_silently(store, tmp_path):
    pixels = np.load(store / "val.npy", mmap_mode="r+")
    pixels[2, 1, 3, 4] ^= 1
    pixels.flush()
    val = open_val(store, cfg())
    val.image(1)
    with pytest.raises(DataError) as err:
        val.image(2)
    assert "image 2 does not match its checksum" in one_line(err, store / "val.npy")
    data = open_data(store, cfg(workers=2), tmp_path / "c")
    with pytest.raises(DataError) as err:
        list(data.val_loader(4))  # one line even when raised in a loader worker
    assert "does not match its checksum" in one_line(err)
    traceback.clear_frames(err.tb)  # or the loader's workers linger until the next gc


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: (s / "store.json").write_text("{not json"), "is not a store manifest"),
        (lambda s: (s / "store.json").unlink(), "is an unfinished pack"),
        (lambda s: np.save(s / "train-labels.npy", np.full(8, 7)), "holds labels outside 0…1"),
        (
            lambda s: np.save(s / "val.npy", np.zeros((4, 3, 8, 8), np.uint8)),
            "uint8 [4, 3, 16, 16]",
        ),
        (lambda s: (s / "stats.npz").write_bytes(b"PK\x03\x04 half"), "stats.npz is damaged"),
        (lambda s: (s / "train-files.json").write_text("[]"), "train-files.json is damaged"),
    ],
)
def test_damaged_store_files_are_one_line(store, damage, message, tmp_path):
    (store / "pack.json").write_text("{}")  # as a killed pack leaves beside its files
    damage(store)
    with pytest.raises(DataError) as err:
        open_data(store, cfg(), tmp_path / "c")
    assert message in one_line(err, store)


def test_commands_say_a_bad_store_in_one_line(store, capsys):
    (store / "store.json").unlink()
    (store / "pack.json").write_text("{}")
    spec = Path(__file__).parents[1] / "nets" / "tiny.yaml"
    assert main(["train", str(spec), "--data", str(store), "--out", str(store / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{store} is an unfinished pack" in err[0]


# --- packing: the output folder, interruptions, a full disk -----------------------------------


def test_pack_refuses_an_output_that_holds_something_else(folder, store, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UsageError) as err:
        pack(folder, other, 16, 0, 10000)
    assert "already holds other files" in one_line(err, other)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(UsageError) as err:
        pack(folder, other / "notes.txt", 16, 0, 10000)
    assert "is a file" in one_line(err, other / "notes.txt")
    with pytest.raises(UsageError) as err:
        pack(folder, store, 32, 0, 10000)  # another resize into a finished store
    assert "already holds a store (packed from" in one_line(err, store)


def test_packing_again_into_the_same_store_does_nothing(folder, store, capsys):
    before = (store / "train.npy").stat().st_mtime_ns
    assert pack(folder, store, 16, 0, 10000) == 0
    assert "already holds this store" in capsys.readouterr().out
    assert (store / "train.npy").stat().st_mtime_ns == before


def test_an_interrupted_pack_resumes_and_ends_as_a_whole_one(
    folder, store, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(netspec.train.pack, "CHUNK", 3)
    real = netspec.train.pack.decode_chunk
    calls = []

    def stop_at_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(netspec.train.pack, "decode_chunk", stop_at_third)
    out = tmp_path / "again"
    with pytest.raises(KeyboardInterrupt):
        pack(folder, out, 16, 0, 10000)
    assert not (out / "store.json").exists()
    assert json.loads((out / "pack.json").read_text())["done"] == {"train": 6, "val": 0}
    with pytest.raises(DataError) as err:
        open_store(out, 16)
    assert "is an unfinished pack" in one_line(err, out)
    monkeypatch.setattr(netspec.train.pack, "decode_chunk", real)
    capsys.readouterr()
    pack(folder, out, 16, 0, 10000)
    said = capsys.readouterr().err
    assert f"resuming the unfinished pack in {out}: 6 of 12 images were written" in said
    assert len(calls) == 3  # the resumed pack decoded only what was missing, in-process
    for name in ("train.npy", "val.npy", "train-crc32.npy", "val-crc32.npy", "stats.npz"):
        assert (out / name).read_bytes() == (store / name).read_bytes(), name


def test_an_unfinished_pack_of_a_changed_folder_restarts(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(netspec.train.pack, "CHUNK", 3)

    def stop(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(netspec.train.pack, "decode_chunk", stop)
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        pack(folder, out, 16, 0, 10000)
    monkeypatch.undo()
    write_image(folder / "train" / "dog" / "9.png", 5)
    capsys.readouterr()
    pack(folder, out, 16, 0, 10000)
    assert "restarting the unfinished pack in" in capsys.readouterr().err
    assert len(open_store(out, 16).split("train")) == 9


def test_a_disk_without_room_is_one_line_before_anything_is_written(folder, tmp_path, monkeypatch):
    free = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(netspec.train.pack.shutil, "disk_usage", lambda _: free)
    out = tmp_path / "new" / "store"
    with pytest.raises(UsageError) as err:
        pack(folder, out, 16, 0, 10000)
    assert "the store needs 0.0 MB on disk, but" in one_line(err, tmp_path, "has 0.0 MB free")
    assert not (tmp_path / "new").exists()


def test_a_disk_that_fills_up_is_one_line(folder, tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(netspec.train.pack.os, "posix_fallocate", full)
    with pytest.raises(UsageError) as err:
        pack(folder, tmp_path / "s", 16, 0, 10000)
    assert "is full: free some space" in one_line(err, tmp_path / "s")
    assert not (tmp_path / "s" / "store.json").exists()


def test_pack_command_line_errors_are_one_line(folder, tmp_path, capsys):
    for argv, text in [
        (["--resize", "0"], "argument --resize: give 1 or more pixels, got 0"),
        (["--workers", "-1"], "argument --workers: give 0 to"),
        (["--stats-images", "0"], "argument --stats-images: give 1 or more images, got 0"),
    ]:
        assert main(["pack", str(folder), "-o", str(tmp_path / "s"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0]
    assert main(["pack", str(tmp_path / "nope"), "-o", str(tmp_path / "s")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
