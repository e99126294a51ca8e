"""What `train` and `eval` refuse before any work: specs that validate but cannot be trained,
class counts that do not fit, models that cannot fit the machine."""

import os
from pathlib import Path

import pytest
import torch

from netspec import build_graph, load_spec
from netspec.cli import main
from netspec.errors import SpecError, UsageError
from netspec.ir.summary import binary_size
from netspec.train.checks import (
    check_data_fits,
    check_memory,
    check_sizes,
    check_workers,
    device_memory,
)
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"
CLASSES = [f"c{i}" for i in range(10)]

SPEC = """\
name: small
input: [3, 28, 28]
classes: 10
layers:
{layers}
train: {{batch_size: 16}}
data: {{resize: 32, crop: 28, workers: 0, pixel_scale: 1}}
"""


def spec_with(tmp_path: Path, *layers: str, overrides=()):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(layers="\n".join(f"  - {line}" for line in layers)))
    return path, load_spec(path, list(overrides))


def problems(spec, training=True) -> list[str]:
    with pytest.raises(SpecError) as info:
        check_sizes(spec, training)
    return [str(p) for p in info.value.problems]


def test_a_spec_ending_in_a_pool_cannot_be_trained(tmp_path):
    path, spec = spec_with(
        tmp_path,
        "{name: conv1, type: conv, filters: 10, kernel: 3}",
        "{name: pool, type: maxpool, kernel: 2}",
    )
    assert problems(spec) == [
        f"{path}:6:5: layers[1] (pool): a classifier's last layer gives one score per class, "
        "but this one gives 10×13×13: end the spec with a linear layer of units: classes"
    ]


def test_train_refuses_it_before_reading_any_data(tmp_path, capsys):
    path, _ = spec_with(tmp_path, "{name: conv1, type: conv, filters: 10, kernel: 3}")
    missing = tmp_path / "no-such-folder"
    status = main(["train", str(path), "--data", str(missing), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.splitlines()
    assert status == 2 and len(err) == 1
    assert "(conv1): a classifier's last layer" in err[0]  # not the missing data folder
    assert not (tmp_path / "r").exists()


def test_nothing_to_train(tmp_path):
    path, spec = spec_with(
        tmp_path, "{name: pool, type: avgpool, kernel: 28}", "{name: flat, type: flatten}"
    )
    assert problems(spec) == [
        f"{path}:4:1: no layer has weights, so there is nothing to train: "
        "add a conv or linear layer"
    ]
    check_sizes(spec, training=False)  # a vector of 3 scores: evaluable, if not trainable


def test_batchnorm_on_one_value_per_channel(tmp_path):
    layers = [
        "{name: fc1, type: linear, units: 8}",
        "{name: bn, type: batchnorm}",
        "{name: fc, type: linear, units: classes}",
    ]
    _, spec = spec_with(tmp_path, *layers)
    check_sizes(spec)  # a batch of 16: 16 values per channel
    _, spec = spec_with(tmp_path, *layers, overrides=["train.batch_size=1"])
    assert problems(spec) == [
        "--set train.batch_size=1: batch_size 1 gives batchnorm 'bn' one value per channel, "
        "from which it cannot estimate a variance: use a batch of 2 or more"
    ]
    check_sizes(spec, training=False)  # evaluation normalises with the running statistics


@pytest.mark.parametrize(
    ("overrides", "advice"),
    [
        (["classes=4"], "add --set classes=10"),
        # classes already given, the output's units fixed: name the units, not classes
        (["classes=10", "layers.fc.units=4"], "add --set layers.fc.units=10 (its units are fixed)"),
    ],
)
def test_class_count_advice_names_what_sets_the_output(tmp_path, overrides, advice):
    spec = load_spec(TINY, overrides)
    with pytest.raises(UsageError) as info:
        check_data_fits(spec, tmp_path, CLASSES)
    message = str(info.value)
    assert f"but the spec's output has 4 units: {advice}" in message
    if "units" in advice:
        assert "--set classes" not in message


def test_class_count_advice_looks_through_activations_and_dropout(tmp_path):
    _, spec = spec_with(
        tmp_path,
        "{name: fc7, type: linear, units: 4}",
        "{name: relu7, type: relu}",
        "{name: drop7, type: dropout}",
    )
    with pytest.raises(
        UsageError, match=r"add --set layers\.fc7\.units=10 \(its units are fixed\)"
    ):
        check_data_fits(spec, tmp_path, CLASSES)


def test_class_count_advice_for_an_output_without_a_linear_layer(tmp_path):
    _, spec = spec_with(
        tmp_path,
        "{name: conv1, type: conv, filters: 4, kernel: 28}",
        "{name: flat, type: flatten}",
    )
    with pytest.raises(UsageError, match="end the spec with a linear layer of units: classes"):
        check_data_fits(spec, tmp_path, CLASSES)


def test_device_memory_is_the_machines_within_its_cgroup():
    pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with open("/proc/meminfo") as f:
        total = 1024 * int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    assert pages == total  # two readings of the machine's memory agree
    cgroup = Path("/sys/fs/cgroup/memory.max")
    limit = cgroup.read_text().strip() if cgroup.exists() else "max"
    expected = min(total, int(limit)) if limit.isdigit() else total
    assert device_memory(torch.device("cpu")) == expected


def test_a_model_that_cannot_fit_memory_is_refused_in_one_line(tmp_path):
    units = 2**30  # fc: 1 GiB units × 4704 features: about 20 TB of weights
    _, spec = spec_with(
        tmp_path,
        "{name: conv1, type: conv, filters: 6, kernel: 1}",
        f"{{name: fc, type: linear, units: {units}}}",
    )
    params = 6 * 3 + 6 + units * 6 * 28 * 28 + units  # counted by hand
    assert build_graph(spec).net.params == params
    activations = 4 * (3 * 28 * 28 + 6 * 28 * 28 + units) * 16
    image = 3 * 32 * 32 * 9  # uint8 image and the float64 sum of the mean image
    need = 3 * 4 * params + activations + image
    with pytest.raises(UsageError) as info:
        check_memory(spec, torch.device("cpu"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"small needs at least {binary_size(need)} (weights, gradients ")
    assert f"cpu has {binary_size(device_memory(torch.device('cpu')))}" in message
    check_memory(load_spec(TINY), torch.device("cpu"))  # a small one passes


def test_a_worker_count_past_the_cores_is_refused():
    cores = os.cpu_count() or 1
    spec = load_spec(TINY, [f"data.workers={8 * cores + 1}"])
    with pytest.raises(UsageError) as info:
        check_workers(spec)
    assert str(info.value) == (
        f"data.workers is {8 * cores + 1}, but this machine has {cores} CPU cores: use at most "
        f"{8 * cores} (8 per core), e.g. --workers {min(cores, 8)}"
    )
    check_workers(load_spec(TINY, [f"data.workers={8 * cores}"]))
