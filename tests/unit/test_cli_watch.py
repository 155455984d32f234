"""Ctrl-C stops a watch however the CLI was started: a shell without job control (a
script, `cmd &`, CI) starts it with SIGINT ignored, and Python then never raises
KeyboardInterrupt. That was why `jobs watch` sometimes ran to the job's end."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from mailfleet_cli.watch import ctrl_c_stops_watching


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_interrupts_a_watch_even_when_it_was_ignored(sigint_ignored: None) -> None:
    with pytest.raises(KeyboardInterrupt), ctrl_c_stops_watching():
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("SIGINT did not interrupt the watch")
    # Afterwards the disposition is what it was: ignored again.
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    os.kill(os.getpid(), signal.SIGINT)  # and so harmless
