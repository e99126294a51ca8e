"""Reading YAML safely, remembering where every value came from.

PyYAML's own loaders construct arbitrary objects (unsafe ones), keep the last of two
duplicate keys without a word, read `yes` as true and `1e-4` as a string, and expand aliases
without bound. Specs are small, hand-written files, so this module composes the YAML node
tree and converts it itself: plain data only, YAML 1.2 scalars, duplicate keys reported,
alias expansion capped, and the position of every key and value kept for error messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netspec.errors import Problem, SpecError

Loc = tuple[str | int, ...]

MAX_NODES = 100_000  # after alias expansion; a spec has a few hundred
MAX_BYTES = 10_000_000

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o[0-7_]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose implicit scalar types are YAML 1.2's: no `yes`, no sexagesimal."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _regex, _first in [
    ("tag:yaml.org,2002:bool", _BOOL, list("tTfF")),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789")),
    ("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"]),
]:
    _Loader.add_implicit_resolver(_tag, _regex, _first)


_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")


def _not_allowed(tag: str) -> ValueError:
    shown = tag.replace("tag:yaml.org,2002:", "!!")
    return ValueError(f"tag {shown} is not allowed in a spec; write plain values")


def _scalar(node: yaml.ScalarNode) -> Any:
    text = node.value
    match node.tag:
        case "tag:yaml.org,2002:bool":
            if not _BOOL.match(text):
                raise ValueError(f"!!bool takes true or false, not '{text}'")
            return text.lower() == "true"
        case "tag:yaml.org,2002:null":
            return None
        case "tag:yaml.org,2002:int":
            return int(text.replace("_", ""), 0)
        case "tag:yaml.org,2002:float":
            low = text.lower()
            if low.endswith(("inf", "nan")):
                return float(low.replace(".", ""))
            return float(text.replace("_", ""))
        case "tag:yaml.org,2002:str" | "tag:yaml.org,2002:merge":  # `<<` as a value
            return text
    raise _not_allowed(node.tag)


@dataclass
class Removal:
    """A layer an override took out (`--set layers.pool2=null`), and the layers that read it
    and now read its input: a shape that no longer fits downstream of them names the override."""

    layer: str
    where: str
    readers: list[str]


@dataclass
class Document:
    """Plain data from a YAML text, with the location of each value and each mapping key."""

    data: Any
    source: str
    values: dict[Loc, str] = field(default_factory=dict)
    keys: dict[Loc, str] = field(default_factory=dict)
    removals: list[Removal] = field(default_factory=list)

    def where(self, loc: Loc, key: bool = False) -> str:
        """The location of `loc`, or of its nearest enclosing value that has one."""
        table = self.keys if key and loc in self.keys else self.values
        for n in range(len(loc), -1, -1):
            if loc[:n] in table:
                return table[loc[:n]]
        return self.source


class _Converter:
    def __init__(self, source: str, doc: Document):
        self.source = source
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()
        self.problems: list[Problem] = []

    def mark(self, node: yaml.Node) -> str:
        m = node.start_mark
        return f"{self.source}:{m.line + 1}:{m.column + 1}"

    def convert(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError(
                [
                    Problem(
                        self.mark(node),
                        f"aliases expand to more than {MAX_NODES} values; "
                        "a spec this large is almost certainly an alias bomb",
                    )
                ]
            )
        if id(node) in self.active:
            raise SpecError([Problem(self.mark(node), "recursive alias: a value contains itself")])
        self.doc.values.setdefault(loc, self.mark(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                return _scalar(node)
            except ValueError as exc:
                self.problems.append(Problem(self.mark(node), str(exc)))
                return None
        if node.tag not in _PLAIN_COLLECTIONS:
            self.problems.append(Problem(self.mark(node), str(_not_allowed(node.tag))))
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*loc, i)) for i, item in enumerate(node.value)]
            return self.mapping(node, loc)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, str] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append(value_node)
                continue
            try:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ValueError("a key must be a plain name")
                key = str(_scalar(key_node))
            except ValueError as exc:
                self.problems.append(Problem(self.mark(key_node), str(exc)))
                continue
            where = self.mark(key_node)
            if key in first:
                self.problems.append(
                    Problem(
                        where,
                        f"duplicate key '{key}' (first at {first[key]}); "
                        "YAML would silently keep the last one: remove one of them",
                    )
                )
                continue
            first[key] = where
            self.doc.keys.setdefault((*loc, key), where)
            out[key] = self.convert(value_node, (*loc, key))
        # `<<` merges after the explicit keys, so that theirs win, values and positions both
        for value_node in merges:
            merged = self.convert(value_node, loc)
            parts = merged if isinstance(merged, list) else [merged]
            if not all(isinstance(part, dict) for part in parts):
                self.problems.append(
                    Problem(self.mark(value_node), "<< merges a mapping or a list of mappings")
                )
                continue
            for part in parts:
                for k, v in part.items():
                    out.setdefault(k, v)
        return out


def parse_yaml(text: str, source: str, base: Loc = (), where: str | None = None) -> Document:
    """Parse `text`; `where`, when given, replaces positions (used for `--set` overrides)."""
    doc = Document(data=None, source=source)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        if where:
            at = where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start and not where:
            problem += f" ({context} at {start.line + 1}:{start.column + 1})"
        raise SpecError([Problem(at, f"YAML syntax: {problem}")]) from None
    if node is None:
        return doc
    conv = _Converter(source, doc)
    doc.data = conv.convert(node, base)
    if where:
        doc.values = {k: where for k in doc.values}
        doc.keys = {k: where for k in doc.keys}
    if conv.problems:
        raise SpecError([Problem(where, p.message) if where else p for p in conv.problems])
    return doc


def read_yaml(path: str | Path) -> Document:
    """Read a spec file; a missing, unreadable or oversized file is a located SpecError."""
    p = Path(path)
    source = str(path)
    try:
        if p.is_dir():
            raise SpecError([Problem(source, "is a folder, not a spec file")])
        if p.stat().st_size > MAX_BYTES:
            raise SpecError([Problem(source, f"file is larger than {MAX_BYTES} bytes")])
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(source, "file not found")]) from None
    except PermissionError:
        raise SpecError([Problem(source, "permission denied: cannot read the file")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(source, f"not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise SpecError([Problem(source, f"cannot read: {exc.strerror}")]) from None
    return parse_yaml(text, source)
