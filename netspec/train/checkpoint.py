"""Checkpoints: atomic saves, loads that run no pickled code, and the random-number state.

A run can be killed at any moment, and resuming must find either the previous checkpoint or
the new one, never half of one: saves go through `netspec.atomic.atomic_write`.

What goes in a checkpoint is the caller's choice, but it is loaded with `weights_only=True`,
so it may hold only tensors, numbers, strings, None, and lists/tuples/dicts of them
(optimizer and schedule `state_dict()`s, `rng_state()`, a YAML string, metrics all qualify).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netspec.atomic import atomic_write
from netspec.errors import UsageError


class CheckpointError(UsageError):
    """A checkpoint that cannot be loaded: one line naming the file and the fix."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically: afterwards `path` is the old file or the new one."""
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU without running pickled code (`weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; check the path, or start without resuming"
        )
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        # torch's messages run to paragraphs and suggest weights_only=False; say it briefly.
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe:
            raise CheckpointError(
                f"{path}: holds a {unsafe[1]}, which weights_only=True refuses; "
                "save only tensors, numbers, strings, and lists and dicts of them"
            ) from e
        raise CheckpointError(
            f"{path}: not a torch checkpoint, or a damaged one ({type(e).__name__}); "
            "point at a last.pt or best.pt written by netspec train"
        ) from e
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path}: holds a {type(payload).__name__}, not a checkpoint dict; "
            "point to a file written by save_checkpoint"
        )
    return payload


def rng_state() -> dict[str, Any]:
    """The state of torch's (CPU and CUDA), Python's and numpy's global generators.

    In forms `weights_only=True` loads: tensors, ints, floats, strings, lists, None.
    """
    version, mt, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": list(mt), "gauss_next": gauss_next},
        "numpy": {
            "name": str(name),
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` returned, so the same draws follow."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            np.asarray(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
