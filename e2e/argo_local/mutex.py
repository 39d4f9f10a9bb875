"""In-process mutexes standing in for Argo's ``synchronization.mutexes``.

Contract: no I/O. Argo keys a mutex as ``<namespace>/Mutex/<name>`` after substituting the name; a holder keeps
it until its workflow (or template) completes and a second claimant waits (the Workflow shows Pending, "Waiting
for <key> lock"). :class:`MutexRegistry` does the same inside one process: :meth:`hold` blocks until every
named key is free, taking them in sorted order so two runs never deadlock, and gives up after ``timeout``
seconds with :class:`MutexTimeout` so no wait is unbounded. One registry per process is shared by default
(:data:`DEFAULT_REGISTRY`), so concurrent local runs of the same cluster serialise like Argo workflows do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


class MutexTimeout(TimeoutError):
    """A mutex stayed held by another run for longer than the caller allowed."""


def mutex_key(namespace: str, name: str) -> str:
    """Argo's lock key for a mutex: ``<namespace>/Mutex/<name>``."""
    return f"{namespace}/Mutex/{name}"


class MutexRegistry:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holders: dict[str, str] = {}

    def holder(self, key: str) -> str | None:
        with self._cond:
            return self._holders.get(key)

    @contextmanager
    def hold(
        self,
        keys: Iterable[str],
        owner: str,
        *,
        timeout: float,
        on_wait: Callable[[str, str], None] | None = None,
    ) -> Iterator[None]:
        """Hold every key in ``keys`` for the duration of the block; ``on_wait(key, holder)`` once per wait."""
        wanted = sorted(set(keys))
        taken: list[str] = []
        end = time.monotonic() + timeout
        try:
            for key in wanted:
                with self._cond:
                    reported = False
                    while key in self._holders and self._holders[key] != owner:
                        if not reported and on_wait is not None:
                            on_wait(key, self._holders[key])
                            reported = True
                        left = end - time.monotonic()
                        if left <= 0:
                            raise MutexTimeout(f"{owner}: {key} still held by {self._holders[key]} after {timeout}s")
                        self._cond.wait(timeout=left)
                    self._holders[key] = owner
                    taken.append(key)
            yield
        finally:
            with self._cond:
                for key in taken:
                    if self._holders.get(key) == owner:
                        del self._holders[key]
                self._cond.notify_all()


DEFAULT_REGISTRY = MutexRegistry()
