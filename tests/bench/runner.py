"""``python -m tests.bench.runner ARGS``: ``capi-rollout ARGS`` with counters, for ``tests.bench.scale``.

Counts every Kubernetes API request the process makes (each urllib3 request of the kubernetes client; a watch
stream counts once), times each evaluation of the rollout loop (``Runner.observe``: reading the objects into the
domain views; ``decide``: the decision) and records the peak resident memory. On exit it writes them as JSON to
the file named by ``BENCH_RUNNER_STATS``. The product's behaviour is unchanged: only wrappers are installed.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3

from capi_rollout import rollout_loop
from capi_rollout.cli import main
from capi_rollout.domain.decide import decide

_lock = threading.Lock()
stats: dict[str, Any] = {"requests": 0, "observe_ms": [], "decide_ms": [], "started": time.time()}


def _timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                stats[key].append((time.perf_counter() - start) * 1000)
    return wrapper


def _install() -> None:
    original = urllib3.PoolManager.urlopen

    def urlopen(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _lock:
            stats["requests"] += 1
        return original(self, *args, **kwargs)

    urllib3.PoolManager.urlopen = urlopen  # type: ignore[method-assign]
    rollout_loop.RolloutLoop.observe = _timed("observe_ms", rollout_loop.RolloutLoop.observe)  # type: ignore[method-assign]
    # The loop calls the ``decide`` it imported (``rollout_loop.decide``, not exported): rebind that name, wrapping
    # the function it is bound to (capi_rollout.domain.decide.decide).
    setattr(rollout_loop, "decide", _timed("decide_ms", decide))  # noqa: B010


def _write() -> None:
    path = os.environ.get("BENCH_RUNNER_STATS")
    if not path:
        return
    stats["finished"] = time.time()
    stats["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(path, "w") as f:
        json.dump(stats, f)


if __name__ == "__main__":
    _install()
    atexit.register(_write)
    sys.exit(main(sys.argv[1:]))
