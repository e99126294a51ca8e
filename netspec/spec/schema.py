"""The JSON Schema of the spec language (`netspec schema`), generated from the pydantic models.

Two things are added to what pydantic writes. The language as written has blocks and block
uses, which expansion removes before the `Spec` model sees them, so the schema is generated
from a `Spec` whose layers may be uses, with a `blocks` section whose layers are the layer
models with every value but `name`, `type` and `inputs` allowed to be a `$param`.

And each union tagged by `type` selects its member with standard keywords, `if` the `type`
is a member's `const` `then` that member's schema, where pydantic writes `oneOf` with an
OpenAPI `discriminator` that JSON Schema validators ignore: against `oneOf`, a conv layer with
a misspelt key fails every member and a validator reports thirty errors, the conv's one among
them; against `if`/`then` it reports the conv's alone. Editors' YAML language servers read
the same schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, Discriminator, Field, Tag, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from netspec.spec.blocks import PARAM, Block, Use, entry_kind
from netspec.spec.layers import LAYER_MODELS, AnyLayer, Layer, Name
from netspec.spec.model import Spec
from netspec.spec.settings import Strict

DIALECT = "https://json-schema.org/draft/2020-12/schema"
FIXED = ("name", "type", "inputs")  # what a block's layer cannot take from a parameter
Param = Annotated[str, Field(pattern=PARAM.pattern, description="a parameter of the block")]


def _in_block(model: type[Layer]) -> type[BaseModel]:
    """`model` as a block's layer: a value may be `$param` wherever it may differ per use."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        typed: Any = info.annotation
        if info.metadata:  # constraints (≥ 1) and validators stay with the value they check
            typed = Annotated[(typed, *info.metadata)]
        annotation = typed if name in FIXED else Union[typed, Param]  # noqa: UP007
        if info.is_required():
            fields[name] = (annotation, Field(description=info.description))
        else:
            default = info.get_default(call_default_factory=True)
            fields[name] = (annotation, Field(default, description=info.description))
    return create_model(f"{model.__name__}InBlock", __base__=Strict, **fields)


def _entries(layer: Any) -> Any:
    """A layers list: each entry a block use if it says `use:`, else a layer."""
    entry = Annotated[
        Annotated[Use, Tag("block use")] | Annotated[layer, Tag("layer")],
        Discriminator(entry_kind),
    ]
    return Annotated[list.__class_getitem__(entry), Field(min_length=1)]


_IN_BLOCK: Any = Union.__getitem__(tuple(_in_block(m) for m in LAYER_MODELS))
LayerInBlock: Any = Annotated[_IN_BLOCK, Field(discriminator="type")]
BlockAsWritten: Any = create_model(
    "Block",
    __base__=Block,
    layers=(_entries(LayerInBlock), Field(description=Block.model_fields["layers"].description)),
)
_WRITTEN: dict[str, Any] = {
    "blocks": (
        dict.__class_getitem__((Name, BlockAsWritten)),
        Field(
            default_factory=dict,
            description="named groups of layers with params, used in layers by "
            "{name: …, use: BLOCK, with: {…}, repeat: n}",
        ),
    ),
    "layers": (_entries(AnyLayer), ...),
}
SpecAsWritten = create_model("Spec", __base__=Spec, **_WRITTEN)


class _Generator(GenerateJsonSchema):
    """pydantic's generator, with each tagged union written as `if`/`then` (see above)."""

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        choices = {str(tag): self.generate_inner(inner) for tag, inner in _choices(schema)}
        key = schema["discriminator"]
        if key is entry_kind or getattr(key, "__wrapped__", None) is entry_kind:
            return {
                "if": {"required": ["use"]},
                "then": choices["block use"],
                "else": choices["layer"],
            }
        if not isinstance(key, str):
            return super().tagged_union_schema(schema)
        return {
            "type": "object",
            "required": [key],
            "properties": {key: {"enum": list(choices)}},
            "allOf": [
                {"if": {"properties": {key: {"const": tag}}, "required": [key]}, "then": inner}
                for tag, inner in choices.items()
            ],
        }


def _choices(schema: core_schema.TaggedUnionSchema) -> list[tuple[Any, CoreSchema]]:
    return list(schema["choices"].items())


def spec_schema() -> dict[str, Any]:
    """The schema `netspec schema` prints."""
    schema = SpecAsWritten.model_json_schema(schema_generator=_Generator)
    return {"$schema": DIALECT, **schema, "title": "netspec spec"}
