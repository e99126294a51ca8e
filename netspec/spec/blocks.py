"""Blocks: named groups of layers with parameters, used by name, repeated, expanded early.

A spec may define `blocks:` (each with `params` and `layers`) and use one in its `layers:`
with `{name: layer1, use: basic, with: {filters: 64}, repeat: 2}`. Expansion happens here, on
the document, before pydantic sees it: the validated `Spec`, the graph and every back end see
only plain layers, named `layer1.0.conv1` as torch names the submodules of nested modules, so
torchvision's weight files load by name.

Every expanded value keeps where it was written and the expansions it went through, so a
mistake is reported at the token the user wrote, then `in block basic at …`, then
`used by layer1 at …`, as Clang reports a macro expansion. What can be checked without
expanding (unknown blocks, parameters, references between a block's layers, cycles of blocks,
names that clash) is checked once, where it was written; what depends on the values (a bad
size, a shape) is found per use, in the expanded layers.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
)

from netspec.errors import SpecError
from netspec.spec.block_checks import Checks
from netspec.spec.document import BlockUse, Document, dump_yaml
from netspec.spec.expansion import MAX_LAYERS, PARAM, Definition, Expander, flatten
from netspec.spec.layers import LayerPath, Name, PlainLayerName
from netspec.spec.messages import located_problems
from netspec.spec.settings import Strict

__all__ = [
    "MAX_LAYERS",
    "PARAM",
    "Block",
    "Copy",
    "Use",
    "entry_kind",
    "expand_blocks",
    "expanded_yaml",
]


def entry_kind(value: Any) -> str:
    """What an entry of a `layers:` list is: a block use (it says `use:`) or a plain layer."""
    return "block use" if isinstance(value, dict) and "use" in value else "layer"


def _distinct(names: list[str]) -> list[str]:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"names each parameter once; {', '.join(twice)} appears twice")
    return names


class Copy(Strict):
    """One copy in `repeat: [...]`: the block it uses and the values it sets over the use's."""

    what: ClassVar[str] = "a copy in repeat"
    use: Name | None = Field(None, description="the block this copy uses; default: the use's")
    with_: dict[Name, Any] = Field(
        default_factory=dict,
        alias="with",
        description="parameters of this copy, over the use's `with`",
    )


class Use(Strict):
    """A layers entry that stands for a block's layers, named `NAME.LAYER` (`NAME.i.LAYER`
    when repeated)."""

    what: ClassVar[str] = "a block use"
    name: PlainLayerName
    use: Name = Field(description="the block, one of the spec's `blocks`")
    with_: dict[Name, Any] = Field(
        default_factory=dict,
        alias="with",
        description="a value for each of the block's params, substituted for `$param`",
    )
    repeat: (
        Annotated[int, Field(ge=1, le=MAX_LAYERS)]
        | Annotated[list[Copy], Field(min_length=1, max_length=MAX_LAYERS)]
        | None
    ) = Field(
        None,
        description="n: n copies in a chain, named NAME.0 … NAME.{n-1}; a list: one copy "
        "per item, each of which may set its own `use` and `with` (ResNet's first block of "
        "a stage: [{use: down}, {}])",
    )
    inputs: Annotated[list[LayerPath], Field(min_length=1, max_length=1)] | None = Field(
        None, description="the one layer the block reads as `in`; default: the previous layer"
    )


BlockEntry = Annotated[
    Annotated[Use, Tag("block use")] | Annotated[dict[str, Any], Tag("layer")],
    Discriminator(entry_kind),
]
# a plain layer of the spec's own list is validated as a layer after expansion, not here
TopEntry = Annotated[
    Annotated[Use, Tag("block use")] | Annotated[Any, Tag("layer")], Discriminator(entry_kind)
]


class Block(Strict):
    """Layers with parameters: `$param` in a value is replaced by the use's value, whole."""

    what: ClassVar[str] = "a block"
    params: Annotated[list[Name], AfterValidator(_distinct)] = Field(
        default_factory=list, description="what each use gives in `with`; all are required"
    )
    layers: Annotated[list[BlockEntry], Field(min_length=1)] = Field(
        description="in order, as the spec's own; they read `in` (the block's input) or each "
        "other by name; the last is the block's output"
    )


class Written(BaseModel):
    """The parts of a spec the block language adds, checked before anything is expanded."""

    model_config = ConfigDict(extra="ignore", strict=True)

    blocks: dict[str, Block] = Field(default_factory=dict)
    layers: list[TopEntry] = Field(default_factory=list)


def expand_blocks(doc: Document) -> None:
    """Replace every block use in `doc` by the layers it stands for, and drop `blocks:`.

    Mistakes are raised together as one SpecError, with the document left holding its plain
    layers only, so that the rest of the spec is still validated and reported with them."""
    data = doc.data
    if not isinstance(data, dict) or not _has_blocks(data):
        return
    written = {"blocks": data.get("blocks"), "layers": data.get("layers")}
    if not isinstance(written["layers"], list):
        written["layers"] = []
    try:
        Written.model_validate(written)
    except ValidationError as exc:
        problems = located_problems(doc, exc, Written)  # located before the layers move
        flatten(doc, Expander(doc, {}), plain_only=True)
        raise SpecError(problems) from None
    if not isinstance(data.get("layers"), list):
        data.pop("blocks", None)
        return
    blocks = {
        name: Definition.of(doc, name, block) for name, block in (data.get("blocks") or {}).items()
    }
    problems = Checks(doc, blocks).run()
    expander = Expander(doc, blocks)
    if problems:
        flatten(doc, expander, plain_only=True)
        raise SpecError(problems)
    flatten(doc, expander, plain_only=False)


def _has_blocks(data: dict[str, Any]) -> bool:
    layers = data.get("layers")
    uses = isinstance(layers, list) and any(entry_kind(e) == "block use" for e in layers)
    return "blocks" in data or uses


def expanded_yaml(doc: Document) -> str:
    """The spec as plain layers (what `netspec build --expand` prints): YAML that loads back
    to the same network, a layer a line, each block use's layers under a comment naming it."""
    data = dict(doc.data)
    layers = data.pop("layers", [])
    lines = [dump_yaml(data, flow=None).rstrip("\n"), "layers:"]
    shown: tuple[BlockUse, ...] = ()
    for j, layer in enumerate(layers):
        origin = doc.origins.get(j)
        uses = origin.uses if origin else ()
        if uses and uses != shown:
            chain = " › ".join(f"{u.name}: block {u.block}" for u in uses)
            lines.append(f"  # {chain} (used at {uses[-1].where})")
        shown = uses
        lines.append(f"  - {dump_yaml(layer, flow=True).strip()}")
    return "\n".join(lines) + "\n"
