"""On the CPU a training process keeps the memory its last step freed, for the next step."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Frees an activation-sized tensor and prints how many MiB glibc's heap then holds free for
# the next allocation (mallinfo2's fordblks). glibc's default unmaps such a block at once.
HELD_AFTER_FREE = """
import ctypes, sys, torch
from netspec.train.device import pick_device

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "pick":
    pick_device("cpu")
x = torch.ones(50_000_000)  # 200 MB
del x
print(libc.mallinfo2().fordblks >> 20)
"""


def held_mib(how: str, **env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", HELD_AFTER_FREE, how],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_cpu_run_keeps_freed_maps_for_its_next_step():
    assert held_mib("pick") >= 190
    assert held_mib("none") < 100  # glibc's own policy: the 200 MB went back to the system
    assert held_mib("pick", NETSPEC_KEEP_MEMORY="0") < 100
