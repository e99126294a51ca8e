"""Learning-rate schedules: the `train.schedule` section of a spec, one class per `type`.

Step and cosine are torch's schedulers; the paper's plateau rule is written here, because
torch's ReduceLROnPlateau cannot stop after a number of drops.

Epochs are numbered from 0. Protocol for the training loop:

    schedule = make_schedule(cfg)
    apply_lr(optimizer, schedule.lr)              # the rate for epoch 0 is cfg.lr
    for epoch in range(schedule.epoch, cfg.epochs):
        train one epoch; val_error = evaluate()
        apply_lr(optimizer, schedule.step(val_error))   # the rate for epoch + 1

`schedule.epoch` counts completed epochs (so it is also the next epoch's number), and the
state is plain Python numbers, so a checkpoint loaded with `weights_only=True` can hold it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.optim.lr_scheduler import LRScheduler

from netspec.spec.settings import (
    ConstantSchedule,
    CosineSchedule,
    PlateauSchedule,
    StepSchedule,
    TrainConfig,
)


class LRSchedule:
    """Base: holds the rate for the next epoch; subclasses say how it moves.

    Each subclass is built only by `make_schedule`, from a `cfg` whose `schedule` is the
    settings model it is registered for in SCHEDULES.
    """

    _state_keys: ClassVar[tuple[str, ...]] = ("epoch", "lr")

    def __init__(self, cfg: TrainConfig) -> None:
        self.base_lr = cfg.lr
        self.epoch = 0
        self.lr = cfg.lr

    def step(self, val_error: float) -> float:
        """Record that an epoch ended with `val_error`; return the rate for the next one."""
        self.epoch += 1
        self.lr = self._next_lr(val_error)
        return self.lr

    def _next_lr(self, val_error: float) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, int | float]:
        return {k: getattr(self, k) for k in self._state_keys}

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        for k in self._state_keys:
            setattr(self, k, state[k])


class Constant(LRSchedule):
    def _next_lr(self, val_error: float) -> float:
        return self.base_lr


class TorchSchedule(LRSchedule):
    """A `torch.optim.lr_scheduler` stepped once an epoch, on a stand-in optimiser.

    The stand-in has one parameter group at the base rate; `apply_lr` then copies the rate
    onto the real optimiser's groups with their multipliers. The rate depends on the epoch
    alone, so a loaded state is reached by replaying the epochs.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg
        self.scheduler = self._start()

    def _make(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        raise NotImplementedError

    def _start(self) -> LRScheduler:
        optimizer = torch.optim.SGD([torch.zeros(0, requires_grad=True)], lr=self.cfg.lr)
        scheduler = self._make(optimizer)
        optimizer.step()  # updates nothing; torch warns of a scheduler stepped before it
        return scheduler

    def _advance(self, epoch: int) -> None:
        """Move the scheduler to `epoch`, the next one it gives a rate for."""
        self.scheduler.step()

    def _next_lr(self, val_error: float) -> float:
        self._advance(self.epoch)
        return float(self.scheduler.get_last_lr()[0])

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        super().load_state_dict(state)
        self.scheduler = self._start()
        for epoch in range(1, self.epoch + 1):
            self._advance(epoch)


class Step(TorchSchedule):
    """lr(e) = lr * factor ** (e // every): torch's StepLR, falling at every, 2*every, ..."""

    def _make(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        rule = self.cfg.schedule
        assert isinstance(rule, StepSchedule)
        return torch.optim.lr_scheduler.StepLR(optimizer, rule.every, rule.factor)


class Cosine(TorchSchedule):
    """lr(e) = min_lr + (lr - min_lr) * (1 + cos(pi * e / epochs)) / 2, for e in 0..epochs.

    torch's CosineAnnealingLR with T_max = epochs: the last trained epoch (epochs - 1) is one
    step short of min_lr. Past `epochs`, where torch's curve would rise again, the rate stays
    at min_lr.

    A resumed run whose `epochs` (the horizon) differs from the one its state was built for
    starts the rest of the decay afresh: from the rate of the last epoch it trained, down the
    same half cosine to min_lr over the new remaining epochs. The rates stay smooth and
    falling, and a finished run given more epochs trains on instead of taking a step at
    min_lr. In general the curve is a segment: from rate `start_lr` at epoch `start` to
    min_lr at `horizon`, which a run that never changes its horizon keeps at (lr, 0, epochs).
    """

    _state_keys = (*LRSchedule._state_keys, "start", "start_lr", "horizon")

    def __init__(self, cfg: TrainConfig) -> None:
        self.start, self.start_lr, self.horizon = 0, cfg.lr, cfg.epochs
        super().__init__(cfg)

    def _make(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        rule = self.cfg.schedule
        assert isinstance(rule, CosineSchedule)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.start_lr
        span = self.horizon - self.start
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, span, rule.min_lr)

    def _advance(self, epoch: int) -> None:
        if self.start < epoch <= self.horizon:
            self.scheduler.step()

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        # a state from before segments were kept: the run's one curve, at this horizon
        state = {"start": 0, "start_lr": self.base_lr, "horizon": self.cfg.epochs, **state}
        super().load_state_dict(state)
        epochs, done = self.cfg.epochs, self.epoch
        if self.horizon == epochs or done < 1 or done >= epochs:
            return
        last = self._rate_at(done - 1)  # the rate the last finished epoch trained at
        self.start, self.start_lr, self.horizon = done - 1, last, epochs
        self.scheduler = self._start()
        self._advance(done)
        self.lr = float(self.scheduler.get_last_lr()[0])

    def _rate_at(self, epoch: int) -> float:
        """The current segment's rate for `epoch` (at or after its start)."""
        replay = self._start()
        for _ in range(self.start + 1, min(epoch, self.horizon) + 1):
            replay.step()
        return float(replay.get_last_lr()[0])


class Plateau(LRSchedule):
    """The paper's rule: multiply the rate by `factor` when validation error stops improving.

    At the end of each epoch, with `best` the lowest error seen so far (initially +inf):

    - the epoch *improves* if `val_error < best - threshold` (absolute threshold, errors are
      fractions); then `best = val_error` and `bad_epochs = 0`; otherwise `bad_epochs += 1`
      (and `best` is kept, so a run of tiny gains still counts as a plateau);
    - if `bad_epochs > patience` and fewer than `max_drops` drops were made, the rate is
      multiplied by `factor` and `bad_epochs = 0`, so the new rate gets a fresh `patience`.

    So patience=0 drops after the first epoch without improvement, patience=1 after two in
    a row. After `max_drops` drops the rate is constant. This is torch's ReduceLROnPlateau
    with mode="min", threshold_mode="abs", cooldown=0, and a cap on the number of drops.
    """

    _state_keys = (*LRSchedule._state_keys, "best", "bad_epochs", "drops")

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        assert isinstance(cfg.schedule, PlateauSchedule)
        self.rule = cfg.schedule
        self.best = math.inf
        self.bad_epochs = 0
        self.drops = 0

    def _next_lr(self, val_error: float) -> float:
        if val_error < self.best - self.rule.threshold:
            self.best, self.bad_epochs = float(val_error), 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.rule.patience and self.drops < self.rule.max_drops:
            self.drops += 1
            self.bad_epochs = 0
        return self.base_lr * self.rule.factor**self.drops


SCHEDULES: dict[type, type[LRSchedule]] = {
    PlateauSchedule: Plateau,
    StepSchedule: Step,
    CosineSchedule: Cosine,
    ConstantSchedule: Constant,
}


def make_schedule(cfg: TrainConfig) -> LRSchedule:
    """The schedule `cfg.schedule` describes, starting at `cfg.lr` for epoch 0."""
    return SCHEDULES[type(cfg.schedule)](cfg)


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set each group's rate to `lr` times its `lr_mult` (1 where a group has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
