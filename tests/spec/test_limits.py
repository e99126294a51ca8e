"""What reading a spec may cost: bounded bytes, depth and values, checked before the work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netspec import SpecError, load_spec
from netspec.spec.document import MAX_BYTES, MAX_DEPTH, MAX_VALUES, parse_yaml, read_yaml
from tests.conftest import ROOT

TINY = ROOT / "tests/nets/tiny.yaml"


def problem(fn, *args) -> str:
    with pytest.raises(SpecError) as info:
        fn(*args)
    (only,) = info.value.problems
    return str(only)


def test_a_device_is_refused_unread():
    assert problem(read_yaml, "/dev/zero") == "/dev/zero: is a device, not a spec file"


def test_a_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    # in a process of its own: were the pipe opened for reading, it would wait for ever
    code = (
        "from netspec.cli import main; raise SystemExit(main(['build', __import__('sys').argv[1]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr == f"{fifo}: is a pipe, not a spec file; save the spec to a file first\n"


def test_an_oversized_file_is_refused_after_reading_at_most_the_limit(tmp_path):
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:
        f.truncate(64 * 2**30)  # 64 GiB, sparse: reading it all would exhaust memory
    assert problem(read_yaml, huge) == (
        f"{huge}: file is larger than {MAX_BYTES:,} bytes; a spec is a few KB"
    )


def test_a_file_at_the_byte_limit_is_read(tmp_path):
    text = TINY.read_text()
    path = tmp_path / "padded.yaml"
    path.write_text("#" * (MAX_BYTES - len(text.encode()) - 1) + "\n" + text)
    assert path.stat().st_size == MAX_BYTES
    assert load_spec(path).name == "tiny"


def test_an_oversized_set_value_is_one_short_line():
    line = problem(load_spec, TINY, ["description=" + "x" * (MAX_BYTES + 1)])
    assert line == (
        "--set description=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…: "
        f"{MAX_BYTES + 1:,} bytes, more than {MAX_BYTES:,} allowed"
    )


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_nesting_is_bounded_in_a_file_and_in_a_set_value(opener):
    closer = "]" if opener == "[" else "}"
    deep = opener * (MAX_DEPTH + 5) + "1" + closer * (MAX_DEPTH + 5)
    line = problem(parse_yaml, f"a: {deep}\n", "f.yaml")
    assert line.startswith("f.yaml:1:")
    assert line.endswith(
        f"lists and mappings nest more than {MAX_DEPTH} levels deep; a spec needs a few"
    )
    line = problem(load_spec, TINY, [f"description={deep}"])
    assert line.endswith(f"nest more than {MAX_DEPTH} levels deep; a spec needs a few")
    assert len(line) < 300


def test_aliases_nested_through_each_other_are_bounded_in_depth():
    # each anchor nests the one before: 30 levels in the text, 30 × 10 once expanded
    lines = ["a0: &a0 [[[[[[[[[[1]]]]]]]]]]"]
    lines += [f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]" for i in range(1, 30)]
    line = problem(parse_yaml, "\n".join(lines) + "\n", "f.yaml")
    assert f"aliases nest values more than {MAX_DEPTH} levels deep" in line


def test_a_set_key_deeper_than_any_spec_is_refused():
    key = ".".join(["a"] * (MAX_DEPTH + 1))
    line = problem(load_spec, TINY, [f"{key}=1"])
    assert line.endswith(f"KEY has {MAX_DEPTH + 1} parts; a spec nests at most {MAX_DEPTH} deep")


@pytest.mark.slow  # seconds of work: the slow lane keeps the fast one under 30 s
def test_values_are_counted_in_the_text_and_after_expansion():
    many = "[" + ", ".join(["1"] * (MAX_VALUES + 1)) + "]"
    assert "the text holds more than" in problem(parse_yaml, f"a: {many}\n", "f.yaml")
    # 200 values, aliased 200 times: 40,000 once expanded
    text = "a: &a [" + ", ".join(["1"] * 200) + "]\nb: [" + ", ".join(["*a"] * 200) + "]\n"
    assert "aliases expand to more than 20000 values" in problem(parse_yaml, text, "f.yaml")


def test_a_valid_spec_at_the_limits_reads_quickly(tmp_path):
    # as many layers as the value limit allows, padded to the byte limit (see
    # benchmarks/spec_limits.py for the time against AlexNet's)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from spec_limits import near_limit_spec
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    text, layers = near_limit_spec()
    path = tmp_path / "near.yaml"
    path.write_text(text)
    assert MAX_BYTES - 200 < path.stat().st_size <= MAX_BYTES
    spec = load_spec(path)
    assert len(spec.layers) == layers > 2000
