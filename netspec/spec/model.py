"""The spec document: pydantic models, and turning their complaints into located lines."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, Field, PrivateAttr, ValidationError

from netspec.errors import Problem, SpecError, did_you_mean
from netspec.spec.document import Document, Loc, Removal, read_yaml
from netspec.spec.layers import AnyLayer, Init, Name, PosInt
from netspec.spec.settings import DataConfig, Strict, TrainConfig


def _distinct(names: list[str]) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"names each device group once; {', '.join(repeated)} appears twice")
    return names


class Spec(Strict):
    """A network: its input, its layers in order, and how to train it."""

    name: str
    description: str = ""
    input: Annotated[list[PosInt], Field(min_length=3, max_length=3)] = Field(
        description="channels, height, width of one example"
    )
    classes: PosInt | None = Field(None, description="a linear layer may say `units: classes`")
    device_groups: Annotated[list[Name], Field(min_length=1), AfterValidator(_distinct)] | None = (
        Field(None, description="the paper's two GPUs are two groups; omitted means one group")
    )
    init: Init = Field(Init(), description="default initialisation of every weight layer")
    layers: Annotated[list[AnyLayer], Field(min_length=1)]
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()

    _doc: Document | None = PrivateAttr(None)

    @property
    def groups(self) -> list[str]:
        return self.device_groups or []

    def where(self, loc: Loc, key: bool = False) -> str:
        """Where `loc` was written: `FILE:LINE:COL`, `--set K=V`, or the spec's name."""
        return self._doc.where(loc, key) if self._doc else f"<spec {self.name}>"

    @property
    def removals(self) -> list[Removal]:
        """The layers `--set layers.NAME=null` took out, in the order they were removed."""
        return self._doc.removals if self._doc else []

    def layer_context(self, index: int) -> str:
        return f"layers[{index}] ({self.layers[index].name})"


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Read, override and validate a spec file; every mistake is raised as one SpecError."""
    from netspec.spec.overrides import apply_overrides

    doc = read_yaml(path)
    problems: list[Problem] = []
    try:
        apply_overrides(doc, overrides)
    except SpecError as exc:
        problems = exc.problems  # the overrides that could be applied are still checked
    try:
        spec = validate(doc)
    except SpecError as exc:
        problems += exc.problems
    if problems:
        raise SpecError(problems)
    return spec


def validate(doc: Document) -> Spec:
    data = doc.data
    if data is None:
        raise SpecError(
            [Problem(doc.source, "the file is empty; a spec needs name, input, layers")]
        )
    if not isinstance(data, dict):
        raise SpecError([Problem(doc.where(()), "a spec is a mapping with name, input, layers")])
    spec = validate_as(doc, Spec)
    spec._doc = doc
    return spec


M = TypeVar("M", bound=BaseModel)


def validate_as(doc: Document, model: type[M]) -> M:
    """`doc` as a `model` (a spec, a study): pydantic's complaints become located lines.

    Messages call the whole document by the model's name in lower case ("the spec").
    """
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = _join_alternatives(
            dict.fromkeys(_problem(doc, err, model) for err in exc.errors())
        )
        raise SpecError(sorted(problems, key=lambda p: _order(p.where))) from None


def _order(where: str) -> tuple[int, int, str]:
    parts = where.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return (int(parts[1]), int(parts[2]), "")
    return (1 << 30, 0, where)


def _join_alternatives(problems: Iterable[Problem]) -> list[Problem]:
    """One line for a value that fits no member of a union (`units: 0`), not one per member."""
    out: dict[Any, Problem] = {}
    for p in problems:
        head, sep, got = p.message.rpartition(", got ")
        subject, _, need = head.partition(" must be ")
        key = (p.where, p.context, subject, got) if sep and need else p
        if key in out:
            first = out[key].message.rpartition(", got ")[0]
            out[key] = Problem(p.where, f"{first} or {need}, got {got}", p.context)
        else:
            out[key] = p
    return list(out.values())


def _data_path(data: Any, loc: tuple) -> tuple[Loc, Any]:
    """Drop pydantic's union-tag steps from `loc`, keeping the path into the raw data."""
    path: list[str | int] = []
    node = data
    for i, step in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        elif not (last and isinstance(node, dict)):  # a missing key is kept, a member tag not
            continue
        path.append(step)
    return tuple(path), node


def _model_at(data: Any, path: Loc, root: type[BaseModel]) -> type[BaseModel] | None:
    """The model whose field `path[-1]` is, found by walking annotations and `type` tags."""
    return _pick(*_models_for(data, path[:-1], root))


def _models_for(data: Any, path: Loc, root: type[BaseModel]) -> tuple[list[type[BaseModel]], Any]:
    """The models the value at `path` may be (a union's members), and the value."""
    candidates: list[type[BaseModel]] = [root]
    node = data
    for step in path:
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and step < len(node) else None
            continue
        model = _pick(candidates, node)
        field = model.model_fields.get(step) if model else None
        if field is None:
            return [], None
        candidates = _models_in(field.annotation)
        node = node.get(step) if isinstance(node, dict) else None
    return candidates, node


def _pick(candidates: list[type[BaseModel]], node: Any) -> type[BaseModel] | None:
    """The one model `node` is: the only candidate, or the union member its `type` names."""
    if len(candidates) > 1 and isinstance(node, dict):
        by_type = {_tag(c): c for c in candidates}
        candidates = [by_type[node["type"]]] if node.get("type") in by_type else []
    return candidates[0] if len(candidates) == 1 else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("type")
    return typing.get_args(field.annotation)[0] if field else None


def _context(data: Any, path: Loc) -> tuple[str, Loc]:
    """Split a path into a layer context (`layers[3] (conv2)`) and the rest."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        layers = data.get("layers")
        layer = layers[path[1]] if isinstance(layers, list) and path[1] < len(layers) else None
        name = layer.get("name") if isinstance(layer, dict) else None
        ctx = f"layers[{path[1]}]" + (f" ({name})" if isinstance(name, str) else "")
        return ctx, path[2:]
    return "", path


def _dotted(path: Loc) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _problem(doc: Document, err: dict, root: type[BaseModel]) -> Problem:
    kind = err["type"]
    path, _ = _data_path(doc.data, err["loc"])
    context, rest = _context(doc.data, path)
    field = _dotted(rest)
    noun = root.__name__.lower()
    subject = field or "this layer" if context else field or f"the {noun}"
    got = err.get("input")
    ctx = err.get("ctx") or {}
    key = False
    if kind == "missing":
        where_loc = path[:-1]
        message = f"missing required key '{rest[-1] if rest else path[-1]}'"
    elif kind == "extra_forbidden":
        key, where_loc = True, path
        model = _model_at(doc.data, path, root)
        choices = list(model.model_fields) if model else []
        message = f"unknown key '{path[-1]}'{did_you_mean(path[-1], choices)}"
        if choices:
            section = path[-2] if len(path) > 1 and isinstance(path[-2], str) else f"a {noun}"
            message += f"; {_tag(model) or section} takes: {', '.join(choices)}"
    elif kind == "union_tag_invalid":
        where_loc = (*path, "type")
        tag = ctx.get("tag")
        tags = _tags_for(doc.data, path, root)
        message = f"unknown type '{tag}'{did_you_mean(tag, tags)}"
        if tags:
            message += f"; {'layer ' if path[0] == 'layers' else ''}types: {', '.join(tags)}"
    elif kind == "union_tag_not_found":
        where_loc = path
        message = "missing required key 'type'"
    else:
        where_loc = path
        text = _describe(kind, ctx, got, err["msg"])
        # a check across fields names them itself (data.crop … data.resize)
        message = text if text.startswith(f"{field}.") else f"{subject} {text}"
    return Problem(doc.where(where_loc, key=key), message, context)


def _tags_for(data: Any, path: Loc, root: type[BaseModel]) -> list[str]:
    candidates, _ = _models_for(data, path, root)
    return [t for t in map(_tag, candidates) if t]


_DESCRIBE = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "finite_number": "must be a finite number",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "string_pattern_mismatch": "must be letters, digits and _, starting with a letter",
}


def _describe(kind: str, ctx: dict, got: Any, default: str) -> str:
    shown = f", got {got!r}"
    if kind in _DESCRIBE:
        return _DESCRIBE[kind] + shown
    bounds = {
        "greater_than_equal": ("≥", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("≤", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        sign, name = bounds[kind]
        return f"must be {sign} {ctx[name]}{shown}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{shown}"
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length", ctx.get("max_length"))
        items = f"{n} item{'' if n == 1 else 's'}, got {ctx.get('actual_length')}"
        return f"needs at least {items}" if kind == "too_short" else f"takes at most {items}"
    if kind == "value_error":
        return default.removeprefix("Value error, ")
    return f"{default[:1].lower()}{default[1:]}{shown}"
