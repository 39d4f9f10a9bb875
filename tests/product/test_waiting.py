"""The one deadline loop: returns the first answer, retries listed errors, says what timed out and why."""

from __future__ import annotations

import pytest

from capi_rollout.waiting import wait_until


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_answer_that_is_neither_none_nor_false() -> None:
    t = FakeTime()
    answers = iter([None, False, 0, 7])
    assert wait_until(lambda: next(answers), timeout=10, interval=1, what="x", clock=t.clock, sleep=t.sleep) == 0
    assert t.sleeps == [1, 1]


def test_times_out_naming_what_and_the_last_error() -> None:
    t = FakeTime()

    def check() -> None:
        raise ConnectionError("refused\n  twice")

    with pytest.raises(TimeoutError, match=r"^api server ready: not within 5s: refused twice$"):
        wait_until(check, timeout=5, interval=2, what="api server ready", retry_on=(ConnectionError,),
                   clock=t.clock, sleep=t.sleep)
    assert t.sleeps == [2, 2, 1]  # never sleeps past the deadline


def test_an_error_not_listed_is_not_swallowed() -> None:
    t = FakeTime()

    def check() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        wait_until(check, timeout=5, interval=1, what="x", retry_on=(ConnectionError,), clock=t.clock, sleep=t.sleep)
