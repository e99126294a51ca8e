"""The layer types of the spec language: one pydantic model each, registered by `type`.

Adding a layer type means a model here, a shape rule in `netspec.ir.shapes`, and one entry per
back end. Field names follow the paper and torch where they agree (`filters`, `kernel`,
`stride`, `padding`, `units`, LRN's `size`, `alpha`, `beta`, `k`, dropout's `p`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from netspec.spec.settings import MAX_SIZE, Size, Strict

INPUT = "input"  # the name by which layers read the spec's input; no layer may take it
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
# A block use names its layers `use.layer` and its repeats `use.0.layer`, as torch names the
# submodules of nested modules (torchvision's `layer1.0.conv1`); a flat spec (`build --expand`)
# writes those names out, so a layer's name may be such a path of plain names and numbers.
LAYER_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.([0-9]+|[A-Za-z][A-Za-z0-9_]*))*$"
LayerPath = Annotated[str, Field(pattern=LAYER_NAME_PATTERN)]
PosInt = Size
PosFloat = Annotated[float, Field(gt=0)]

# Each layer becomes the attribute of its name on a torch module, so no layer may take the
# name of an attribute every torch module instance has (`training` is set per instance and
# so is missing from dir() of the class). tests/spec/test_names.py checks this list against
# a real compiled module.
# fmt: off
TORCH_MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward",
    "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu",
    "load_state_dict", "modules", "mtia", "named_buffers", "named_children", "named_modules",
    "named_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
})
# fmt: on


def _not_reserved(name: str) -> str:
    # each part of a dotted name is an attribute of the module that holds it
    for part in name.split("."):
        if part in TORCH_MODULE_ATTRIBUTES:
            raise ValueError(
                f"'{part}' is the name of an attribute of every torch module; rename the layer"
            )
    return name


LayerName = Annotated[LayerPath, AfterValidator(_not_reserved)]
PlainLayerName = Annotated[Name, AfterValidator(_not_reserved)]


def _pair(minimum: int) -> Callable[[Any], tuple[int, int]]:
    """Validator of an int or `[height, width]`, stored as a (height, width) tuple."""

    def check(value: Any) -> tuple[int, int]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"must be an integer or [height, width], got {_short(value)}")
        shown = value[0] if value[0] == value[1] else list(value)
        if min(value) < minimum:
            raise ValueError(f"must be ≥ {minimum}, got {shown}")
        if max(value) > MAX_SIZE:
            raise ValueError(f"must be ≤ {MAX_SIZE} (2³¹ − 1), got {shown}")
        return (value[0], value[1])

    return check


def _pair_schema(minimum: int) -> dict[str, Any]:
    bounds = {"type": "integer", "minimum": minimum, "maximum": MAX_SIZE}
    return {"anyOf": [bounds, {"type": "array", "items": bounds, "minItems": 2, "maxItems": 2}]}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


Window = Annotated[tuple[int, int], BeforeValidator(_pair(1)), WithJsonSchema(_pair_schema(1))]
Padding = Annotated[tuple[int, int], BeforeValidator(_pair(0)), WithJsonSchema(_pair_schema(0))]


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
    if TYPE_CHECKING:
        type: str  # each layer model declares its own `type` tag, a Literal

    name: LayerName
    inputs: list[LayerPath] | None = Field(
        None, description="layers whose outputs this one takes; default: the previous layer"
    )
    weights_key: str | None = Field(
        None,
        description="what this layer's tensors are called in a file given to --init-from "
        "(e.g. features.0 in torchvision's AlexNet); default: the layer's name",
    )
    # What is true of a layer type lives on its class; back ends and checks read it here.
    has_weights: ClassVar[bool] = False
    joins: ClassVar[bool] = False  # takes two or more inputs
    keeps_width: ClassVar[bool] = False  # passes a vector through at its width
    folds: ClassVar[bool] = False  # `draw --compact` folds it into the layer before it
    kind: ClassVar[str] = "reshape · join"  # how the diagram colours it


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
    kind: ClassVar[str] = "convolution"
    filters: PosInt
    kernel: Window
    stride: Window = (1, 1)
    padding: Padding = (0, 0)


class Linear(WeightLayer):
    type: Literal["linear"]
    kind: ClassVar[str] = "fully connected"
    units: PosInt | Literal["classes"]
    in_features: PosInt | None = Field(
        None, description="optional check: the flattened size this layer expects"
    )


class Activation(Layer):
    """An elementwise function: same shape out, nothing to learn."""

    keeps_width: ClassVar[bool] = True
    folds: ClassVar[bool] = True
    kind: ClassVar[str] = "activation"


class ReLU(Activation):
    type: Literal["relu"]


class Tanh(Activation):
    type: Literal["tanh"]


class GELU(Activation):
    """x·Φ(x), the exact (erf) form, as nn.GELU() computes by default."""

    type: Literal["gelu"]


class Sigmoid(Activation):
    type: Literal["sigmoid"]


class LRN(Layer):
    type: Literal["lrn"]
    folds: ClassVar[bool] = True
    kind: ClassVar[str] = "normalisation"
    size: PosInt = Field(5, description="n: channels in the window")
    alpha: Annotated[float, Field(ge=0)] = Field(
        1e-4,
        description="0 leaves the constant factor k^-beta: a control that keeps LRN's "
        "rescaling and takes away the competition between maps",
    )
    beta: PosFloat = 0.75
    k: PosFloat = 2.0
    convention: Literal["paper", "torch", "caffe"] = Field(
        "paper",
        description="paper: k + alpha*sum over floor(n/2) channels each side of c; "
        "torch: k + (alpha/n)*sum over channels c-floor(n/2)..c+ceil(n/2)-1, as "
        "nn.LocalResponseNorm and cuda-convnet; caffe: k + (alpha/n)*sum over channels "
        "c-ceil(n/2)+1..c+floor(n/2), as Caffe, cuDNN and ONNX (the two differ for even n)",
    )

    def window(self) -> tuple[int, int]:
        """How many channels before and after c the sum reaches (clipped at the ends)."""
        return LRN_WINDOWS[self.convention](self.size)


LRN_WINDOWS: dict[str, Callable[[int], tuple[int, int]]] = {
    "paper": lambda n: (n // 2, n // 2),
    "torch": lambda n: (n // 2, (n - 1) // 2),
    "caffe": lambda n: ((n - 1) // 2, n // 2),
}


class Pool(Layer):
    folds: ClassVar[bool] = True
    kind: ClassVar[str] = "pooling"
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
    folds: ClassVar[bool] = True
    kind: ClassVar[str] = "pooling"
    output_size: Window


class Dropout(Layer):
    type: Literal["dropout"]
    keeps_width: ClassVar[bool] = True
    folds: ClassVar[bool] = True
    kind: ClassVar[str] = "dropout"
    p: Annotated[float, Field(ge=0, lt=1)] = 0.5


class Flatten(Layer):
    type: Literal["flatten"]
    folds: ClassVar[bool] = True


class Concat(Layer):
    type: Literal["concat"]
    joins: ClassVar[bool] = True


class Add(Layer):
    type: Literal["add"]
    joins: ClassVar[bool] = True


class BatchNorm(Layer):
    type: Literal["batchnorm"]
    keeps_width: ClassVar[bool] = True
    folds: ClassVar[bool] = True
    kind: ClassVar[str] = "normalisation"
    eps: PosFloat = 1e-5
    momentum: Annotated[float, Field(ge=0, le=1)] = 0.1


LAYER_MODELS: tuple[type[Layer], ...] = (
    Conv,
    Linear,
    ReLU,
    Tanh,
    GELU,
    Sigmoid,
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
    get_args(m.model_fields["type"].annotation)[0]: m for m in LAYER_MODELS
}

AnyLayer = Annotated[
    Conv
    | Linear
    | ReLU
    | Tanh
    | GELU
    | Sigmoid
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
