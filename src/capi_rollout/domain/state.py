"""One observation of a cluster: everything a decision needs, read from raw objects.

Contract: pure. :class:`ClusterState` is built from object dicts (as listed from the API server or a
snapshot file); :class:`NodeStatus` carries what Talos said about a node's address (the runner converts the
Talos adapter's probe results into it, so the domain never imports the adapter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from capi_rollout.domain.model import Cluster, ControlPlane, HealthCheck, Machine, MachineDeployment

MAINTENANCE = "maintenance"
RUNNING = "running"
UNREACHABLE = "unreachable"
UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class NodeStatus:
    """Talos's answer for one address: state is running, maintenance, booting, unreachable, denied or untrusted
    (its certificate is not one this tool may trust, and it is not Talos maintenance mode)."""

    address: str
    state: str
    detail: str = ""


def _name(m: Machine) -> str:
    return m.name


class MachineReader(Protocol):
    """Turns Machine objects into :class:`Machine` views; the rollout loop's reuses unchanged ones across polls
    (:class:`capi_rollout.observation.MachineViews`, a cache, so it lives outside the pure domain)."""

    def read(self, objs: Sequence[Mapping[str, Any]]) -> list[Machine]: ...


@dataclass(frozen=True)
class ClusterState:
    cluster: Cluster | None
    control_plane: ControlPlane
    deployments: tuple[MachineDeployment, ...]
    machines: tuple[Machine, ...]
    health_checks: tuple[HealthCheck, ...] = ()

    @classmethod
    def from_objects(
        cls,
        *,
        cluster: Mapping[str, Any] | None,
        control_plane: Mapping[str, Any],
        deployments: Sequence[Mapping[str, Any]] = (),
        machines: Sequence[Mapping[str, Any]] = (),
        health_checks: Sequence[Mapping[str, Any]] = (),
        views: MachineReader | None = None,
    ) -> ClusterState:
        return cls(
            cluster=Cluster.from_obj(cluster) if cluster is not None else None,
            control_plane=ControlPlane.from_obj(control_plane),
            deployments=tuple(sorted((MachineDeployment.from_obj(o) for o in deployments), key=lambda d: d.meta.name)),
            machines=tuple(sorted(views.read(machines) if views else [Machine(o) for o in machines], key=_name)),
            health_checks=tuple(HealthCheck.from_obj(o) for o in health_checks),
        )

    @cached_property
    def control_plane_machines(self) -> list[Machine]:
        return [m for m in self.machines if m.is_control_plane]

    @cached_property
    def _by_deployment(self) -> dict[str, list[Machine]]:
        index: dict[str, list[Machine]] = {d.meta.name: [] for d in self.deployments}
        for m in self.machines:
            if not m.is_control_plane and m.deployment in index:
                index[m.deployment].append(m)
        return index

    def deployment_machines(self, name: str) -> list[Machine]:
        return self._by_deployment.get(name, [])

    @cached_property
    def worker_machines(self) -> list[Machine]:
        return [m for ms in self._by_deployment.values() for m in ms]

    def phase_machines(self, phase: str) -> list[Machine]:
        return self.control_plane_machines if phase == "control-plane" else self.worker_machines
