"""The PyTorch source back end: the graph becomes a standalone Python file that needs torch alone.

The file reads like torchvision's `alexnet.py`: one `nn.Module` class named after the spec,
one attribute per spec layer (with the compiled module's `state_dict` keys, so its weights
load unchanged), `forward` in the order the layers run. What torch lacks — the paper's LRN, a
grouped linear, a per-group concat — is written out in the file as a short block, and only
the blocks the network uses are there.

The text is emitted already formatted as `ruff format` writes it (88 columns), so the file
passes `ruff check` and `ruff format --check` as written.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from netspec.ir.records import INPUT, NetGraph, Node, layer_as
from netspec.ir.registry import LayerTable
from netspec.spec import layers as L

WIDTH = 88  # ruff's default line length: the file is checked as a user's project would
INDENT = "    "


@dataclass(frozen=True)
class Source:
    """One spec layer in the file: `self.<name> = <module>`, and what the file must define."""

    module: str
    helpers: tuple[str, ...] = ()  # keys of HELPERS this layer's module needs
    flatten: bool = False  # forward flattens the input first, as torchvision's classifier


Rule = Callable[[Node, int, int], Source]
SOURCES: LayerTable[Rule] = LayerTable("PyTorch source rule")
writes = SOURCES.register


def to_source(graph: NetGraph, origin: str = "", weights: str | None = None) -> str:
    """The file's text; `origin` names the spec file, `weights` the state_dict file beside it."""
    net = graph.net
    class_name = python_name(class_name_for(net.name), set(MODULE_NAMES))
    groups = max(1, len(net.device_groups))
    layers: list[tuple[Node, Source]] = []
    for node in graph.layers():
        in_shape = graph.node(graph.inputs_of(node.name)[0]).shape
        in_size = math.prod(in_shape) if node.type == "linear" else in_shape[0]
        layers.append((node, SOURCES[type(node.layer)](node, in_size, groups)))
    needed = {h for _, source in layers for h in source.helpers}
    head = [
        _header(net.name, class_name, origin, weights),
        "import torch\nfrom torch import nn",
        f'__all__ = ["{class_name}"]',
    ]
    blocks = [text for key, text in HELPERS.items() if key in needed]
    blocks.append(_class(graph, class_name, layers))
    top = "\n\n".join(part.strip("\n") for part in head)
    return "\n\n\n".join([top, *(block.strip("\n") for block in blocks)]) + "\n"


def class_name_for(name: str) -> str:
    """`alexnet-mini` → `AlexnetMini`: the spec's name in a Python class name's style
    (`python_name` then keeps it off the file's other names)."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", name) if w]
    camel = "".join(w[0].upper() + w[1:] for w in words) or "Network"
    return camel if camel[0].isalpha() else f"Net{camel}"


def python_name(wanted: str, taken: set[str]) -> str:
    """`wanted` as a Python identifier that is no keyword and none of `taken` (which it
    joins), `_` appended until it is free.

    Every name the file defines or binds goes through here, so a spec named `none` (class
    `None`) or `concat` (the helper `Concat`), or a layer named `sum`, cannot make the file
    unimportable or shadow what it uses.
    """
    name = re.sub(r"\W", "_", wanted, flags=re.ASCII) or "_"
    name = f"_{name}" if name[0].isdigit() else name
    while keyword.iskeyword(name) or name in taken:
        name += "_"
    taken.add(name)
    return name


def python_string(text: str) -> str:
    """`text` as a double-quoted Python string literal in ASCII: every character that could
    end the line or the string is escaped, so a file or spec name cannot add code to the
    file, and the file reads the same whatever encoding it is opened with."""
    literal = ascii(text)
    if literal.startswith('"'):
        return literal
    return '"' + literal[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'


def _attribute(name: str) -> str:
    """The layer's submodule, read; its name is the state_dict key's, so a keyword stays, and
    a block's dotted name (`layer1.0.conv1`) is a path through holder modules."""
    if "." in name:
        return f"self.get_submodule({python_string(name)})"
    if not keyword.iskeyword(name):
        return f"self.{name}"
    return f"getattr(self, {python_string(name)})"


def _assign_attribute(name: str, module: str) -> str:
    if "." in name:
        parent, leaf = name.rsplit(".", 1)
        holder = f"self.get_submodule({python_string(parent)})"
        return f"{holder}.add_module({python_string(leaf)}, {module})"
    if not keyword.iskeyword(name):
        return f"self.{name} = {module}"
    return f"self.add_module({python_string(name)}, {module})"


def _holders(names: list[str]) -> list[str]:
    """The empty modules that hold a block's layers, outermost first, as torchvision nests
    them (`layer1`, then `layer1.0`), so the state_dict keys are the layers' dotted names."""
    prefixes = [name.rsplit(".", n)[0] for name in names for n in range(name.count("."), 0, -1)]
    return list(dict.fromkeys(prefixes))


def loads_weights(text: str, weights: str) -> bool:
    """Whether `text` begins as a file `to_source` wrote to load the weights file `weights`."""
    line = f"# {_load_line(weights)}"
    return text.startswith("# ") and any(
        ours.startswith(line) for ours in text.split("\n\n", 1)[0].splitlines()
    )


def _load_line(weights: str) -> str:
    return f"{INDENT}model.load_state_dict(torch.load({python_string(weights)}, weights_only=True))"


def _header(name: str, class_name: str, origin: str, weights: str | None) -> str:
    where = f" ({python_string(origin)[1:-1]})" if origin else ""
    text = (
        f"{class_name}: the netspec spec {python_string(name)}{where} as plain PyTorch, written "
        "by `netspec export`; it needs torch alone. Its attributes are the spec's layers, "
        "with netspec's state_dict keys."
    )
    lines = textwrap.wrap(text, WIDTH - 2, break_long_words=False, break_on_hyphens=False)
    if weights:
        lines += [
            "To load the weights:",
            "",
            f"{INDENT}model = {class_name}()",
            _load_line(weights),
        ]
    comments = [f"# {line}".rstrip() for line in lines]
    # a long file name is the one thing that can overflow a line, and it cannot be broken
    comments = [c if len(c) <= WIDTH else f"{c}  # noqa: E501" for c in comments]
    return "\n".join(comments) + "\n"


def _class(graph: NetGraph, class_name: str, layers: list[tuple[Node, Source]]) -> str:
    lines = [
        f"class {class_name}(nn.Module):",
        f'{INDENT}"""The spec\'s layers, in the order they run."""',
        "",
        f"{INDENT}def __init__(self) -> None:",
        f"{INDENT * 2}super().__init__()",
    ]
    for holder in _holders([node.name for node, _ in layers]):
        lines += _call(_assign_attribute(holder, "nn.Module()"), INDENT * 2)
    for node, source in layers:
        lines += _call(_assign_attribute(node.name, source.module), INDENT * 2)
    names = _variables(graph, [INPUT] + [node.name for node, _ in layers], class_name)
    lines += ["", f"{INDENT}def forward(self, {names[INPUT]}: torch.Tensor) -> torch.Tensor:"]
    lines += _forward(graph, layers, names)
    return "\n".join(lines) + "\n"


def _forward(
    graph: NetGraph, layers: list[tuple[Node, Source]], names: dict[str, str]
) -> list[str]:
    """`x = self.layer(x)` down a chain; a value read later, or twice, keeps its own name."""
    lines = []
    for node, source in layers:
        args = [names[s] for s in graph.inputs_of(node.name)]
        if source.flatten:
            args = [f"torch.flatten({args[0]}, 1)"]
        call = f"{_attribute(node.name)}({', '.join(args)})"
        lines += _call(f"{names[node.name]} = {call}", INDENT * 2)
    lines.append(f"{INDENT * 2}return {names[graph.net.output]}")
    return lines


def _variables(graph: NetGraph, order: list[str], class_name: str) -> dict[str, str]:
    """`x` for a value only the next layer reads; the layer's name (made a safe local) else."""
    taken = {"self", "x", class_name, *MODULE_NAMES}
    names: dict[str, str] = {}
    for i, name in enumerate(order):
        readers = list(graph.successors(name))
        next_one = order[i + 1] if i + 1 < len(order) else None
        if name == graph.net.output or readers == [next_one]:
            names[name] = "x"
        else:
            names[name] = python_name(name, taken)
    return names


def _call(statement: str, indent: str) -> list[str]:
    """`statement`, ending in a call, as ruff formats it: on one line, else the call's
    arguments on their own line, else one argument a line with a trailing comma."""
    one = f"{indent}{statement}"
    if len(one) <= WIDTH:
        return [one]
    head, rest = _last_call(statement)
    args = _split_args(rest)
    if not args:  # nothing to break: ruff leaves the line long
        return [one]
    inner = f"{indent}{INDENT}{', '.join(args)}"
    if len(inner) <= WIDTH:
        return [f"{indent}{head}(", inner, f"{indent})"]
    return [
        f"{indent}{head}(",
        *(f"{indent}{INDENT}{a}," for a in args),
        f"{indent})",
    ]


def _last_call(statement: str) -> tuple[str, str]:
    """What comes before the final call's brackets, and what is inside them:
    `x = getattr(self, "if")(y)` → (`x = getattr(self, "if")`, `y`)."""
    depth = 0
    for i in range(len(statement) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(statement[i], 0)
        if depth == 0:
            return statement[:i], statement[i + 1 : -1]
    raise ValueError(f"no call at the end of {statement!r}")


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments (commas inside brackets stay)."""
    args, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
    args.append(text[start:].strip())
    return [a for a in args if a]


def _args(*positional: object, **keywords: object) -> str:
    """Arguments as Python source, leaving out keywords whose value is None."""
    parts = [_literal(v) for v in positional]
    parts += [f"{k}={_literal(v)}" for k, v in keywords.items() if v is not None]
    return ", ".join(parts)


def _literal(value: object) -> str:
    if isinstance(value, tuple):
        return str(value[0]) if len(set(value)) == 1 else f"({', '.join(map(str, value))})"
    return repr(value)


def _unless(value: object, default: object) -> object | None:
    """`value`, or None (left out of the call) where it is the constructor's default."""
    return None if value == default else value


@writes(L.Conv)
def _conv(node: Node, in_size: int, groups: int) -> Source:
    layer = layer_as(node, L.Conv)
    args = _args(
        in_size,
        layer.filters,
        kernel_size=layer.kernel,
        stride=_unless(layer.stride, (1, 1)),
        padding=_unless(layer.padding, (0, 0)),
        groups=_unless(node.groups, 1),
        bias=_unless(layer.bias, True),
    )
    return Source(f"nn.Conv2d({args})")


@writes(L.Linear)
def _linear(node: Node, in_size: int, groups: int) -> Source:
    units, bias = node.shape[0], _unless(layer_as(node, L.Linear).bias, True)
    if node.groups > 1:
        args = _args(in_size, units, groups=node.groups, bias=bias)
        return Source(f"GroupedLinear({args})", ("grouped_linear",), node.flatten)
    return Source(f"nn.Linear({_args(in_size, units, bias=bias)})", (), node.flatten)


@writes(L.LRN)
def _lrn(node: Node, in_size: int, groups: int) -> Source:
    layer = layer_as(node, L.LRN)
    per_group = groups if node.split and groups > 1 else None
    args = _args(layer.size, alpha=layer.alpha, beta=layer.beta, k=layer.k, groups=per_group)
    if layer.convention == "paper":
        return Source(f"LocalResponseNorm({args})", ("lrn",))
    if layer.convention == "caffe" and layer.size % 2 == 0:  # torch's window, mirrored
        return Source(f"CaffeLocalResponseNorm({args})", ("caffe_lrn",))
    if per_group is None:
        return Source(f"nn.LocalResponseNorm({args})")
    return Source(f"GroupLocalResponseNorm({args})", ("group_lrn",))


@writes(L.MaxPool, L.AvgPool)
def _pool(node: Node, in_size: int, groups: int) -> Source:
    layer = layer_as(node, L.Pool)
    cls = "nn.MaxPool2d" if isinstance(layer, L.MaxPool) else "nn.AvgPool2d"
    args = _args(
        kernel_size=layer.kernel,
        stride=_unless(layer.stride, layer.kernel),
        padding=_unless(layer.padding, (0, 0)),
        ceil_mode=_unless(layer.ceil, False),
    )
    return Source(f"{cls}({args})")


@writes(L.AdaptiveAvgPool)
def _adaptive(node: Node, in_size: int, groups: int) -> Source:
    return Source(
        f"nn.AdaptiveAvgPool2d({_literal(layer_as(node, L.AdaptiveAvgPool).output_size)})"
    )


@writes(L.BatchNorm)
def _batchnorm(node: Node, in_size: int, groups: int) -> Source:
    layer = layer_as(node, L.BatchNorm)
    cls = "nn.BatchNorm2d" if len(node.shape) == 3 else "nn.BatchNorm1d"
    args = _args(node.shape[0], eps=_unless(layer.eps, 1e-5), momentum=_unless(layer.momentum, 0.1))
    return Source(f"{cls}({args})")


@writes(L.Dropout)
def _dropout(node: Node, in_size: int, groups: int) -> Source:
    return Source(f"nn.Dropout({_args(p=layer_as(node, L.Dropout).p)})")


@writes(L.Concat)
def _concat(node: Node, in_size: int, groups: int) -> Source:
    per_group = groups if node.split and groups > 1 else None
    return Source(f"Concat({_args(groups=per_group)})", ("concat",))


def _fixed(module: str, *helpers: str) -> Rule:
    def rule(node: Node, in_size: int, groups: int) -> Source:
        return Source(module, helpers)

    return rule


SOURCES.update(
    {
        L.ReLU: _fixed("nn.ReLU()"),
        L.Tanh: _fixed("nn.Tanh()"),
        L.GELU: _fixed("nn.GELU()"),
        L.Sigmoid: _fixed("nn.Sigmoid()"),
        L.Flatten: _fixed("nn.Flatten()"),
        L.Add: _fixed("Add()", "add"),
    }
)

# The blocks a file may need, in the order they appear in it.
HELPERS: dict[str, str] = {
    "lrn": '''
def local_response_norm(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int = 1
) -> torch.Tensor:
    """The paper's LRN: b_i = a_i / (k + alpha * sum_j a_j^2) ** beta, the sum over
    size // 2 channels each side of i (fewer at the ends), within each group's channels.
    """
    n, c = x.shape[:2]
    per, half = c // groups, size // 2
    squares = x.pow(2).reshape(n, groups, per, -1)
    padded = nn.functional.pad(squares, (0, 0, half, half))
    total = sum(padded[:, :, i : i + per] for i in range(2 * half + 1))
    return x / (k + alpha * total.reshape(x.shape)).pow(beta)


class LocalResponseNorm(nn.Module):
    """The paper's local response normalisation, each group's channels on their own."""

    def __init__(
        self, size: int, alpha: float, beta: float, k: float, groups: int = 1
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(
            x, self.size, self.alpha, self.beta, self.k, self.groups
        )
''',
    "group_lrn": '''
class GroupLocalResponseNorm(nn.LocalResponseNorm):
    """torch's LocalResponseNorm (alpha / size over size channels, as cuda-convnet),
    applied to each group's channels on their own."""

    def __init__(
        self, size: int, alpha: float, beta: float, k: float, groups: int = 1
    ) -> None:
        super().__init__(size, alpha, beta, k)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(self.groups, dim=1)
        lrn = nn.functional.local_response_norm
        return torch.cat(
            [lrn(p, self.size, self.alpha, self.beta, self.k) for p in parts], dim=1
        )
''',
    "caffe_lrn": '''
class CaffeLocalResponseNorm(nn.LocalResponseNorm):
    """Caffe's local response normalisation (also cuDNN's and ONNX's): alpha / size over
    size channels, for an even size c - size/2 + 1 ... c + size/2, which is torch's window
    with the channels in reverse order; each group's channels on their own."""

    def __init__(
        self, size: int, alpha: float, beta: float, k: float, groups: int = 1
    ) -> None:
        super().__init__(size, alpha, beta, k)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lrn = nn.functional.local_response_norm
        parts = [
            lrn(p.flip(1), self.size, self.alpha, self.beta, self.k).flip(1)
            for p in x.chunk(self.groups, dim=1)
        ]
        return torch.cat(parts, dim=1)
''',
    "grouped_linear": '''
class GroupedLinear(nn.Module):
    """A linear layer in groups, as on the paper's two GPUs: each group's units see only
    its own group's block of the input features."""

    def __init__(
        self, in_features: int, out_features: int, groups: int, bias: bool = True
    ) -> None:
        super().__init__()
        self.groups = groups
        fan_in = in_features // groups
        self.weight = nn.Parameter(torch.empty(out_features, fan_in))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -(fan_in**-0.5), fan_in**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.chunk(self.groups, dim=1)
        ws = self.weight.chunk(self.groups, dim=0)
        y = torch.cat([xi @ wi.T for xi, wi in zip(xs, ws, strict=True)], dim=1)
        return y if self.bias is None else y + self.bias
''',
    "concat": '''
class Concat(nn.Module):
    """Joins its inputs' channels, keeping each group's together: group 0's part of
    every input, then group 1's, and so on."""

    def __init__(self, groups: int = 1) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        parts = [x.chunk(self.groups, dim=1) for x in xs]
        return torch.cat([p[g] for g in range(self.groups) for p in parts], dim=1)
''',
    "add": '''
class Add(nn.Module):
    """The sum of its inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return sum(xs[1:], xs[0])
''',
}
# What the file defines at its top level, whichever blocks it holds: no spec name may take one.
HELPER_NAMES = tuple(
    name for text in HELPERS.values() for name in re.findall(r"^(?:class|def) (\w+)", text, re.M)
)
MODULE_NAMES = frozenset({"torch", "nn", "__all__", *HELPER_NAMES, *dir(builtins)})
