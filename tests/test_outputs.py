"""Every command's output path is checked before any work: one line, exit status 2.

Two kinds of output, each with one check: a file (draw -o, export -o) and a folder (train
--out and --resume, ablate --out, pack -o).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import netspec.interrupt  # noqa: F401  (main imports it; loaded here before any change of user)
from netspec.cli import main
from tests.conftest import ROOT

ALEXNET = str(ROOT / "specs" / "alexnet.yaml")
STUDY = str(ROOT / "studies" / "paper.yaml")

Argv = Callable[[Path], list[str]]
# Each command that writes a file or a folder: how to call it with an output, and the flag.
FILE_COMMANDS: dict[str, tuple[Argv, str]] = {
    "draw": (lambda out: ["draw", ALEXNET, "-o", str(out)], "-o/--output"),
    "export": (lambda out: ["export", ALEXNET, "-o", str(out)], "-o/--output"),
}
FOLDER_COMMANDS: dict[str, tuple[Argv, str]] = {
    "train": (lambda out: ["train", ALEXNET, "--data", "shapes", "--out", str(out)], "--out"),
    "resume": (
        lambda out: ["train", ALEXNET, "--data", "shapes", "--resume", str(out)],
        "--resume",
    ),
    "ablate": (lambda out: ["ablate", STUDY, "--out", str(out)], "--out"),
    "pack": (lambda out: ["pack", "shapes", "-o", str(out)], "-o/--output"),
}


def refused(capsys: pytest.CaptureFixture[str], command: tuple[Argv, str], out: Path) -> str:
    """main's one line for `command` writing to `out`, less the command and flag that every
    line starts with."""
    argv, flag = command[0](out), command[1]
    assert main(argv) == 2
    said, err = capsys.readouterr()
    assert said == ""
    (line,) = err.splitlines()
    prefix = f"netspec {argv[0]}: argument {flag}: "
    assert line.startswith(prefix)
    return line.removeprefix(prefix)


@contextlib.contextmanager
def folder_with_mode(mode: int) -> Iterator[Path]:
    """A new folder with `mode`, and this process as a user the mode holds for. Root may
    write anywhere, so as root the block runs as the user nobody, in a folder of root's
    under /tmp (pytest's tmp_path is closed to other users)."""
    folder = Path(tempfile.mkdtemp(prefix="netspec-outputs-"))
    folder.chmod(mode)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        try:
            yield folder
        finally:
            if root:
                os.seteuid(0)
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_file_output_that_is_a_folder(capsys, tmp_path, command):
    said = refused(capsys, FILE_COMMANDS[command], tmp_path)
    assert said == f"{tmp_path} is a folder: give the file to write in it, e.g. {tmp_path}/out"


@pytest.mark.parametrize("command", FILE_COMMANDS)
@pytest.mark.parametrize("kernel", ["/proc", "/sys"])
def test_a_file_output_under_the_kernels_folders(capsys, command, kernel):
    out = Path(kernel) / "net.svg"
    said = refused(capsys, FILE_COMMANDS[command], out)
    assert said == f"{out} is under {kernel}, the kernel's files: write elsewhere"


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_file_output_in_an_unwritable_folder(capsys, command):
    with folder_with_mode(0o555) as folder:
        said = refused(capsys, FILE_COMMANDS[command], folder / "net.onnx")
    assert said == (
        f"{folder}/net.onnx: no permission to write into {folder}; give a path you may write"
    )


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_file_output_in_a_missing_folder_or_a_file(capsys, tmp_path, command):
    out = tmp_path / "nope" / "net.svg"
    said = refused(capsys, FILE_COMMANDS[command], out)
    assert said == f"{out}: there is no folder {tmp_path / 'nope'}; create it first"
    (tmp_path / "a.txt").write_text("mine")
    said = refused(capsys, FILE_COMMANDS[command], tmp_path / "a.txt" / "net.svg")
    assert said == f"{tmp_path}/a.txt/net.svg: {tmp_path}/a.txt is a file, not a folder"


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_file_output_that_is_a_device(capsys, command):
    said = refused(capsys, FILE_COMMANDS[command], Path("/dev/null"))
    assert said == "/dev/null is not a regular file (a device, pipe or socket): give a file"


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_file_output_that_is_read_only(capsys, command):
    with folder_with_mode(0o777) as folder:
        (folder / "net.onnx").write_text("mine")
        (folder / "net.onnx").chmod(0o444)
        said = refused(capsys, FILE_COMMANDS[command], folder / "net.onnx")
        assert (folder / "net.onnx").read_text() == "mine"
    assert said == f"{folder}/net.onnx is read-only: make it writable, or give another file"


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_folder_output_that_is_a_file(capsys, tmp_path, command):
    (tmp_path / "a.txt").write_text("mine")
    said = refused(capsys, FOLDER_COMMANDS[command], tmp_path / "a.txt")
    assert said == f"{tmp_path}/a.txt is a file, not a folder: give a folder"
    said = refused(capsys, FOLDER_COMMANDS[command], tmp_path / "a.txt" / "run")
    assert said == f"{tmp_path}/a.txt/run: {tmp_path}/a.txt is a file, not a folder"
    assert (tmp_path / "a.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
@pytest.mark.parametrize("kernel", ["/proc", "/sys"])
def test_a_folder_output_under_the_kernels_folders(capsys, command, kernel):
    out = Path(kernel) / "netspec-run"
    said = refused(capsys, FOLDER_COMMANDS[command], out)
    assert said == f"{out} is under {kernel}, the kernel's files: write elsewhere"


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_folder_output_in_an_unwritable_folder(capsys, command):
    with folder_with_mode(0o555) as folder:
        said_new = refused(capsys, FOLDER_COMMANDS[command], folder / "a" / "b")
        said_there = refused(capsys, FOLDER_COMMANDS[command], folder)
    assert said_new == (
        f"{folder}/a/b: no permission to write into {folder}; give a path you may write"
    )
    assert said_there == f"{folder}: no permission to write into it; give a path you may write"


def test_a_symlink_into_proc_is_refused(capsys, tmp_path):
    (tmp_path / "link").symlink_to("/proc/self")
    said = refused(capsys, FOLDER_COMMANDS["train"], tmp_path / "link" / "run")
    assert said == f"{tmp_path}/link/run is under /proc, the kernel's files: write elsewhere"


def test_good_outputs_pass_the_checks(tmp_path):
    from netspec.outputs import check_file, check_folder

    check_file(tmp_path / "net.svg")
    (tmp_path / "net.svg").write_text("old")
    check_file(tmp_path / "net.svg")  # replaced whole, as every output is
    check_folder(tmp_path)
    check_folder(tmp_path / "new" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.svg"]


def test_ablates_default_folder_is_checked_too(capsys, tmp_path, monkeypatch):
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: tiny\nspec: {ROOT}/tests/nets/tiny.yaml\ndata: shapes\nepochs: 1\nseeds: 1\n"
        "variants:\n  baseline: []\n"
    )
    monkeypatch.chdir("/proc")  # runs/ablate-tiny would be /proc/runs/ablate-tiny
    assert main(["ablate", str(study)]) == 2
    assert capsys.readouterr() == (
        "",
        "netspec ablate: runs/ablate-tiny is under /proc, the kernel's files: write elsewhere\n",
    )
