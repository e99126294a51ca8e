"""The layer types of the spec language: one pydantic model each, registered by `type`.

Adding a layer type means a model here, a shape rule in `netspec.ir.shapes`, and one entry per
back end. Field names follow the paper and torch where they agree (`filters`, `kernel`,
`stride`, `padding`, `units`, LRN's `size`, `alpha`, `beta`, `k`, dropout's `p`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from netspec.spec.settings import Strict

INPUT = "input"  # the name by which layers read the spec's input; no layer may take it
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
PosInt = Annotated[int, Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0)]


def _pair(minimum: int) -> Any:
    """An int or `[height, width]`, stored as a (height, width) tuple."""

    def check(value: Any) -> tuple[int, int]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"must be an integer or [height, width], got {value!r}")
        if min(value) < minimum:
            raise ValueError(
                f"must be ≥ {minimum}, got {value[0] if value[0] == value[1] else list(value)}"
            )
        return (value[0], value[1])

    schema = {
        "anyOf": [
            {"type": "integer", "minimum": minimum},
            {
                "type": "array",
                "items": {"type": "integer", "minimum": minimum},
                "minItems": 2,
                "maxItems": 2,
            },
        ]
    }
    return Annotated[tuple[int, int], BeforeValidator(check), WithJsonSchema(schema)]


Window = _pair(1)
Padding = _pair(0)


class Init(Strict):
    """How a weight layer's parameters start. The paper: N(0, 0.01²), biases 0 or 1."""

    weight: Literal["torch", "normal", "kaiming", "xavier"] = Field(
        "torch",
        description="torch: the framework's default; normal: N(mean, std²); "
        "kaiming: He normal for ReLU; xavier: Glorot uniform",
    )
    std: PosFloat = 0.01
    mean: float = 0.0
    bias: float | None = Field(None, description="a constant for every bias; null: torch default")


class Layer(Strict):
    name: Name
    inputs: list[Name] | None = Field(
        None, description="layers whose outputs this one takes; default: the previous layer"
    )
    has_weights: ClassVar[bool] = False
    joins: ClassVar[bool] = False  # takes two or more inputs


class WeightLayer(Layer):
    has_weights: ClassVar[bool] = True
    connect: Literal["all", "group"] = Field(
        "all",
        description="group: each device group's part sees only its own group's channels; "
        "all: it sees every group's channels",
    )
    bias: bool = True
    init: Init | None = Field(None, description="overrides the spec's `init` for this layer")


class Conv(WeightLayer):
    type: Literal["conv"]
    filters: PosInt
    kernel: Window
    stride: Window = (1, 1)
    padding: Padding = (0, 0)


class Linear(WeightLayer):
    type: Literal["linear"]
    units: PosInt | Literal["classes"]
    in_features: PosInt | None = Field(
        None, description="optional check: the flattened size this layer expects"
    )


class ReLU(Layer):
    type: Literal["relu"]


class Tanh(Layer):
    type: Literal["tanh"]


class LRN(Layer):
    type: Literal["lrn"]
    size: PosInt = Field(5, description="n: channels in the window")
    alpha: PosFloat = 1e-4
    beta: PosFloat = 0.75
    k: PosFloat = 2.0
    convention: Literal["paper", "caffe"] = Field(
        "paper",
        description="paper: k + alpha*sum over floor(n/2) channels each side; "
        "caffe: k + (alpha/n)*sum over n channels, as cuda-convnet, Caffe and torch",
    )


class Pool(Layer):
    kernel: Window
    stride: Window | None = Field(None, description="default: the kernel (no overlap)")
    padding: Padding = (0, 0)
    ceil: bool = Field(False, description="round the output size up, as Caffe does")


class MaxPool(Pool):
    type: Literal["maxpool"]


class AvgPool(Pool):
    type: Literal["avgpool"]


class AdaptiveAvgPool(Layer):
    type: Literal["adaptive_avgpool"]
    output_size: Window


class Dropout(Layer):
    type: Literal["dropout"]
    p: Annotated[float, Field(ge=0, lt=1)] = 0.5


class Flatten(Layer):
    type: Literal["flatten"]


class Concat(Layer):
    type: Literal["concat"]
    joins: ClassVar[bool] = True


class Add(Layer):
    type: Literal["add"]
    joins: ClassVar[bool] = True


class BatchNorm(Layer):
    type: Literal["batchnorm"]
    eps: PosFloat = 1e-5
    momentum: Annotated[float, Field(ge=0, le=1)] = 0.1


LAYER_MODELS: tuple[type[Layer], ...] = (
    Conv,
    Linear,
    ReLU,
    Tanh,
    LRN,
    MaxPool,
    AvgPool,
    AdaptiveAvgPool,
    Dropout,
    Flatten,
    Concat,
    Add,
    BatchNorm,
)
LAYER_TYPES: dict[str, type[Layer]] = {
    m.model_fields["type"].annotation.__args__[0]: m for m in LAYER_MODELS
}

AnyLayer = Annotated[
    Conv
    | Linear
    | ReLU
    | Tanh
    | LRN
    | MaxPool
    | AvgPool
    | AdaptiveAvgPool
    | Dropout
    | Flatten
    | Concat
    | Add
    | BatchNorm,
    Field(discriminator="type"),
]
