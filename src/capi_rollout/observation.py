"""How the rollout loop (and ``capi-rollout plan``) observe one cluster: the objects its targets name, as state.

Contract:

* :func:`observe_objects` is the one rule from raw objects to an :class:`Observation`: the Cluster, the
  TalosControlPlane the targets name (matched by name, never "the first one listed"), the MachineDeployments the
  targets name, the cluster's Machines (and MachineHealthChecks when given) as a
  :class:`~capi_rollout.domain.state.ClusterState`. :class:`~capi_rollout.step_table.StepFailed` when the Cluster
  or that TalosControlPlane is gone. ``plan`` feeds it a snapshot's objects (or the same live reads), so it sees
  what the loop would.
* :class:`Observer` reads those objects for the loop: from an
  :class:`~capi_rollout.ports.ObjectCache` while it is synced, else with four direct reads (get
  Cluster, list TalosControlPlanes, MachineDeployments and Machines by the cluster-name label); ``last_read``
  says where the last observation came from ("cache" or "lists").
* :class:`MachineViews` is the observer's cache of Machine views across polls (by ``resourceVersion``): mutable,
  so it lives here and not in the pure domain.
* :func:`default_watch` is the loop's default change watcher: the informers' cache (it needs the real adapter).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capi_rollout.domain.model import CLUSTER_NAME_LABEL, Machine
from capi_rollout.domain.resolve import Targets
from capi_rollout.domain.state import ClusterState, MachineReader
from capi_rollout.step_table import StepFailed

if TYPE_CHECKING:  # the adapters load only for the loop's reads: ``plan -f`` needs the rule, not the client
    from capi_rollout.ports import KubePort, ObjectCache, Waker

log = logging.getLogger("capi_rollout")


class MachineViews:
    """Reuses :class:`Machine` views across polls for objects whose ``resourceVersion`` has not changed.

    Reading a Machine is the hot path of an evaluation; between two polls most Machines are unchanged, so
    the observer keeps one of these. Only the current poll's views are kept (memory stays bounded); objects
    without a ``resourceVersion`` (snapshot files) are always read afresh.
    """

    def __init__(self) -> None:
        self._views: dict[tuple[str, str], Machine] = {}
        self.reused = 0

    def read(self, objs: Sequence[Mapping[str, Any]]) -> list[Machine]:
        fresh: dict[tuple[str, str], Machine] = {}
        out: list[Machine] = []
        views = self._views
        reused = 0
        for obj in objs:
            md = obj.get("metadata") or {}
            version = md.get("resourceVersion")
            if version:
                key = (md.get("uid") or md.get("name", ""), version)
                m = views.get(key)
                if m is None:
                    m = Machine(obj)
                else:
                    reused += 1
                fresh[key] = m
            else:
                m = Machine(obj)
            out.append(m)
        self._views = fresh
        self.reused = reused
        return out


@dataclass(frozen=True)
class Observation:
    cluster: dict[str, Any]
    control_plane: dict[str, Any]  # the TalosControlPlane the targets name
    deployments: list[dict[str, Any]]  # the MachineDeployments the targets name
    state: ClusterState


def pick(targets: Targets, *, cluster: Mapping[str, Any] | None, control_planes: Sequence[Mapping[str, Any]],
         deployments: Sequence[Mapping[str, Any]],
         ) -> tuple[Mapping[str, Any], Mapping[str, Any], list[Mapping[str, Any]]]:
    """The Cluster, the TalosControlPlane the targets name and their MachineDeployments among those given;
    :class:`StepFailed` when the Cluster or that TalosControlPlane is gone."""
    t = targets
    if cluster is None:
        raise StepFailed(f"Cluster {t.namespace}/{t.cluster} disappeared during the rollout")
    tcp = next((o for o in control_planes if o["metadata"]["name"] == t.control_plane), None)
    if tcp is None:
        raise StepFailed(f"TalosControlPlane {t.namespace}/{t.control_plane} disappeared during the rollout")
    return cluster, tcp, [o for o in deployments if o["metadata"]["name"] in t.deployments]


def observe_objects(targets: Targets, *, cluster: Mapping[str, Any] | None,
                    control_planes: Sequence[Mapping[str, Any]], deployments: Sequence[Mapping[str, Any]],
                    machines: Sequence[Mapping[str, Any]], health_checks: Sequence[Mapping[str, Any]] = (),
                    views: MachineReader | None = None) -> Observation:
    """The targets' objects among those given, as state (see :func:`pick`)."""
    found, tcp, mds = pick(targets, cluster=cluster, control_planes=control_planes, deployments=deployments)
    return _observation(found, tcp, mds, machines, health_checks, views)


def _observation(cluster: Mapping[str, Any], tcp: Mapping[str, Any], mds: Sequence[Mapping[str, Any]],
                 machines: Sequence[Mapping[str, Any]], health_checks: Sequence[Mapping[str, Any]],
                 views: MachineReader | None) -> Observation:
    state = ClusterState.from_objects(cluster=cluster, control_plane=tcp, deployments=mds,
                                      machines=machines, health_checks=health_checks, views=views)
    return Observation(dict(cluster), dict(tcp), [dict(o) for o in mds], state)


class Observer:
    """The loop's reads of one cluster: from a synced cache, else with direct reads."""

    def __init__(self, kube: KubePort) -> None:
        self.kube = kube
        self.views = MachineViews()
        self.last_read = ""  # "cache" or "lists": where the last observation came from

    def observe(self, targets: Targets, *, with_health_checks: bool = False,
                cache: ObjectCache | None = None) -> Observation:
        """One observation: from ``cache`` when it is synced, else with four direct reads (get + 3 lists)."""
        t = targets
        selector = f"{CLUSTER_NAME_LABEL}={t.cluster}"
        if cache is not None and cache.synced:
            snap = cache.snapshot()
            cluster, tcps, mds = snap.cluster, snap.control_planes, snap.deployments
            machines: Sequence[Mapping[str, Any]] = snap.machines
            self.last_read = "cache"
        else:
            if cache is not None and self.last_read == "cache":
                log.info("cache not in sync (%s): reading with lists", cache.failure or "watch reconnecting")
            cluster = self.kube.get_cluster(t.namespace, t.cluster)
            tcps = self.kube.list_control_planes(t.namespace, selector) if cluster is not None else []
            mds = self.kube.list_machine_deployments(t.namespace, selector) if cluster is not None else []
            machines = self.kube.list_machines(t.namespace, selector) if cluster is not None else []
            self.last_read = "lists"
        found, tcp, targeted = pick(t, cluster=cluster, control_planes=tcps, deployments=mds)
        mhcs = self.kube.list_health_checks(t.namespace) if with_health_checks else []
        return _observation(found, tcp, targeted, machines, mhcs, self.views)


def default_watch(kube: KubePort, namespace: str, cluster: str) -> AbstractContextManager[Waker]:
    """The loop's default ``watch``: the informers' :func:`~capi_rollout.adapters.informer.cluster_cache`, which
    needs the real Kubernetes adapter (a fake Kubernetes comes with its own ``watch``)."""
    from capi_rollout.adapters.informer import cluster_cache
    from capi_rollout.adapters.kube import Kube

    if not isinstance(kube, Kube):
        raise TypeError(f"the informer cache needs capi_rollout.adapters.kube.Kube, not {type(kube).__name__}: "
                        "pass a watch")
    cache: AbstractContextManager[ObjectCache] = cluster_cache(kube, namespace, cluster, label=CLUSTER_NAME_LABEL)
    return cache  # the informers' cache is an ObjectCache (checked here), so a Waker
