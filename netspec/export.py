"""`netspec export`: a spec and its weights as an ONNX model or a standalone PyTorch file.

The weights are a checkpoint's (a run's `last.pt`/`best.pt`, or a plain `state_dict` file),
checked layer by layer against the spec, or else the spec's own initialisation drawn with
`train.seed`, as a training run starts. A run's checkpoint also names the network it was
trained with, and a spec that computes anything else is refused. The format follows the
output file's extension.

Some formats write a second file beside OUT (a `.py` its weights, a large ONNX model its
external data). The user named OUT, not that file, so it is written only where it does not
exist or an earlier export to OUT wrote it: a run's checkpoint is never replaced.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from netspec import build_graph, compile, load_spec
from netspec.atomic import atomic_write
from netspec.errors import UsageError
from netspec.ir.records import NetGraph
from netspec.ir.shapes import fmt
from netspec.spec.model import Spec
from netspec.train.checkpoint import (
    CheckpointError,
    check_trained_with,
    load_checkpoint,
    save_checkpoint,
    state_dict_in,
)
from netspec.train.finetune import by_spec_names, layer_of

if TYPE_CHECKING:
    import onnx

StateDict = dict[str, torch.Tensor]
# (graph, weights, OUT, the file beside OUT or None, the spec file) → the files written
Writer = Callable[[NetGraph, StateDict, Path, Path | None, str], list[Path]]

# protobuf cannot serialise a message of 2 GiB or more: a model whose weights come near that
# (leaving 64 MiB for the graph and its small constants) keeps them in a file beside it, in
# ONNX's external-data format. Decided from the graph's parameter count, before any work.
ONNX_INLINE_BYTES = 2**31 - 2**26
EXTERNAL_TENSOR_BYTES = 1024  # smaller tensors (shapes, axes, constants) stay in the model


def onnx_data_file(out: Path, graph: NetGraph) -> Path | None:
    """The external-data file an export to `out` writes, or None when the weights fit inline."""
    return out.with_name(f"{out.name}.data") if graph.net.param_bytes > ONNX_INLINE_BYTES else None


def _write_onnx(
    graph: NetGraph, state: StateDict, out: Path, data: Path | None, origin: str
) -> list[Path]:
    from netspec.backends import onnx_export

    weights = {key: value.detach().cpu().numpy() for key, value in state.items()}
    model = onnx_export.to_onnx(graph, weights, origin)
    for note in onnx_export.notes(model):
        print(f"note: {note}", file=sys.stderr)
    if data is not None:
        _move_to_external(model, data)
    with atomic_write(out, "wb") as f:
        f.write(model.SerializeToString())
    return [out] if data is None else [out, data]


def _move_to_external(model: onnx.ModelProto, data: Path) -> None:
    """Write the model's large tensors to `data` (atomically, as every file netspec writes)
    and leave references to them in the model, which names the file relative to itself."""
    import onnx
    from onnx.external_data_helper import set_external_data

    with atomic_write(data, "wb") as f:
        for tensor in model.graph.initializer:
            if len(tensor.raw_data) < EXTERNAL_TENSOR_BYTES:
                continue
            offset = f.tell()
            f.write(tensor.raw_data)
            set_external_data(tensor, data.name, offset, len(tensor.raw_data))
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")


def _onnx_wrote(out: Path, data: Path) -> bool:
    """Whether `data` is the external data of the ONNX model at `out`."""
    import onnx

    try:
        model = onnx.load(str(out), load_external_data=False)
    except Exception:  # no file, or not an ONNX model: not an export's
        return False
    return any(
        entry.key == "location" and entry.value == data.name
        for tensor in model.graph.initializer
        for entry in tensor.external_data
    )


def _write_source(
    graph: NetGraph, state: StateDict, out: Path, weights: Path | None, origin: str
) -> list[Path]:
    """The file, and the weights beside it as a plain state_dict it loads."""
    from netspec.backends.torch_source import to_source

    assert weights is not None
    text = to_source(graph, origin, weights.name)
    save_checkpoint(weights, state)
    with atomic_write(out) as f:
        f.write(text)
    return [out, weights]


def _source_wrote(out: Path, weights: Path) -> bool:
    """Whether `weights` is what an export to `out` wrote: `out` is an exported file that
    loads it, and it is a plain state_dict, which no run's checkpoint is."""
    from netspec.backends.torch_source import loads_weights

    try:
        with out.open(encoding="utf-8", errors="replace") as f:
            head = f.read(65536)  # the header; a file named by -o may be anything
        payload = load_checkpoint(weights, mmap=True)
    except (OSError, CheckpointError):
        return False
    plain = all(isinstance(value, torch.Tensor) for value in payload.values())
    return loads_weights(head, weights.name) and plain


@dataclass(frozen=True)
class Format:
    name: str
    write: Writer
    # the file an export to OUT writes beside it, if any, and whether an existing one is
    # what an earlier export to OUT wrote (which alone it may replace)
    beside: Callable[[Path, NetGraph], Path | None]
    wrote: Callable[[Path, Path], bool]
    needs: str = ""  # a package outside netspec's own dependencies, and its extra


FORMATS: dict[str, Format] = {
    ".onnx": Format("ONNX", _write_onnx, onnx_data_file, _onnx_wrote, needs="onnx"),
    ".py": Format(
        "PyTorch source", _write_source, lambda out, _: out.with_suffix(".pt"), _source_wrote
    ),
}


def format_for(out: Path) -> Format:
    """The format of `out`'s extension; anything else is the user's mistake."""
    if out.suffix not in FORMATS:
        known = ", ".join(f"{ext} ({f.name})" for ext, f in FORMATS.items())
        raise UsageError(f"-o {out}: cannot tell the format from '{out.suffix}'; use {known}")
    return FORMATS[out.suffix]


def run_export(args: argparse.Namespace) -> int:
    out = Path(args.output)
    form = format_for(out)  # before reading anything: a wrong extension is found at once
    if form.needs:
        try:
            import_module(form.needs)
        except ImportError:
            raise UsageError(
                f"-o {out}: writing {form.name} needs the {form.needs} package: "
                f"pip install 'netspec[{form.needs}]'"
            ) from None
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: no folder {out.parent}; create it first")
    spec = load_spec(args.spec, args.overrides)
    graph = build_graph(spec)
    beside = form.beside(out, graph)
    if beside is not None:
        check_beside(out, beside, args.checkpoint, form)
    state = weights_for(spec, graph, args.spec, args.checkpoint, args.overrides)
    written = form.write(graph, state, out, beside, args.spec)
    origin = (
        f"{args.checkpoint}" if args.checkpoint else f"its initialisation (seed {spec.train.seed})"
    )
    print(f"wrote {' and '.join(map(str, written))}: {spec.name} with the weights of {origin}")
    return 0


def check_beside(out: Path, beside: Path, checkpoint: str | None, form: Format) -> None:
    """The user names OUT, not the file written beside it: that one may be replaced only
    where an earlier export to OUT wrote it. Otherwise `-o RUN/best.py` would overwrite the
    run's best.pt with a plain state_dict, and `-o RUN/last.py` end the run's resumability."""
    if checkpoint is not None and beside.resolve() == Path(checkpoint).resolve():
        raise UsageError(
            f"-o {out} writes its weights to {beside}, the checkpoint it reads; choose another name"
        )
    if beside.exists() and not form.wrote(out, beside):
        raise UsageError(
            f"-o {out}: its weights go to {beside}, which exists and was not written by an "
            f"export to {out.name}; choose another -o"
        )


def weights_for(
    spec: Spec,
    graph: NetGraph,
    spec_path: str,
    checkpoint: str | None,
    overrides: Sequence[str] = (),
) -> StateDict:
    """The compiled module's state_dict: the checkpoint's, or the spec's initialisation.

    A run's checkpoint must have been trained with a network that computes what the spec's
    does (`check_trained_with`); every checkpoint's weights must fit the spec's layers."""
    if checkpoint is None:
        torch.manual_seed(spec.train.seed)  # the same draw as a training run's first weights
        return dict(compile(spec).state_dict())
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"--checkpoint {path}: no such file; point at a run's last.pt or best.pt"
        )
    payload = load_checkpoint(path)
    check_trained_with(path, payload, spec, spec_path, overrides, "export")
    state = by_spec_names(state_dict_in(path, payload), spec)
    expected = compile(spec, device="meta").state_dict()
    mismatch = first_mismatch(graph, expected, state)
    if mismatch:
        raise CheckpointError(
            f"{checkpoint} does not fit {spec_path}: {mismatch}; "
            "export with the spec it was trained with (its run folder's spec.yaml)"
        )
    return {key: _float32(state[key].detach()) for key in expected}


def first_mismatch(
    graph: NetGraph, expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]
) -> str | None:
    """The first layer, in spec order, whose weights the checkpoint lacks or shapes otherwise."""
    layers = sorted(graph.layers(), key=lambda n: n.index)
    for node in layers:
        prefix = f"{node.name}."
        want = {k: v for k, v in expected.items() if k.startswith(prefix)}
        have = {k: v for k, v in got.items() if k.startswith(prefix)}
        for key, value in want.items():
            if key not in have:
                return f"layer {node.name}: the checkpoint has no {key}"
            if tuple(have[key].shape) != tuple(value.shape):
                return (
                    f"layer {node.name}: {key} is {_shape(have[key])} in the checkpoint, "
                    f"{_shape(value)} in the spec"
                )
        for key in sorted(have.keys() - want.keys()):
            return (
                f"layer {node.name}: the checkpoint has {key}, which the spec's {node.type} has not"
            )
    names = {node.name for node in layers}
    for key in got:
        if layer_of(key, names) is None:
            return f"the checkpoint has {key}, but the spec has no layer {key.rsplit('.', 1)[0]}"
    return None


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    """Weights as the compiled module holds them; counters (batchnorm's) keep their type."""
    return tensor.float() if tensor.is_floating_point() else tensor


def _shape(tensor: torch.Tensor) -> str:
    return fmt(tuple(tensor.shape)) if tensor.dim() else "a scalar"
