"""Checkpoints: atomic saves, loads that run no pickled code, and the random-number state.

A run can be killed at any moment, and resuming must find either the previous checkpoint or
the new one, never half of one: saves go through `netspec.atomic.atomic_write`.

What goes in a checkpoint is the caller's choice, but it is loaded with `weights_only=True`,
so it may hold only tensors, numbers, strings, None, and lists/tuples/dicts of them
(optimizer and schedule `state_dict()`s, `rng_state()`, a YAML string, metrics all qualify),
and only dense tensors with values: a sparse or meta tensor is refused when loaded, where one
line can name it, instead of failing later inside whatever reads it.

A run's checkpoint also holds the spec it was trained with, so that `eval` and `export` can
refuse a spec that computes something else (see `check_trained_with`).
"""

from __future__ import annotations

import contextlib
import random
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.ir.graph import build_graph
from netspec.ir.records import NetGraph, Node
from netspec.ir.shapes import fmt
from netspec.spec.document import parse_yaml
from netspec.spec.model import Spec, validate
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


def trained_spec(path: Path, payload: Mapping[str, Any]) -> Spec | None:
    """The spec a run's checkpoint was trained with; None for a file without one (a plain
    state_dict, or weights saved by other code)."""
    saved = payload.get("spec")
    if saved is None:
        return None
    try:
        if not isinstance(saved, str):
            raise TypeError
        return validate(parse_yaml(saved, str(path)))
    except Exception:
        raise CheckpointError(
            f"{path}: its 'spec' is not a spec netspec wrote; "
            "use a checkpoint written by netspec train"
        ) from None


def check_trained_with(
    path: Path,
    payload: Mapping[str, Any],
    spec: Spec,
    spec_file: str,
    overrides: Sequence[str],
    verb: str,
    graph: NetGraph | None = None,
) -> None:
    """Refuse, in one line naming the first difference, a spec whose network computes
    something other than the one the checkpoint was trained with.

    The weights alone cannot tell: an LRN removed, relu for tanh, another pooling window or
    other LRN constants leave every weight's shape as it was, and the result would be another
    function reported or written under the run's name. Refusing, rather than quietly using
    the checkpoint's own spec, keeps what was asked for and what was computed the same
    thing: the user named SPEC (and perhaps --set), and the fix, naming the run's own
    spec.yaml, is one word. `eval` and `export` both call this, so they agree.

    A checkpoint without a spec (a plain state_dict) is left to the weights' own check.
    """
    trained = trained_spec(path, payload)
    if trained is None:
        return
    try:
        trained_graph = build_graph(trained)
    except Exception:
        raise CheckpointError(
            f"{path}: its 'spec' does not build; use a checkpoint written by netspec train"
        ) from None
    difference = first_difference(trained_graph, graph or build_graph(spec), str(path), spec_file)
    if difference is None:
        return
    own = path.parent / "spec.yaml"
    changing = [o for o in overrides if o.partition("=")[0].split(".")[0].strip() in _NETWORK]
    if own.is_file() and own.resolve() != Path(spec_file).resolve():
        fix = f"{verb} with the run's own spec ({own})"
    elif changing:
        fix = f"{verb} without --set {', '.join(changing)}"
    else:
        fix = f"{verb} with the spec it was trained with"
    raise CheckpointError(f"{difference}: {fix}")


# The top-level keys of a spec that change the network (the rest: training and data).
_NETWORK = {"input", "classes", "device_groups", "layers"}
# A layer's settings that do not change what it computes once a checkpoint is loaded: the
# state replaces the initialisation, names are how the state finds its layers (the weights'
# keys check them), the inputs are compared as wiring, and `in_features` is only a check.
_NOT_COMPUTED = {"type", "name", "inputs", "init", "in_features"}


def first_difference(
    trained: NetGraph, given: NetGraph, trained_name: str, given_name: str
) -> str | None:
    """The first way in which `given` computes otherwise than `trained`, as the start of a
    sentence; None when they compute the same function.

    Layers are compared in running order by type and settings; where those agree the wiring
    and output shapes are compared too. Names are not compared: renaming a layer without
    weights changes nothing, and a renamed weight layer is caught by the weights' keys.
    """
    was, has = f"{trained_name} was trained", f"{given_name} has"
    a_input, b_input = trained.net.input, given.net.input
    if a_input != b_input:
        return f"{was} on input {fmt(a_input)} where {has} {fmt(b_input)}"
    a_groups, b_groups = len(trained.net.device_groups), len(given.net.device_groups)
    if max(a_groups, 1) != max(b_groups, 1):
        return f"{was} with {_count(a_groups)} where {has} {_count(b_groups)}"
    a_layers, b_layers = trained.layers(), given.layers()
    a_at = {n.name: i for i, n in enumerate(a_layers)}
    b_at = {n.name: i for i, n in enumerate(b_layers)}
    a_kinds, b_kinds = [_kind(n) for n in a_layers], [_kind(n) for n in b_layers]
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a_kinds, b_kinds, False).get_opcodes():
        if tag == "delete":
            return f"{was} with layer {_describe(a_layers[i1])} where {given_name} has none"
        if tag == "insert":
            return f"{was} without layer {_describe(b_layers[j1])}, which {given_name} has"
        a, b = a_layers[i1], b_layers[j1]
        if tag == "replace":
            shown = _differing(a, b) if a.type == b.type else None
            return f"{was} with layer {_describe(a, shown)} where {has} {_describe(b, shown)}"
        # an equal run: the first one starts both lists, so positions in it are comparable
        for a, b in zip(a_layers[i1:i2], b_layers[j1:j2], strict=True):
            a_reads, b_reads = _reads(trained, a_at, a), _reads(given, b_at, b)
            if [i for i, _ in a_reads] != [i for i, _ in b_reads]:
                shown_a = ", ".join(name for _, name in a_reads)
                shown_b = ", ".join(name for _, name in b_reads)
                return (
                    f"{was} with layer {a.name} reading {shown_a} where {given_name}'s "
                    f"{b.name} reads {shown_b}"
                )
            if a.shape != b.shape:
                return (
                    f"{was} with layer {a.name} giving {fmt(a.shape)} where {given_name}'s "
                    f"{b.name} gives {fmt(b.shape)}"
                )
    return None


def _count(groups: int) -> str:
    return "one device group" if groups <= 1 else f"{groups} device groups"


def _settings(node: Node) -> dict[str, Any]:
    """What the layer computes with, as the spec writes it, resolved where two spellings
    compute the same (`units: classes`, a pooling stride left to the kernel)."""
    assert node.layer is not None
    settings = node.layer.model_dump(exclude=_NOT_COMPUTED)
    if "units" in settings:
        settings["units"] = node.shape[0]
    if settings.get("stride", ()) is None:
        settings["stride"] = settings["kernel"]
    return settings


def _kind(node: Node) -> str:
    return repr((node.type, sorted(_settings(node).items())))


def _differing(a: Node, b: Node) -> list[str]:
    sa, sb = _settings(a), _settings(b)
    return [key for key in sa if sa[key] != sb.get(key)]


def _describe(node: Node, keys: list[str] | None = None) -> str:
    """`norm1 (lrn, size 5, alpha 0.0001, …)`: the layer as the spec writes it."""
    settings = _settings(node)
    shown = [f"{k} {_shown(settings[k])}" for k in keys or settings if settings[k] is not None]
    return f"{node.name} ({', '.join([node.type, *shown])})"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return _shown(value[0]) if len(set(value)) == 1 else "×".join(map(_shown, value))
    return str(value)


def _reads(graph: NetGraph, at: dict[str, int], node: Node) -> list[tuple[int, str]]:
    """The layers `node` reads, as (position in running order, name); the input is -1."""
    return [(at.get(s, -1), s) for s in graph.inputs_of(node.name)]


def state_dict_in(path: Path, payload: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A run checkpoint's `model`, or the whole file when it is a plain state_dict."""
    state = payload.get("model", payload)
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise CheckpointError(
            f"{path}: neither a netspec checkpoint (a dict with 'model') nor a state_dict "
            "(names to tensors); point at a last.pt or best.pt written by netspec train"
        )
    return dict(state)
