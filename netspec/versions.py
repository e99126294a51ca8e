"""Which netspec and which torch: for `--version`, and for the provenance a study records.

Found without importing torch, which takes seconds; netspec's commit is read with git where
the package is a checkout, since a version number alone does not name the code a result
came from during development.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

GIT_TIMEOUT = 5.0  # seconds: a provenance line is not worth waiting on a hung filesystem


def installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def torch_version() -> str:
    """torch.__version__, read from torch/version.py: the package's metadata may leave out
    the build (2.4.1, not 2.4.1+cu121), which tells a CUDA build from a CPU one."""
    found = find_spec("torch")
    if found is None or not found.submodule_search_locations:
        return "not installed"
    with contextlib.suppress(OSError, ValueError):
        source = Path(found.submodule_search_locations[0], "version.py").read_text()
        assigned = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", source, re.M)
        if assigned:
            return assigned[1]
    return installed("torch")


def netspec_source() -> str:
    """netspec's version, and its git commit when it runs from a checkout: `0.1.0 (commit
    1a2b3c4d5e6f)`, with `+ uncommitted changes` when the package's files differ from it."""
    version = installed("netspec")
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(package), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", str(package.parent))
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version} (commit {commit}{' + uncommitted changes' if changed else ''})"
