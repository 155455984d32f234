"""Waiting on a condition, never on the clock alone: a fixed sleep is too short on a
loaded machine now and then and needlessly long everywhere else."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until[T](condition: Callable[[], T], timeout: float = 30.0, *,
                  interval: float = 0.05, what: str = "the condition") -> T:
    """Ask `condition` until it answers something true, and return that answer. The test
    fails, naming `what`, if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        answer = condition()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"{what}: not met within {timeout:g} s"
        time.sleep(interval)


def wait_until_steady[T](read: Callable[[], T], quiet: float = 0.2, timeout: float = 10.0,
                         *, interval: float = 0.05) -> T:
    """The value `read` settles on: the same for `quiet` seconds on end (for what arrives
    asynchronously, such as a log written after the answer). Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still changing after {timeout:g} s"
        time.sleep(interval)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last
