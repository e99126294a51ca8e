"""Property: whatever a valid spec is mutated into, and whatever `--set` says, `netspec build`
(and the checks `train` makes before any work) answer with status 0 or 2 — a table, or
located one-line problems — never a traceback, within bounded time and memory."""

from __future__ import annotations

import contextlib
import io
import re
import resource
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netspec import load_spec
from netspec.cli import main
from netspec.errors import SpecError, UsageError
from netspec.train.checks import check_memory, check_sizes
from tests.conftest import ROOT

BASES = [
    (ROOT / "tests/nets/tiny.yaml").read_text(),
    (ROOT / "specs/alexnet-mini.yaml").read_text(),
    (ROOT / "tests/nets/blocks.yaml").read_text(),
]
# values that have broken readers before: sizes past int32 and int64, floats past range,
# YAML's own tricks (tags, anchors, merges), names torch reserves or YAML misreads
HOSTILE = [
    "0", "-1", "1", "3", "2147483647", "2147483648", "100000000000000000000", "1e20", "1e400",
    "-.inf", ".nan", "0x7fffffffffffffff", "1" * 120, "null", "~", "true", "yes", "''", "'1e5'",
    "[]", "{}", "[1, 2]", "[3, 100000, 100000]", "[[[[[1]]]]]", "{a: {b: {c: 1}}}",
    "!!binary aGk=", "!!python/object/apply:os.system [ls]", "&x 3", "*x", "{<<: {a: 1}, <<: {}}",
    "training", "input", "to", "classes", "torch", "caffe", "cosine", "\"a\\0b\"", "\t", "[",
    "{type: cosine}", "{type: step, every: 0}", "\"" + "x" * 5000 + "\"",
]  # fmt: skip
KEYS = [
    "name", "input", "input.1", "classes", "device_groups", "layers", "layers.0",
    "layers.0.name", "layers.0.filters", "layers.0.kernel", "layers.0.stride",
    "layers.0.padding", "layers.1.inputs", "layers.2.size", "layers.2.convention",
    "layers.conv1.filters", "layers.norm1.size", "layers.fc.units", "layers.fc8.units",
    "layers.fc8.in_features", "train.seed", "train.batch_size", "train.epochs", "train.schedule",
    "train.lr", "data.resize", "data.crop", "data.mean", "data.workers", "init.std", "a.b.c",
    "blocks", "blocks.cbr", "blocks.cbr.params", "blocks.cbr.layers.conv.filters",
    "blocks.mixed.layers.b3.inputs", "blocks.mixed.layers.b1.use", "layers.mix.repeat",
    "layers.mix.with.filters", "layers.mix.use", "layers.stem.with", "layers.side.inputs",
]  # fmt: skip
SCALAR = re.compile(r"(?<=: )[^,{}\[\]\n#]+")  # a value after `key: `

values = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


@st.composite
def mutated_spec(draw) -> str:
    text = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["value", "value", "delete", "insert", "line"]))
        if op == "value":
            spots = list(SCALAR.finditer(text))
            spot = spots[draw(st.integers(0, len(spots) - 1))]
            text = text[: spot.start()] + draw(values) + text[spot.end() :]
        elif op == "delete":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        elif op == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(values) + text[at:]
        else:
            lines = text.splitlines()
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(draw(st.integers(0, len(lines))), lines[i])  # repeat a line elsewhere
            text = "\n".join(lines) + "\n"
    return text


overrides = st.lists(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | st.text(max_size=8), values),
    max_size=3,
)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as tmp:
        # pay the one-time cost of torch's lazy imports outside the timed examples
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(["build", str(ROOT / "tests/nets/tiny.yaml")])
        yield Path(tmp)


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,  # timed below, against a bound that holds on a loaded machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(text=mutated_spec(), sets=overrides)
def test_build_answers_every_mutation_with_0_or_2(folder, text, sets):
    path = folder / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    argv = ["build", str(path)] + [arg for s in sets for arg in ("--set", s)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)  # anything but SpecError and UsageError would raise here
        except SystemExit as exc:  # argparse's own refusal (a --set value like "-1x=3")
            status = exc.code
    elapsed = time.perf_counter() - start
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert status in (0, 2)
    assert elapsed < 5, f"{elapsed:.1f} s for one build"
    assert grown_mb < 200, f"peak memory grew {grown_mb:.0f} MB"
    lines = err.getvalue().splitlines()
    if status == 2:
        assert lines and out.getvalue() == ""
        assert all(len(line) < 2000 for line in lines)  # each one line, values cut short
    if status == 0:  # what train checks next must answer as plainly
        spec = load_spec(path, sets)
        with contextlib.suppress(SpecError, UsageError):
            check_sizes(spec)
            check_memory(spec, torch.device("cpu"))
