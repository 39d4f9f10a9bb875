"""An in-memory :class:`~sim.capi.kube.Store` with the API-server behaviours the fake controllers rely on.

Contract: test double at the simulator's own adapter boundary, no network. It implements what the
controllers observe of a real server: ``uid``/``creationTimestamp``/``resourceVersion``; ``generation``
bumped on spec changes only; JSON merge patches (``None`` deletes a key); status written only through
:meth:`patch_status`; deletion with finalizers sets ``deletionTimestamp`` and the object disappears once
its finalizers are removed. It does NOT validate schemas — the integration tests against the real API
server do that.
"""

from __future__ import annotations

import builtins
import copy
import datetime as dt
import itertools
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class MemoryStore:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self._rv = itertools.count(1)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def _changed(self) -> None:
        self.writes += 1
        for cb in list(self._listeners):
            cb()

    def list(self, plural: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(v) for (p, _), v in sorted(self.objects.items()) if p == plural]

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((plural, name))
            return copy.deepcopy(obj) if obj else None

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        name = obj["metadata"]["name"]
        with self._lock:
            if (plural, name) in self.objects:
                raise ApiException(status=409, reason=f"{plural}/{name} already exists")
            obj.pop("status", None)
            obj["metadata"] |= {
                "uid": str(uuid.uuid4()), "generation": 1, "resourceVersion": str(next(self._rv)),
                "creationTimestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            self.objects[(plural, name)] = obj
            out = copy.deepcopy(obj)
        self._changed()
        return out

    def _get(self, plural: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((plural, name))
        if obj is None:
            raise ApiException(status=404, reason=f"{plural}/{name} not found")
        return obj

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            obj = self._get(plural, name)
            patch = {k: v for k, v in patch.items() if k != "status"}
            new = merge_patch(obj, patch)
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"]["generation"] + 1
            new["metadata"]["resourceVersion"] = str(next(self._rv))
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                del self.objects[(plural, name)]
            else:
                self.objects[(plural, name)] = new
            out: dict[str, Any] = copy.deepcopy(new)
        self._changed()
        return out

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            obj = self._get(plural, name)
            obj["status"] = merge_patch(obj.get("status") or {}, status)
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
            out: dict[str, Any] = copy.deepcopy(obj)
        self._changed()
        return out

    def run_concurrently(self, calls: Sequence[Callable[[], Any]]) -> builtins.list[BaseException | None]:
        from sim.capi.kube import run_in_order

        return run_in_order(calls)

    def delete(self, plural: str, name: str) -> None:
        with self._lock:
            obj = self.objects.get((plural, name))
            if obj is None:
                return
            if obj["metadata"].get("finalizers"):
                obj["metadata"].setdefault(
                    "deletionTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                )
            else:
                del self.objects[(plural, name)]
        self._changed()

    def create_secret(self, body: dict[str, Any]) -> None:
        self.secrets[body["metadata"]["name"]] = copy.deepcopy(body)

    def watch(self, plural: str, on_event: Callable[[], None], stop: threading.Event) -> None:
        self._listeners.append(on_event)
        stop.wait()
        self._listeners.remove(on_event)
