"""The simulator's only door to a Kubernetes API server: list/create/patch/delete/watch of the CAPI kinds.

Contract: :class:`Store` is the interface the fake controllers use; :class:`KubeStore` implements it with
the ``kubernetes`` client (every write with ``fieldValidation=Strict``, so a field name that the CRD of
the selected CAPI line does not know fails loudly instead of being pruned; status through the status
subresource). :class:`~sim.capi.memstore.MemoryStore` implements it in memory for fast unit tests.
Every list is namespaced and restricted to objects labelled ``capi-rollout.dev/simulated=true``.

Event-driven: :meth:`KubeStore.watch` is an informer — it lists a kind once, then follows its watch from that
resourceVersion (re-listing after an expired watch) into a local cache, and ``list`` of a watched kind answers
from that cache instead of the API server. Every write's response goes into the cache at once (read-your-writes),
so the next pass never acts twice on a stale object; an event never replaces a newer resourceVersion. Objects
``list`` returns from the cache are shared: callers treat them as read-only. :meth:`KubeStore.run_concurrently`
sends one pass's independent writes together (a bounded pool) instead of one after the other. ``requests``
counts the API requests made (a watch stream counts once).
"""

from __future__ import annotations

import builtins
import copy
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from sim.objects import SIMULATED_LABEL, TCP_GROUP, TCP_VERSION, capi_version

KINDS = ("clusters", "taloscontrolplanes", "machinedeployments", "machinesets", "machines")


class Store(Protocol):
    namespace: str

    def list(self, plural: str) -> list[dict[str, Any]]: ...
    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...
    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...
    def run_concurrently(self, calls: Sequence[Callable[[], Any]]) -> builtins.list[BaseException | None]: ...
    def delete(self, plural: str, name: str) -> None: ...
    def create_secret(self, body: dict[str, Any]) -> None: ...
    def watch(self, plural: str, on_event: Callable[[], None], stop: threading.Event) -> None: ...


def group_version(plural: str, line: str) -> tuple[str, str]:
    if plural == "taloscontrolplanes":
        return TCP_GROUP, TCP_VERSION
    return "cluster.x-k8s.io", capi_version(line)


def _rv(obj: Any) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


class KubeStore:
    """:class:`Store` over a real API server (see the module docstring for the cache)."""

    def __init__(self, api_client: client.ApiClient, *, line: str, namespace: str, write_concurrency: int = 8) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.line = line
        self.namespace = namespace
        self.requests = 0
        self._watches: list[watch.Watch] = []
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, dict[str, Any]]] = {}
        self._synced: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._write_concurrency = write_concurrency

    def _gv(self, plural: str) -> tuple[str, str]:
        return group_version(plural, self.line)

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    # --------------------------------------------------------------------------------------- the cache

    def _remember(self, plural: str, obj: Any, *, deleted: bool = False) -> None:
        """Put ``obj`` into the cache of a watched kind unless the cache already holds a newer version."""
        if not isinstance(obj, dict) or "metadata" not in obj or obj.get("kind") == "Status":
            return
        with self._lock:
            cache = self._cache.get(plural)
            if cache is None:
                return
            name = obj["metadata"]["name"]
            held = cache.get(name)
            if held is not None and _rv(held) > _rv(obj):
                return
            if deleted:
                cache.pop(name, None)
            else:
                cache[name] = obj

    def synced(self, plural: str) -> bool:
        with self._lock:
            return plural in self._synced

    def list(self, plural: str) -> list[dict[str, Any]]:
        with self._lock:
            if plural in self._synced:
                return [*self._cache[plural].values()]
        return self._list(plural)[0]

    def _list(self, plural: str) -> tuple[builtins.list[dict[str, Any]], str]:
        g, v = self._gv(plural)
        self._count()
        out: Any = self.custom.list_namespaced_custom_object(
            g, v, self.namespace, plural, label_selector=f"{SIMULATED_LABEL}=true"
        )
        items: list[dict[str, Any]] = out.get("items", [])
        return items, str(out.get("metadata", {}).get("resourceVersion", ""))

    # --------------------------------------------------------------------------------------- writes

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        g, v = self._gv(plural)
        self._count()
        created: Any = self.custom.create_namespaced_custom_object(
            g, v, self.namespace, plural, body, field_validation="Strict"
        )
        self._remember(plural, created)
        return dict(created)

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        g, v = self._gv(plural)
        self._count()
        out: Any = self.custom.patch_namespaced_custom_object(
            g, v, self.namespace, plural, name, patch, field_validation="Strict"
        )
        # A patch that removed the last finalizer of a deleting object answers with the object, now gone.
        gone = bool(out.get("metadata", {}).get("deletionTimestamp")) and not out["metadata"].get("finalizers")
        self._remember(plural, out, deleted=gone)
        return dict(out)

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        g, v = self._gv(plural)
        self._count()
        out: Any = self.custom.patch_namespaced_custom_object_status(
            g, v, self.namespace, plural, name, {"status": status}, field_validation="Strict"
        )
        self._remember(plural, out)
        return dict(out)

    def run_concurrently(self, calls: Sequence[Callable[[], Any]]) -> builtins.list[BaseException | None]:
        """Run independent writes on a bounded pool; one entry per call: None, or the exception it raised."""
        if len(calls) <= 1:
            return run_in_order(calls)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._write_concurrency, thread_name_prefix="sim-write")
            pool = self._pool
        futures = [pool.submit(call) for call in calls]
        return [f.exception() for f in futures]

    def delete(self, plural: str, name: str) -> None:
        g, v = self._gv(plural)
        self._count()
        try:
            out: Any = self.custom.delete_namespaced_custom_object(g, v, self.namespace, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            out = None
        with self._lock:
            held = self._cache.get(plural, {}).get(name)
        if isinstance(out, dict) and out.get("metadata", {}).get("deletionTimestamp"):
            self._remember(plural, out)  # finalizers hold it: it shows as deleting at once
        elif held is not None:
            gone = copy.copy(held)
            gone["metadata"] = {**held["metadata"], "resourceVersion": str(_rv(held) + 1)}
            self._remember(plural, gone, deleted=True)

    def create_secret(self, body: dict[str, Any]) -> None:
        self.core.create_namespaced_secret(self.namespace, body)  # type: ignore[arg-type]

    def watch(self, plural: str, on_event: Callable[[], None], stop: threading.Event) -> None:
        """Keep ``plural``'s cache (list, then watch from its resourceVersion) and call ``on_event`` for every
        change until ``stop`` is set. A watch that ends resumes from the last resourceVersion seen; one that
        expired (410) or broke lists again."""
        g, v = self._gv(plural)
        with self._lock:
            self._cache.setdefault(plural, {})
        rv = ""
        while not stop.is_set():
            try:
                if not rv:
                    items, rv = self._list(plural)
                    with self._lock:
                        fresh = {o["metadata"]["name"]: o for o in items}
                        held = self._cache.get(plural, {})
                        for name, obj in held.items():  # our own writes newer than the list stay
                            if name in fresh and _rv(obj) > _rv(fresh[name]):
                                fresh[name] = obj
                        self._cache[plural] = fresh
                        self._synced.add(plural)
                    on_event()
                rv = self._follow(plural, g, v, rv, on_event, stop)
            except Exception:  # expired or broken: list again after a short back-off (bounded by `stop`)
                rv = ""
                stop.wait(0.2)

    def _follow(self, plural: str, g: str, v: str, rv: str, on_event: Callable[[], None],
                stop: threading.Event) -> str:
        w = watch.Watch()
        with self._lock:
            self._watches.append(w)
        self._count()
        try:
            for event in w.stream(
                self.custom.list_namespaced_custom_object, g, v, self.namespace, plural,
                label_selector=f"{SIMULATED_LABEL}=true", timeout_seconds=30, resource_version=rv,
                allow_watch_bookmarks=True,
            ):
                obj = event.get("object")
                kind = event.get("type")
                if kind == "ERROR":
                    raise ApiException(status=int((obj or {}).get("code", 500)), reason="watch error")
                if isinstance(obj, dict):
                    rv = str(obj.get("metadata", {}).get("resourceVersion", rv))
                if kind != "BOOKMARK":
                    self._remember(plural, obj, deleted=kind == "DELETED")
                    on_event()
                if stop.is_set():
                    break
        finally:
            with self._lock:
                self._watches.remove(w)
        return rv

    def stop_watches(self) -> None:
        """Interrupt every running watch stream (their threads then see ``stop`` and end); reads go to the API
        server again, and the write pool is shut down."""
        with self._lock:
            for w in self._watches:
                w.stop()
            self._synced.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def run_in_order(calls: Sequence[Callable[[], Any]]) -> list[BaseException | None]:
    """:meth:`Store.run_concurrently` one call after the other (the in-memory store, a single write)."""
    out: list[BaseException | None] = []
    for call in calls:
        try:
            call()
            out.append(None)
        except Exception as exc:
            out.append(exc)
    return out
