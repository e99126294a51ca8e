"""Whatever the spec, its layers, its device groups and the output file are called, both
exports load and compute the compiled module's function (issue 16, class 4): names are made
safe and unique where they are written, not refused or left to chance."""

import builtins
import importlib.util
import keyword
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from netspec.backends.torch_source import HELPER_NAMES

from netspec import compile, load_spec
from netspec.cli import main
from netspec.spec.layers import INPUT, NAME_PATTERN, TORCH_MODULE_ATTRIBUTES
from netspec.spec.model import Spec
from netspec.train.runfolder import spec_yaml

pytestmark = pytest.mark.slow  # hypothesis exports and runs dozens of nets: seconds

ort = pytest.importorskip("onnxruntime")


def allowed(name: str) -> bool:
    """A layer or device-group name the spec language takes."""
    return bool(re.fullmatch(NAME_PATTERN, name)) and name not in TORCH_MODULE_ATTRIBUTES | {INPUT}


# What the files define or use, and what ONNX export names its parts: the names most likely
# to collide, in the case they are written and in lower case (a class name is capitalised).
TRICKY = [
    *keyword.kwlist,
    *keyword.softkwlist,
    *HELPER_NAMES,
    *(name.lower() for name in HELPER_NAMES),
    *("none", "true", "false", "null", "x", "x_", "self", "torch", "nn", "sum", "sum_"),
    *("input_", "flatten", "split", "split_2", "batch", "weight", "bias", "Network"),
    *(name for name in dir(builtins) if name.islower()),
]
NAMES = st.one_of(
    st.sampled_from(sorted({n for n in TRICKY if allowed(n)})),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True).filter(allowed),
)
SPEC_NAMES = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
# A file name: anything but a slash or NUL, newlines and quotes included.
STEMS = st.text(
    st.characters(exclude_characters="/\x00", exclude_categories=("Cs",)), min_size=1, max_size=8
)


def tiny(name: str, layers: list[str], groups: list[str]) -> Spec:
    """Nine layers over two device groups that reach every naming path of both exports: a
    per-group LRN (ONNX: Split, elementary operators, Concat), a grouped conv, values read
    twice (their own locals), add and concat (helpers in the .py, a Split per input in
    ONNX), a grouped linear that flattens (Flatten, Split, one Gemm per group)."""
    a, b, c, d, e, f, g, h, i = layers
    return Spec.model_validate(
        {
            "name": name,
            "input": [4, 3, 3],
            "classes": 4,
            "device_groups": groups,
            "layers": [
                {"name": a, "type": "conv", "filters": 4, "kernel": 1},
                {"name": b, "type": "relu"},
                {"name": c, "type": "lrn", "size": 2, "convention": "torch"},
                {"name": d, "type": "conv", "filters": 4, "kernel": 1, "connect": "group"},
                {"name": e, "type": "conv", "filters": 4, "kernel": 1, "inputs": [b]},
                {"name": f, "type": "add", "inputs": [d, e]},
                {"name": g, "type": "concat", "inputs": [f, e]},
                {"name": h, "type": "linear", "units": 4, "connect": "group"},
                {"name": i, "type": "linear", "units": "classes"},
            ],
        }
    )


def import_file(path: Path) -> object:
    spec = importlib.util.spec_from_file_location("exported_net", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@settings(max_examples=25, deadline=None)
@given(
    name=SPEC_NAMES,
    layers=st.lists(NAMES, min_size=9, max_size=9, unique=True),
    groups=st.lists(NAMES, min_size=2, max_size=2, unique=True),
    stem=STEMS,
)
@example(
    name="none",
    layers=["lambda", "None", "sum", "Concat", "x", "add", "concat", "flatten", "split"],
    groups=["split", "flatten"],
    stem='a\nimport os\nos.remove("b")\n"',
)
@example(
    name="concat",
    layers=["conv", "relu", "norm", "left", "right", "add", "join", "fc", "out"],
    groups=["flatten", "split"],
    stem="true",
)
@example(
    name="add",
    layers=["local_response_norm", "True", "if", "x_", "input_", "Add", "x", "self", "torch"],
    groups=["a", "split_2"],
    stem="'\"\\",
)
def test_any_names_give_exports_that_load_and_compute_the_compiled_function(
    name: str, layers: list[str], groups: list[str], stem: str
) -> None:
    torch.set_num_threads(1)  # a net this small waits on a second thread more than it gains
    spec = tiny(name, layers, groups)
    x = torch.randn(2, *spec.input)
    torch.manual_seed(spec.train.seed)  # the export's weights: the spec's initialisation
    with torch.no_grad():
        want = compile(spec).eval()(x).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "spec.yaml").write_text(spec_yaml(spec))
        assert load_spec(folder / "spec.yaml").model_dump() == spec.model_dump()
        source, model = folder / f"{stem}.py", folder / f"{stem}.onnx"
        for out in (source, model):
            assert main(["export", str(folder / "spec.yaml"), "-o", str(out)]) == 0

        # the file imports, defines only what it says, and computes the same function
        module = import_file(source)
        net = getattr(module, module.__all__[0])().eval()
        net.load_state_dict(torch.load(source.with_suffix(".pt"), weights_only=True))
        with torch.no_grad():
            np.testing.assert_allclose(net(x).numpy(), want, rtol=1e-5, atol=1e-5)
        assert not hasattr(module, "os")  # the file name put nothing in the file to run

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {INPUT: x.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
