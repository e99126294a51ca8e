"""`--set key=value`: change a spec from the command line, validated like the file itself.

Keys are dotted paths into the document; a layer is addressed by its name
(`layers.conv1.filters=64`) or its index (`layers.0.filters=64`). Values are YAML, so
`--set layers.conv1.kernel=[5,5]` and `--set train.schedule={type: cosine}` work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netspec.errors import Problem, SpecError, did_you_mean
from netspec.spec.document import MAX_DEPTH, Document, Loc, parse_yaml

SHOWN = 80  # characters of an override repeated in a message


def apply_overrides(doc: Document, overrides: Sequence[str]) -> None:
    if not isinstance(doc.data, dict):
        return  # an empty file, or a list: validate() says so, which is the real mistake
    problems: list[Problem] = []
    for text in overrides:
        where = f"--set {text if len(text) <= SHOWN else text[: SHOWN - 1] + '…'}"
        try:
            _apply(doc, text, where)
        except SpecError as exc:
            problems.extend(exc.problems)
        except _Bad as exc:
            problems.append(Problem(where, str(exc)))
    if problems:
        raise SpecError(problems)


class _Bad(Exception):
    pass


def _apply(doc: Document, text: str, where: str) -> None:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise _Bad("expected KEY=VALUE, e.g. --set layers.conv1.filters=64")
    steps = key.strip().split(".")
    if len(steps) > MAX_DEPTH:
        raise _Bad(f"KEY has {len(steps)} parts; a spec nests at most {MAX_DEPTH} deep")
    node: Any = doc.data
    loc: Loc = ()
    for i, step in enumerate(steps[:-1]):
        node, index = _step(node, step, steps[i + 1], loc, ".".join(steps[: i + 1]))
        loc = (*loc, index)
        for table in (doc.values, doc.keys):
            table.setdefault(loc, where)  # a section the override adds is located at it
    last = _final_index(node, steps[-1], loc)
    loc = (*loc, last)
    parsed = parse_yaml(value, where, base=loc, where=where)
    for table in (doc.values, doc.keys):
        for old in [k for k in table if k[: len(loc)] == loc]:
            del table[old]
    doc.values.update(parsed.values)
    doc.keys.update(parsed.keys)
    doc.keys[loc] = where
    doc.values[loc] = where
    node[last] = parsed.data


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
