"""The exported PyTorch file: ruff-clean, torch alone, and the compiled module's function."""

import ast
import builtins
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from netspec.backends.torch_source import class_name_for, python_string, to_source

from netspec import build_graph, compile, load_spec
from netspec.cli import main
from tests.backends.test_lrn import caffe_lrn, paper_lrn
from tests.conftest import ROOT

ZOO = ROOT / "tests" / "nets" / "zoo.yaml"
MINI = ROOT / "specs" / "alexnet-mini.yaml"
TORCH_SITE = str(Path(torch.__file__).resolve().parent.parent)

# Run in a fresh interpreter with no site-packages (so no editable netspec) and no repo on
# sys.path: only torch's folder. It refuses to go on if netspec can be imported. Each
# further argument is a folder holding net.py, net.pt and x.pt; it writes y.pt there.
RUNNER = textwrap.dedent(
    """
    import importlib.util, pathlib, sys
    sys.path[:0] = [sys.argv[1]]
    try:
        import netspec
    except ImportError:
        pass
    else:
        raise SystemExit(f"netspec is importable from {netspec.__file__}")
    import torch
    for folder in map(pathlib.Path, sys.argv[2:]):
        spec = importlib.util.spec_from_file_location("exported", folder / "net.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = getattr(module, module.__all__[0])().eval()
        model.load_state_dict(torch.load(folder / "net.pt", weights_only=True))
        with torch.no_grad():
            torch.save(model(torch.load(folder / "x.pt")), folder / "y.pt")
    """
)


def run_alone(folders: list[Path]) -> list[torch.Tensor]:
    """Each folder's net.py with its net.pt on its x.pt, in a process without netspec."""
    cmd = [sys.executable, "-I", "-S", "-c", RUNNER, TORCH_SITE, *map(str, folders)]
    result = subprocess.run(cmd, cwd=folders[0], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(folder / "y.pt") for folder in folders]


def export(spec: Path, out: Path, *extra: str) -> str:
    assert main(["export", str(spec), "-o", str(out), *extra]) == 0
    return out.read_text()


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--isolated"],
        capture_output=True,
        text=True,
        timeout=60,
    )


SMALL = {
    "alexnet-mini": MINI,
    "zoo": ZOO,
    "tiny": ROOT / "tests/nets/tiny.yaml",
    "blocks": ROOT / "tests/nets/blocks.yaml",  # dotted names: layers inside holder modules
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Each small spec exported from a checkpoint and run in one process without netspec;
    its output beside the compiled module's."""
    folders, wanted = [], []
    for name, path in SMALL.items():
        folder = tmp_path_factory.mktemp(name)
        spec = load_spec(path)
        module = compile(spec).eval()
        with torch.no_grad():  # weights unlike the init; batchnorm's statistics not 0 and 1
            for value in module.state_dict().values():
                if value.is_floating_point():
                    value.add_(torch.rand_like(value) * 0.2).abs_()
        torch.save({"model": module.state_dict(), "epoch": 1}, folder / "best.pt")
        export(path, folder / "net.py", "--checkpoint", str(folder / "best.pt"))
        x = torch.randn(3, *spec.input)
        torch.save(x, folder / "x.pt")
        with torch.no_grad():
            wanted.append(module(x))
        folders.append(folder)
    return dict(zip(SMALL, zip(run_alone(folders), wanted, strict=True), strict=True))


@pytest.mark.slow  # a fresh interpreter imports torch
@pytest.mark.parametrize("name", SMALL)
def test_file_with_a_checkpoint_equals_the_compiled_module_without_netspec(small, name):
    got, want = small[name]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_full_size_specs_with_their_init_equal_the_compiled_modules(tmp_path):
    folders, wanted = [], []
    for name in ("alexnet", "torchvision-alexnet"):
        path, folder = ROOT / "specs" / f"{name}.yaml", tmp_path / name
        folder.mkdir()
        spec = load_spec(path)
        export(path, folder / "net.py")
        torch.manual_seed(spec.train.seed)  # without --checkpoint: the run's first weights
        module = compile(spec).eval()
        x = torch.randn(2, *spec.input) * 60
        torch.save(x, folder / "x.pt")
        with torch.no_grad():
            wanted.append(module(x))
        folders.append(folder)
    for got, want in zip(run_alone(folders), wanted, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "path", [*sorted((ROOT / "specs").glob("*.yaml")), ZOO], ids=lambda p: p.stem
)
def test_file_is_ruff_clean_and_reads_like_the_spec(path, tmp_path):
    spec = load_spec(path)
    graph = build_graph(spec)
    text = to_source(graph, str(path), "weights.pt")
    out = tmp_path / "net.py"
    out.write_text(text)
    checked = ruff("check", "--select", "E,F,W,I,B,UP,SIM,RUF", str(out))
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", "--diff", str(out))
    assert formatted.returncode == 0, formatted.stdout

    tree = ast.parse(text)
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert {a.name for n in imports if isinstance(n, ast.Import) for a in n.names} == {"torch"}
    assert {n.module for n in imports if isinstance(n, ast.ImportFrom)} <= {"torch"}
    name = class_name_for(spec.name)
    assert f'__all__ = ["{name}"]' in text
    header = " ".join(line[2:] for line in text.split("\n\n")[0].splitlines())
    assert header.startswith(f'{name}: the netspec spec "{spec.name}" ({path}) as plain PyTorch')
    # one attribute per layer, in spec order, and forward calls them in running order
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    init, forward = (n for n in cls.body if isinstance(n, ast.FunctionDef))
    attrs = [t.attr for s in init.body if isinstance(s, ast.Assign) for t in s.targets]
    calls = [
        n.func.attr
        for n in ast.walk(forward)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        if isinstance(n.func.value, ast.Name) and n.func.value.id == "self"
    ]
    assert attrs == [layer.name for layer in spec.layers]
    assert calls == [node.name for node in graph.layers()]


def test_paper_spec_file_has_grouped_convolutions_and_the_lrn_function(tmp_path):
    text = to_source(build_graph(load_spec(ROOT / "specs" / "alexnet.yaml")), "alexnet.yaml")
    assert "self.conv2 = nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)" in text
    assert "self.norm1 = LocalResponseNorm(5, alpha=0.0001, beta=0.75, k=2.0, groups=2)" in text
    assert "def local_response_norm(" in text
    assert "x = self.fc6(torch.flatten(x, 1))" in text
    assert "GroupedLinear" not in text and "Concat" not in text  # only the blocks it needs


def test_zoo_file_writes_out_grouped_linear_concat_and_add():
    text = to_source(build_graph(load_spec(ZOO)))
    assert "class GroupedLinear(nn.Module):" in text
    assert "self.fc1 = GroupedLinear(60, 12, groups=2)" in text
    assert "self.join = Concat(groups=2)" in text
    # values read twice or later keep their layer's name; `sum` is a builtin, so `sum_`
    assert "act = self.act(x)" in text and "x = self.sum(norm, x)" in text


def exec_file(text: str) -> dict:
    namespace: dict = {}
    exec(builtins.compile(text, "<exported>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
def test_emitted_lrn_is_the_papers_formula(size, groups):
    text = to_source(build_graph(load_spec(ROOT / "specs" / "alexnet.yaml")))
    lrn = exec_file(text)["local_response_norm"]
    rng = np.random.default_rng(size)
    a = rng.normal(0, 3, size=(2, 10, 3, 4))
    got = lrn(torch.from_numpy(a), size, 0.01, 0.75, 2.0, groups).numpy()
    per = 10 // groups
    want = np.concatenate(
        [paper_lrn(a[:, i : i + per], size, 0.01, 0.75, 2.0) for i in range(0, 10, per)], 1
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("size", [2, 4, 6])
def test_emitted_caffe_lrn_sums_caffes_window(tmp_path, size, groups):
    spec = tmp_path / "lrn.yaml"
    spec.write_text(
        "name: lrn\ninput: [10, 3, 4]\nclasses: 10\n"
        + "layers:\n  - {name: conv, type: conv, filters: 10, kernel: 1}\n"
        + f"  - {{name: norm, type: lrn, size: {size}, alpha: 0.01, k: 2, convention: caffe}}\n"
    )
    text = to_source(build_graph(load_spec(spec)))
    assert "class CaffeLocalResponseNorm" in text and "CaffeLocalResponseNorm(" in text
    lrn = exec_file(text)["CaffeLocalResponseNorm"](size, 0.01, 0.75, 2.0, groups)
    rng = np.random.default_rng(size)
    a = rng.normal(0, 3, size=(2, 10, 3, 4))
    per = 10 // groups
    want = np.concatenate(
        [caffe_lrn(a[:, i : i + per], size, 0.01, 0.75, 2.0) for i in range(0, 10, per)], 1
    )
    np.testing.assert_allclose(lrn(torch.from_numpy(a)).numpy(), want, rtol=1e-12)


def named(spec_name: str, *layers: str) -> str:
    """A spec file: a conv, then a chain of relu layers of these names."""
    text = f"name: '{spec_name}'\ninput: [1, 4, 4]\nlayers:\n"
    text += "  - {name: conv, type: conv, filters: 2, kernel: 1}\n"
    text += "".join(f"  - {{name: {name}, type: relu}}\n" for name in layers)
    return text


def test_keyword_layer_names_keep_their_state_dict_keys(tmp_path):
    spec = tmp_path / "kw.yaml"
    spec.write_text(named("kw", "lambda", "None", "match"))
    text = to_source(build_graph(load_spec(spec)))
    assert 'self.add_module("lambda", nn.ReLU())' in text
    assert 'x = getattr(self, "None")(x)' in text
    assert "self.match = nn.ReLU()" in text  # a soft keyword is an ordinary attribute
    module = exec_file(text)["Kw"]()
    assert list(module.state_dict()) == list(compile(load_spec(spec)).state_dict())
    assert [name for name, _ in module.named_children()] == ["conv", "lambda", "None", "match"]


@pytest.mark.parametrize(
    ("spec_name", "class_name"),
    [("none", "None_"), ("true", "True_"), ("concat", "Concat_"), ("add", "Add_"), ("int", "Int")],
)
def test_spec_names_that_are_keywords_or_helpers_get_a_class_of_their_own(
    tmp_path, spec_name, class_name
):
    spec = tmp_path / "net.yaml"
    spec.write_text(
        named(spec_name, "a")
        + "  - {name: b, type: relu, inputs: [conv]}\n"
        + "  - {name: join, type: concat, inputs: [a, b]}\n"
        + "  - {name: join2, type: concat, inputs: [b, a]}\n"
        + "  - {name: sum, type: add, inputs: [join, join2]}\n"
    )
    text = to_source(build_graph(load_spec(spec)))
    namespace = exec_file(text)
    assert namespace["__all__"] == [class_name]
    assert namespace["Concat"].__name__ == "Concat" and namespace["Add"].__name__ == "Add"
    x = torch.randn(2, 1, 4, 4)
    torch.manual_seed(0)
    want = compile(load_spec(spec))
    module = namespace[class_name]()
    module.load_state_dict(want.state_dict())
    torch.testing.assert_close(module(x), want(x))


def test_a_newline_in_the_output_name_stays_inside_a_comment(tmp_path):
    out = tmp_path / 'w\nimport os\nos.remove("x")\n.py'
    text = export(MINI, out)
    body = ast.parse(text).body
    kinds = {type(node).__name__ for node in body}
    assert kinds <= {"Import", "ImportFrom", "Assign", "ClassDef", "FunctionDef"}
    imports = [alias.name for node in body if isinstance(node, ast.Import) for alias in node.names]
    assert imports == ["torch"]
    assert (
        '#     model.load_state_dict(torch.load("w\\nimport os\\nos.remove(\\"x\\")\\n.pt", '
        "weights_only=True))" in text
    )
    assert out.with_suffix(".pt").is_file()


def test_weights_file_must_not_overwrite_the_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "best.pt"
    torch.save(compile(load_spec(MINI)).state_dict(), ckpt)
    before = ckpt.read_bytes()
    assert (
        main(["export", str(MINI), "--checkpoint", str(ckpt), "-o", str(tmp_path / "best.py")]) == 2
    )
    assert "writes its weights to" in capsys.readouterr().err
    assert ckpt.read_bytes() == before and not (tmp_path / "best.py").exists()


@pytest.mark.parametrize("name", ["best", "last"])
def test_a_py_export_never_replaces_a_runs_checkpoint(tmp_path, capsys, name):
    # -o RUN/best.py would write its weights to RUN/best.pt: the run's file, not the user's
    ckpt = tmp_path / f"{name}.pt"
    torch.save({"model": compile(load_spec(MINI)).state_dict(), "epoch": 3}, ckpt)
    before = ckpt.read_bytes()
    out = tmp_path / f"{name}.py"
    assert main(["export", str(MINI), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"netspec export: -o {out}: its weights go to {ckpt}, which exists and was not "
        f"written by an export to {name}.py; choose another -o\n"
    )
    assert ckpt.read_bytes() == before and not out.exists()


def test_a_py_export_replaces_only_the_weights_its_own_earlier_export_wrote(tmp_path, capsys):
    out, weights = tmp_path / "net.py", tmp_path / "net.pt"
    export(MINI, out)
    export(MINI, out, "--set", "train.seed=1")  # its own: replaced
    torch.manual_seed(1)
    want = compile(load_spec(MINI)).state_dict()
    got = torch.load(weights, weights_only=True)
    assert all(torch.equal(got[key], want[key]) for key in want)
    text = out.read_text()

    def refused(out: Path) -> None:
        weights = out.with_suffix(".pt")
        before = weights.read_bytes()
        assert main(["export", str(MINI), "-o", str(out)]) == 2
        assert "which exists and was not written by an export" in capsys.readouterr().err
        assert weights.read_bytes() == before

    out.unlink()  # the file gone, its weights are nobody's
    refused(out)
    torch.save(want, tmp_path / "user.pt")  # a user's own state_dict
    refused(tmp_path / "user.py")
    # a run's checkpoint, beside an exported file that names it
    torch.save({"model": want, "epoch": 1}, tmp_path / "run.pt")
    (tmp_path / "run.py").write_text(text.replace('"net.pt"', '"run.pt"'))
    assert '.load_state_dict(torch.load("run.pt"' in (tmp_path / "run.py").read_text()
    refused(tmp_path / "run.py")


def test_class_names():
    assert class_name_for("alexnet-mini") == "AlexnetMini"
    assert class_name_for("torchvision-alexnet") == "TorchvisionAlexnet"
    assert class_name_for("2012 net") == "Net2012Net"
    assert class_name_for("---") == "Network"


def test_header_names_a_weights_file_and_says_how_to_load_it(tmp_path):
    text = export(MINI, tmp_path / "mini_model.py")
    assert "#     model = AlexnetMini()\n" in text
    assert '#     model.load_state_dict(torch.load("mini_model.pt", weights_only=True))\n' in text
    assert (tmp_path / "mini_model.pt").is_file()


@pytest.mark.parametrize(
    "text", ["net.pt", 'a"b', "a'b", "'\"\\", "é\u2028\x85\r\n\t\x00", "\udcff", "x" * 300]
)
def test_names_in_the_file_are_ascii_string_literals_of_themselves(text):
    literal = python_string(text)
    assert literal.isascii() and literal.startswith('"') and "\n" not in literal
    assert ast.literal_eval(literal) == text
