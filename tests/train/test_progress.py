"""Progress: a tqdm bar on a terminal, whole lines every `every_s` seconds in a log."""

from __future__ import annotations

import io

from netspec.train.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_naming_step_and_loss():
    log = io.StringIO()
    progress = Progress(3, "epoch 1/5", log, every_s=0)
    for step, loss in enumerate([2.5, 2.25, 2.0], 1):
        progress.update(128 * step, loss)
    progress.close()
    assert log.getvalue().splitlines() == [
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
