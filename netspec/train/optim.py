"""Optimizers: the paper's SGD rule, torch's SGD, and the weight/bias parameter groups.

The paper keeps the learning rate inside the velocity (docs/paper.md, "Training"):

    v <- m*v - wd*lr*w - lr*grad;   w <- w + v

torch.optim.SGD keeps it outside (buf <- m*buf + grad + wd*w;  w <- w - lr*buf). At a
constant lr the two are the same (v = -lr*buf); after a drop of lr they differ, because the
paper's velocity still carries steps taken at the old rate while torch rescales them at once.
Both are offered so that a run can say which one it reproduces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

import torch

from netspec.spec.settings import TrainConfig


class PaperSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay, the learning rate inside the velocity.

    Per parameter group: `lr`, `momentum`, `weight_decay`. The velocity lives in
    `state[p]["momentum_buffer"]` (starts at zero), so `state_dict()` / `load_state_dict()`
    save and restore it like torch's SGD does.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"PaperSGD: lr={lr}, momentum={momentum}, weight_decay={weight_decay} "
                "must all be >= 0"
            )
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("PaperSGD does not support sparse gradients")
            grads = [p.grad for p in params]
            velocities = [self._velocity(p) for p in params]
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            # v <- m*v - wd*lr*w - lr*g ; w <- w + v
            torch._foreach_mul_(velocities, momentum)
            if decay != 0:
                torch._foreach_add_(velocities, params, alpha=-decay * lr)
            torch._foreach_add_(velocities, grads, alpha=-lr)
            torch._foreach_add_(params, velocities)
        return loss

    def _velocity(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["momentum_buffer"]


def is_bias(name: str) -> bool:
    """Whether a parameter gets the bias multipliers: its name ends in `bias`.

    The paper has no batchnorm, so this simplest honest rule is the whole rule: any other
    parameter, 1-D or not (a batchnorm scale, say), is a weight, with full weight decay.
    """
    return name.rsplit(".", 1)[-1] == "bias"


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Two groups, `weights` and `biases`, each remembering its multipliers.

    `lr_mult` lets a schedule set `group["lr"] = base_lr * group["lr_mult"]` (see
    netspec.train.schedule.apply_lr). Frozen parameters are left out, and so is an empty group.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {
            "name": "weights",
            "params": [p for n, p in named if not is_bias(n)],
            "lr_mult": 1.0,
            "decay_mult": 1.0,
        },
        {
            "name": "biases",
            "params": [p for n, p in named if is_bias(n)],
            "lr_mult": cfg.bias_lr_mult,
            "decay_mult": cfg.bias_decay_mult,
        },
    ]
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
        g["weight_decay"] = cfg.weight_decay * g["decay_mult"]
    return [g for g in groups if g["params"]]


OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], TrainConfig], torch.optim.Optimizer]] = {
    "sgd_paper": lambda groups, cfg: PaperSGD(groups, lr=cfg.lr, momentum=cfg.momentum),
    "sgd_torch": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum),
}


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names, over the weight and bias groups of `model`."""
    return OPTIMIZERS[cfg.optimizer](param_groups(model, cfg), cfg)
