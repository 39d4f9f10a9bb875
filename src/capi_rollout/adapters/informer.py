"""An informer-style cache of one workload cluster's CAPI objects: LIST once, then WATCH (few API requests).

Contract:

* :class:`Informer` keeps one resource (group/version/plural in one namespace, narrowed by a label or field
  selector) in a daemon thread: it LISTs once, keeping the list's ``resourceVersion``, then WATCHes from it,
  folding every event into a :class:`~capi_rollout.adapters.reflection.Reflection` (pure, see there).
  BOOKMARKs advance the ``resourceVersion``; 410 Gone (as an HTTP status or an ERROR event) → LIST again (at
  once the first time, after the backoff when it repeats); a
  watch the server ends (``timeout_seconds``) → WATCH again from the last ``resourceVersion``; a dropped
  connection or any other error → WATCH again from the last ``resourceVersion`` after a capped exponential
  backoff (``initial`` doubling to ``cap``). Every loop ends when the informer is stopped, and each wait in it
  is interruptible; stopping shuts the open watch socket down and joins the thread (bounded).
* :class:`ClusterCache` runs four informers for one cluster: its Cluster (field selector
  ``metadata.name=<cluster>``), and its TalosControlPlanes, MachineDeployments and Machines (label selector
  ``<label>=<cluster>``: the caller passes the cluster-name label, the product's one constant). It offers what
  the rollout loop needs (the port :class:`~capi_rollout.ports.ObjectCache`):

  - :meth:`ClusterCache.wait` — ``wait(timeout) -> bool``: True as soon as an object changed (or a relist
    replaced them), False on timeout; the runner's "something changed" wake-up.
  - :attr:`ClusterCache.synced` — every informer has listed and its watch is open right now. While a watch is
    down, the cache may be stale and says so (the runner then reads with LISTs). A connection that dies
    silently (no reset) is only noticed by the client read timeout (``watch_timeout`` + 30 s); until then the
    cache looks synced but is stale, which is why the runner never acts on the cache alone.
  - :meth:`ClusterCache.snapshot` — the current objects as a :class:`Snapshot`. Objects are replaced on each
    event, never mutated, so a snapshot never changes under its reader.
  - :meth:`ClusterCache.wait_until` — block (bounded) until a predicate over the snapshot holds while synced;
    the runner's read-after-write barrier after deleting a Machine (:meth:`Snapshot.shows_deleting`).
  - :attr:`ClusterCache.failure` — the last error an informer met, for logs; None while all is well.
  - :attr:`ClusterCache.requests` — LIST + WATCH requests made so far, per resource.

It reads with the verbs the runner's RBAC already grants (list and watch on clusters, taloscontrolplanes,
machinedeployments and machines) and writes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from capi_rollout.adapters.kube import CAPI_GROUP, TCP_GROUP, TCP_VERSION, Kube, KubeError, _short, _transient
from capi_rollout.adapters.reflection import GONE, Obj, Reflection, apply_event, from_list

log = logging.getLogger("capi_rollout")

@dataclass(frozen=True)
class Snapshot:
    """One cluster's objects as the cache holds them now (each list sorted by name)."""

    clusters: Sequence[Obj]
    control_planes: Sequence[Obj]
    deployments: Sequence[Obj]
    machines: Sequence[Obj]

    @property
    def cluster(self) -> Obj | None:
        return self.clusters[0] if self.clusters else None

    def shows_deleting(self, uid: str) -> bool:
        """True when no Machine with ``uid`` is here any more or the one here carries a deletionTimestamp."""
        for m in self.machines:
            md = m.get("metadata") or {}
            if md.get("uid") == uid:
                return bool(md.get("deletionTimestamp"))
        return True


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    label_selector: str = ""
    field_selector: str = ""


def lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Newline-separated records from a chunked stream (a watch sends one JSON event per line)."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buffer.strip():
        yield buffer


class Informer:
    """One resource kept current by LIST + WATCH in a daemon thread (see the module docstring)."""

    def __init__(self, kube: Kube, namespace: str, resource: Resource, *, on_change: Callable[[], None],
                 lock: threading.Condition, watch_timeout: int = 60, initial: float = 0.2, cap: float = 5.0) -> None:
        self.kube = kube
        self.namespace = namespace
        self.resource = resource
        self.on_change = on_change
        self.lock = lock
        self.watch_timeout = watch_timeout
        self.initial, self.cap = initial, cap
        self.reflection = Reflection()
        self.listed = False
        self.live = False
        self.failure: str | None = None
        self.lists = 0
        self.watches = 0
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"informer-{resource.plural}")

    @property
    def synced(self) -> bool:
        return self.listed and self.live

    def start(self) -> None:
        self._thread.start()

    def stop(self, join: float = 5.0) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # unblock the watch thread's read at once
            except Exception as exc:  # already closed or released: the thread is on its way out anyway
                log.debug("informer %s: shutdown: %s", self.resource.plural, _short(exc))
        if self._thread.is_alive():
            self._thread.join(join)

    # --- the thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.initial
        gone = 0  # 410s in a row: the first relists at once, a repeat backs off like any error
        while not self._stop.is_set():
            try:
                if self.reflection.resource_version is None:
                    self._relist()
                self._watch_once()
                delay, gone = self.initial, 0
            except ApiException as exc:
                self._set_live(False)
                if exc.status == GONE:
                    self._expire()
                    gone += 1
                    if gone > 1:
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.cap)
                    continue
                self._failed(exc if _transient(exc) else KubeError(f"read {self.resource.plural}", exc), delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.cap)
            except Exception as exc:
                self._set_live(False)
                if self._stop.is_set():
                    break
                self._failed(exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.cap)
        self._set_live(False)

    def _failed(self, exc: BaseException, delay: float) -> None:
        self.failure = str(exc) if isinstance(exc, KubeError) else f"{self.resource.plural}: {_short(exc)}"
        log.debug("informer %s; retrying in %.1fs", self.failure, delay)

    def _selectors(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.resource.label_selector:
            kwargs["label_selector"] = self.resource.label_selector
        if self.resource.field_selector:
            kwargs["field_selector"] = self.resource.field_selector
        return kwargs

    def _relist(self) -> None:
        r = self.resource
        body: Any = self.kube.custom.list_namespaced_custom_object(
            r.group, r.version, self.namespace, r.plural, _request_timeout=30, **self._selectors())
        self.lists += 1
        self._publish(from_list(body), changed=True)
        self.listed = True

    def _expire(self) -> None:
        with self.lock:
            self.reflection = Reflection(objects=self.reflection.objects, resource_version=None)

    def _watch_once(self) -> None:
        r = self.resource
        resp: Any = self.kube.custom.list_namespaced_custom_object(
            r.group, r.version, self.namespace, r.plural, watch=True, allow_watch_bookmarks=True,
            resource_version=self.reflection.resource_version, timeout_seconds=self.watch_timeout,
            _preload_content=False, _request_timeout=(10, self.watch_timeout + 30), **self._selectors())
        self.watches += 1
        self._resp = resp
        try:
            status = getattr(resp, "status", 200)
            if not 200 <= int(status) <= 299:
                raise ApiException(status=status, reason=getattr(resp, "reason", ""), data=None)
            if self._stop.is_set():
                return
            self.failure = None
            self._set_live(True)
            for line in lines(resp.stream(amt=None, decode_content=False)):
                if self._stop.is_set():
                    return
                new, outcome = apply_event(self.reflection, json.loads(line))
                self._publish(new, changed=outcome != "bookmark")
                if outcome == "relist":
                    return
        finally:
            self._set_live(False)
            self._resp = None
            resp.close()  # never hand a half-read stream back to the connection pool
            resp.release_conn()

    def _publish(self, reflection: Reflection, *, changed: bool) -> None:
        with self.lock:
            self.reflection = reflection
            if changed:
                self.on_change()
            self.lock.notify_all()

    def _set_live(self, live: bool) -> None:
        with self.lock:
            self.live = live
            self.lock.notify_all()


class ClusterCache:
    """The Cluster, TalosControlPlanes, MachineDeployments and Machines of one cluster, kept by informers."""

    def __init__(self, kube: Kube, namespace: str, cluster: str, *, label: str, watch_timeout: int = 60,
                 initial: float = 0.2, cap: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        version = kube.capi_version()
        selector = f"{label}={cluster}"
        self._changed = threading.Event()
        self._lock = threading.Condition()
        self._clock = clock
        resources = [
            Resource(CAPI_GROUP, version, "clusters", field_selector=f"metadata.name={cluster}"),
            Resource(TCP_GROUP, TCP_VERSION, "taloscontrolplanes", label_selector=selector),
            Resource(CAPI_GROUP, version, "machinedeployments", label_selector=selector),
            Resource(CAPI_GROUP, version, "machines", label_selector=selector),
        ]
        self.informers = [Informer(kube, namespace, r, on_change=self._changed.set, lock=self._lock,
                                   watch_timeout=watch_timeout, initial=initial, cap=cap) for r in resources]

    def __enter__(self) -> ClusterCache:
        for i in self.informers:
            i.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for i in self.informers:
            i._stop.set()
        for i in self.informers:
            i.stop()

    def wait(self, timeout: float) -> bool:
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    @property
    def synced(self) -> bool:
        return all(i.synced for i in self.informers)

    @property
    def failure(self) -> str | None:
        return next((i.failure for i in self.informers if i.failure), None)

    @property
    def requests(self) -> Mapping[str, int]:
        """LIST and WATCH requests made so far, per resource (for tests and logs)."""
        return {i.resource.plural: i.lists + i.watches for i in self.informers}

    def snapshot(self) -> Snapshot:
        with self._lock:
            clusters, tcps, mds, machines = (i.reflection.items for i in self.informers)
        return Snapshot(clusters=clusters, control_planes=tcps, deployments=mds, machines=machines)

    def wait_until(self, predicate: Callable[[Snapshot], bool], timeout: float) -> bool:
        """True as soon as the cache is synced and ``predicate(snapshot)`` holds; False after ``timeout`` s."""
        deadline = self._clock() + timeout
        with self._lock:
            while True:
                if self.synced and predicate(self.snapshot()):
                    return True
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)


@contextmanager
def cluster_cache(kube: Kube, namespace: str, cluster: str, *, label: str) -> Iterator[ClusterCache]:
    """A :class:`ClusterCache` for the duration of a ``with`` (the rollout loop's default ``watch``)."""
    with ClusterCache(kube, namespace, cluster, label=label) as cache:
        yield cache


__all__ = ["ClusterCache", "Informer", "Resource", "Snapshot", "cluster_cache"]
