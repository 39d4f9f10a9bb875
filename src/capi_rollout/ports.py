"""The ports: what the rollout loop, the remediator and the stores need from Kubernetes and from Talos.

Contract: Protocols only, no behaviour. The product's code above the adapters is typed against these, never
against a concrete client: :class:`~capi_rollout.adapters.kube.Kube` is a :class:`KubePort` and
:class:`~capi_rollout.adapters.talos.sync.SyncTalosClient` a :class:`TalosPort`, structurally (the wiring in
:mod:`capi_rollout.run` assigns each to its port, so mypy proves it), and the in-memory fakes of the tests stand
in at the same seam. Objects cross the Kubernetes port as plain dicts (what the API server answers); the
Talos port answers with small result objects whose shape is declared here (``ProbeLike`` ...). The loop's change
watcher (:data:`ClusterWatch`) yields a :class:`Waker`, or an :class:`ObjectCache` it also reads from (the
informers' :class:`~capi_rollout.adapters.informer.ClusterCache` is one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


class KubePort(Protocol):
    """The Kubernetes reads and writes of a rollout: CAPI objects by the cluster-name label, the talosconfig
    Secret by name, Machine deletes (UID precondition), Events, RolloutLedgers and the holder's Workflow."""

    def capi_version(self) -> str: ...

    def get_cluster(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list_control_planes(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def list_machine_deployments(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def list_machines(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def list_health_checks(self, namespace: str) -> list[dict[str, Any]]: ...

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def delete_machine(self, namespace: str, name: str, uid: str) -> bool: ...

    def record_event(self, *, involved: Mapping[str, Any], reason: str, message: str, warning: bool = False,
                     now: datetime | None = None) -> None: ...

    def read_ledger(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def write_ledger(self, namespace: str, name: str, spec: Mapping[str, Any], *, resource_version: str | None,
                     labels: Mapping[str, str], owner: Mapping[str, str] | None) -> str: ...

    def list_ledgers(self, namespace: str | None = None) -> list[dict[str, Any]]: ...

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@runtime_checkable
class Waker(Protocol):
    """Anything the rollout loop can wait on for "something changed"."""

    def wait(self, timeout: float) -> bool: ...


class CacheSnapshot(Protocol):
    """One cluster's objects as a cache holds them now (each list sorted by name)."""

    @property
    def cluster(self) -> Mapping[str, Any] | None: ...
    @property
    def control_planes(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def deployments(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def machines(self) -> Sequence[Mapping[str, Any]]: ...

    def shows_deleting(self, uid: str) -> bool: ...


@runtime_checkable
class ObjectCache(Waker, Protocol):
    """What the loop reads from when its ``watch`` yields a cache rather than a bare waker: ``synced`` while every
    watch is open, ``snapshot()``, and ``wait_until`` (bounded) for a predicate over the snapshot."""

    @property
    def synced(self) -> bool: ...

    @property
    def failure(self) -> str | None: ...

    def snapshot(self) -> CacheSnapshot: ...

    def wait_until(self, predicate: Callable[[CacheSnapshot], bool], timeout: float) -> bool: ...


# The loop's change watcher for one cluster (namespace, cluster name): a context manager yielding a Waker, or an
# ObjectCache that the loop then also reads from.
ClusterWatch = Callable[[KubePort, str, str], AbstractContextManager[Waker]]


class ProbeLike(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def state(self) -> Any: ...
    @property
    def detail(self) -> str: ...


class RebootLike(Protocol):
    @property
    def accepted(self) -> bool: ...
    @property
    def detail(self) -> str: ...
    @property
    def boot_id(self) -> str | None: ...


class ObservationLike(Protocol):
    @property
    def observed(self) -> bool: ...
    @property
    def detail(self) -> str: ...


class ValidityLike(Protocol):
    @property
    def not_before(self) -> datetime: ...
    @property
    def not_after(self) -> datetime: ...


class TalosPort(Protocol):
    """What the loop and the remediator need from Talos: probe, versions, reboot and its confirmation."""

    @property
    def client_validity(self) -> ValidityLike | None: ...

    def probe_many(self, addresses: Sequence[str]) -> Mapping[str, ProbeLike]: ...

    def versions(self, addresses: Sequence[str]) -> Mapping[str, str]: ...

    def reboot(self, address: str, mode: str, *, node_name: str | None = None) -> RebootLike: ...

    def confirm_reboot(self, address: str, boot_id_before: str | None, *, within: float, interval: float,
                       on_wait: Callable[[float], None] | None = None, removing: bool = False) -> ObservationLike: ...


__all__ = ["CacheSnapshot", "ClusterWatch", "KubePort", "ObjectCache", "ObservationLike", "ProbeLike", "RebootLike",
           "TalosPort", "ValidityLike", "Waker"]
