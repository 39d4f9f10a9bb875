"""The Talos client, synchronous: what the rollout loop and the remediator call (a ``TalosPort``).

Contract: :class:`SyncTalosClient` offers :class:`~capi_rollout.adapters.talos.client.TalosClient`'s calls as
blocking methods: one private event loop in a background thread runs them. Each call inside is bounded by the
client's timeout; the outer wait is bounded too (a few timeouts per call, plus ``within`` for a reboot
confirmation), so a wedged loop cannot hang the caller. :meth:`SyncTalosClient.close` stops the loop and its thread.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from capi_rollout.adapters.talos.client import TalosClient
from capi_rollout.adapters.talos.config import TalosConfig
from capi_rollout.adapters.talos.outcomes import DEFAULT_PORT, NodeProbe, RebootObservation, RebootResult
from capi_rollout.adapters.talos.trust import Validity

T = TypeVar("T")


class SyncTalosClient:
    """The same API, synchronous: one private event loop in a background thread runs a :class:`TalosClient`."""

    def __init__(self, config: TalosConfig, *, port: int = DEFAULT_PORT, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._client = TalosClient(config, port=port, timeout=timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="talos-client", daemon=True)
        self._thread.start()
        self._closed = False

    def __repr__(self) -> str:
        return f"Sync{self._client!r}"

    def __enter__(self) -> SyncTalosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T], calls: int = 1, extra: float = 0.0) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("SyncTalosClient is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # Each call inside is bounded by the timeout; this outer bound only guards against a wedged loop.
        return future.result(timeout=self._timeout * (3 * calls) + 5.0 + extra)

    @property
    def client_validity(self) -> Validity | None:
        return self._client.client_validity

    def probe(self, address: str) -> NodeProbe:
        return self._run(self._client.probe(address))

    def probe_many(self, addresses: Iterable[str], *, concurrency: int = 32) -> dict[str, NodeProbe]:
        unique = list(dict.fromkeys(addresses))
        waves = max(1, math.ceil(len(unique) / max(1, concurrency)))
        return self._run(self._client.probe_many(unique, concurrency=concurrency), calls=waves)

    def reboot(self, address: str, mode: str, *, node_name: str | None = None) -> RebootResult:
        return self._run(self._client.reboot(address, mode, node_name=node_name), calls=5)

    def confirm_reboot(self, address: str, boot_id_before: str | None, *, within: float, interval: float,
                       on_wait: Callable[[float], None] | None = None, removing: bool = False) -> RebootObservation:
        calls = 4 * (math.ceil(within / max(interval, 0.01)) + 2)
        return self._run(self._client.confirm_reboot(address, boot_id_before, within=within, interval=interval,
                                                     on_wait=on_wait, removing=removing), calls=calls, extra=within)

    def version(self, address: str) -> str:
        return self._run(self._client.version(address), calls=3)

    def versions(self, addresses: Iterable[str], *, concurrency: int = 32) -> dict[str, str]:
        unique = list(dict.fromkeys(addresses))
        waves = max(1, math.ceil(len(unique) / max(1, concurrency)))
        return self._run(self._client.versions(unique, concurrency=concurrency), calls=3 * waves)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        self._loop.close()
