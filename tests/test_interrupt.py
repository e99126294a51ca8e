"""A Ctrl-C or SIGTERM is never lost, even when it lands where Python swallows exceptions."""

import os
import signal
import sys

import pytest

from netspec.interrupt import Terminated, deferred, raise_pending, sigterm_as_interrupt


class SwallowsInFinalizer:
    """Receives the signal inside `__del__`, where Python prints an exception and goes on."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)]
)
def test_a_signal_swallowed_by_a_finalizer_is_raised_again(signum, raised, monkeypatch):
    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    with sigterm_as_interrupt():
        SwallowsInFinalizer(signum)  # dropped at once: its __del__ gets the signal
        assert swallowed == [raised]  # Python printed it and went on
        with pytest.raises(raised) as caught:
            raise_pending()
        assert type(caught.value) is raised
    raise_pending()  # outside the block nothing is pending any more


def test_handlers_are_restored_after_the_block():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGINT) not in before
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_during_a_deferred_block_is_raised_as_it_ends():
    reached = []
    with sigterm_as_interrupt(), pytest.raises(Terminated):
        with deferred():  # as the command's imports run: torch's C++ must not see it
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after the signal")
        reached.append("after the block")
    assert reached == ["after the signal"]
