"""The spec document: the top-level pydantic model, and reading, overriding and validating it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, Field, PrivateAttr, ValidationError

from netspec.errors import Problem, SpecError
from netspec.spec.blocks import expand_blocks
from netspec.spec.document import BlockUse, Document, Loc, Removal, read_yaml
from netspec.spec.layers import AnyLayer, Init, Name, PosInt
from netspec.spec.messages import file_order, located_problems
from netspec.spec.settings import DataConfig, Strict, TrainConfig


def _distinct(names: list[str]) -> list[str]:
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
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

    def note(self, loc: Loc, key: bool = False) -> str:
        """` (in block basic at …, used by layer1 at …)` for a value a block use wrote, else
        "": what a message about `loc` adds after its text."""
        return self._doc.note(loc, key) if self._doc else ""

    def uses_of(self, index: int) -> tuple[BlockUse, ...]:
        """The block uses layer `index` came from, outermost first; () for a plain layer."""
        origin = self._doc.origins.get(index) if self._doc else None
        return origin.uses if origin else ()

    @property
    def removals(self) -> list[Removal]:
        """The layers `--set layers.NAME=null` took out, in the order they were removed."""
        return self._doc.removals if self._doc else []

    def expanded_yaml(self) -> str:
        """The spec as written, with its block uses expanded into plain layers (YAML)."""
        from netspec.spec.blocks import expanded_yaml

        assert self._doc is not None, "a spec not read from a document has no text"
        return expanded_yaml(self._doc)

    def layer_context(self, index: int) -> str:
        """How a message names layer `index`: `layers[3] (fc)` by its place in the file, or
        `layer1.2.conv1` for a layer a block use made."""
        origin = self._doc.origins.get(index) if self._doc else None
        return origin.shown if origin else f"layers[{index}] ({self.layers[index].name})"


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
    problems: list[Problem] = []
    try:
        expand_blocks(doc)
    except SpecError as exc:
        problems = exc.problems  # the layers written without blocks are still checked
    try:
        spec = validate_as(doc, Spec)
    except SpecError as exc:
        # a token the block language found wrong (`$f` outside a block) is said wrong once,
        # and a list of layers that are all uses not expanded is not empty as written
        said = {p.where for p in problems}
        if problems and data.get("layers") == []:
            said.add(doc.where(("layers",)))
        problems += [p for p in exc.problems if p.where not in said]
    if problems:
        raise SpecError(sorted(problems, key=lambda p: file_order(p.where)))
    spec._doc = doc
    return spec


M = TypeVar("M", bound=BaseModel)


def validate_as(doc: Document, model: type[M]) -> M:
    """`doc` as a `model` (a spec, a study): pydantic's complaints become located lines."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise SpecError(located_problems(doc, exc, model)) from None
