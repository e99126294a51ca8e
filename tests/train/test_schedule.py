"""Learning-rate schedules: drops where the rule says, formulas, and resumable state."""

from __future__ import annotations

import io
import math
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec import load_spec
from netspec.spec import settings
from netspec.spec.settings import (
    ConstantSchedule,
    CosineSchedule,
    PlateauSchedule,
    StepSchedule,
    TrainConfig,
)
from netspec.train.schedule import SCHEDULES, LRSchedule, make_schedule


def lrs(schedule: LRSchedule, errors: list[float]) -> list[float]:
    """The rate for epoch 0, then the rate returned after each epoch's validation error."""
    return [schedule.lr] + [schedule.step(e) for e in errors]


def test_every_schedule_type_in_settings_has_a_class() -> None:
    (union, *_) = typing.get_args(settings.Schedule)
    assert set(SCHEDULES) == set(typing.get_args(union))


def test_plateau_drops_exactly_where_the_rule_says_and_at_most_max_drops() -> None:
    rule = PlateauSchedule(factor=0.1, patience=1, max_drops=2, threshold=0.01)
    s = make_schedule(TrainConfig(lr=0.01, schedule=rule))
    errors = [0.9, 0.8, 0.795, 0.792, 0.7, 0.71, 0.72, 0.9, 0.9, 0.9, 0.9]
    #  epoch:  0    1    2      3      4    5     6     7    8    9    10
    # 2, 3: gains under the threshold are not improvements: two bad epochs > patience -> drop
    # 5, 6: worse twice -> second drop; 7..10: still worse, but max_drops is reached
    expected = [0.01] * 4 + [0.001] * 3 + [0.0001] * 5
    assert lrs(s, errors) == pytest.approx(expected, rel=1e-12)
    assert (s.drops, s.best, s.epoch) == (2, 0.7, 11)


def test_plateau_with_zero_patience_drops_at_the_first_epoch_without_improvement() -> None:
    rule = PlateauSchedule(factor=0.5, patience=0, max_drops=3, threshold=0.0)
    s = make_schedule(TrainConfig(lr=1.0, schedule=rule))
    assert lrs(s, [0.5, 0.4, 0.4, 0.3, 0.35, 0.2, 0.9]) == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]


def test_step_follows_its_formula() -> None:
    s = make_schedule(TrainConfig(lr=0.1, schedule=StepSchedule(every=3, factor=0.5)))
    got = lrs(s, [0.5] * 9)
    assert got == pytest.approx([0.1 * 0.5 ** (e // 3) for e in range(10)], rel=1e-15)
    assert got[2:4] == pytest.approx([0.1, 0.05])


def test_cosine_follows_its_formula_and_stays_at_min_lr() -> None:
    cfg = TrainConfig(lr=0.1, epochs=10, schedule=CosineSchedule(min_lr=0.001))
    got = lrs(make_schedule(cfg), [0.5] * 12)
    formula = [0.001 + 0.099 * (1 + math.cos(math.pi * min(e, 10) / 10)) / 2 for e in range(13)]
    assert got == pytest.approx(formula, rel=1e-12)
    assert (got[0], got[5], got[10], got[12]) == pytest.approx((0.1, 0.0505, 0.001, 0.001))


def cosine_formula(lr: float, epochs: int, min_lr: float, e: int) -> float:
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * min(e, epochs) / epochs)) / 2


@pytest.mark.parametrize(
    ("lr", "epochs", "min_lr"), [(0.03, 20, 0.0), (0.01, 90, 0.0), (0.1, 7, 1e-4), (1.0, 1, 0.5)]
)
def test_torch_cosine_gives_the_hand_formula_over_long_runs(lr, epochs, min_lr) -> None:
    cfg = TrainConfig(lr=lr, epochs=epochs, schedule=CosineSchedule(min_lr=min_lr))
    got = lrs(make_schedule(cfg), [0.5] * (3 * epochs))
    want = [cosine_formula(lr, epochs, min_lr, e) for e in range(3 * epochs + 1)]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("lr", "every", "factor"), [(0.01, 30, 0.1), (0.1, 1, 0.5), (0.3, 4, 0.9)])
def test_torch_step_gives_the_hand_formula_over_long_runs(lr, every, factor) -> None:
    cfg = TrainConfig(lr=lr, schedule=StepSchedule(every=every, factor=factor))
    got = lrs(make_schedule(cfg), [0.5] * 100)
    assert got == pytest.approx([lr * factor ** (e // every) for e in range(101)], rel=1e-12)


def test_the_mini_specs_rates_are_the_formulas_to_the_bit_the_optimiser_sees() -> None:
    """The update uses the rate in float32 (torch rounds a float scalar to the tensor's type):
    there torch's recursive cosine and the closed form agree, so training is unchanged."""
    spec = load_spec(Path(__file__).resolve().parents[2] / "specs" / "alexnet-mini.yaml")
    cfg = spec.train
    assert isinstance(cfg.schedule, CosineSchedule)
    got = lrs(make_schedule(cfg), [0.5] * cfg.epochs)
    want = [cosine_formula(cfg.lr, cfg.epochs, cfg.schedule.min_lr, e) for e in range(len(got))]
    for rate in (1.0, cfg.weight_decay):
        assert [np.float32(-rate * g) for g in got] == [np.float32(-rate * w) for w in want]


def test_constant_stays() -> None:
    s = make_schedule(TrainConfig(lr=0.03, schedule=ConstantSchedule()))
    assert lrs(s, [0.9, 0.1, 0.9]) == [0.03] * 4


@pytest.mark.parametrize(
    "rule",
    [PlateauSchedule(patience=1, max_drops=3), StepSchedule(every=2), CosineSchedule()],
)
def test_state_round_trips_through_weights_only_load_and_continues_identically(rule) -> None:
    cfg = TrainConfig(lr=0.01, epochs=8, schedule=rule)
    errors = [0.9, 0.8, 0.8, 0.85, 0.7, 0.7, 0.72, 0.75]
    first = make_schedule(cfg)
    lrs(first, errors[:4])
    state = first.state_dict()
    assert all(type(v) in (int, float) for v in state.values())
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    resumed = make_schedule(cfg)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.lr == first.lr and resumed.epoch == 4
    assert lrs(resumed, errors[4:]) == lrs(first, errors[4:])


def test_a_cosine_given_more_epochs_decays_on_from_its_last_rate() -> None:
    # a run of 2 epochs at 0.02 trained at 0.02 and 0.01; resumed with 4 epochs, the rest of
    # the decay starts from 0.01 (epoch 1) and reaches 0 at epoch 4, one step after the last
    done = make_schedule(TrainConfig(lr=0.02, epochs=2, schedule=CosineSchedule()))
    assert lrs(done, [0.5, 0.5]) == pytest.approx([0.02, 0.01, 0.0])
    resumed = make_schedule(TrainConfig(lr=0.02, epochs=4, schedule=CosineSchedule()))
    resumed.load_state_dict(done.state_dict())
    want = [0.01 * (1 + math.cos(math.pi * k / 3)) / 2 for k in (1, 2, 3)]  # epochs 2, 3, 4
    assert lrs(resumed, [0.5, 0.5]) == pytest.approx(want, abs=1e-12)
    assert want[0] > want[1] > 0 == pytest.approx(want[2], abs=1e-12)  # no step at 0


def test_a_cosine_horizon_change_is_kept_by_later_resumes() -> None:
    cfg = TrainConfig(lr=0.1, epochs=6, schedule=CosineSchedule(min_lr=0.001))
    first = make_schedule(TrainConfig(lr=0.1, epochs=3, schedule=CosineSchedule(min_lr=0.001)))
    lrs(first, [0.5, 0.5])  # killed after 2 of 3 epochs, resumed with 6
    raised = make_schedule(cfg)
    raised.load_state_dict(first.state_dict())
    lrs(raised, [0.5])
    again = make_schedule(cfg)  # and killed and resumed once more, with the same 6
    again.load_state_dict(raised.state_dict())
    assert lrs(again, [0.5, 0.5, 0.5]) == lrs(raised, [0.5, 0.5, 0.5])
    last_trained = 0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi / 3)) / 2  # epoch 1 of 3
    assert raised.state_dict()["start_lr"] == pytest.approx(last_trained)


def test_a_cosine_state_from_before_segments_loads() -> None:
    cfg = TrainConfig(lr=0.02, epochs=4, schedule=CosineSchedule())
    whole = make_schedule(cfg)
    lrs(whole, [0.5, 0.5])
    old = make_schedule(cfg)
    old.load_state_dict({"epoch": 2, "lr": whole.lr})
    assert lrs(old, [0.5, 0.5]) == lrs(whole, [0.5, 0.5])
