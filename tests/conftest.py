from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TEST_SPECS = sorted((ROOT / "tests" / "nets").glob("*.yaml"))
ZOO_SPECS = sorted((ROOT / "specs" / "zoo").glob("*.yaml"))  # full size: tests/test_zoo.py


@pytest.fixture(autouse=True)
def _quiet_threads():
    import torch

    torch.set_num_threads(2)
