"""`netspec inspect RUN neighbours`: the exact search against brute-force numpy, the features
against the network computed by hand, and every mistake in one line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from netspec.inspect.neighbours import nearest
from netspec.inspect.trained import open_trained
from netspec.train.folder import open_split
from tests.inspect.conftest import run

pytestmark = pytest.mark.slow  # networks run over whole splits: seconds


def brute_force(queries: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q, b = queries.astype(np.float64), bank.astype(np.float64)
    d = np.sqrt(((b[None, :, :] - q[:, None, :]) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


@pytest.mark.parametrize("chunk_bytes", [8 * 37, 8 * 37 * 50, 2**26])
def test_nearest_is_brute_force(chunk_bytes):
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(500, 37)).astype(np.float16)
    bank[300] = bank[10]  # equal distances to any query: the earlier row comes first
    bank[450] = bank[10]
    queries = np.concatenate([rng.normal(size=(4, 37)), bank[10:11]]).astype(np.float16)
    found, distances = nearest(queries, bank, 7, chunk_bytes)
    expected, expected_d = brute_force(queries, bank, 7)
    assert np.array_equal(found, expected)
    assert distances == pytest.approx(expected_d, rel=1e-12, abs=1e-12)
    assert found[4, :3].tolist() == [10, 300, 450] and distances[4, 0] == 0


def test_nearest_takes_every_row_when_k_is_the_set(tmp_path):
    bank = np.arange(12, dtype=np.float16).reshape(6, 2)
    found, _ = nearest(bank[2:3], bank, 6, chunk_bytes=16)
    assert sorted(found[0].tolist()) == list(range(6)) and found[0, 0] == 2


def features_by_hand(trained, split, layer: str) -> np.ndarray:
    """Each image's centre crop as the spec says (no mean, pixels in [0, 1] × pixel_scale),
    through the network one image at a time, `layer`'s output kept as float16."""
    model = trained.model(torch.device("cpu"))
    cfg, kept = trained.data, []
    hook = model.get_submodule(layer).register_forward_hook(
        lambda m, i, o: kept.append(o.detach().flatten(1).clone())
    )
    top = (cfg.resize - cfg.crop) // 2
    with torch.no_grad():
        for i in range(len(split)):
            crop = split.image(i)[:, top : top + cfg.crop, top : top + cfg.crop]
            model(torch.from_numpy(crop.astype(np.float32) / 255 * cfg.pixel_scale)[None])
    hook.remove()
    return torch.cat(kept).to(torch.float16).numpy()


def test_neighbours_are_the_nearest_by_the_networks_features(checkpoint, data, capsys):
    status, out, err = run(
        capsys, "inspect", str(checkpoint), "neighbours", "--data", str(data), "--json",
        "--images", "5", "--k", "4", "--seed", "1",
    )  # fmt: skip
    assert (status, err) == (0, [])
    report = json.loads(out)
    assert report["layer"] == "drop"  # what the output layer fc reads
    trained = open_trained(str(checkpoint))
    train, val = open_split(data, "train", 32), open_split(data, "val", 32)
    bank = features_by_hand(trained, train, "drop")
    chosen = np.random.default_rng(1).choice(len(val), 5, replace=False)
    queries = features_by_hand(trained, val, "drop")[chosen]
    expected, expected_d = brute_force(queries, bank, 4)
    assert [q["image"] for q in report["queries"]] == [str(val.samples[i][0]) for i in chosen]
    for q, row, dist in zip(report["queries"], expected, expected_d, strict=True):
        assert [n["image"] for n in q["neighbours"]] == [str(train.samples[i][0]) for i in row]
        assert [n["distance"] for n in q["neighbours"]] == pytest.approx(dist, rel=1e-9)
        assert [n["class"] for n in q["neighbours"]] == [
            train.classes[train.targets[i]] for i in row
        ]


def test_a_named_layer_and_the_picture(checkpoint, data, tmp_path, capsys):
    png = tmp_path / "nn.png"
    status, out, _ = run(
        capsys, "inspect", str(checkpoint), "neighbours", "--data", str(data), "--layer",
        "pool1", "--images", "2", "--k", "3", "-o", str(png),
    )  # fmt: skip
    lines = out.splitlines()
    assert status == 0 and len(lines) == 4 and lines[-1] == f"wrote {png}"
    assert lines[0].startswith("pool1 (392 values an image): 6 neighbours of 2 validation")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 4 * 96


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "61"], "--k 61: the training split has 60 images; give at most that"),
        (["--images", "31"], "--images 31: the validation split has 30 images; give at most that"),

        (["--layer", "fc7"], "--layer fc7: tiny has no such layer (did you mean 'fc'?); its "
         "layers: conv1, relu1, norm1, pool1, conv2, relu2, drop, fc"),
        (["-o", "nn.gif"], "-o nn.gif: the format comes from the extension; use one of .png, "
         ".pdf, .svg"),
    ],
)  # fmt: skip
def test_a_mistake_is_one_line(checkpoint, data, capsys, args, message):
    status, out, err = run(
        capsys, "inspect", str(checkpoint), "neighbours", "--data", str(data), *args
    )
    assert (status, out, err) == (2, "", [f"netspec inspect: {message}"])


def test_data_of_another_class_count_is_one_line(tmp_path, data, capsys):
    from tests.inspect.conftest import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "c.pt", ("classes=8",))
    status, _, err = run(capsys, "inspect", str(ckpt), "neighbours", "--data", str(data))
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"netspec inspect: {data / 'val'} has 10 classes (")
