"""The static cost report against figures worked out by hand from the paper's shapes."""

import json

from netspec import build_graph, load_spec
from netspec.cli import main
from netspec.ir.summary import format_table
from tests.conftest import ROOT

ALEXNET = ROOT / "specs/alexnet.yaml"
F32 = 4


def test_alexnet_cross_bytes_and_tower_params(capsys):
    assert main(["build", str(ALEXNET), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # what each of the two towers receives from the other: half of the tensor read
    received = {
        "conv3": 128 * 13 * 13 * F32,  # the other GPU's 128 pool2 maps
        "fc6": 128 * 6 * 6 * F32,  # the other GPU's 128 pool5 maps
        "fc7": 2048 * F32,
        "fc8": 2048 * F32,
    }
    assert received == {"conv3": 86_528, "fc6": 18_432, "fc7": 8_192, "fc8": 8_192}
    crossing = {r["name"]: r["cross_bytes"] for r in info["layers"] if r["cross_bytes"]}
    assert crossing == {name: 2 * size for name, size in received.items()}
    assert info["cross_bytes"] == 242_688 == 2 * sum(received.values())
    assert info["groups"].keys() == {"gpu0", "gpu1"}
    assert {g["params"] for g in info["groups"].values()} == {30_482_612}
    assert info["params"] == 2 * 30_482_612


def test_alexnet_activation_bytes_per_tower(capsys):
    halves = [  # (shape, how many layers give it): each tower holds half the channels
        ((96, 55, 55), 3),  # conv1, relu1, norm1
        ((96, 27, 27), 1),
        ((256, 27, 27), 3),
        ((256, 13, 13), 1),
        ((384, 13, 13), 4),  # conv3, relu3, conv4, relu4
        ((256, 13, 13), 2),
        ((256, 6, 6), 1),
        ((4096,), 6),  # fc6, relu6, drop6, fc7, relu7, drop7
        ((1000,), 1),
    ]
    values = 3 * 227 * 227  # the input, whole in every tower
    for shape, count in halves:
        size = 1
        for d in shape:
            size *= d
        values += count * size // 2
    expected = values * F32 + 242_688 // 2  # and what it receives
    assert main(["build", str(ALEXNET), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["groups"]["gpu0"]["activation_bytes"] == expected


def test_table_lines_below_it(capsys):
    assert main(["build", str(ALEXNET)]) == 0
    out = capsys.readouterr().out.splitlines()
    total = next(i for i, line in enumerate(out) if line.startswith("total"))
    below = [line.split() for line in out[total + 1 :] if line.strip()]
    assert below[0][:2] == ["memory", "(float32):"]
    assert below[2][:3] == ["gpu0:", "30,482,612", "params,"]
    assert below[5] == ["into", "conv3:", "173,056", "(2", "×", "86,528)"]
    assert below[-1] == ["in", "all:", "242,688"]


def test_a_net_without_groups_prints_only_the_table(capsys):
    graph = build_graph(load_spec(ROOT / "specs/torchvision-alexnet.yaml"))
    assert format_table(graph).splitlines()[-2].startswith("total")
    assert format_table(graph).splitlines()[-1].startswith("memory (float32):")
    assert main(["build", str(ROOT / "specs/torchvision-alexnet.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["groups"], info["cross_bytes"]) == ({}, 0)


def test_every_tower_receives_the_other_towers_parts(tmp_path):
    spec = tmp_path / "four.yaml"
    spec.write_text(
        "name: four\ninput: [4, 8, 8]\ndevice_groups: [a, b, c, d]\nlayers:\n"
        "  - {name: one, type: conv, filters: 8, kernel: 3, padding: 1}\n"
        "  - {name: two, type: conv, filters: 8, kernel: 3, padding: 1}\n"
    )
    info = json.loads(_build_json(spec))
    # 4 towers each receive the 3 others' 2 maps of 8×8
    assert [r["cross_bytes"] for r in info["layers"]] == [0, 4 * 3 * 2 * 8 * 8 * F32]
    params = (8 * 4 * 9 + 8) + (8 * 8 * 9 + 8)
    assert info["groups"]["c"]["params"] == params // 4
    assert info["groups"]["c"]["activation_bytes"] == (4 * 64 + 2 * 64 + 2 * 64 + 6 * 64) * F32


def _build_json(path) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["build", str(path), "--json"]) == 0
    return out.getvalue()
