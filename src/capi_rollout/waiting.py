"""The one "poll until a deadline" loop of this repository (the product's CLI and the harnesses around it).

Contract: :func:`wait_until` calls ``check()`` every ``interval`` seconds until it returns a value that is neither
None nor False and returns that value. An exception listed in ``retry_on`` counts as "not yet" and is kept as the
last error. After ``timeout`` seconds it raises :class:`TimeoutError` ``"<what>: not within <timeout>s"``, with the
last error or the last falsy answer's reason appended. ``clock`` and ``sleep`` are injectable, so callers with
simulated time and tests need no real waiting. No I/O of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], *, timeout: float, interval: float, what: str,
               retry_on: tuple[type[BaseException], ...] = (),
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], object] = time.sleep) -> T:
    """The first truthy-enough answer of ``check()`` (anything but None/False), or :class:`TimeoutError`."""
    deadline = clock() + timeout
    last: str = ""
    while True:
        try:
            answer = check()
        except retry_on as exc:
            last = " ".join(str(exc).split()) or type(exc).__name__
        else:
            if answer is not None and answer is not False:
                return answer
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError(f"{what}: not within {timeout:g}s" + (f": {last}" if last else ""))
        sleep(min(interval, remaining))
