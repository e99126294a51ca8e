"""`netspec eval --confusion / --errors N`: the matrix, per-class top-1, the most confused
pairs and the most confident mistakes, from eval's own pass."""

import json

import numpy as np
import pytest
from PIL import Image

from netspec.inspect.confusion import Confusion, most_confident_errors
from tests.inspect.conftest import TINY, run

pytestmark = pytest.mark.slow  # a trained run evaluated: seconds

CLASSES = ["a", "b", "c", "d"]


def test_counts_rates_and_pairs_of_constructed_answers():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 2, 1, 0, 0, 2, 1, 1])
    confusion = Confusion.of(predicted, labels, CLASSES)
    assert confusion.counts.tolist() == [
        [2, 1, 1, 0],
        [2, 1, 0, 0],
        [0, 2, 1, 0],
        [0, 0, 0, 0],
    ]
    assert confusion.per_class() == [0.5, pytest.approx(1 / 3), pytest.approx(1 / 3), None]
    assert confusion.normalised()[0].tolist() == [0.5, 0.25, 0.25, 0.0]
    assert confusion.normalised()[3].tolist() == [0.0] * 4
    # most images first; at two each, b → a (2 of b's 3) before c → b (2 of c's 3)? equal
    # shares: class order decides
    assert [(p["true"], p["predicted"], p["images"]) for p in confusion.pairs()] == [
        ("b", "a", 2),
        ("c", "b", 2),
        ("a", "b", 1),
        ("a", "c", 1),
    ]
    assert confusion.pairs(1)[0]["share"] == pytest.approx(2 / 3)


def test_most_confident_errors_skip_right_answers():
    labels = np.array([0, 1, 2, 0, 1])
    predicted = np.array([0, 0, 0, 1, 1])
    confidence = np.array([0.99, 0.6, 0.9, 0.6, 0.95])
    assert most_confident_errors(predicted, confidence, labels, 5) == [2, 1, 3]
    assert most_confident_errors(predicted, confidence, labels, 1) == [2]


def evaluate(capsys, checkpoint, data, *flags):
    return run(
        capsys, "eval", str(TINY), "--checkpoint", str(checkpoint), "--data", str(data), *flags
    )


def test_eval_adds_per_class_pairs_and_errors(checkpoint, data, tmp_path, capsys):
    png = tmp_path / "confusion.png"
    status, out, err = evaluate(
        capsys, checkpoint, data, "--confusion", "--errors", "5", "-o", str(png)
    )
    assert (status, err) == (0, [])
    lines = out.splitlines()
    val = json.loads(lines[-1])
    counts = {c: 3 for c in val["per_class_top1"]}  # 3 validation images a class
    assert sum(val["per_class_top1"][c] * n for c, n in counts.items()) / 30 == pytest.approx(
        val["val_top1"]
    )
    assert lines[1].split() == ["class", "images", "top-1"] and len(lines) > 12
    pairs = val["confused"]
    assert 0 < len(pairs) <= 10 and all(p["true"] != p["predicted"] for p in pairs)
    assert [p["images"] for p in pairs] == sorted((p["images"] for p in pairs), reverse=True)
    errors = val["errors"]
    assert len(errors) == 5 and all(e["true"] != e["predicted"] for e in errors)
    assert [e["probability"] for e in errors] == sorted(
        (e["probability"] for e in errors), reverse=True
    )
    assert all(e["image"].startswith(str(data / "val" / e["true"])) for e in errors)
    beside = tmp_path / "confusion-errors.png"
    assert f"wrote {png}" in lines and f"wrote {beside}" in lines
    for picture in (png, beside):
        with Image.open(picture) as img:
            assert img.format == "PNG"


def test_errors_alone_take_the_picture(checkpoint, data, tmp_path, capsys):
    png = tmp_path / "errors.png"
    status, out, _ = evaluate(capsys, checkpoint, data, "--errors", "2", "-o", str(png))
    val = json.loads(out.splitlines()[-1])
    assert status == 0 and png.is_file() and len(val["errors"]) == 2
    assert "per_class_top1" not in val


def test_eval_without_the_flags_prints_what_it_did(checkpoint, data, capsys):
    status, out, _ = evaluate(capsys, checkpoint, data)
    assert status == 0 and len(out.splitlines()) == 2
    assert set(json.loads(out.splitlines()[-1])) == {"val_loss", "val_top1", "val_top5"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-o", "c.png"], "-o c.png: names the picture of --confusion or --errors N"),
        (["--errors", "0"], "argument --errors: give 1 or more images, got 0"),
        (
            ["--confusion", "-o", "c.bmp"],
            "-o c.bmp: the format comes from the extension; use one of .png, .pdf, .svg",
        ),
    ],
)
def test_a_mistake_is_one_line_before_any_work(tmp_path, capsys, flags, message):
    missing = tmp_path / "none.pt"  # the flags are checked before the checkpoint is read
    status, out, err = evaluate(capsys, missing, tmp_path, *flags)
    assert (status, out, err) == (2, "", [f"netspec eval: {message}"])
