"""Reading YAML safely, remembering where every value came from.

PyYAML's own loaders construct arbitrary objects (unsafe ones), keep the last of two
duplicate keys without a word, read `yes` as true and `1e-4` as a string, expand aliases
without bound and recurse once per level of nesting. Specs are small, hand-written files, so
this module builds the node tree itself from the parser's event stream (libyaml's, when PyYAML
has it, which is some twenty times faster than the pure-Python scanner) and converts it:
plain data only, YAML 1.2 scalars, duplicate keys reported, and the position of every key and
value kept for error messages.

Everything is bounded before it can cost much: the bytes read, the depth of nesting, the
number of values in the text, and the values and bytes that aliases expand to. The limits
are far above any real spec (AlexNet's is 4 KB and about 300 values), and a text at the limits
parses in well under a second.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netspec.errors import Problem, SpecError

Loc = tuple[str | int, ...]

MAX_BYTES = 1_000_000  # of a file or a --set value, and of the text its aliases expand to
MAX_VALUES = 20_000  # in the text, and again after alias expansion
MAX_DEPTH = 64  # levels of nested lists and mappings (a spec needs about five)
MAX_DIGITS = 100  # of one integer: every number a spec takes fits in 64 bits
_REPARSE_BYTES = 65_536  # a syntax error this early is worded by the pure-Python parser

_Events = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # only its event stream is used

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o[0-7_]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
# YAML 1.2's implicit types of a plain scalar, in the order they are tried.
IMPLICIT: list[tuple[str, re.Pattern[str], list[str]]] = [
    ("tag:yaml.org,2002:bool", _BOOL, list("tTfF")),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789")),
    (_MERGE, re.compile(r"^<<$"), ["<"]),
]


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes every string this module would read as something else."""


_Dumper.yaml_implicit_resolvers = {}
for _tag, _regex, _first in IMPLICIT:
    _Dumper.add_implicit_resolver(_tag, _regex, _first)


def dump_yaml(data: Any, flow: bool | None = False) -> str:
    """Plain data as YAML that `parse_yaml` reads back equal: `'1e5'` stays a string.
    `flow`: False writes every list and mapping as a block, True all on one line, None only
    the innermost ones (`input: [3, 227, 227]`)."""
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=False,
        default_flow_style=flow,
        width=float("inf") if flow else 80,
    )


def _resolve(event: yaml.ScalarEvent) -> str:
    if event.tag not in (None, "!"):
        return str(event.tag)
    if event.tag is None and event.implicit[0]:  # plain, untagged
        for tag, regex, _ in IMPLICIT:
            if regex.match(event.value):
                return tag
    return _STR


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
            if len(text) > MAX_DIGITS:
                raise ValueError(
                    f"an integer of {len(text)} digits is beyond any size or count in a spec"
                )
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


@dataclass(frozen=True)
class BlockUse:
    """One use of a block that a layer came from: `layer1.0` using `basic`, written at `where`."""

    name: str
    block: str
    where: str


@dataclass(frozen=True)
class Origin:
    """Where a layer of the expanded spec came from, for messages and the diagram."""

    written: str  # what a mistake in its text is said to be in: `conv1`, `layers[3] (fc)`
    shown: str  # what a mistake in the built net is said to be in: `layer1.2.conv1`
    uses: tuple[BlockUse, ...] = ()  # the block uses it is inside, outermost first


@dataclass
class Document:
    """Plain data from a YAML text, with the location of each value and each mapping key."""

    data: Any
    source: str
    values: dict[Loc, str] = field(default_factory=dict)
    keys: dict[Loc, str] = field(default_factory=dict)
    removals: list[Removal] = field(default_factory=list)
    # where in the file each `--set` override (by its location) replaced a key or value
    replaced: dict[str, str] = field(default_factory=dict)
    # after blocks are expanded: the expansions each value went through, outermost last
    # (`in block basic at F:3:3, used by layer1 at F:20:5`), and each layer's origin by index
    notes: dict[Loc, str] = field(default_factory=dict)
    origins: dict[int, Origin] = field(default_factory=dict)

    def where(self, loc: Loc, key: bool = False) -> str:
        """The location of `loc`, or of its nearest enclosing value that has one."""
        table = self.keys if key and loc in self.keys else self.values
        for n in range(len(loc), -1, -1):
            if loc[:n] in table:
                return table[loc[:n]]
        return self.source

    def note(self, loc: Loc, key: bool = False) -> str:
        """` (in block basic at …, used by layer1 at …)` for a value a block use wrote there,
        else "". A key was written where the mapping holding it was, so it has that one's."""
        if key and loc in self.keys:
            loc = loc[:-1]
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.values:
                found = self.notes.get(loc[:n])
                return f" ({found})" if found else ""
        return ""


class _Limit(Exception):
    """A bound passed: the text is refused as a whole, at the value where it happened."""

    def __init__(self, mark: Any, message: str):
        self.mark, self.message = mark, message


def _compose(text: str) -> yaml.Node | None:
    """The one document's node tree, built from parser events without recursion.

    Like PyYAML's composer, an alias becomes the very node its anchor names (so the tree is a
    graph, expanded later); unlike it, a value that contains itself is refused here, and the
    nesting depth and the number of values are bounded as the events arrive.
    """
    events = _Events(text)
    anchors: dict[str, yaml.Node] = {}
    open_nodes: list[yaml.Node] = []  # collections being built, innermost last
    pending_key: list[yaml.Node | None] = []  # per open mapping: a key awaiting its value
    root: yaml.Node | None = None
    documents = values = 0
    try:
        while events.check_event():
            event = events.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _Limit(
                        event.start_mark,
                        "YAML syntax: expected a single document, but found another; "
                        "a spec is one document",
                    )
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                open_nodes.pop()
                pending_key.pop()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            node = _node(event, anchors, open_nodes)
            if not isinstance(event, yaml.AliasEvent):
                values += 1
                if values > MAX_VALUES:
                    raise _Limit(
                        event.start_mark,
                        f"the text holds more than {MAX_VALUES} values; a spec has a few "
                        "hundred: split the file or generate fewer layers",
                    )
                if event.anchor is not None:
                    if event.anchor in anchors:
                        raise _Limit(event.start_mark, f"anchor &{event.anchor} defined twice")
                    anchors[event.anchor] = node
            _attach(node, open_nodes, pending_key)
            if root is None:
                root = node
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_nodes) >= MAX_DEPTH:
                    raise _Limit(
                        event.start_mark,
                        f"lists and mappings nest more than {MAX_DEPTH} levels deep; "
                        "a spec needs a few",
                    )
                open_nodes.append(node)
                pending_key.append(None)
    finally:
        events.dispose()
    return root


def _node(event: yaml.NodeEvent, anchors: dict[str, yaml.Node], open_nodes: list) -> yaml.Node:
    mark: Any = event.start_mark  # libyaml's marks and PyYAML's have the same fields
    if isinstance(event, yaml.AliasEvent):
        if event.anchor not in anchors:
            raise _Limit(mark, f"alias *{event.anchor} names no anchor; define &{event.anchor}")
        target = anchors[event.anchor]
        if any(target is n for n in open_nodes):
            used = f"*{event.anchor} at {mark.line + 1}:{mark.column + 1}"
            raise _Limit(target.start_mark, f"recursive alias: a value contains itself ({used})")
        return target
    if isinstance(event, yaml.ScalarEvent):
        end: Any = event.end_mark
        return yaml.ScalarNode(_resolve(event), event.value, mark, end, event.style)
    assert isinstance(event, yaml.CollectionStartEvent)
    tag = event.tag if event.tag not in (None, "!") else None
    if isinstance(event, yaml.SequenceStartEvent):
        return yaml.SequenceNode(tag or _SEQ, [], mark, None)
    return yaml.MappingNode(tag or _MAP, [], mark, None)


def _attach(node: yaml.Node, open_nodes: list, pending_key: list) -> None:
    if not open_nodes:
        return
    parent = open_nodes[-1]
    if isinstance(parent, yaml.SequenceNode):
        parent.value.append(node)
    elif pending_key[-1] is None:
        pending_key[-1] = node
    else:
        parent.value.append((pending_key[-1], node))
        pending_key[-1] = None


class _Converter:
    """Node tree → plain data, expanding aliases within bounds and collecting problems."""

    def __init__(self, source: str, doc: Document):
        self.source = source
        self.doc = doc
        self.values = 0
        self.bytes = 0
        self.problems: list[Problem] = []

    def mark(self, node: yaml.Node) -> str:
        m = node.start_mark
        return f"{self.source}:{m.line + 1}:{m.column + 1}"

    def convert(self, node: yaml.Node, loc: Loc, depth: int = 0) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _Limit(
                node.start_mark,
                f"aliases expand to more than {MAX_VALUES} values; "
                "a spec this large is almost certainly an alias bomb",
            )
        if depth > MAX_DEPTH:
            raise _Limit(
                node.start_mark,
                f"aliases nest values more than {MAX_DEPTH} levels deep; a spec needs a few",
            )
        self.doc.values.setdefault(loc, self.mark(node))
        if isinstance(node, yaml.ScalarNode):
            self.bytes += len(node.value)
            if self.bytes > MAX_BYTES:
                raise _Limit(
                    node.start_mark,
                    f"aliases expand to more than {MAX_BYTES} bytes of text; "
                    "a spec this large is almost certainly an alias bomb",
                )
            try:
                return _scalar(node)
            except ValueError as exc:
                self.problems.append(Problem(self.mark(node), str(exc)))
                return None
        if node.tag not in (_SEQ, _MAP):
            self.problems.append(Problem(self.mark(node), str(_not_allowed(node.tag))))
            return None
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, loc, depth)
        return [self.convert(item, (*loc, i), depth + 1) for i, item in enumerate(node.value)]

    def mapping(self, node: yaml.MappingNode, loc: Loc, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, str] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            where = self.mark(key_node)
            try:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ValueError("a key must be a plain name")
                key = "<<" if key_node.tag == _MERGE else str(_scalar(key_node))
            except ValueError as exc:
                self.problems.append(Problem(where, str(exc)))
                continue
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
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            self.doc.keys.setdefault((*loc, key), where)
            out[key] = self.convert(value_node, (*loc, key), depth + 1)
        # `<<` merges after the explicit keys, so that theirs win, values and positions both
        for value_node in merges:
            merged = self.convert(value_node, loc, depth)
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


def _syntax_problem(exc: yaml.YAMLError, text: str, source: str, where: str | None) -> Problem:
    """A syntax error as one line, in PyYAML's wording where it reports the same place
    (it names the offending character, which libyaml does not)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None and mark.index < _REPARSE_BYTES and _Events is not yaml.SafeLoader:
        line_end = text.find("\n", mark.index)
        prefix = text[: len(text) if line_end < 0 else line_end + 1]
        try:
            for _ in yaml.parse(prefix, Loader=yaml.SafeLoader):
                pass
        except yaml.YAMLError as py_exc:
            py_mark = getattr(py_exc, "problem_mark", None)
            if py_mark is not None and (py_mark.line, py_mark.column) == (mark.line, mark.column):
                exc = py_exc
    at = where or (f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start and not where:
        problem += f" ({context} at {start.line + 1}:{start.column + 1})"
    return Problem(at, f"YAML syntax: {problem}")


def parse_yaml(text: str, source: str, base: Loc = (), where: str | None = None) -> Document:
    """Parse `text`; `where`, when given, replaces positions (used for `--set` overrides)."""
    doc = Document(data=None, source=source)
    if len(text) > MAX_BYTES:
        size = f"{len(text.encode('utf-8', 'surrogatepass')):,} bytes"
        raise SpecError([Problem(where or source, f"{size}, more than {MAX_BYTES:,} allowed")])
    conv = _Converter(source, doc)
    try:
        node = _compose(text)
        if node is not None:
            doc.data = conv.convert(node, base)
    except yaml.YAMLError as exc:
        raise SpecError([_syntax_problem(exc, text, source, where)]) from None
    except _Limit as exc:
        at = where or f"{source}:{exc.mark.line + 1}:{exc.mark.column + 1}"
        raise SpecError([Problem(at, exc.message)]) from None
    if where:
        doc.values = {k: where for k in doc.values}
        doc.keys = {k: where for k in doc.keys}
    if conv.problems:
        raise SpecError([Problem(where, p.message) if where else p for p in conv.problems])
    return doc


_KINDS = {
    stat.S_IFDIR: "is a folder, not a spec file",
    stat.S_IFCHR: "is a device, not a spec file",
    stat.S_IFBLK: "is a device, not a spec file",
    stat.S_IFIFO: "is a pipe, not a spec file; save the spec to a file first",
    stat.S_IFSOCK: "is a socket, not a spec file",
}


def read_yaml(path: str | Path) -> Document:
    """Read a spec file; a missing, unreadable, oversized or non-regular file is a located
    SpecError. The file is opened without blocking and checked before a byte is read, so a
    pipe or `/dev/zero` is refused at once, and at most MAX_BYTES + 1 bytes are ever read."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                kind = _KINDS.get(stat.S_IFMT(mode), "is not a regular file")
                raise SpecError([Problem(source, kind)])
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise SpecError(
                [Problem(source, f"file is larger than {MAX_BYTES:,} bytes; a spec is a few KB")]
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(source, "file not found")]) from None
    except PermissionError:
        raise SpecError([Problem(source, "permission denied: cannot read the file")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(source, _KINDS[stat.S_IFDIR])]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(source, f"not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise SpecError([Problem(source, f"cannot read: {exc.strerror or exc}")]) from None
    return parse_yaml(text, source)
