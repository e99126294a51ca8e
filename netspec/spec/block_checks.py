"""What can be wrong with blocks before any is expanded, each mistake found once, where it
was written: unknown blocks, missing and extra parameters, `$params` a block does not have,
references between a block's layers, names that clash, blocks that use themselves, and a
spec that would expand past MAX_LAYERS. What depends on the values is found per use, after
expansion, by the validation and the graph every spec goes through."""

from __future__ import annotations

import re

import networkx as nx

from netspec.errors import Problem, did_you_mean
from netspec.spec.document import Document
from netspec.spec.expansion import (
    BLOCK_INPUT,
    MAX_LAYERS,
    PARAM,
    Definition,
    Tok,
    UseCopy,
    copies_of,
    is_use,
    lift,
    name_of,
    params_in,
    top_context,
)
from netspec.spec.layers import NAME_PATTERN


class Checks:
    """What can be wrong with blocks before any is expanded, each found once."""

    def __init__(self, doc: Document, blocks: dict[str, Definition]):
        self.doc = doc
        self.blocks = blocks
        self.problems: list[Problem] = []

    def run(self) -> list[Problem]:
        for name in self.blocks:
            if not re.match(NAME_PATTERN, name):
                self.say(
                    self.doc.where(("blocks", name), key=True),
                    f"block name '{name}' must be letters, digits and _, starting with a letter",
                )
        top = [lift(self.doc, ("layers", i), e) for i, e in enumerate(self.doc.data["layers"])]
        self.scope(top, None)
        for block in self.blocks.values():
            self.scope(block.entries, block)
        self.cycles()
        if not self.problems:
            self.size(top)
        return list(dict.fromkeys(self.problems))

    def say(self, where: str, message: str, context: str = "") -> None:
        self.problems.append(Problem(where, message, context))

    def scope(self, entries: list[Tok], block: Definition | None) -> None:
        """One list of entries: the spec's own (`block` None) or a block's."""
        first: dict[str, tuple[str, bool]] = {}  # name → where, and whether a use took it
        for i, entry in enumerate(entries):
            context = block.context(i) if block else top_context(entry, i)
            if not isinstance(entry.value, dict):
                continue  # a layer that is not a mapping: validation says so
            name, name_tok = name_of(entry), entry.get("name")
            if block is not None:
                self.block_layer(entry, block, context)
            if name is not None and name_tok is not None:
                # two plain layers of the spec's own list: the graph says so, as without blocks
                if name in first and (block or is_use(entry) or first[name][1]):
                    self.say(
                        name_tok.where,
                        f"duplicate layer name '{name}' (first at {first[name][0]}); names in "
                        + (f"block {block.name}" if block else "layers")
                        + " must be unique",
                        context,
                    )
                first.setdefault(name, (name_tok.where, is_use(entry)))
            if is_use(entry):
                self.use(entry, context)
            if block is None:
                for param, tok in params_in(entry):
                    self.say(
                        tok.where,
                        f"${param} is outside any block: parameters are substituted only in "
                        "a block's layers; write the value",
                        context,
                    )
        if block is not None:
            self.references(entries, block)

    def block_layer(self, entry: Tok, block: Definition, context: str) -> None:
        name_tok, kind = entry.get("name"), entry.get("type")
        if name_tok is None:
            self.say(entry.where, "missing required key 'name'", context)
        elif not isinstance(name_tok.value, str) or not re.match(NAME_PATTERN, name_tok.value):
            self.say(
                name_tok.where,
                f"name must be letters, digits and _, starting with a letter, got "
                f"{name_tok.value!r}: each use names the block's layers USE.NAME itself",
                context,
            )
        elif name_tok.value == BLOCK_INPUT:
            self.say(
                name_tok.where,
                f"'{BLOCK_INPUT}' names the block's input; rename this layer",
                context,
            )
        if kind is not None and isinstance(kind.value, str) and PARAM.match(kind.value):
            self.say(kind.where, "a layer's type cannot be a parameter; write the type", context)
        for param, tok in params_in(entry):
            if param not in block.params:
                takes = (
                    f"its params: {', '.join(block.params)}"
                    if block.params
                    else f"it has none: add params: [{param}]"
                )
                self.say(
                    tok.where,
                    f"${param} is not a parameter of block {block.name}"
                    f"{did_you_mean(param, block.params)}; {takes}",
                    context,
                )

    def references(self, entries: list[Tok], block: Definition) -> None:
        """A block's layers read `in` or each other; nothing outside the block."""
        names = [n for n in map(name_of, entries) if n]
        for i, entry in enumerate(entries):
            inputs = entry.get("inputs")
            if inputs is None or not isinstance(inputs.value, list):
                continue
            for item in inputs.value:
                ref = item.value
                if not isinstance(ref, str) or ref == BLOCK_INPUT or ref in names:
                    continue
                self.say(
                    item.where,
                    f"no layer named '{ref}' in block {block.name}"
                    f"{did_you_mean(ref, [BLOCK_INPUT, *names])}; a block's layers read "
                    f"'{BLOCK_INPUT}' (the block's input) or each other",
                    block.context(i),
                )

    def use(self, entry: Tok, context: str) -> None:
        """The block a use names exists, and it gets each of its parameters, no others."""
        for copy in copies_of(entry):
            block = self.blocks.get(copy.block)
            if block is None:
                tok = self.use_token(entry, copy)
                known = list(self.blocks)
                listed = f"blocks: {', '.join(known)}" if known else "the spec defines none"
                self.say(
                    tok.where,
                    f"no block named '{copy.block}'{did_you_mean(copy.block, known)}; {listed}",
                    context,
                )
                continue
            missing = [p for p in block.params if p not in copy.bindings]
            if missing:
                self.say(
                    copy.where,
                    f"block {block.name} needs {', '.join(missing)}: give "
                    + ("it" if len(missing) == 1 else "them")
                    + f" in with: {{{', '.join(f'{p}: …' for p in missing)}}}",
                    context,
                )
            for param, (at, _) in copy.bindings.items():
                if param not in block.params:
                    takes = (
                        f"its params: {', '.join(block.params)}"
                        if block.params
                        else "it takes none"
                    )
                    self.say(
                        at,
                        f"block {block.name} has no parameter '{param}'"
                        f"{did_you_mean(param, block.params)}; {takes}",
                        context,
                    )

    @staticmethod
    def use_token(entry: Tok, copy: UseCopy) -> Tok:
        """The `use:` value that named the copy's block: the copy's own, or the entry's."""
        repeat = entry.get("repeat")
        for item in repeat.value if repeat is not None and isinstance(repeat.value, list) else []:
            own = item.get("use")
            if own is not None and own.value == copy.block:
                return own
        tok = entry.get("use")
        assert tok is not None
        return tok

    def cycles(self) -> None:
        """A block may use blocks, but never itself, through any chain of uses."""
        uses = nx.DiGraph()
        at: dict[tuple[str, str], Tok] = {}
        for block in self.blocks.values():
            uses.add_node(block.name)
            for entry in filter(is_use, block.entries):
                for copy in copies_of(entry):
                    if copy.block in self.blocks:
                        uses.add_edge(block.name, copy.block)
                        at.setdefault((block.name, copy.block), self.use_token(entry, copy))
        order = list(self.blocks)
        for part in nx.strongly_connected_components(uses):
            first = min(part, key=order.index)
            if len(part) == 1 and not uses.has_edge(first, first):
                continue
            cycle = nx.find_cycle(uses.subgraph(part), first)
            start = cycle[0][0]
            path = " → ".join([a for a, _ in cycle] + [start])
            self.say(
                at[cycle[0]].where,
                f"the block uses itself: {path}; a block cannot contain itself",
                f"block {start}",
            )

    def size(self, top: list[Tok]) -> None:
        """The expanded spec is bounded, and counted without expanding it."""
        sizes: dict[str, int] = {}

        def count(entries: list[Tok]) -> int:
            total = 0
            for entry in entries:
                if is_use(entry):
                    total += sum(of(copy.block) for copy in copies_of(entry))
                else:
                    total += 1
                if total > MAX_LAYERS:
                    break
            return total

        def of(block: str) -> int:
            if block not in sizes:
                sizes[block] = count(self.blocks[block].entries)
            return sizes[block]

        total = 0
        for i, entry in enumerate(top):
            total += count([entry])
            if total > MAX_LAYERS:
                self.say(
                    entry.where,
                    f"the blocks expand to more than {MAX_LAYERS:,} layers by this use; "
                    "repeat fewer times",
                    top_context(entry, i),
                )
                return
