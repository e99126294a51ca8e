"""Importing netspec is silent and leaves the importing program's matplotlib alone."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import pytest

import netspec
from netspec import backends


def every_module() -> list[str]:
    """netspec's modules, and those of netspec.backends (installed from its own folder)."""
    names = ["netspec", "netspec.backends"]
    for package in (netspec, backends):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    return sorted({n for n in names if n != "netspec.__main__"})  # __main__ runs the CLI


def test_every_module_is_found():
    names = every_module()
    for expected in ("netspec.cli", "netspec.train.curves", "netspec.backends.diagram"):
        assert expected in names


@pytest.mark.slow  # a fresh interpreter imports torch, torchvision and matplotlib
def test_importing_every_module_prints_nothing_and_keeps_the_backend(tmp_path):
    script = (
        "import importlib, sys\n"
        "import matplotlib\n"
        "for name in sys.argv[2:]:\n"
        "    importlib.import_module(name)\n"
        "open(sys.argv[1], 'w').write(matplotlib.get_backend())\n"
    )
    backend = tmp_path / "backend"
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(backend), *every_module()],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    assert backend.read_text() == "svg"
