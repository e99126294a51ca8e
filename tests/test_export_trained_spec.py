"""A checkpoint trained with another network: eval and export refuse it in one line naming
the first difference, even where every weight's shape fits (issue 16, class 1)."""

from pathlib import Path

import pytest
import torch

from netspec import build_graph, compile, load_spec
from netspec.cli import main
from netspec.train.checkpoint import first_difference
from netspec.train.runfolder import spec_yaml
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"
ZOO = ROOT / "tests/nets/zoo.yaml"
NORM1 = "  - {name: norm1, type: lrn, size: 3}\n"
POOL1 = "{name: pool1, type: maxpool, kernel: 3, stride: 2, ceil: true}"

# The spec file's text edited as a user might, keeping every weight's shape; and how the
# refusal names the first difference (CKPT and SPEC stand for the two paths).
CASES = {
    "lrn-removed": (
        lambda text: text.replace(NORM1, ""),
        "CKPT was trained with layer norm1 (lrn, size 3, alpha 0.0001, beta 0.75, k 2, "
        "convention paper) where SPEC has none",
    ),
    "relu-to-tanh": (
        lambda text: text.replace("{name: relu1, type: relu}", "{name: relu1, type: tanh}"),
        "CKPT was trained with layer relu1 (relu) where SPEC has relu1 (tanh)",
    ),
    "pool-window": (
        lambda text: text.replace(POOL1, POOL1.replace("kernel: 3", "kernel: 2")),
        "CKPT was trained with layer pool1 (maxpool, kernel 3) where SPEC has pool1 "
        "(maxpool, kernel 2)",
    ),
    "lrn-constants": (
        lambda text: text.replace("size: 3}", "size: 3, alpha: 0.001, k: 1}"),
        "CKPT was trained with layer norm1 (lrn, alpha 0.0001, k 2) where SPEC has norm1 "
        "(lrn, alpha 0.001, k 1)",
    ),
}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run folder as training leaves it: best.pt holding TINY's weights and spec, and
    spec.yaml."""
    folder = tmp_path / "run"
    folder.mkdir()
    spec = load_spec(TINY)
    (folder / "spec.yaml").write_text(spec_yaml(spec))
    payload = {"model": compile(spec).state_dict(), "epoch": 1, "spec": spec_yaml(spec)}
    torch.save(payload, folder / "best.pt")
    return folder


def shapes(spec: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in compile(load_spec(spec), "meta").state_dict().items()}


def command(name: str, spec: Path, checkpoint: Path, tmp_path: Path, *extra: str) -> list[str]:
    """eval or export of `spec` with `checkpoint`; eval's data is never reached."""
    if name == "eval":
        return ["eval", str(spec), "--checkpoint", str(checkpoint), "--data", "nowhere", *extra]
    return ["export", str(spec), "--checkpoint", str(checkpoint), "-o", str(tmp_path / "net.onnx")]


@pytest.mark.parametrize("name", ["eval", "export"])
@pytest.mark.parametrize("case", CASES)
def test_checkpoint_trained_with_another_network_is_refused_naming_the_difference(
    run, tmp_path, capsys, case, name
):
    edit, difference = CASES[case]
    spec = tmp_path / "edited.yaml"
    spec.write_text(edit(TINY.read_text()))
    assert spec.read_text() != TINY.read_text()
    # every weight fits: only what the layers without weights compute differs
    assert shapes(spec) == shapes(TINY)
    ckpt = run / "best.pt"
    assert main(command(name, spec, ckpt, tmp_path)) == 2
    verb = "evaluate" if name == "eval" else "export"
    message = difference.replace("CKPT", str(ckpt)).replace("SPEC", str(spec))
    assert capsys.readouterr().err == (
        f"netspec {name}: {message}: {verb} with the run's own spec ({run / 'spec.yaml'})\n"
    )
    assert not (tmp_path / "net.onnx").exists()


@pytest.mark.parametrize("name", ["eval", "export"])
def test_a_set_that_changes_the_network_is_named_as_the_fix(run, tmp_path, capsys, name):
    spec = run / "spec.yaml"  # the run's own spec, changed by --set
    args = command(name, spec, run / "best.pt", tmp_path)
    assert main([*args, "--set", "layers.norm1=null"]) == 2
    verb = "evaluate" if name == "eval" else "export"
    assert capsys.readouterr().err == (
        f"netspec {name}: {run / 'best.pt'} was trained with layer norm1 (lrn, size 3, "
        f"alpha 0.0001, beta 0.75, k 2, convention paper) where {spec} has none: "
        f"{verb} without --set layers.norm1=null\n"
    )


def test_names_and_spellings_that_compute_the_same_are_accepted(run, tmp_path):
    # a layer without weights renamed, `units: classes` written out: the same function, so
    # the checkpoint's weights are exported
    spec = tmp_path / "same.yaml"
    text = TINY.read_text().replace("relu1", "act1")
    spec.write_text(text.replace("units: classes", "units: 10"))
    assert main(command("export", spec, run / "best.pt", tmp_path)) == 0
    assert (tmp_path / "net.onnx").is_file()


def test_the_run_without_a_spec_keeps_the_weights_check(run, tmp_path, capsys):
    # a plain state_dict names no network: only its shapes can be checked, and they fit
    edited = tmp_path / "no-lrn.yaml"
    edited.write_text(TINY.read_text().replace(NORM1, ""))
    plain = tmp_path / "weights.pt"
    torch.save(torch.load(run / "best.pt", weights_only=True)["model"], plain)
    assert main(command("export", edited, plain, tmp_path)) == 0


@pytest.mark.parametrize(
    ("override", "difference"),
    [
        # the same layers, read in another order: concat's channels change places
        (
            "layers.join.inputs=[right, left]",
            "RUN was trained with layer join reading left, right where SPEC's join reads "
            "right, left",
        ),
        # another input size that adaptive pooling hides from every weight
        ("input=[4, 23, 21]", "RUN was trained on input 4×21×21 where SPEC has 4×23×21"),
        ("layers.act.type=relu", "RUN was trained with layer act (tanh) where SPEC has act (relu)"),
    ],
)
def test_wiring_and_input_differences_are_named_too(override, difference):
    trained = build_graph(load_spec(ZOO))
    given = build_graph(load_spec(ZOO, [override]))
    assert first_difference(trained, given, "RUN", "SPEC") == difference
    assert first_difference(trained, build_graph(load_spec(ZOO)), "RUN", "SPEC") is None
