"""Block uses expanded into plain layers, every value keeping where it was written.

A value is carried as a `Tok`: the value, where it was written, and the notes of the
expansions it went through. A `$param` is replaced by the use's value, which keeps its own
position and remembers the `$param` it replaced; when one copy of a block is done, each value
it produced gets two notes, `in block basic at …` (or `as $filters in block basic at …`) and
`used by layer1 at …`, so a message can name the token written and every expansion between.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from netspec.spec.document import BlockUse, Document, Loc, Origin
from netspec.spec.layers import INPUT

BLOCK_INPUT = "in"  # how a block's layers name the block's input
PARAM = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")  # a whole value a parameter replaces
MAX_LAYERS = 10_000  # after expansion: ResNet-152 has about 500 layers, a bomb has billions


@dataclass(frozen=True)
class Tok:
    """A value as written: a scalar, a list of Tok, or a mapping of key → (where the key is,
    Tok); where it is, the notes of the expansions it went through (innermost first), and
    per expansion under way, the `$param` it replaced there."""

    value: Any
    where: str
    notes: tuple[str, ...] = ()
    marks: tuple[tuple[int, str], ...] = ()

    def plain(self) -> Any:
        if isinstance(self.value, dict):
            return {k: v.plain() for k, (_, v) in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value

    def get(self, key: str) -> Tok | None:
        if isinstance(self.value, dict) and key in self.value:
            found: Tok = self.value[key][1]
            return found
        return None

    def map(self, fn: Callable[[Tok], Tok]) -> Tok:
        """`fn` applied to every value in this one, innermost first, then to this one."""
        if isinstance(self.value, dict):
            inner: Any = {k: (at, v.map(fn)) for k, (at, v) in self.value.items()}
        elif isinstance(self.value, list):
            inner = [v.map(fn) for v in self.value]
        else:
            inner = self.value
        return fn(replace(self, value=inner))

    def walk(self) -> Iterator[Tok]:
        yield self
        children = self.value.values() if isinstance(self.value, dict) else ()
        for _, v in children:
            yield from v.walk()
        for v in self.value if isinstance(self.value, list) else ():
            yield from v.walk()


def lift(doc: Document, loc: Loc, value: Any) -> Tok:
    where = doc.where(loc)
    if isinstance(value, dict):
        items = {
            k: (doc.where((*loc, k), key=True), lift(doc, (*loc, k), v)) for k, v in value.items()
        }
        return Tok(items, where)
    if isinstance(value, list):
        return Tok([lift(doc, (*loc, i), v) for i, v in enumerate(value)], where)
    return Tok(value, where)


def lower(tok: Tok, loc: Loc, doc: Document) -> Any:
    """The plain value, with where it and its keys were written entered in `doc` at `loc`."""
    doc.values[loc] = tok.where
    if tok.notes:
        doc.notes[loc] = ", ".join(tok.notes)
    if isinstance(tok.value, dict):
        out = {}
        for k, (at, v) in tok.value.items():
            doc.keys[(*loc, k)] = at
            out[k] = lower(v, (*loc, k), doc)
        return out
    if isinstance(tok.value, list):
        return [lower(v, (*loc, i), doc) for i, v in enumerate(tok.value)]
    return tok.value


def name_of(entry: Tok) -> str | None:
    name = entry.get("name")
    return name.value if name is not None and isinstance(name.value, str) else None


def params_in(tok: Tok) -> Iterator[tuple[str, Tok]]:
    """Each `$param` in a value, with the token it is."""
    for t in tok.walk():
        if isinstance(t.value, str) and (m := PARAM.match(t.value)):
            yield m[1], t


@dataclass(frozen=True)
class Definition:
    """A block as written: its layers as values that know where they are, to be copied."""

    name: str
    where: str  # of its name, under blocks:
    params: list[str]
    entries: list[Tok]

    @classmethod
    def of(cls, doc: Document, name: str, block: dict[str, Any]) -> Definition:
        loc = ("blocks", name)
        entries = [lift(doc, (*loc, "layers", i), e) for i, e in enumerate(block["layers"])]
        return cls(name, doc.where(loc, key=True), list(block.get("params", [])), entries)

    def context(self, i: int) -> str:
        name = name_of(self.entries[i])
        return f"block {self.name}, layers[{i}]" + (f" ({name})" if name else "")


@dataclass(frozen=True)
class UseCopy:
    """One copy a use makes: its block, its parameters' values, and where it was asked for."""

    block: str
    bindings: dict[str, tuple[str, Tok]]  # param → (where its key is, its value)
    where: str


def copies_of(use: Tok) -> list[UseCopy]:
    block = use.get("use")
    assert block is not None
    given = use.get("with")
    bindings = dict(given.value) if given is not None else {}
    repeat = use.get("repeat")
    if repeat is None or repeat.value is None:
        return [UseCopy(block.value, bindings, given.where if given else use.where)]
    if isinstance(repeat.value, int):
        return [UseCopy(block.value, bindings, repeat.where)] * repeat.value
    copies = []
    for item in repeat.value:
        own, more = item.get("use"), item.get("with")
        extra = dict(more.value) if more is not None else {}
        name = own.value if own is not None and own.value is not None else block.value
        copies.append(UseCopy(name, bindings | extra, item.where))
    return copies


def is_use(entry: Tok) -> bool:
    return isinstance(entry.value, dict) and "use" in entry.value


def top_context(entry: Tok, i: int) -> str:
    name = name_of(entry)
    return f"layers[{i}]" + (f" ({name})" if name else "")


class Expander:
    """Expands the spec's layers in order into `flat`, each with its origin."""

    def __init__(self, doc: Document, blocks: dict[str, Definition]):
        self.doc = doc
        self.blocks = blocks
        self.levels = itertools.count()
        self.written_in: dict[int, str] = {}  # an expansion → the prefix of the scope of its use
        self.last = INPUT  # the flat layer emitted last: the one a layer reads by default
        self.flat: list[tuple[Tok, Origin]] = []
        self.layers_of: dict[str, list[str]] = {}  # a use of the spec's list → its layers

    def top(self, plain_only: bool) -> None:
        entries = [lift(self.doc, ("layers", i), e) for i, e in enumerate(self.doc.data["layers"])]
        # a use is read by its name as the layer its block ends with; with mistakes found
        # (a block that uses itself, perhaps), the plain layers are kept as written
        named = [(name, e) for e in entries if (name := name_of(e)) is not None]
        names = {} if plain_only else {name: self.output_of(e, "") for name, e in named}

        def resolve(ref: str) -> str:
            return names.get(ref, ref)

        for i, entry in enumerate(entries):
            context = top_context(entry, i)
            if is_use(entry):
                if plain_only:
                    continue
                start = len(self.flat)
                self.use(entry, "", self.last, resolve, ())
                self.layers_of[name_of(entry) or ""] = [
                    name_of(t) or "" for t, _ in self.flat[start:]
                ]
            elif name_of(entry) is not None and not plain_only:
                self.layer(entry, "", self.last, resolve, (), context)
            else:  # as written: validation finds what is wrong with it
                self.flat.append((entry, Origin(context, context)))
                self.last = name_of(entry) or ""

    def output_of(self, entry: Tok, prefix: str) -> str:
        """The flat name of the layer an entry's output is: its own, or its block's last."""
        name = name_of(entry) or ""
        if not is_use(entry):
            return prefix + name
        copies = copies_of(entry)
        if not copies or any(copy.block not in self.blocks for copy in copies):
            return prefix + name  # not expanded: its mistakes are being reported
        repeat = entry.get("repeat")
        last = f"{prefix}{name}." + (f"{len(copies) - 1}." if repeat and repeat.value else "")
        return self.output_of(self.blocks[copies[-1].block].entries[-1], last)

    def use(
        self,
        entry: Tok,
        prefix: str,
        prev: str,
        resolve: Callable[[str], str],
        uses: tuple[BlockUse, ...],
    ) -> None:
        name = name_of(entry) or ""
        inputs = entry.get("inputs")
        source = resolve(inputs.value[0].value) if inputs and inputs.value else prev
        repeat = entry.get("repeat")
        for r, copy in enumerate(copies_of(entry)):
            block = self.blocks[copy.block]
            path = f"{prefix}{name}" + (f".{r}" if repeat and repeat.value else "")
            level = next(self.levels)
            self.written_in[level] = prefix
            start = len(self.flat)
            frame = BlockUse(path, block.name, entry.where)
            self.scope(block, path + ".", source, copy.bindings, level, (*uses, frame))
            for j in range(start, len(self.flat)):
                tok, origin = self.flat[j]
                self.flat[j] = (_finish(tok, level, block, name, entry.where), origin)
            source = self.last

    def scope(
        self,
        block: Definition,
        prefix: str,
        source: str,
        bindings: dict[str, tuple[str, Tok]],
        level: int,
        uses: tuple[BlockUse, ...],
    ) -> None:
        """One copy of a block's layers, reading `source` as `in`."""
        entries = [_substitute(e, bindings, level, block.name) for e in block.entries]
        names = {name: self.output_of(e, prefix) for e in entries if (name := name_of(e))}

        def resolve(ref: str) -> str:
            return source if ref == BLOCK_INPUT else names[ref]

        prev = source
        for entry in entries:
            if is_use(entry):
                self.use(entry, prefix, prev, resolve, uses)
            else:
                self.layer(entry, prefix, prev, resolve, uses, name_of(entry) or "")
            prev = self.last

    def layer(
        self,
        entry: Tok,
        prefix: str,
        prev: str,
        resolve: Callable[[str], str],
        uses: tuple[BlockUse, ...],
        written: str,
    ) -> None:
        """One plain layer: named with its prefix, its inputs by their flat names."""
        items = dict(entry.value)
        name_at, name = items["name"]
        flat = prefix + name.value if isinstance(name.value, str) else name.value
        items["name"] = (name_at, replace(name, value=flat))
        inputs = entry.get("inputs")
        if inputs is not None and isinstance(inputs.value, list):
            resolved = [
                replace(t, value=resolve(t.value)) if isinstance(t.value, str) else t
                for t in inputs.value
            ]
            items["inputs"] = (items["inputs"][0], replace(inputs, value=resolved))
        elif prev != self.last:  # it reads what the layer before it in the flat list is not
            items["inputs"] = (entry.where, replace(entry, value=[replace(entry, value=prev)]))
        key = entry.get("weights_key")
        if prefix and key is not None and isinstance(key.value, str):
            # a key is read where it was written: in the block, under this copy's name; given
            # by a use's `with`, under the name of the scope that use is in
            given = [level for level, _ in key.marks]
            scope = self.written_in[min(given)] if given else prefix
            items["weights_key"] = (items["weights_key"][0], replace(key, value=scope + key.value))
        shown = flat if prefix and isinstance(flat, str) else written
        self.flat.append((replace(entry, value=items), Origin(written, shown, uses)))
        self.last = flat if isinstance(flat, str) else ""


def _substitute(entry: Tok, bindings: dict[str, tuple[str, Tok]], level: int, block: str) -> Tok:
    """`$param` replaced by its value, which remembers the `$param` it took the place of."""

    def one(tok: Tok) -> Tok:
        m = PARAM.match(tok.value) if isinstance(tok.value, str) else None
        if m is None or m[1] not in bindings:
            return tok
        note = f"as ${m[1]} in block {block} at {tok.where}"
        return bindings[m[1]][1].map(lambda t: replace(t, marks=(*t.marks, (level, note))))

    return entry.map(one)


def _finish(tok: Tok, level: int, block: Definition, use: str, where: str) -> Tok:
    """The notes of one expansion, added to every value it produced."""

    def one(t: Tok) -> Tok:
        marks = dict(t.marks)
        note = marks.pop(level, None) or f"in block {block.name} at {block.where}"
        return replace(
            t, notes=(*t.notes, note, f"used by {use} at {where}"), marks=tuple(marks.items())
        )

    return tok.map(one)


def flatten(doc: Document, expander: Expander, plain_only: bool) -> None:
    """The document's layers become the expanded ones (or its plain ones alone), each value
    entered where it was written, and `blocks:` goes."""
    data = doc.data
    if isinstance(data.get("layers"), list):
        expander.top(plain_only)
        for table in (doc.values, doc.keys):
            for loc in [k for k in table if k[:1] == ("layers",) and len(k) > 1]:
                del table[loc]
        data["layers"] = [lower(t, ("layers", j), doc) for j, (t, _) in enumerate(expander.flat)]
        doc.origins = {j: origin for j, (_, origin) in enumerate(expander.flat)}
        for removal in doc.removals:
            removal.readers = [
                flat for r in removal.readers for flat in expander.layers_of.get(r, [r])
            ]
    data.pop("blocks", None)
