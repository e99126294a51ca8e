"""A mistake in the flags is one line and exit status 2, said before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
import torch

from netspec.cli import main
from tests.conftest import ROOT

ALEXNET = str(ROOT / "specs" / "alexnet.yaml")
STUDY = str(ROOT / "studies" / "paper.yaml")
CORES = os.cpu_count() or 1

# Each argv main() is given in a fresh interpreter, and what it must say.
REFUSED = [
    (
        ["train", ALEXNET, "--data", "shapes", "--nproc", "0"],
        "netspec train: argument --nproc: give 1 or more processes, got 0",
    ),
    (
        ["train", ALEXNET, "--data", "shapes", "--nproc", "two"],
        "netspec train: argument --nproc: give 1 or more processes, got 'two'",
    ),
    (
        ["train", ALEXNET, "--data", "shapes", "--nproc", "2", "--max-restarts", "-1"],
        "netspec train: argument --max-restarts: give 0 or more restarts, got -1",
    ),
    (
        ["train", ALEXNET, "--data", "shapes", "--workers", "-1"],
        "netspec train: argument --workers: give 0 or more loader processes, got -1",
    ),
    (
        ["train", ALEXNET, "--data", "shapes", "--epochs", "0"],
        "netspec train: argument --epochs: give 1 or more epochs, got 0",
    ),
    (
        ["train", ALEXNET, "--data", "shapes", "--batch-size", "0"],
        "netspec train: argument --batch-size: give 1 or more images, got 0",
    ),
    (
        ["eval", ALEXNET, "--checkpoint", "x.pt", "--data", "shapes", "--workers", "-3"],
        "netspec eval: argument --workers: give 0 or more loader processes, got -3",
    ),
    (
        ["pack", "shapes", "-o", "store", "--resize", "0"],
        "netspec pack: argument --resize: give 1 or more pixels, got 0",
    ),
    (
        ["pack", "shapes", "-o", "store", "--workers", str(2 * CORES + 1)],
        f"netspec pack: argument --workers: give 0 to {2 * CORES} processes "
        f"({CORES} CPU cores here), got {2 * CORES + 1}",
    ),
    (
        ["pack", "shapes", "-o", "store", "--stats-images", "0"],
        "netspec pack: argument --stats-images: give 1 or more images, got 0",
    ),
    (
        ["ablate", STUDY, "--epochs", "0"],
        "netspec ablate: argument --epochs: give 1 or more epochs, got 0",
    ),
    (
        ["ablate", STUDY, "--jobs", "0"],
        "netspec ablate: argument --jobs: give 1 or more runs, got 0",
    ),
    (
        ["ablate", STUDY, "--target", "1.5"],
        "netspec ablate: argument --target: give a number between 0 and 1, e.g. 0.25; got 1.5",
    ),
    (
        ["ablate", STUDY, "--seeds", "0"],
        "netspec ablate: argument --seeds: a count of seeds must be ≥ 1, got 0",
    ),
    (
        ["train", ALEXNET],
        "netspec train: the following arguments are required: --data",
    ),
    (
        ["train", ALEXNET, "--data", "shapes", "--device", "tpu"],
        "netspec train: argument --device: invalid choice: 'tpu' "
        "(choose from 'cpu', 'cuda', 'mps')",
    ),
    (["build", ALEXNET, "--jsn"], "netspec: unrecognized arguments: --jsn"),
    (
        ["draw", ALEXNET, "-o", str(ROOT)],
        f"netspec draw: argument -o/--output: {ROOT} is a folder: give the file to write in "
        f"it, e.g. {ROOT / 'out'}",
    ),
]

# main() on each argv of sys.argv[1] (JSON); prints [status, stderr] for each, then the
# heavy packages the process imported.
EACH = """
import contextlib, io, json, sys
from netspec.cli import main
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    print(json.dumps([status, err.getvalue()]))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision"})))
"""


def in_fresh_process(argvs: list[list[str]]) -> tuple[list[tuple[int, str]], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", EACH, json.dumps(argvs)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    *answers, imported = map(json.loads, done.stdout.splitlines())
    return [tuple(a) for a in answers], imported


@pytest.mark.slow  # a fresh interpreter
def test_flag_mistakes_are_one_line_before_torch_is_imported():
    answers, imported = in_fresh_process([argv for argv, _ in REFUSED])
    assert answers == [(2, f"{message}\n") for _, message in REFUSED]
    assert imported == []


@pytest.mark.parametrize(("argv", "message"), REFUSED[:3], ids=["nproc", "nproc-text", "restarts"])
def test_a_flag_mistake_returns_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    assert capsys.readouterr() == ("", f"{message}\n")


VERSION = """
import sys
from netspec.cli import main
try:
    main(["--version"])
except SystemExit as exc:
    print(exc.code, "torch" in sys.modules)
"""


@pytest.mark.slow  # a fresh interpreter
def test_version_names_netspec_and_torch_without_importing_torch():
    done = subprocess.run(
        [sys.executable, "-c", VERSION], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.stdout.splitlines() == [
        f"netspec {metadata.version('netspec')} (torch {torch.__version__})",
        "0 False",
    ]
