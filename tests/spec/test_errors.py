"""A user's mistakes: every problem reported at once, one located line each, exit status 2.

tests/spec/malformed/ holds one small spec per mistake (a few with several). Each file says what
it expects in its header, one line per problem:

    # expect: LINE:COL: a substring of the message

LINE:COL is where the problem must point; `-` stands for the file as a whole (an empty file).
`{here}` in the substring stands for the file's path, as the notes of a block use name it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netspec import SpecError, build_graph, load_spec
from netspec.cli import main
from netspec.spec.document import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
MALFORMED = Path(__file__).resolve().parent / "malformed"
CORPUS = sorted(MALFORMED.glob("*.yaml"))
ALEXNET = ROOT / "specs" / "alexnet.yaml"
EXPECT = re.compile(rb"^# expect: (-|\d+:\d+): (.+)$", re.M)

TINY = """\
name: tiny
input: [3, 32, 32]
classes: 10
layers:
  - {name: conv1, type: conv, filters: 8, kernel: 3}
  - {name: fc, type: linear, units: classes}
"""


def expectations(path: Path) -> list[tuple[str, str]]:
    found = [(m[1].decode(), m[2].decode()) for m in EXPECT.finditer(path.read_bytes())]
    return [(at, text.replace("{here}", str(path))) for at, text in found]


def problems(path: Path, overrides: list[str] | None = None) -> list[str]:
    """The problems as the CLI prints them; fails the test if the spec builds."""
    with pytest.raises(SpecError) as info:
        build_graph(load_spec(path, overrides or []))
    return [str(p) for p in info.value.problems]


def build(tmp_path: Path, text: str, overrides: list[str] | None = None):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    spec = load_spec(path, overrides or [])
    return spec, build_graph(spec)


# ---------------------------------------------------------------- the corpus


def test_corpus_is_there():
    assert len(CORPUS) >= 24
    for path in CORPUS:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_malformed(path: Path):
    expected = expectations(path)
    start = time.perf_counter()
    got = problems(path)
    assert time.perf_counter() - start < 2, "a small file must fail fast (alias bomb?)"
    for line in got:
        assert "\n" not in line and line.startswith(f"{path}"), line
    unmatched = list(got)
    for at, text in expected:
        where = str(path) if at == "-" else f"{path}:{at}"
        hits = [p for p in unmatched if p.startswith(f"{where}: ") and text in p]
        assert hits, f"expected {where}: ...{text}... among:\n" + "\n".join(got)
        unmatched.remove(hits[0])
    assert len(got) == len(expected), "problems not in '# expect:':\n" + "\n".join(unmatched)


def test_example_from_the_requirement():
    (line,) = problems(MALFORMED / "kernel_zero.yaml")
    assert (
        line
        == f"{MALFORMED / 'kernel_zero.yaml'}:13:13: layers[3] (conv2): kernel must be ≥ 1, got 0"
    )


# ---------------------------------------------------------------- valid edges of YAML


def test_exponent_is_a_number(tmp_path: Path):
    assert parse_yaml("a: 1e-4\nb: 1.0e-4\nc: -2E+3\n", "x").data == {
        "a": 0.0001,
        "b": 0.0001,
        "c": -2000.0,
    }
    spec, _ = build(
        tmp_path,
        TINY.replace("\n  - {name: fc", "\n  - {name: n, type: lrn, alpha: 1e-4}\n  - {name: fc"),
    )
    alpha = spec.layers[1].alpha
    assert isinstance(alpha, float) and alpha == 0.0001


def test_yes_is_a_string_not_a_bool(tmp_path: Path):
    data = parse_yaml("a: yes\nb: no\nc: on\nd: off\ne: true\nf: 010\n", "x").data
    assert data == {"a": "yes", "b": "no", "c": "on", "d": "off", "e": True, "f": 10}
    spec, _ = build(tmp_path, TINY.replace("name: tiny", "name: yes"))
    assert spec.name == "yes"


def test_merge_keys(tmp_path: Path):
    spec, graph = build(
        tmp_path,
        TINY.replace(
            "  - {name: conv1, type: conv, filters: 8, kernel: 3}\n",
            "  - &conv {name: conv1, type: conv, filters: 8, kernel: 3, padding: 1}\n"
            "  - {<<: *conv, name: conv2, filters: 16}\n"
            "  - <<: [{name: conv3, kernel: 5}, *conv]\n"
            "    filters: 4\n",
        ),
    )
    conv2, conv3 = spec.layers[1], spec.layers[2]
    assert (conv2.type, conv2.filters, conv2.kernel, conv2.padding) == ("conv", 16, (3, 3), (1, 1))
    assert (conv3.name, conv3.filters, conv3.kernel) == ("conv3", 4, (5, 5))  # first merge wins
    assert graph.node("conv3").shape == (4, 30, 30)


def test_alias(tmp_path: Path):
    spec, _ = build(
        tmp_path,
        TINY.replace(
            "classes: 10\n", "classes: 10\ninit: &init {weight: normal, std: 0.02}\n"
        ).replace("kernel: 3}", "kernel: &k 3, stride: *k, init: *init}"),
    )
    conv = spec.layers[0]
    assert conv.stride == (3, 3) and conv.init.std == 0.02 and spec.init.std == 0.02


# ---------------------------------------------------------------- the command line


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, "-m", "netspec.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_main(capsys, *args: str) -> tuple[int, list[str]]:
    """`netspec ARGS` in this process (faster than a subprocess): status, stderr lines."""
    status = main(list(args))
    return status, capsys.readouterr().err.splitlines()


def test_cli_reports_every_problem_and_exits_2():
    path = "tests/spec/malformed/three_mistakes.yaml"
    result = cli("build", path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}:") for line in lines), lines
    assert "Traceback" not in result.stderr


def test_cli_debug_shows_the_traceback():
    result = cli("--debug", "build", "tests/spec/malformed/three_mistakes.yaml")
    assert result.returncode not in (0, 2)
    assert "Traceback" in result.stderr and "SpecError" in result.stderr


def test_cli_missing_file():
    result = cli("build", "specs/no-such-spec.yaml")
    assert result.returncode == 2
    assert result.stderr == "specs/no-such-spec.yaml: file not found\n"


def test_cli_folder(capsys):
    status, lines = run_main(capsys, "build", "specs")
    assert (status, lines) == (2, ["specs: is a folder, not a spec file"])


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_cli_unreadable_file(tmp_path: Path, capsys):
    path = tmp_path / "locked.yaml"
    path.write_text(TINY)
    path.chmod(0)
    try:
        status, lines = run_main(capsys, "build", str(path))
    finally:
        path.chmod(0o644)
    assert status == 2
    assert lines == [f"{path}: permission denied: cannot read the file"]


def test_cli_unreadable_file_even_as_root(tmp_path: Path, capsys, monkeypatch):
    path = tmp_path / "locked.yaml"
    path.write_text(TINY)

    real_open = os.open

    def refuse(name, *args, **kwargs):
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied", str(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    status, lines = run_main(capsys, "build", str(path))
    assert (status, lines) == (2, [f"{path}: permission denied: cannot read the file"])


def test_cli_not_utf8(capsys):
    status, lines = run_main(capsys, "build", "tests/spec/malformed/not_utf8.yaml")
    assert status == 2 and len(lines) == 1 and "not UTF-8" in lines[0]


def test_window_that_does_not_tile_is_a_warning(capsys):
    # fc6 checks in_features: 9216, which 224 pixels do not give (6400); drop the check
    status, warnings = run_main(
        capsys, "build", "specs/alexnet.yaml", "--set", "input=[3,224,224]",
        "--set", "layers.fc6.in_features=null",
    )  # fmt: skip
    assert status == 0, warnings
    assert all(w.startswith("specs/alexnet.yaml:") and ": warning: " in w for w in warnings)
    (warning,) = [line for line in warnings if "(conv1)" in line]  # pools downstream warn too
    assert "1 row and 1 column" in warning
    assert "227" in warning and "padding" in warning


def test_window_warning_in_the_graph(tmp_path: Path):
    _, graph = build(tmp_path, TINY.replace("kernel: 3}", "kernel: 3, stride: 2}"))
    ((name, message),) = graph.net.warnings
    assert name == "conv1"
    assert "1 row and 1 column" in message and "[3, 33, 33]" in message


# ---------------------------------------------------------------- --set


def test_set_bad_value_names_the_override_and_the_spec_line_it_overrides():
    (line,) = problems(ALEXNET, ["layers.conv1.filters=0"])
    assert line == (
        "--set layers.conv1.filters=0: layers[0] (conv1): filters must be ≥ 1, got 0 "
        f"(overriding {ALEXNET}:20:31)"  # line 20: - {name: conv1, type: conv, filters: 96, …
    )


def test_set_a_key_the_file_lacks_names_the_override_alone(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(TINY)
    (line,) = problems(path, ["layers.conv1.stride=0"])
    assert line == "--set layers.conv1.stride=0: layers[0] (conv1): stride must be ≥ 1, got 0"


def test_set_a_whole_layer_or_section_names_its_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(TINY)
    got = problems(path, ["layers.conv1={name: conv1, type: conv, kernel: 3}", "classes=0"])
    assert got == [
        f"--set classes=0: classes must be ≥ 1, got 0 (overriding {path}:3:1)",
        "--set layers.conv1={name: conv1, type: conv, kernel: 3}: layers[0] (conv1): missing "
        f"required key 'filters' (overriding {path}:5:5)",
    ]


def test_set_overriding_an_override_names_no_spec_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(TINY)
    (line,) = problems(path, ["layers.conv1.filters=4", "layers.conv1.filters=0"])
    assert line.endswith("filters must be ≥ 1, got 0")  # the value the file had is gone twice


def test_cli_prints_the_override_and_the_spec_line(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(TINY)
    status, lines = run_main(
        capsys, "build", str(path), "--set", "train.lr=-1", "--set", "classes=x"
    )
    assert status == 2
    assert lines == [
        f"--set classes=x: classes must be an integer, got 'x' (overriding {path}:3:1)",
        "--set train.lr=-1: train.lr must be > 0.0, got -1",  # TINY has no train section
    ]


def test_set_unknown_layer_did_you_mean():
    (line,) = problems(ALEXNET, ["layers.conv9.filters=3"])
    assert line.startswith("--set layers.conv9.filters=3: no layer named 'conv9'")
    assert "(did you mean 'conv" in line


def test_set_without_equals(capsys):
    status, lines = run_main(capsys, "build", str(ALEXNET), "--set", "layers.conv1.filters")
    assert status == 2
    assert lines == [
        "--set layers.conv1.filters: expected KEY=VALUE, e.g. --set layers.conv1.filters=64"
    ]


def test_set_new_nested_key_is_located_at_the_override():
    (line,) = problems(ALEXNET, ["train.fo.bar=1"])
    assert line.startswith("--set train.fo.bar=1: unknown key 'fo'")
    (line,) = problems(ALEXNET, ["train.shedule.type=step"])
    assert line.startswith("--set train.shedule.type=step: unknown key 'shedule'")
    assert "(did you mean 'schedule'?)" in line


def test_set_into_a_value():
    (line,) = problems(ALEXNET, ["layers.conv1.kernel.x=3"])
    assert line == (
        "--set layers.conv1.kernel.x=3: 'layers.conv1.kernel' is a value, not a section; "
        "cannot set 'x' in it"
    )


def test_set_values_are_yaml_read_safely():
    (line,) = problems(ALEXNET, ["layers.conv1.kernel=[3"])
    assert line.startswith("--set layers.conv1.kernel=[3: YAML syntax:")
    (line,) = problems(ALEXNET, ["layers.conv1.kernel=!!python/object/apply:os.system [ls]"])
    assert "tag !!python/object/apply:os.system is not allowed" in line
    (line,) = problems(ALEXNET, ["layers.conv1={a: 1, a: 2}"])
    assert line.startswith("--set layers.conv1={a: 1, a: 2}: duplicate key 'a'")


def test_set_every_bad_override_reported_at_once():
    got = problems(ALEXNET, ["layers.fc9.units=1", "layers.conv1.kernel=0", "train.lr=0"])
    assert len(got) == 3  # the override that names no layer does not hide the others
    got = problems(ALEXNET, ["layers.conv1.kernel=0", "layers.conv2.stride=0"])
    assert got == [
        "--set layers.conv1.kernel=0: layers[0] (conv1): kernel must be ≥ 1, got 0 "
        f"(overriding {ALEXNET}:20:44)",
        "--set layers.conv2.stride=0: layers[4] (conv2): stride must be ≥ 1, got 0",
    ]


def test_set_changes_the_graph():
    before = build_graph(load_spec(ALEXNET))
    after = build_graph(load_spec(ALEXNET, ["classes=10", "layers.conv1.filters=64"]))
    assert before.node("fc8").shape == (1000,)
    assert after.node("fc8").shape == (10,)
    assert before.node("conv1").params == 96 * 3 * 11 * 11 + 96
    assert after.node("conv1").params == 64 * 3 * 11 * 11 + 64
    assert after.node("conv1").shape == (64, 55, 55)


def test_set_a_layer_by_index_and_a_list_item():
    spec = load_spec(ALEXNET, ["layers.0.kernel=[11, 11]", "input.0=1"])
    assert spec.layers[0].kernel == (11, 11) and spec.input == [1, 227, 227]
