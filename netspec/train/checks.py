"""Checks that a spec fits the data and the machine it is trained or evaluated on, made
before any work starts (before the statistics are fitted, before any weight exists)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from netspec.errors import Problem, SpecError, UsageError
from netspec.ir.graph import build_graph
from netspec.ir.records import NetGraph, Node
from netspec.ir.shapes import fmt
from netspec.ir.summary import binary_size
from netspec.spec.layers import Linear
from netspec.spec.model import Spec
from netspec.train.augment import needs_stats
from netspec.train.data import Data, open_data
from netspec.train.store import Stale


def check_data_fits(
    spec: Spec, folder: Path, classes: list[str], graph: NetGraph | None = None
) -> None:
    """The output layer must have one unit per class folder; the advice names what sets it."""
    graph = graph or build_graph(spec)
    units = graph.node(graph.net.output).shape[0]
    if len(classes) != units:
        shown = ", ".join(classes[:5]) + (", …" if len(classes) > 5 else "")
        raise UsageError(
            f"{folder} has {len(classes)} classes ({shown}) but the spec's output "
            f"has {units} units: {_class_count_fix(graph, len(classes))}"
        )


def _class_count_fix(graph: NetGraph, count: int) -> str:
    """`--set classes=N` where the output says `units: classes`, else the layer's own units."""
    node = _width_source(graph, graph.node(graph.net.output))
    if isinstance(node.layer, Linear):
        if node.layer.units == "classes":
            return f"add --set classes={count}"
        return f"add --set layers.{node.name}.units={count} (its units are fixed)"
    return f"end the spec with a linear layer of units: classes, and add --set classes={count}"


def _width_source(graph: NetGraph, node: Node) -> Node:
    """The layer that decides how wide `node`'s vector is: itself, or the layer before a
    chain of activations, dropout and batchnorm."""
    while node.layer is not None and node.layer.keeps_width:
        (source,) = graph.inputs_of(node.name)
        node = graph.node(source)
    return node


def check_sizes(spec: Spec, training: bool = True, graph: NetGraph | None = None) -> None:
    """The data section must produce what the input layer expects, the last layer must give
    one score per class, and (for training) there must be something to train."""
    problems = []
    channels, h, w = spec.input
    if channels != 3:
        problems.append(
            Problem(
                spec.where(("input",)),
                f"image folders give 3 channels (RGB), but the input has {channels}; "
                f"set input: [3, {h}, {w}]",
            )
        )
    if spec.data.crop != h or h != w:
        problems.append(
            Problem(
                spec.where(("data", "crop")),
                f"data.crop is {spec.data.crop} but the input is "
                f"{spec.input[0]}×{h}×{w}; crops are square and must match: "
                f"set data.crop: {h} (and a square input)",
            )
        )
    problems += _classifier_problems(spec, graph or build_graph(spec), training)
    if problems:
        raise SpecError(problems)


def _classifier_problems(spec: Spec, graph: NetGraph, training: bool) -> list[Problem]:
    problems = []
    last = graph.node(graph.net.output)
    if len(last.shape) != 1:
        problems.append(
            Problem(
                spec.where(("layers", last.index)),
                f"a classifier's last layer gives one score per class, but this one gives "
                f"{fmt(last.shape)}: end the spec with a linear layer of units: classes",
                spec.layer_context(last.index),
            )
        )
    if training and graph.net.params == 0:
        problems.append(
            Problem(
                spec.where(("layers",), key=True),
                "no layer has weights, so there is nothing to train: add a conv or linear layer",
            )
        )
    batch = spec.train.batch_size
    for node in graph.layers():
        values = batch * (node.shape[1] * node.shape[2] if len(node.shape) == 3 else 1)
        if training and node.type == "batchnorm" and values == 1:
            problems.append(
                Problem(
                    spec.where(("train", "batch_size")),
                    f"batch_size {batch} gives batchnorm '{node.name}' one value per channel, "
                    "from which it cannot estimate a variance: use a batch of 2 or more",
                )
            )
    return problems


WORKERS_PER_CORE = 8  # more loader processes than this only compete for the cores


def check_workers(spec: Spec) -> None:
    """Refuse a worker count that would start more loader processes than the machine can
    run (each is a forked copy of the trainer): a typo like --workers 1000 is a fork bomb."""
    cores = os.cpu_count() or 1
    limit = WORKERS_PER_CORE * cores
    if spec.data.workers > limit:
        raise UsageError(
            f"data.workers is {spec.data.workers}, but this machine has {cores} CPU cores: "
            f"use at most {limit} ({WORKERS_PER_CORE} per core), e.g. --workers {min(cores, 8)}"
        )


def check_memory(
    spec: Spec, device: torch.device, training: bool = True, graph: NetGraph | None = None
) -> None:
    """Refuse, in one line, a model that cannot fit the device's memory: a lower bound of
    what it needs (weights, with their gradients and momentum when training; one batch's
    activations; one decoded image) against the memory the device has."""
    net = (graph or build_graph(spec)).net
    batch = spec.train.batch_size * (10 if spec.data.ten_crop and not training else 1)
    weights = net.param_bytes * (3 if training else 1)
    activations = batch * net.activation_bytes
    pixels = 3 * spec.data.resize**2
    image = pixels * (1 + (8 if needs_stats(spec.data) else 0))  # uint8, and the mean's sum
    need = weights + activations + image
    have = device_memory(device)
    if need > have:
        kept = "weights, gradients and momentum" if training else "weights"
        raise UsageError(
            f"{spec.name} needs at least {binary_size(need)} ({kept} {binary_size(weights)}, "
            f"activations of a batch of {batch} {binary_size(activations)}, a "
            f"{spec.data.resize}-pixel image {binary_size(image)}), but {device.type} has "
            f"{binary_size(have)}: lower --batch-size, data.resize or the layers' sizes"
        )


def device_memory(device: torch.device) -> int:
    """Bytes of memory `device` has: the GPU's, or the machine's (within a cgroup limit)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def check_cache(folder: Path) -> None:
    """The cache folder can be created and written (a file made and removed in it), or one
    line says why not: found before minutes are spent on what it would keep."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(
            f"cache folder {folder} is unusable ({exc.strerror or exc}): set NETSPEC_CACHE "
            "to a folder you can write"
        ) from None


def open_training_data(
    spec: Spec, root: Path, stale: Stale = "refuse", graph: NetGraph | None = None
) -> Data:
    """ROOT's train and val splits, checked against the spec, with statistics fitted."""
    graph = graph or build_graph(spec)
    check_sizes(spec, graph=graph)
    data = open_data(root, spec.data, stale=stale)
    check_data_fits(spec, data.train_set.where, data.classes, graph)
    if len(data.train_set) < spec.train.batch_size:
        raise UsageError(
            f"{data.train_set.where} has {len(data.train_set)} images, fewer than "
            f"one batch ({spec.train.batch_size}): lower --batch-size"
        )
    return data
