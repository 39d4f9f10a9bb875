"""The simulator's only door to a Kubernetes API server: list/create/patch/delete/watch of the CAPI kinds.

Contract: :class:`Store` is the interface the fake controllers use; :class:`KubeStore` implements it with
the ``kubernetes`` client (every write with ``fieldValidation=Strict``, so a field name that the CRD of
the selected CAPI line does not know fails loudly instead of being pruned; status through the status
subresource). :class:`~sim.capi.memstore.MemoryStore` implements it in memory for fast unit tests.
Every list is namespaced and restricted to objects labelled ``capi-rollout.dev/simulated=true``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
    def delete(self, plural: str, name: str) -> None: ...
    def create_secret(self, body: dict[str, Any]) -> None: ...
    def watch(self, plural: str, on_event: Callable[[], None], stop: threading.Event) -> None: ...


def group_version(plural: str, line: str) -> tuple[str, str]:
    if plural == "taloscontrolplanes":
        return TCP_GROUP, TCP_VERSION
    return "cluster.x-k8s.io", capi_version(line)


class KubeStore:
    """:class:`Store` over a real API server."""

    def __init__(self, api_client: client.ApiClient, *, line: str, namespace: str) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.line = line
        self.namespace = namespace
        self._watches: list[watch.Watch] = []
        self._lock = threading.Lock()

    def _gv(self, plural: str) -> tuple[str, str]:
        return group_version(plural, self.line)

    def list(self, plural: str) -> list[dict[str, Any]]:
        g, v = self._gv(plural)
        out: Any = self.custom.list_namespaced_custom_object(
            g, v, self.namespace, plural, label_selector=f"{SIMULATED_LABEL}=true"
        )
        items: list[dict[str, Any]] = out.get("items", [])
        return items

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        g, v = self._gv(plural)
        created: Any = self.custom.create_namespaced_custom_object(
            g, v, self.namespace, plural, body, field_validation="Strict"
        )
        return dict(created)

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        g, v = self._gv(plural)
        out: Any = self.custom.patch_namespaced_custom_object(
            g, v, self.namespace, plural, name, patch, field_validation="Strict"
        )
        return dict(out)

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        g, v = self._gv(plural)
        out: Any = self.custom.patch_namespaced_custom_object_status(
            g, v, self.namespace, plural, name, {"status": status}, field_validation="Strict"
        )
        return dict(out)

    def delete(self, plural: str, name: str) -> None:
        g, v = self._gv(plural)
        try:
            self.custom.delete_namespaced_custom_object(g, v, self.namespace, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def create_secret(self, body: dict[str, Any]) -> None:
        self.core.create_namespaced_secret(self.namespace, body)  # type: ignore[arg-type]

    def watch(self, plural: str, on_event: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_event`` for every change of ``plural`` until ``stop`` is set (re-watching every 30 s)."""
        g, v = self._gv(plural)
        while not stop.is_set():
            w = watch.Watch()
            with self._lock:
                self._watches.append(w)
            try:
                for _ in w.stream(
                    self.custom.list_namespaced_custom_object, g, v, self.namespace, plural,
                    label_selector=f"{SIMULATED_LABEL}=true", timeout_seconds=30,
                ):
                    on_event()
                    if stop.is_set():
                        break
            except Exception:  # a broken stream: back off briefly, then watch again (bounded by `stop`)
                stop.wait(0.2)
            finally:
                with self._lock:
                    self._watches.remove(w)

    def stop_watches(self) -> None:
        """Interrupt every running watch stream (their threads then see ``stop`` and end)."""
        with self._lock:
            for w in self._watches:
                w.stop()
