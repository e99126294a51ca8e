"""`netspec inspect RUN filters`: the colour fraction against its definition, the device
groups' kernels, the picture, and every mistake in one line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from netspec.inspect.filters import colour_fraction, colour_fractions, kernel_groups
from netspec.inspect.trained import open_trained
from tests.inspect.conftest import make_checkpoint, run


def definition(kernels: np.ndarray) -> np.ndarray:
    """The share of each kernel's energy outside its projection on grey, (1, 1, 1)/√3 at
    every pixel, written as the projection it is."""
    flat = kernels.reshape(len(kernels), 3, -1).astype(np.float64)
    grey = np.full(3, 1 / np.sqrt(3))
    along = np.einsum("c,ncp->np", grey, flat)  # the grey coordinate of each pixel
    outside = flat - grey[None, :, None] * along[:, None, :]
    total = (flat**2).sum((1, 2))
    return np.where(total > 0, (outside**2).sum((1, 2)) / np.where(total > 0, total, 1), 0)


def test_equal_rgb_weights_have_none():
    pattern = torch.randn(5, 1, 4, 4)
    assert colour_fraction(pattern.expand(5, 3, 4, 4)) == 0.0


def test_constructed_kernels_have_their_share():
    one = torch.randn(4, 4)
    zero = torch.zeros(4, 4)
    red_only = torch.stack([one, zero, zero])  # grey takes 1/3 of its energy
    red_minus_green = torch.stack([one, -one, zero])  # sums to 0 over channels: all colour
    blank = torch.zeros(3, 4, 4)  # no energy: counts 0
    kernels = torch.stack([red_only, red_minus_green, blank])
    assert colour_fractions(kernels).tolist() == pytest.approx([2 / 3, 1.0, 0.0], abs=1e-12)
    assert colour_fraction(kernels) == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-12)


def test_share_grows_with_colour_contrast():
    grey = torch.ones(3, 4, 4)
    contrast = torch.stack([torch.ones(4, 4), -torch.ones(4, 4), torch.zeros(4, 4)])
    shares = [colour_fraction((grey + c * contrast)[None]) for c in (0.0, 0.25, 0.5, 1.0, 2.0)]
    # ‖grey‖² = 48 and ‖c·contrast‖² = 32c²: the share is 32c² / (48 + 32c²)
    expected = [32 * c * c / (48 + 32 * c * c) for c in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert shares == pytest.approx(expected, abs=1e-12)
    assert shares == sorted(shares)


def test_random_kernels_match_the_definition():
    kernels = torch.randn(200, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    kernels[7] = 0
    expected = definition(kernels.numpy())
    assert colour_fractions(kernels).numpy() == pytest.approx(expected, abs=1e-12)
    # independent channels put a third of their energy in grey, on average
    assert colour_fraction(kernels) == pytest.approx(2 / 3, abs=0.03)


def grey_and_colour(model) -> None:
    """conv1's first group all grey, its second all colour contrast."""
    w = model.conv1.weight  # [8, 3, 4, 4]: filters 0-3 in g0, 4-7 in g1
    pattern = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    w[:4] = pattern[:4].expand(4, 3, 4, 4)
    w[4:] = torch.cat([pattern[4:], -pattern[4:], torch.zeros_like(pattern[4:])], 1)


def test_each_device_group_owns_its_slice_of_filters(tmp_path):
    trained = open_trained(str(make_checkpoint(tmp_path / "c.pt", weights=grey_and_colour)))
    weight = trained.model(torch.device("cpu")).conv1.weight.detach()
    groups = kernel_groups(trained, "conv1", weight)
    assert [g.name for g in groups] == ["g0", "g1"]
    assert torch.equal(groups[0].kernels, weight[:4]) and torch.equal(groups[1].kernels, weight[4:])


def test_json_names_each_group_with_its_fraction(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "best.pt", weights=grey_and_colour)
    status, out, err = run(capsys, "inspect", str(tmp_path), "filters", "--json")
    assert (status, err) == (0, [])
    assert json.loads(out) == {
        "layer": "conv1",
        "input_channels": 3,
        "shown_channel": None,
        "groups": {
            "g0": {"kernels": 4, "colour_fraction": 0.0},
            "g1": {"kernels": 4, "colour_fraction": pytest.approx(1.0, abs=1e-12)},
        },
    }
    assert ckpt.parent == tmp_path  # a run folder reads its best.pt


def test_a_net_without_device_groups_has_one_group_all(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt", ("device_groups=null",))
    status, out, _ = run(capsys, "inspect", str(ckpt), "filters", "--json")
    assert status == 0
    assert list(json.loads(out)["groups"]) == ["all"]
    assert json.loads(out)["groups"]["all"]["kernels"] == 8


def test_picture_has_a_band_a_group(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt", weights=grey_and_colour)
    png = tmp_path / "filters.png"
    status, out, _ = run(capsys, "inspect", str(ckpt), "filters", "-o", str(png))
    assert status == 0
    assert out.splitlines() == [
        "conv1: 8 kernels of 3×4×4 in 2 group(s)",
        "  g0           4 kernels  colour fraction 0.000",
        "  g1           4 kernels  colour fraction 1.000",
        f"wrote {png}",
    ]
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width >= 360


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
def test_a_later_layer_shows_one_input_channel(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt")
    png = tmp_path / "conv2.png"
    args = ["inspect", str(ckpt), "filters", "--layer", "conv2", "--channel", "3"]
    status, out, _ = run(capsys, *args, "-o", str(png), "--json")
    report = json.loads(out.splitlines()[0])
    assert status == 0 and png.is_file()
    # conv2 is grouped: each kernel reads its group's 4 of conv1's 8 channels
    assert (report["input_channels"], report["shown_channel"]) == (4, 3)
    assert {g["colour_fraction"] for g in report["groups"].values()} == {None}
    status, _, err = run(capsys, *args[:-1], "4")
    assert (status, err) == (
        2,
        ["netspec inspect: --channel 4: conv2's kernels read 4 channels each; give 0 … 3"],
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--layer", "conv3"],
            "netspec inspect: --layer conv3: tiny has no such layer (did you mean 'conv2'?); its "
            "layers: conv1, relu1, norm1, pool1, conv2, relu2, drop, fc",
        ),
        (
            ["--layer", "relu1"],
            "netspec inspect: --layer relu1: a relu layer has no kernels to show; its "
            "convolutions: conv1, conv2",
        ),
        (
            ["--layer", "fc"],
            "netspec inspect: --layer fc: a linear layer has no kernels to show; its "
            "convolutions: conv1, conv2",
        ),
        (
            ["-o", "filters.jpeg"],
            "netspec inspect: -o filters.jpeg: the format comes from the extension; use one of "
            ".png, .pdf, .svg",
        ),
        (
            ["-o", "no/such/folder/f.png"],
            "netspec inspect RUN_OR_CHECKPOINT filters: argument -o/--output: "
            "no/such/folder/f.png: there is no folder no/such/folder; create it first",
        ),
    ],
)
def test_a_mistake_is_one_line(checkpoint, capsys, args, line):
    status, out, err = run(capsys, "inspect", str(checkpoint), "filters", *args)
    assert (status, out, err) == (2, "", [line])


def test_bad_runs_and_checkpoints_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    weights_only = tmp_path / "weights.pt"
    torch.save({"model": {}}, weights_only)
    not_torch = tmp_path / "spec.yaml"
    not_torch.write_text("name: x\n")
    cases = {
        str(tmp_path / "missing"): f"{tmp_path / 'missing'}: no such run folder or checkpoint",
        str(empty): f"{empty}: a folder without best.pt or last.pt; give a run folder netspec "
        "train wrote, or a checkpoint file",
        str(weights_only): f"{weights_only}: has no 'spec', which it needs to be inspected; "
        "use a checkpoint written by netspec train",
    }
    for arg, message in cases.items():
        status, out, err = run(capsys, "inspect", arg, "filters")
        assert (status, out, err) == (2, "", [f"netspec inspect: {message}"])
    status, _, err = run(capsys, "inspect", str(not_torch), "filters")
    assert status == 2 and len(err) == 1 and "not a torch checkpoint" in err[0]


def test_a_checkpoint_whose_weights_do_not_fit_its_spec_is_one_line(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt")
    state = torch.load(ckpt, weights_only=True)
    state["model"]["conv1.weight"] = torch.zeros(8, 3, 5, 5)  # another spec's conv1
    torch.save(state, ckpt)
    status, _, err = run(capsys, "inspect", str(ckpt), "filters")
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"netspec inspect: {ckpt}: its model (for its own spec tiny) does")
