"""--init-from: Caffe's fine-tuning rule, with torchvision's own weight files as they are."""

import json

import pytest
import torch
import torchvision

from netspec import compile, load_spec
from netspec.cli import main
from netspec.errors import UsageError
from netspec.train.finetune import by_spec_names, copy_matching
from netspec.train.loop import train
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # torchvision's full-size AlexNet: seconds

TORCHVISION = ROOT / "specs/torchvision-alexnet.yaml"
TINY = ROOT / "tests/nets/tiny.yaml"


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """torchvision's AlexNet, its own random weights saved as its weight files are."""
    torch.manual_seed(1)
    reference = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path_factory.mktemp("tv") / "alexnet.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_torchvisions_weight_file_loads_as_it_is_and_computes_the_same(torchvision_file):
    reference, path = torchvision_file
    spec = load_spec(TORCHVISION)
    model = compile(spec).eval()
    copied = copy_matching(model, spec, path)
    assert copied.tensors == 16 and copied.fresh == {}
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_other_classes_keep_the_specs_last_layer_and_say_so(torchvision_file):
    _, path = torchvision_file
    spec = load_spec(TORCHVISION, ["classes=10"])
    torch.manual_seed(0)
    model = compile(spec)
    fresh_fc8 = model.fc8.weight.detach().clone()
    copied = copy_matching(model, spec, path)
    assert copied.tensors == 14
    assert copied.fresh == {
        "fc8": "classifier.6.weight is 1000×4096 in the file, 10×4096 in the spec"
    }
    assert torch.equal(model.fc8.weight, fresh_fc8)  # the spec's own initialisation
    assert "initialised fresh: fc8 (classifier.6.weight is 1000×4096" in copied.line(path)


def test_a_key_under_a_longer_layer_name_is_that_layers_own(tmp_path):
    # features.0.conv reads torchvision's features.0 (its weights_key); a file of the spec's
    # own names, features.0.conv.weight, is not renamed to features.0.conv.conv.weight
    (tmp_path / "s.yaml").write_text(
        "name: s\ninput: [3, 8, 8]\nclasses: 2\nlayers:\n"
        "  - {name: features.0.conv, type: conv, filters: 4, kernel: 3, weights_key: features.0}\n"
        "  - {name: features.1.fc, type: linear, units: classes}\n"
    )
    spec = load_spec(tmp_path / "s.yaml")
    theirs = {"features.0.weight": 1, "features.0.bias": 2, "features.1.fc.weight": 3}
    assert by_spec_names(theirs, spec) == {
        "features.0.conv.weight": 1,
        "features.0.conv.bias": 2,
        "features.1.fc.weight": 3,
    }
    ours = {"features.0.conv.weight": 1, "features.0.conv.bias": 2}
    assert by_spec_names(ours, spec) == ours


def test_a_file_that_matches_nothing_or_is_no_state_dict_is_one_line(tmp_path):
    spec = load_spec(TINY)
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match=r"none of its 1 tensors matches a layer of tiny"):
        copy_matching(compile(spec), spec, tmp_path / "other.pt")
    torch.save({"epoch": 3}, tmp_path / "numbers.pt")
    with pytest.raises(UsageError, match=r"numbers.pt: neither a netspec checkpoint \(a dict with"):
        copy_matching(compile(spec), spec, tmp_path / "numbers.pt")


def test_init_from_and_resume_together_are_one_line(tmp_path, capsys):
    argv = ["train", str(TINY), "--data", "shapes", "--resume", str(tmp_path), "--init-from", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init-from starts a new run" in err[0]


@pytest.mark.usefixtures("own_cache")
def test_a_run_starts_from_another_runs_checkpoint(data, tmp_path, capsys):
    first = tmp_path / "first"
    train(load_spec(TINY, ["train.epochs=1"]), data, first, log=lambda *_: None)
    argv = ["train", str(TINY), "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "b")]
    assert main([*argv, "--init-from", str(first / "last.pt")]) == 0
    said = capsys.readouterr().out
    assert f"--init-from {first / 'last.pt'}: copied 6 tensors; initialised fresh: none" in said
    before = torch.load(first / "last.pt", weights_only=True)["model"]
    rows = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["epoch"] == 1
    started = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert not torch.equal(started["conv1.weight"], before["conv1.weight"])  # trained on


def test_export_takes_torchvisions_weight_file_too(torchvision_file, tmp_path):
    from netspec.cli import main as netspec

    reference, path = torchvision_file
    out = tmp_path / "alexnet_model.py"
    assert netspec(["export", str(TORCHVISION), "--checkpoint", str(path), "-o", str(out)]) == 0
    written = torch.load(out.with_suffix(".pt"), weights_only=True)
    assert torch.equal(written["conv1.weight"], reference.features[0].weight)
    assert torch.equal(written["fc8.bias"], reference.classifier[6].bias)
