"""Checkpoints: atomic saves, loads that run no pickled code, and the random-number state.

A run can be killed at any moment, and resuming must find either the previous checkpoint or
the new one, never half of one: saves go through `netspec.atomic.atomic_write`.

What goes in a checkpoint is the caller's choice, but it is loaded with `weights_only=True`,
so it may hold only tensors, numbers, strings, None, and lists/tuples/dicts of them
(optimizer and schedule `state_dict()`s, `rng_state()`, a YAML string, metrics all qualify),
and only dense tensors with values: a sparse or meta tensor is refused when loaded, where one
line can name it, instead of failing later inside whatever reads it.
"""

from __future__ import annotations

import contextlib
import random
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.train.augment import Stats


class CheckpointError(UsageError):
    """A checkpoint that cannot be loaded: one line naming the file and the fix."""


# What a resume reads from last.pt, and what each must be.
RESUME_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": dict,
    "optimizer": dict,
    "schedule": dict,
    "scaler": dict,
    "rng": dict,
    "epoch": int,
    "best_top1": float,
    "spec": str,
}
# What evaluation reads; `stats` may be None (a run without mean or PCA).
EVAL_FIELDS: dict[str, type | tuple[type, ...]] = {"model": dict}
_SHOWN = {dict: "a mapping", int: "an integer", float: "a number", str: "a string"}


def require(
    path: Path, payload: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]], use: str
) -> None:
    """One line naming the first missing or mistyped entry a checkpoint needs for `use`."""
    missing = [k for k in fields if k not in payload]
    if missing:
        names = ", ".join(f"'{k}'" for k in missing)
        hint = (
            " (an interrupted.pt or best.pt holds weights only)" if "optimizer" in missing else ""
        )
        raise CheckpointError(
            f"{path}: has no {names}, which it needs to {use}{hint}; "
            "use a checkpoint written by netspec train"
        )
    for key, kind in fields.items():
        value = payload[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            want = _SHOWN.get(kind, str(kind)) if isinstance(kind, type) else str(kind)
            raise CheckpointError(
                f"{path}: its '{key}' is {type(value).__name__}, not {want}; "
                "use a checkpoint written by netspec train"
            )


@contextlib.contextmanager
def restoring(path: Path, what: str) -> Iterator[None]:
    """Turn a failure to restore a checkpoint's `what` (state that does not fit, crafted
    entries) into one line naming the file."""
    try:
        yield
    except UsageError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
        # load_state_dict says "Error(s) in loading state_dict for X:", then the first error
        detail = (lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0])[:160]
        raise CheckpointError(
            f"{path}: its {what} does not fit this run ({type(exc).__name__}: {detail}); "
            "use a checkpoint written by netspec train for this spec"
        ) from None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically: afterwards `path` is the old file or the new one."""
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint onto the CPU without running pickled code (`weights_only=True`);
    with `mmap`, tensors stay on disk until read (to look at a checkpoint's numbers)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; check the path, or start without resuming"
        )
    try:
        with warnings.catch_warnings():  # torch says it checks a sparse tensor's indices
            warnings.filterwarnings("ignore", message=".*[Ss]parse", category=UserWarning)
            payload = torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
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
    _refuse_valueless(path, payload, ())
    return payload


def _refuse_valueless(path: Path, value: Any, keys: tuple[str | int, ...]) -> None:
    """One line for the first sparse or meta tensor in a checkpoint: every reader of one
    (load_state_dict, the optimizer, an export) expects dense values on the CPU."""
    if isinstance(value, torch.Tensor):
        where = str(keys[0]) + "".join(f"[{k!r}]" for k in keys[1:])
        if value.is_meta:
            raise CheckpointError(
                f"{path}: its {where} is a meta tensor, which holds no values; "
                "save the weights themselves (not a model built on the meta device)"
            )
        if value.layout != torch.strided:
            layout = str(value.layout).removeprefix("torch.")
            raise CheckpointError(
                f"{path}: its {where} is a sparse tensor ({layout}); netspec reads dense "
                "tensors: save it with .to_dense()"
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_valueless(path, item, (*keys, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _refuse_valueless(path, item, (*keys, i))


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
            "keys": np.asarray(keys).tolist(),
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


def stats_from(path: Path, payload: Mapping[str, Any]) -> Stats | None:
    """The training-set statistics a checkpoint stores (None for a run without any),
    checked to be the three tensors fit_stats makes."""
    raw = payload.get("stats")
    if raw is None:
        return None
    with restoring(path, "'stats'"):
        mean, eigvals, eigvecs = raw["mean"], raw["eigvals"], raw["eigvecs"]
        tensors = (mean, eigvals, eigvecs)
        if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors):
            raise TypeError("mean, eigvals and eigvecs must be float tensors")
        square = mean.dim() == 3 and mean.shape[0] == 3 and mean.shape[1] == mean.shape[2]
        if not (square and eigvals.shape == (3,) and eigvecs.shape == (3, 3)):
            raise ValueError("expected a 3×R×R mean, 3 eigenvalues and 3×3 eigenvectors")
    return Stats(mean, eigvals, eigvecs)
