"""The oracle of the packed store: training from a folder and from its store computes the same
run, bit for bit on the CPU, with 0 or 2 loader workers and with two data-parallel processes;
and a pack killed with SIGKILL leaves no store that looks whole, and no worker behind.
"""

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.imagenet_like import make_folder as make_jpegs
from netspec import load_spec
from netspec.train.checkpoint import load_checkpoint
from netspec.train.decode import load_image
from netspec.train.folder import open_split
from netspec.train.loop import train
from netspec.train.pack import pack
from netspec.train.shapes_data import ensure_shapes
from netspec.train.store import open_store
from tests.conftest import ROOT
from tests.train.test_distributed import children, finish, python_m

TINY = ROOT / "tests/nets/tiny.yaml"
TIMING = {"seconds", "images_per_s", "data_wait"}

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("own_cache")]


@pytest.fixture(scope="module")
def shapes_pair(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """`shapes` at 32 pixels (60 train, 30 val images) and its store."""
    root = tmp_path_factory.mktemp("shapes")
    folder = ensure_shapes(root, seed=3, size=32, train_per_class=6, val_per_class=3)
    pack(folder, root / "store", resize=32, workers=2, stats_images=100)
    return folder, root / "store", []


@pytest.fixture(scope="module")
def jpeg_pair(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """Photo-like JPEGs of about 500×375 (4 classes, 40 train, 8 val) and their store."""
    root = tmp_path_factory.mktemp("jpegs")
    folder = make_jpegs(root / "pics", classes=4, train_per_class=10, val_per_class=2)
    pack(folder, root / "store", resize=32, workers=2, stats_images=100)
    return folder, root / "store", ["classes=4"]


def quiet(*_: object) -> None:
    pass


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_same_run(a: Path, b: Path) -> None:
    assert rows(a) == rows(b)  # every figure of every epoch, exactly
    sa, sb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert sa["model"].keys() == sb["model"].keys()
    for name in sa["model"]:
        assert torch.equal(sa["model"][name], sb["model"][name]), name
    for key in ("mean", "eigvals", "eigvecs"):
        assert torch.equal(sa["stats"][key], sb["stats"][key]), key
    moments = [s["optimizer"]["state"] for s in (sa, sb)]
    assert moments[0].keys() == moments[1].keys()
    for i in moments[0]:
        assert torch.equal(moments[0][i]["momentum_buffer"], moments[1][i]["momentum_buffer"])


@pytest.mark.parametrize("pair", ["shapes_pair", "jpeg_pair"])
@pytest.mark.parametrize("workers", [0, 2])
def test_folder_and_store_train_the_same_run(pair, workers, request, tmp_path):
    folder, store, overrides = request.getfixturevalue(pair)
    spec = load_spec(TINY, [*overrides, f"data.workers={workers}", "train.epochs=2"])
    train(spec, folder, tmp_path / "folder", log=quiet)
    train(spec, store, tmp_path / "store", log=quiet)
    assert len(rows(tmp_path / "store")) == 2
    assert_same_run(tmp_path / "folder", tmp_path / "store")


def test_two_processes_from_folder_and_store_train_the_same_run(shapes_pair, tmp_path):
    folder, store, _ = shapes_pair
    for name, data in (("folder", folder), ("store", store)):
        job = python_m(
            tmp_path, "netspec", "train", str(TINY), "--data", str(data), "--nproc", "2",
            "--epochs", "1", "--out", str(tmp_path / name),
        )  # fmt: skip
        status, out, err = finish(job)
        assert status == 0, err
        assert "in 2 data-parallel processes" in out
    assert_same_run(tmp_path / "folder", tmp_path / "store")


def test_eval_reads_the_store_as_the_folder(shapes_pair, tmp_path):
    folder, store, _ = shapes_pair
    train(load_spec(TINY, ["train.epochs=1"]), folder, tmp_path / "run", log=quiet)
    results = {}
    for data in (folder, store):
        for crops in ([], ["--ten-crop"]):
            job = python_m(
                tmp_path, "netspec", "eval", str(TINY), "--checkpoint",
                str(tmp_path / "run/last.pt"), "--data", str(data), *crops,
            )  # fmt: skip
            status, out, err = finish(job)
            assert status == 0, err
            results[data, len(crops)] = json.loads(out.splitlines()[-1])
    assert results[folder, 0] == results[store, 0] and results[folder, 1] == results[store, 1]
    logged = rows(tmp_path / "run")[0]
    assert results[store, 0]["val_loss"] == pytest.approx(logged["val_loss"], rel=1e-6)
    assert results[store, 0]["val_top1"] == logged["val_top1"]


# --- a pack killed with SIGKILL -----------------------------------------------------------


def slow_folder(root: Path) -> Path:
    """40 small images, then three 8000×8000 JPEGs that each take a worker about a second:
    time to kill the pack while its workers are decoding."""
    rng = np.random.default_rng(0)
    for i in range(40):
        pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        (root / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "train" / "a" / f"{i:02}.png")
    (root / "train" / "b").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8000, 8000), (40 * i, 90, 200)).save(root / "train" / "b" / f"{i}.jpg")
    for name in ("a", "b"):
        (root / "val" / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
            root / "val" / name / "0.png"
        )
    return root


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def test_a_killed_pack_leaves_no_whole_store_and_no_worker_then_finishes(tmp_path):
    folder, out = slow_folder(tmp_path / "pics"), tmp_path / "store"
    argv = ["netspec", "pack", str(folder), "-o", str(out), "--resize", "32", "--workers", "2"]
    job = python_m(tmp_path, *argv)
    deadline = time.time() + 120
    done = 0
    while done == 0 and time.time() < deadline and job.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            done = json.loads((out / "pack.json").read_text())["done"]["train"]
        time.sleep(0.01)
    workers = children(job.pid)
    assert done == 32 and len(workers) >= 2  # the first chunk is in; the big images are not
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=60)
    deadline = time.time() + 10
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)]  # the workers died with it
    assert not (out / "store.json").exists()
    status, said, err = finish(python_m(tmp_path, *argv))
    assert status == 0, err
    assert "resuming the unfinished pack" in err and f"into {out}: train 43 images" in said
    train_split = open_store(out, 32).split("train")
    source = open_split(folder, "train", 32)
    for i in (0, 31, 32, 42):
        assert np.array_equal(train_split.image(i), load_image(source.samples[i][0], 32).numpy())
    assert os.path.exists(out / "stats.npz")
