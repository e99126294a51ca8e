"""`netspec predict`: eval's numbers for any image file, bad files one line each."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netspec.train.folder import open_split
from netspec.train.loop import train
from tests.inspect.conftest import TINY, make_checkpoint, run

quiet = lambda *_: None  # noqa: E731


def val_images(data: Path) -> list[str]:
    """The validation files in eval's order."""
    return [str(path) for path, _ in open_split(data, "val", 32).samples]


def test_bad_images_are_one_line_each_and_the_rest_print(checkpoint, data, tmp_path, capsys):
    good = val_images(data)[:2]
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    args = [good[0], str(missing), str(tmp_path), str(text), good[1]]
    status, out, err = run(capsys, "predict", str(checkpoint), *args, "--top", "2")
    assert status == 1
    assert err == [
        f"netspec predict: {missing}: no such file",
        f"netspec predict: {tmp_path} is a folder, not an image",
        f"netspec predict: cannot read image {text}: cannot identify image file '{text}'",
    ]
    lines = out.splitlines()
    assert [line.partition(": ")[0] for line in lines] == good
    assert all(line.count("%") == 2 for line in lines)


def test_json_is_one_list_of_top_classes(checkpoint, data, tmp_path, capsys):
    odd = tmp_path / "odd.png"  # another size and mode: resized and cropped as eval's are
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 4), np.uint8)).save(odd)
    status, out, err = run(capsys, "predict", str(checkpoint), str(odd), "--json", "--top", "20")
    assert (status, err) == (0, [])
    (answer,) = json.loads(out)
    assert answer["image"] == str(odd)
    top = answer["top"]
    assert len(top) == 10  # no more classes than the network has
    assert {t["class"] for t in top} == set(sorted(os.listdir(data / "val")))
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert math.isclose(sum(t["probability"] for t in top), 1, rel_tol=1e-5)


def test_a_checkpoint_without_class_names_numbers_them(data, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "old.pt", classes=None)
    status, out, err = run(capsys, "predict", str(ckpt), val_images(data)[0], "--json")
    assert status == 0
    assert err == [f"note: {ckpt} keeps no class names (an older checkpoint): classes by number"]
    assert all(t["class"].startswith("class ") for t in json.loads(out)[0]["top"])


def test_top_zero_is_one_line(checkpoint, data, capsys):
    status, out, err = run(capsys, "predict", str(checkpoint), val_images(data)[0], "--top", "0")
    assert (status, out, err) == (
        2,
        "",
        ["netspec predict: argument --top: give 1 or more classes, got 0"],
    )


@pytest.fixture(scope="module")
def trained_run(data, tmp_path_factory) -> Path:
    """The tiny spec trained for two epochs, with its mean image and PCA, in this process."""
    out = tmp_path_factory.mktemp("run") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETSPEC_CACHE", str(out.parent / "cache"))
        from netspec import load_spec

        train(load_spec(TINY, ["train.epochs=2", "data.workers=0"]), data, out, log=quiet)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("ten_crop", [False, True])
def test_predicting_every_val_image_reproduces_eval(trained_run, data, capsys, ten_crop):
    flags = ["--ten-crop"] if ten_crop else []
    status, out, _ = run(
        capsys, "eval", str(TINY), "--checkpoint", str(trained_run / "best.pt"), "--data",
        str(data), *flags,
    )  # fmt: skip
    assert status == 0
    val = json.loads(out.splitlines()[-1])
    images = val_images(data)
    status, out, err = run(
        capsys, "predict", str(trained_run), *images, "--json", "--top", "10", *flags
    )
    assert (status, err) == (0, [])
    answers = json.loads(out)
    truth = [Path(a["image"]).parent.name for a in answers]
    ranked = [[t["class"] for t in a["top"]] for a in answers]
    top1 = np.mean([r[0] == t for r, t in zip(ranked, truth, strict=True)])
    top5 = np.mean([t in r[:5] for r, t in zip(ranked, truth, strict=True)])
    assert (top1, top5) == (val["val_top1"], val["val_top5"])
    assert 0 < top1 < 1  # a run that learned something, and not everything
    p_true = [
        next(t["probability"] for t in a["top"] if t["class"] == c)
        for a, c in zip(answers, truth, strict=True)
    ]
    assert np.mean(-np.log(p_true)) == pytest.approx(val["val_loss"], rel=1e-5)
