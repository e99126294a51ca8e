"""Progress: a tqdm bar on a terminal, whole lines every `every_s` seconds in a log; both
with the time left to the end of the run."""

from __future__ import annotations

import io

from netspec.train.progress import After, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test moves: `now` seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_whole_lines_naming_step_and_loss():
    log = io.StringIO()
    progress = Progress(3, "epoch 1/5", log, every_s=0)
    for step, loss in enumerate([2.5, 2.25, 2.0], 1):
        progress.update(128 * step, loss)
    progress.close()
    assert [line.partition(", run ETA")[0] for line in log.getvalue().splitlines()] == [
        "epoch 1/5 step 1/3 loss 2.5000",
        "epoch 1/5 step 2/3 loss 2.2500",
        "epoch 1/5 step 3/3 loss 2.0000",
    ]
    assert "\r" not in log.getvalue()


def test_a_log_is_quiet_between_periods():
    log = io.StringIO()
    progress = Progress(100, "epoch 1/5", log, every_s=3600)
    for step in range(1, 101):
        progress.update(step, 1.0)
    progress.close()
    assert log.getvalue() == ""


def test_a_terminal_gets_a_bar_that_is_cleared_at_the_end():
    term = Terminal()
    progress = Progress(4, "epoch 2/5", term)
    for step in range(1, 4):
        progress.update(64 * step, 0.5)
    assert progress.bar is not None
    progress.bar.refresh()  # tqdm redraws at most every 0.1 s by itself
    drawn = term.getvalue().split("\r")[-1]
    assert drawn.startswith("epoch 2/5:") and "3/4" in drawn and "loss 0.5000" in drawn
    assert "img/s" in drawn
    progress.close()
    assert term.getvalue().endswith("\r")  # tqdm's leave=False: the line is blanked
    assert "\n" not in term.getvalue()


def test_the_run_eta_counts_the_epochs_after_this_one_at_their_mean_length():
    clock, log = Clock(), io.StringIO()
    # 2 epochs after this one, each 100 s on the mean of those done
    progress = Progress(4, "epoch 3/5", log, every_s=0, after=After(2, 100.0), clock=clock)
    for _ in range(4):
        clock.now += 10  # 10 s a step
        progress.update(64, 1.0)
    assert log.getvalue().splitlines() == [
        "epoch 3/5 step 1/4 loss 1.0000, run ETA 03:50",  # 3 steps of 10 s, then 2 × 100 s
        "epoch 3/5 step 2/4 loss 1.0000, run ETA 03:40",
        "epoch 3/5 step 3/4 loss 1.0000, run ETA 03:30",
        "epoch 3/5 step 4/4 loss 1.0000, run ETA 03:20",
    ]


def test_before_an_epoch_has_ended_the_run_eta_projects_this_one():
    clock, log = Clock(), io.StringIO()
    progress = Progress(100, "epoch 1/90", log, every_s=0, after=After(89), clock=clock)
    clock.now += 36  # one step of 36 s: an epoch of 3600 s, 89 more after it
    progress.update(128, 6.9)
    assert log.getvalue() == "epoch 1/90 step 1/100 loss 6.9000, run ETA 89:59:24\n"
    assert progress.run_left(clock.now) == 99 * 36 + 89 * 3600


def test_the_last_epochs_run_eta_is_its_own():
    clock = Clock()
    progress = Progress(
        10, "epoch 5/5", io.StringIO(), every_s=0, after=After(0, 500.0), clock=clock
    )
    clock.now += 20
    progress.update(10, 1.0)
    assert progress.run_left(clock.now) == 9 * 20


def test_a_terminal_bar_shows_the_run_eta():
    clock, term = Clock(), Terminal()
    progress = Progress(4, "epoch 2/5", term, after=After(3, 60.0), clock=clock)
    clock.now += 5
    progress.update(64, 0.5)
    assert progress.bar is not None
    progress.bar.refresh()
    drawn = term.getvalue().split("\r")[-1]
    assert "loss 0.5000" in drawn and "run ETA 03:15" in drawn  # 3 × 5 s + 3 × 60 s
    progress.close()
