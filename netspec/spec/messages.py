"""Pydantic's complaints about a spec, as located one-line problems in the spec's own terms.

Pydantic reports an error at a path through its models (with union-member tags in it) and in
its own words. This module finds the path into the YAML that was written, the layer it is in
(`layers[3] (conv2)`), where that was written (`FILE:LINE:COL`), and says what is wrong and
how to fix it: for an unknown key, the keys that section takes; for an unknown type, the
types there are.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from netspec.errors import Problem, did_you_mean
from netspec.spec.document import Document, Loc


def located_problems(doc: Document, exc: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """One problem per mistake, in file order; `root` is the model the whole document is."""
    found = dict.fromkeys(_problem(_Error.of(doc, err, root)) for err in exc.errors())
    problems = [_with_replaced(doc, p) for p in _join_alternatives(found)]
    return sorted(problems, key=lambda p: file_order(p.where))


def _with_replaced(doc: Document, problem: Problem) -> Problem:
    """A bad value from `--set` also names the spec line it overrode: that line is what the
    user sees in the file, and otherwise reads as fine."""
    replaced = doc.replaced.get(problem.where)
    if replaced is None:
        return problem
    return Problem(problem.where, f"{problem.message} (overriding {replaced})", problem.context)


@dataclass(frozen=True)
class _Error:
    """One pydantic error, placed: its path into the raw data, split at the layer it is in."""

    doc: Document
    root: type[BaseModel]
    kind: str
    path: Loc  # into the document's data
    context: str  # `layers[3] (conv2)`, or "" outside the layers
    rest: Loc  # the path inside that layer (or the whole path)
    ctx: dict[str, Any]
    got: Any
    text: str  # pydantic's message

    @classmethod
    def of(cls, doc: Document, err: ErrorDetails, root: type[BaseModel]) -> _Error:
        path, _ = _data_path(doc.data, err["loc"])
        context, rest = _context(doc, path)
        ctx = dict(err.get("ctx") or {})
        return cls(doc, root, err["type"], path, context, rest, ctx, err.get("input"), err["msg"])

    @property
    def field(self) -> str:
        return _dotted(self.rest)


@dataclass(frozen=True)
class _Said:
    """What a problem says, and the path it is located at (at the key itself, if `key`)."""

    loc: Loc
    message: str
    key: bool = False


def _problem(err: _Error) -> Problem:
    said = SAY.get(err.kind, _bad_value)(err)
    where = err.doc.where(said.loc, key=said.key)
    return Problem(where, said.message + err.doc.note(said.loc, key=said.key), err.context)


def _missing(err: _Error) -> _Said:
    name = err.rest[-1] if err.rest else err.path[-1]
    return _Said(err.path[:-1], f"missing required key '{name}'")


def _unknown_key(err: _Error) -> _Said:
    key = str(err.path[-1])
    model = _model_at(err.root, err.doc.data, err.path)
    choices = _keys(model) if model else []
    message = f"unknown key '{key}'{did_you_mean(key, choices)}"
    if model and choices:
        whole = f"a {err.root.__name__.lower()}"
        section = err.path[-2] if len(err.path) > 1 and isinstance(err.path[-2], str) else whole
        what = _tag(model) or getattr(model, "what", None) or section
        message += f"; {what} takes: {', '.join(choices)}"
    return _Said(err.path, message, key=True)


def _unknown_type(err: _Error) -> _Said:
    tag = str(err.ctx.get("tag"))
    tags = _tags_for(err.root, err.doc.data, err.path)
    message = f"unknown type '{tag}'{did_you_mean(tag, tags)}"
    if tags:
        message += f"; {'layer ' if err.path[0] == 'layers' else ''}types: {', '.join(tags)}"
    return _Said((*err.path, "type"), message)


def _no_type(err: _Error) -> _Said:
    return _Said(err.path, "missing required key 'type'")


def _bad_value(err: _Error) -> _Said:
    text = _describe(err.kind, err.ctx, err.got, err.text)
    if text.startswith(f"{err.field}."):  # a check across fields names them itself
        return _Said(err.path, text)
    subject = err.field or ("this layer" if err.context else f"the {err.root.__name__.lower()}")
    return _Said(err.path, f"{subject} {text}")


# Pydantic's error kinds that are about the shape of the document; any other is a bad value.
SAY: dict[str, Callable[[_Error], _Said]] = {
    "missing": _missing,
    "extra_forbidden": _unknown_key,
    "union_tag_invalid": _unknown_type,
    "union_tag_not_found": _no_type,
}


def file_order(where: str) -> tuple[int, int, str]:
    """A sort key that puts problems in the order of the lines they point at."""
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


def _data_path(data: Any, loc: tuple[str | int, ...]) -> tuple[Loc, Any]:
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


def _context(doc: Document, path: Loc) -> tuple[str, Loc]:
    """Split a path into a layer context (`layers[3] (conv2)`) and the rest; a layer a block
    use made is named as its block names it, so that the same mistake in each repeat is one."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        origin = doc.origins.get(path[1])
        if origin:
            return origin.written, path[2:]
        return _entry(doc.data.get("layers"), f"layers[{path[1]}]", path[1]), path[2:]
    if len(path) >= 4 and path[0] == "blocks" and path[2] == "layers" and isinstance(path[3], int):
        block = doc.data.get("blocks", {}).get(path[1], {})
        layers = block.get("layers") if isinstance(block, dict) else None
        return _entry(layers, f"block {path[1]}, layers[{path[3]}]", path[3]), path[4:]
    if len(path) >= 2 and path[0] == "blocks":
        return f"block {path[1]}", path[2:]
    return "", path


def _entry(layers: Any, shown: str, i: int) -> str:
    """`layers[3] (conv2)`: an entry of a layers list, with its name where it has one."""
    layer = layers[i] if isinstance(layers, list) and i < len(layers) else None
    name = layer.get("name") if isinstance(layer, dict) else None
    return shown + (f" ({name})" if isinstance(name, str) else "")


def _dotted(path: Loc) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _model_at(root: type[BaseModel], data: Any, path: Loc) -> type[BaseModel] | None:
    """The model whose field `path[-1]` is, found by walking annotations and `type` tags."""
    return _pick(*_models_for(root, data, path[:-1]))


def _tags_for(root: type[BaseModel], data: Any, path: Loc) -> list[str]:
    candidates, _ = _models_for(root, data, path)
    return [t for t in map(_tag, candidates) if t]


def _models_for(root: type[BaseModel], data: Any, path: Loc) -> tuple[list[type[BaseModel]], Any]:
    """The models the value at `path` may be (a union's members), and the value."""
    candidates: list[type[BaseModel]] = [root]
    node = data
    keyed = False  # the step is a key of a mapping the user names (`blocks: {basic: …}`)
    for step in path:
        if isinstance(step, int) or keyed:
            if isinstance(step, int):
                node = node[step] if isinstance(node, list) and step < len(node) else None
            else:
                node = node.get(step) if isinstance(node, dict) else None
            keyed = False
            continue
        model = _pick(candidates, node)
        field = _field(model, step) if model else None
        if field is None:
            return [], None
        candidates = _models_in(field.annotation)
        keyed = _is_mapping(field.annotation)
        node = node.get(step) if isinstance(node, dict) else None
    return candidates, node


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a section takes, as written (`with`, not the field `with_`)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, field in model.model_fields.items():
        if (field.alias or name) == key:
            return field
    return None


def _is_mapping(annotation: Any) -> bool:
    """Whether the annotation is a dict (perhaps inside Annotated or `| None`)."""
    origin = typing.get_origin(annotation)
    if origin is dict:
        return True
    if origin is typing.Annotated:
        return _is_mapping(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_mapping(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


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


def _tag(model: type[BaseModel]) -> str | None:
    """The `type` a member of a tagged union has (`conv`), or None for other models."""
    field = model.model_fields.get("type")
    tag = typing.get_args(field.annotation)[0] if field else None
    return tag if isinstance(tag, str) else None


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
_BOUNDS = {
    "greater_than_equal": ("≥", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("≤", "le"),
    "less_than": ("<", "lt"),
}


def _shown(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it, cut short: an error line stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _describe(kind: str, ctx: dict[str, Any], got: Any, default: str) -> str:
    """What is wrong with a value, in the spec's terms; pydantic's words where none fit."""
    shown = f", got {_shown(got)}"
    if kind in _DESCRIBE:
        return _DESCRIBE[kind] + shown
    if kind in _BOUNDS:
        sign, name = _BOUNDS[kind]
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
