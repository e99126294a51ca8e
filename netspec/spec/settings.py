"""Training and data settings: the `train:` and `data:` sections of a spec.

Every convention where the paper and later ports differ is a named option here, and the
defaults are the paper's (docs/paper.md). One exception: `ten_crop` is off by default, since
it makes every validation pass ten times dearer; specs/alexnet.yaml turns it on.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_SIZE = 2**31 - 1  # any size or count: the largest int32, which cuDNN and many kernels take
Size = Annotated[int, Field(ge=1, le=MAX_SIZE)]


class Strict(BaseModel):
    """Base for every spec section: unknown keys are errors, `yes` is not an int."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PlateauSchedule(Strict):
    """The paper's rule: divide the rate by 10 when validation error stops improving."""

    type: Literal["plateau"] = "plateau"
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1
    patience: Annotated[int, Field(ge=0)] = 1
    max_drops: Annotated[int, Field(ge=0)] = 3
    threshold: Annotated[float, Field(ge=0)] = 1e-4


class StepSchedule(Strict):
    type: Literal["step"] = "step"
    every: Annotated[int, Field(ge=1)] = 30
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1


class CosineSchedule(Strict):
    type: Literal["cosine"] = "cosine"
    min_lr: Annotated[float, Field(ge=0)] = 0.0


class ConstantSchedule(Strict):
    type: Literal["constant"] = "constant"


Schedule = Annotated[
    PlateauSchedule | StepSchedule | CosineSchedule | ConstantSchedule,
    Field(discriminator="type"),
]


class TrainConfig(Strict):
    epochs: Annotated[int, Field(ge=1)] = 90
    batch_size: Size = 128
    lr: Annotated[float, Field(gt=0)] = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0005
    optimizer: Literal["sgd_paper", "sgd_torch"] = Field(
        "sgd_paper",
        description="sgd_paper: v <- m*v - wd*lr*w - lr*grad, w <- w + v (lr inside the velocity). "
        "sgd_torch: torch.optim.SGD (lr outside the velocity).",
    )
    bias_lr_mult: Annotated[float, Field(ge=0)] = 1.0
    bias_decay_mult: Annotated[float, Field(ge=0)] = 1.0
    schedule: Schedule = PlateauSchedule()
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0  # torch.manual_seed takes 64 bits
    amp: bool = Field(False, description="mixed precision (CUDA only)")
    channels_last: bool = Field(False, description="channels_last memory format (CUDA only)")
    tensorboard: bool = Field(
        False,
        description="also write metrics.jsonl's values as TensorBoard scalars in the run "
        "folder's tb/ (needs the tensorboard extra)",
    )
    tensorboard_every: Annotated[int, Field(ge=1)] = Field(
        20, description="TensorBoard: the mean training loss every this many steps"
    )


RGB = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=3, max_length=3)
]


class DataConfig(Strict):
    resize: Size = Field(256, description="shorter side after rescaling")
    crop: Size = Field(227, description="random training crop; = input size")
    mirror: bool = True
    mean: Literal["pixel", "channel", "none"] | RGB = Field(
        "pixel",
        description="subtract the training set's mean image, its per-channel mean, nothing, or "
        "these three values (pixels in [0, 1], e.g. torchvision's [0.485, 0.456, 0.406])",
    )
    std: RGB | None = Field(
        None,
        description="divide each channel by this, after the mean (pixels in [0, 1], e.g. "
        "torchvision's [0.229, 0.224, 0.225]); unset: no division, as in the paper",
    )
    pca: Literal["dataset", "imagenet", "none"] = Field(
        "dataset",
        description="PCA colour noise: eigen-decomposition of the training set's RGB, "
        "the published ImageNet values, or off",
    )
    pca_std: Annotated[float, Field(ge=0)] = 0.1
    pixel_scale: Annotated[float, Field(gt=0)] = Field(
        255.0,
        description="the network sees (pixels in [0, 1] - mean) * pixel_scale; 255 gives the "
        "paper's raw 0-255 values, the scale its LRN constants (k = 2, alpha = 1e-4) assume",
    )
    ten_crop: bool = Field(False, description="evaluate on four corners, centre and mirrors")
    workers: Annotated[int, Field(ge=0)] = 2
    stats_images: Annotated[int, Field(ge=1)] = Field(
        10000, description="at most this many training images for the mean and PCA"
    )

    @field_validator("mean", mode="before")
    @classmethod
    def _mean_kind(cls, mean: object) -> object:
        if isinstance(mean, list) and len(mean) != 3:
            raise ValueError(
                f"must be pixel, channel, none, or three values (red, green, blue in [0, 1]), "
                f"got {len(mean)} values"
            )
        return mean

    @field_validator("std")
    @classmethod
    def _std_positive(cls, std: list[float] | None) -> list[float] | None:
        if std is not None and min(std) <= 0:
            raise ValueError(f"must be positive in every channel, got {std}")
        return std

    @model_validator(mode="after")
    def _crop_fits(self) -> DataConfig:
        if self.crop > self.resize:
            raise ValueError(
                f"data.crop ({self.crop}) must not exceed data.resize ({self.resize}): "
                "crops are cut from the resized image"
            )
        return self
