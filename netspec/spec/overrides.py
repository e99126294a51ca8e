"""`--set key=value`: change a spec from the command line, validated like the file itself.

Keys are dotted paths into the document; a layer is addressed by its name
(`layers.conv1.filters=64`) or its index (`layers.0.filters=64`). Values are YAML, so
`--set layers.conv1.kernel=[5,5]` and `--set train.schedule={type: cosine}` work.
`--set layers.norm1=null` removes a layer: whatever read it reads its input instead, which
is what an ablation means by "the same network without norm1".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netspec.errors import Problem, SpecError, did_you_mean
from netspec.spec.document import MAX_DEPTH, Document, Loc, Removal, parse_yaml
from netspec.spec.layers import INPUT

SHOWN = 80  # characters of an override repeated in a message


def apply_overrides(doc: Document, overrides: Sequence[str]) -> None:
    if not isinstance(doc.data, dict):
        return  # an empty file, or a list: validate() says so, which is the real mistake
    problems: list[Problem] = []
    in_file = {*doc.values.values(), *doc.keys.values()}
    for text in overrides:
        where = f"--set {text if len(text) <= SHOWN else text[: SHOWN - 1] + '…'}"
        try:
            _apply(doc, text, where, in_file)
        except SpecError as exc:
            problems.extend(exc.problems)
        except _Bad as exc:
            problems.append(Problem(where, str(exc)))
    if problems:
        raise SpecError(problems)


class _Bad(Exception):
    pass


def _apply(doc: Document, text: str, where: str, in_file: set[str]) -> None:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise _Bad("expected KEY=VALUE, e.g. --set layers.conv1.filters=64")
    steps = key.strip().split(".")
    if len(steps) > MAX_DEPTH:
        raise _Bad(f"KEY has {len(steps)} parts; a spec nests at most {MAX_DEPTH} deep")
    node: Any = doc.data
    loc: Loc = ()
    i = 0
    while True:
        step, width = _take(node, steps, i)
        if i + width == len(steps):
            break
        shown = ".".join(steps[: i + width])
        node, index = _step(node, step, steps[i + width], loc, shown)
        loc = (*loc, index)
        for table in (doc.values, doc.keys):
            table.setdefault(loc, where)  # a section the override adds is located at it
        i += width
    last = _final_index(node, step, loc)
    loc = (*loc, last)
    parsed = parse_yaml(value, where, base=loc, where=where)
    if parsed.data is None and value.strip() and loc[:-1] == ("layers",):
        _remove_layer(doc, int(last), where)
        return
    # a mistake in the value names the spec line it replaced, where the file wrote one
    was = doc.keys.get(loc, doc.values.get(loc))
    if was in in_file:
        doc.replaced[where] = was
    for table in (doc.values, doc.keys):
        for old in [k for k in table if k[: len(loc)] == loc]:
            del table[old]
    doc.values.update(parsed.values)
    doc.keys.update(parsed.keys)
    doc.keys[loc] = where
    doc.values[loc] = where
    node[last] = parsed.data


def _remove_layer(doc: Document, i: int, where: str) -> None:
    """Take out layer `i`; each layer that read it, by `inputs` or by coming next, reads its
    one input instead. The rewired `inputs` are located at the override."""
    layers: list[Any] = doc.data["layers"]
    name = _name(layers[i]) or f"layers.{i}"
    explicit = layers[i].get("inputs") if isinstance(layers[i], dict) else None
    previous = (_name(layers[i - 1]) if i else INPUT) or f"layers.{i - 1}"
    sources = explicit if isinstance(explicit, list) else [previous]
    if len(sources) != 1:
        raise _Bad(
            f"cannot remove '{name}': it joins {len(sources)} inputs, so its readers would "
            "have none to read instead; remove or rewire the layers that read it too"
        )
    (source,) = sources
    readers = []
    for j, layer in enumerate(layers):
        inputs = layer.get("inputs") if isinstance(layer, dict) else None
        if j == i + 1 and inputs is None:
            readers.append(_name(layer) or f"layers.{j}")
            if source != previous:  # it read layer i by coming next: now it must say what
                layer["inputs"] = [source]
                _locate(doc, ("layers", j, "inputs"), where)
        elif isinstance(inputs, list) and name in inputs:
            readers.append(_name(layer) or f"layers.{j}")
            layer["inputs"] = [source if n == name else n for n in inputs]
            _locate(doc, ("layers", j, "inputs"), where)
    for earlier in doc.removals:  # a reader of an earlier removal is gone: its readers inherit
        if name in earlier.readers:
            earlier.readers = [r for r in earlier.readers if r != name] + readers
    doc.removals.append(Removal(name, where, readers))
    del layers[i]
    for table in (doc.values, doc.keys):
        moved = {k: v for k, v in table.items() if k[:1] == ("layers",) and len(k) > 1}
        for k in moved:
            del table[k]
        for k, v in moved.items():
            if isinstance(k[1], int) and k[1] != i:
                table[("layers", k[1] - (k[1] > i), *k[2:])] = v


def _name(layer: Any) -> str | None:
    name = layer.get("name") if isinstance(layer, dict) else None
    return name if isinstance(name, str) else None


def _locate(doc: Document, loc: Loc, where: str) -> None:
    """Everything at or inside `loc` was written by the override `where`."""
    for table in (doc.values, doc.keys):
        for old in [k for k in table if k[: len(loc)] == loc]:
            del table[old]
        table[loc] = where


def _take(node: Any, steps: list[str], i: int) -> tuple[str, int]:
    """The step at `i`, and how many of KEY's parts it takes: in a list of layers, the
    longest run of parts that is a layer's name, as a dotted name (`classifier.1`) is one."""
    if isinstance(node, list):
        names = {item.get("name") for item in node if isinstance(item, dict)}
        for width in range(len(steps) - i, 1, -1):
            if ".".join(steps[i : i + width]) in names:
                return ".".join(steps[i : i + width]), width
    return steps[i], 1


def _step(node: Any, step: str, following: str, loc: Loc, shown: str) -> tuple[Any, str | int]:
    index = _final_index(node, step, loc)
    if isinstance(node, dict) and index not in node:
        node[index] = {}
    child = node[index]
    if not isinstance(child, dict | list):
        raise _Bad(f"'{shown}' is a value, not a section; cannot set '{following}' in it")
    return child, index


def _final_index(node: Any, step: str, loc: Loc) -> str | int:
    if isinstance(node, dict):
        return step
    if step.isdigit():
        if int(step) >= len(node):
            raise _Bad(f"{_show(loc)} has {len(node)} items; there is no index {step}")
        return int(step)
    names = [item.get("name") if isinstance(item, dict) else None for item in node]
    if step in names:
        return names.index(step)
    known = [str(n) for n in names if n is not None]
    raise _Bad(f"no layer named '{step}' in {_show(loc)}{did_you_mean(step, known)}")


def _show(loc: Loc) -> str:
    return ".".join(map(str, loc)) or "the spec"
