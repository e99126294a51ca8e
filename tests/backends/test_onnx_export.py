"""The ONNX export run by onnxruntime against the compiled torch module, layer names kept."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec import build_graph, compile, load_spec
from netspec.cli import main
from netspec.spec.model import Spec
from tests.conftest import ROOT

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from netspec.backends.onnx_export import notes, to_onnx  # noqa: E402
from onnx.numpy_helper import to_array  # noqa: E402

ZOO = ROOT / "tests" / "nets" / "zoo.yaml"


def run_onnx(model, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def torch_out(module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(x).numpy()


def random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights unlike any initialisation, so a checkpoint's are seen to be the ones used;
    batchnorm's running statistics too, so they are not the identity. Each weight is scaled
    by 1/√fan-in, which keeps activations near 1 through the layers."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if value.is_floating_point():
            fan_in = value[0].numel() if value.dim() > 1 else 10
            value = torch.randn(value.shape, generator=gen) / fan_in**0.5
            value = value.abs() + 0.5 if key.endswith("running_var") else value
        state[key] = value
    return state


def export(spec_path: Path, out: Path, *extra: str) -> onnx.ModelProto:
    assert main(["export", str(spec_path), "-o", str(out), *extra]) == 0
    return onnx.load(str(out))


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """The two full-size specs (61M weights each), each exported once, with its own init."""
    cache = {}

    def get(name: str):
        if name not in cache:
            path = ROOT / "specs" / f"{name}.yaml"
            model = export(path, tmp_path_factory.mktemp(name) / f"{name}.onnx")
            spec = load_spec(path)
            torch.manual_seed(spec.train.seed)
            cache[name] = (model, compile(spec), spec)
        return cache[name]

    return get


@pytest.fixture
def paper(large):
    return large("alexnet")[:2]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "torchvision-alexnet"])
def test_full_size_spec_equals_torch_in_onnxruntime(large, name):
    model, module, spec = large(name)
    onnx.checker.check_model(model)
    x = torch.randn(2, *spec.input) * 60  # roughly the spread of mean-subtracted 0–255 pixels
    np.testing.assert_allclose(run_onnx(model, x), torch_out(module, x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # exports all 61M weights
def test_paper_spec_has_lrn_nodes_per_group_with_the_papers_constants(paper):
    model, _ = paper
    nodes = {n.name: n for n in model.graph.node}
    for norm in ("norm1", "norm2"):
        assert nodes[f"{norm}/split"].op_type == "Split"
        assert nodes[norm].op_type == "Concat"
        assert list(nodes[norm].input) == [f"{norm}/gpu0", f"{norm}/gpu1"]
        for tower in ("gpu0", "gpu1"):
            lrn = nodes[f"{norm}/{tower}"]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in lrn.attribute}
            assert lrn.op_type == "LRN"
            # the paper's n = 5, α = 1e-4 on each square; ONNX divides its alpha by size
            assert attrs["size"] == 5
            assert attrs["alpha"] == pytest.approx(5e-4)
            assert (attrs["beta"], attrs["bias"]) == (pytest.approx(0.75), pytest.approx(2.0))
    assert notes(model) == []


@pytest.mark.slow  # exports all 61M weights
def test_node_names_are_the_spec_layers_and_the_batch_is_dynamic(paper):
    model, _ = paper
    spec = load_spec(ROOT / "specs" / "alexnet.yaml")
    layer_names = [layer.name for layer in spec.layers]
    nodes = [n.name for n in model.graph.node]
    assert [n for n in nodes if "/" not in n] == layer_names  # one node per layer, in order
    assert all(n.split("/")[0] in layer_names for n in nodes)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "fc8"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 227, 227]
    conv1 = next(n for n in model.graph.node if n.name == "conv1")
    assert list(conv1.input) == ["input", "conv1.weight", "conv1.bias"]


BLOCKS = ROOT / "tests" / "nets" / "blocks.yaml"


@pytest.mark.parametrize(
    "path",
    [pytest.param(ROOT / "specs" / "alexnet-mini.yaml", marks=pytest.mark.slow), ZOO, BLOCKS],
    ids=lambda p: p.stem,
)
def test_spec_from_a_checkpoint_equals_torch_at_two_batch_sizes(path, tmp_path):
    spec = load_spec(path)
    module = compile(spec)
    state = random_state(module, seed=1)
    torch.save({"model": state, "epoch": 3}, tmp_path / "best.pt")
    model = export(path, tmp_path / "net.onnx", "--checkpoint", str(tmp_path / "best.pt"))
    onnx.checker.check_model(model, full_check=True)
    module.load_state_dict(state)
    for batch in (1, 3):
        x = torch.randn(batch, *spec.input)
        got = run_onnx(model, x)
        np.testing.assert_allclose(got, torch_out(module, x), rtol=1e-4, atol=1e-4)


def test_a_plain_state_dict_file_is_a_checkpoint_too(tmp_path):
    spec = load_spec(ZOO)
    module = compile(spec)
    state = random_state(module, seed=2)
    torch.save(state, tmp_path / "weights.pt")
    model = export(ZOO, tmp_path / "zoo.onnx", "--checkpoint", str(tmp_path / "weights.pt"))
    module.load_state_dict(state)
    x = torch.randn(2, *spec.input)
    np.testing.assert_allclose(run_onnx(model, x), torch_out(module, x), rtol=1e-4, atol=1e-4)


def test_without_a_checkpoint_the_weights_are_the_seeded_initialisation(tmp_path):
    model = export(ZOO, tmp_path / "zoo.onnx", "--set", "train.seed=7")
    spec = load_spec(ZOO, ["train.seed=7"])
    torch.manual_seed(7)
    module = compile(spec)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(weights["stem.weight"], module.stem.weight.detach().numpy())


def test_zoo_keeps_its_towers_visible(tmp_path):
    model = export(ZOO, tmp_path / "zoo.onnx")
    ops = {n.name: n.op_type for n in model.graph.node}
    # a grouped linear is Split → one Gemm per group → Concat, never an Einsum
    assert [ops[n] for n in ("fc1/split", "fc1/a", "fc1/b", "fc1")] == [
        "Split",
        "Gemm",
        "Gemm",
        "Concat",
    ]
    assert "Einsum" not in ops.values()
    # the per-group concat puts group a's channels of both inputs before group b's
    join = next(n for n in model.graph.node if n.name == "join")
    assert list(join.input) == [
        "join/split_left/a",
        "join/split_right/a",
        "join/split_left/b",
        "join/split_right/b",
    ]
    assert ops["left"] == "Conv" and ops["sum"] == "Add" and ops["bn"] == "BatchNormalization"


def one_layer(layer: dict, channels: int = 7, groups: int = 1, size: int = 6) -> Spec:
    """A conv into the layer under test, so that a grouped layer has split channels."""
    towers = {"device_groups": [f"g{i}" for i in range(groups)]} if groups > 1 else {}
    return Spec.model_validate(
        {
            "name": "one",
            "input": [3, size, size + 1],
            **towers,
            "layers": [
                {"name": "conv", "type": "conv", "filters": channels * groups, "kernel": 1},
                {"name": "layer", **layer},
            ],
        }
    )


def check_equal(spec: Spec) -> onnx.ModelProto:
    torch.manual_seed(0)
    module = compile(spec)
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    model = to_onnx(build_graph(spec), state)
    onnx.checker.check_model(model, full_check=True)
    x = torch.randn(2, *spec.input) * 8
    np.testing.assert_allclose(run_onnx(model, x), torch_out(module, x), rtol=1e-4, atol=1e-5)
    return model


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("convention", ["paper", "torch", "caffe"])
def test_lrn_is_an_lrn_node_exactly_where_onnx_computes_the_same(convention, size, groups):
    lrn = {"type": "lrn", "size": size, "alpha": 0.05, "beta": 0.75, "k": 1.5}
    model = check_equal(one_layer({**lrn, "convention": convention}, groups=groups))
    ops = [n.op_type for n in model.graph.node]
    # ONNX sums c−⌊(size−1)/2⌋ … c+⌈(size−1)/2⌉, which for an even size is Caffe's window,
    # but onnxruntime runs odd sizes only: the paper's window (always 2⌊n/2⌋+1 channels,
    # centred) and odd torch and caffe windows are LRN nodes, even ones elementary operators
    matches = convention == "paper" or size % 2 == 1
    assert ops.count("LRN") == (groups if matches else 0)
    if matches:
        expected_size = 2 * (size // 2) + 1 if convention == "paper" else size
        lrn_node = next(n for n in model.graph.node if n.op_type == "LRN")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in lrn_node.attribute}
        assert attrs["size"] == expected_size
        per_square = 0.05 if convention == "paper" else 0.05 / size
        assert attrs["alpha"] / attrs["size"] == pytest.approx(per_square)
        assert notes(model) == []
    else:
        why = {
            "torch": f"c-{size // 2}…c+{size // 2 - 1}, ONNX's LRN c-{size // 2 - 1}…c+{size // 2}",
            "caffe": f"c-{size // 2 - 1}…c+{size // 2}, onnxruntime runs LRN of odd sizes only",
        }[convention]
        assert notes(model) == [
            f"layer: LRN ({convention} convention, even size {size}) is written out in "
            f"elementary operators: it sums channels {why}"
        ]


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
def test_pooling_that_rounds_up_past_the_padding_drops_the_window_as_torch(kind):
    # 5 rows + 2×1 padding, window 2, stride 2, rounded up: ONNX makes 4 windows, the last
    # starting in the padding; torch (and the graph) 3
    spec = one_layer({"type": kind, "kernel": 2, "padding": 1, "ceil": True}, size=5)
    model = check_equal(spec)
    assert build_graph(spec).node("layer").shape == (7, 3, 4)
    assert [n.op_type for n in model.graph.node][-2:] == [
        "MaxPool" if kind == "maxpool" else "AveragePool",
        "Slice",
    ]


@pytest.mark.parametrize(("size", "op"), [(6, "AveragePool"), (7, "MatMul")])
def test_adaptive_pooling_with_equal_or_unequal_windows(size, op):
    # rows: 6 into 3 windows of 2, or 7 into 3 overlapping windows of 3 (0-2, 2-4, 4-6)
    pool = {"type": "adaptive_avgpool", "output_size": [3, size + 1]}
    model = check_equal(one_layer(pool, size=size))
    assert model.graph.node[-1].op_type == op


def test_mismatched_checkpoint_is_one_line_naming_the_first_layer(tmp_path, capsys):
    mini = load_spec(ROOT / "specs" / "alexnet-mini.yaml", ["layers.conv2.connect=all"])
    torch.save({"model": compile(mini).state_dict()}, tmp_path / "last.pt")
    spec = ROOT / "specs" / "alexnet-mini.yaml"
    code = main(["export", str(spec), "--checkpoint", str(tmp_path / "last.pt"), "-o", "x.onnx"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"netspec export: {tmp_path / 'last.pt'} does not fit {spec}: layer conv2: "
        "conv2.weight is 96×32×5×5 in the checkpoint, 96×16×5×5 in the spec; "
        "export with the spec it was trained with (its run folder's spec.yaml)\n"
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("fc8.bias"), "layer fc8: the checkpoint has no fc8.bias"),
        (
            lambda s: s.update({"fc9.weight": torch.zeros(1)}),
            "the checkpoint has fc9.weight, but the spec has no layer fc9",
        ),
        (
            lambda s: s.update({"relu1.weight": torch.zeros(1)}),
            "layer relu1: the checkpoint has relu1.weight, which the spec's relu has not",
        ),
    ],
)
def test_checkpoint_missing_or_extra_weights(tmp_path, capsys, edit, message):
    spec = ROOT / "specs" / "alexnet-mini.yaml"
    state = dict(compile(load_spec(spec)).state_dict())
    edit(state)
    torch.save(state, tmp_path / "w.pt")
    assert main(["export", str(spec), "--checkpoint", str(tmp_path / "w.pt"), "-o", "x.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f": {message}; export with the spec" in err


def test_unknown_extension_is_one_line(capsys):
    assert main(["export", str(ZOO), "-o", "zoo.pb"]) == 2
    assert capsys.readouterr().err == (
        "netspec export: -o zoo.pb: cannot tell the format from '.pb'; "
        "use .onnx (ONNX), .py (PyTorch source)\n"
    )


def test_without_the_onnx_package_the_export_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    assert main(["export", str(ZOO), "-o", "zoo.onnx"]) == 2
    assert capsys.readouterr().err == (
        "netspec export: -o zoo.onnx: writing ONNX needs the onnx package: "
        "pip install 'netspec[onnx]'\n"
    )


@pytest.mark.parametrize("groups", [["split", "flatten"], ["flatten", "split"], ["a", "split_2"]])
def test_device_groups_named_like_the_parts_of_a_layer_give_unique_names(groups):
    # a per-group LRN and concat split into `NAME/split/GROUP`, a grouped linear flattens
    # into `NAME/flatten` and computes `NAME/GROUP`: groups called so once gave two nodes one
    # name, which onnxruntime refuses
    spec = Spec.model_validate(
        {
            "name": "towers",
            "input": [4, 3, 3],
            "device_groups": groups,
            "layers": [
                {"name": "conv", "type": "conv", "filters": 4, "kernel": 1},
                {"name": "norm", "type": "lrn", "size": 3},
                {"name": "side", "type": "conv", "filters": 4, "kernel": 1, "inputs": ["conv"]},
                {"name": "join", "type": "concat", "inputs": ["norm", "side"]},
                {"name": "fc", "type": "linear", "units": 4, "connect": "group"},
            ],
        }
    )
    model = check_equal(spec)
    names = [name for node in model.graph.node for name in node.output]
    names += [init.name for init in model.graph.initializer]
    assert len(names) == len(set(names))
    nodes = [node.name for node in model.graph.node]
    assert len(nodes) == len(set(nodes))
    assert {"conv", "norm", "side", "join", "fc"} <= set(nodes)  # each layer's last node
    flatten = next(node for node in model.graph.node if node.op_type == "Flatten")
    assert flatten.name == "fc/flatten"


def test_weights_past_protobufs_limit_go_to_external_data_beside_the_model(
    tmp_path, monkeypatch, capsys
):
    from netspec import export as export_command

    spec = load_spec(ZOO)
    weights = build_graph(spec).net.param_bytes
    out, data = tmp_path / "zoo.onnx", tmp_path / "zoo.onnx.data"
    # decided from the parameter count before any work: at the limit inline, past it beside
    monkeypatch.setattr(export_command, "ONNX_INLINE_BYTES", weights)
    inline = export(ZOO, out)
    assert not data.exists()
    monkeypatch.setattr(export_command, "ONNX_INLINE_BYTES", weights - 1)
    capsys.readouterr()
    beside = export(ZOO, out)  # onnx.load reads the data file back in
    assert capsys.readouterr().out.startswith(f"wrote {out} and {data}: zoo with the weights")
    arrays = [{t.name: to_array(t) for t in m.graph.initializer} for m in (inline, beside)]
    assert arrays[0].keys() == arrays[1].keys()
    assert all(np.array_equal(arrays[0][k], arrays[1][k]) for k in arrays[0])

    # tensors of 1 KiB or more (here only stem's weight) go to the file, the rest stay
    bare = onnx.load(str(out), load_external_data=False)
    outside = [t.name for t in bare.graph.initializer if t.data_location == t.EXTERNAL]
    assert outside == [k for k, v in arrays[0].items() if v.nbytes >= 1024] == ["stem.weight"]
    assert data.stat().st_size == arrays[0]["stem.weight"].nbytes
    onnx.checker.check_model(str(out), full_check=True)
    torch.manual_seed(spec.train.seed)
    module = compile(spec)
    x = torch.randn(2, *spec.input)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, torch_out(module, x), rtol=1e-4, atol=1e-4)

    # a second export replaces its own data file; one it did not write is refused
    export(ZOO, out, "--set", "train.seed=3")
    other = tmp_path / "other.onnx"
    (tmp_path / "other.onnx.data").write_bytes(b"someone else's")
    assert main(["export", str(ZOO), "-o", str(other)]) == 2
    assert capsys.readouterr().err == (
        f"netspec export: -o {other}: its weights go to {tmp_path / 'other.onnx.data'}, which "
        "exists and was not written by an export to other.onnx; choose another -o\n"
    )
    assert not other.exists()
