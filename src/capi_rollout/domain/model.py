"""Typed, read-only views of the CAPI objects the rollout observes, from either API shape.

Contract: pure. ``*.from_obj(obj)`` reads a Kubernetes object dict as returned by the API server (either
``cluster.x-k8s.io/v1beta2`` or ``v1beta1``; TalosControlPlane ``v1alpha3``) and never fails on missing
optional fields: absent counters read as 0, absent conditions as ``None``. Field paths follow
``shared/domain-notes.md`` §1–§2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CLUSTER_NAME_LABEL = "cluster.x-k8s.io/cluster-name"
CONTROL_PLANE_LABEL = "cluster.x-k8s.io/control-plane"
DEPLOYMENT_NAME_LABEL = "cluster.x-k8s.io/deployment-name"
SET_NAME_LABEL = "cluster.x-k8s.io/set-name"
PAUSED_ANNOTATION = "cluster.x-k8s.io/paused"
SKIP_REMEDIATION_ANNOTATION = "cluster.x-k8s.io/skip-remediation"

Obj = Mapping[str, Any]


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 timestamp (``2026-01-02T03:04:05Z``) → aware datetime; None when absent or malformed."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _get(obj: Obj, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def api_version_of(obj: Obj) -> str:
    """The version part of ``apiVersion`` (``v1beta2`` for ``cluster.x-k8s.io/v1beta2``)."""
    return str(obj.get("apiVersion", "")).rpartition("/")[2]


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    since: datetime | None = None  # lastTransitionTime: when the status last changed

    @property
    def is_true(self) -> bool:
        return self.status == "True"


def conditions_of(obj: Obj) -> dict[str, Condition]:
    """Conditions by type; for v1beta1 objects the new-style ``status.v1beta2.conditions`` fill the gaps."""
    out: dict[str, Condition] = {}
    for raw in list(_get(obj, "status", "conditions") or []) + list(_get(obj, "status", "v1beta2", "conditions") or []):
        if isinstance(raw, Mapping) and raw.get("type") and raw["type"] not in out:
            out[str(raw["type"])] = Condition(
                type=str(raw["type"]),
                status=str(raw.get("status", "Unknown")),
                reason=str(raw.get("reason") or ""),
                message=str(raw.get("message") or ""),
                since=parse_time(raw.get("lastTransitionTime")),
            )
    return out


@dataclass(frozen=True)
class Meta:
    name: str
    namespace: str
    uid: str
    generation: int
    created: datetime | None
    deleting_since: datetime | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    controller_kind: str | None
    controller_name: str | None

    @classmethod
    def from_obj(cls, obj: Obj) -> Meta:
        md = obj.get("metadata") or {}
        controller = next(
            (ref for ref in md.get("ownerReferences") or [] if isinstance(ref, Mapping) and ref.get("controller")),
            None,
        )
        return cls(
            name=str(md.get("name", "")),
            namespace=str(md.get("namespace", "")),
            uid=str(md.get("uid", "")),
            generation=_int(md.get("generation")),
            created=parse_time(md.get("creationTimestamp")),
            deleting_since=parse_time(md.get("deletionTimestamp")),
            labels=dict(md.get("labels") or {}),
            annotations=dict(md.get("annotations") or {}),
            controller_kind=str(controller["kind"]) if controller else None,
            controller_name=str(controller["name"]) if controller else None,
        )

    @property
    def paused_by_annotation(self) -> bool:
        return PAUSED_ANNOTATION in self.annotations


@dataclass(frozen=True)
class Address:
    type: str
    address: str


class Machine:
    """A CAPI Machine as the rollout sees it.

    The fields every poll needs (name, role, phase, nodeRef, readiness, deletion) are read eagerly with plain
    dict lookups; everything else (metadata, conditions, addresses) is parsed on first use and kept. This is
    the hot path of an evaluation (``make bench``).
    """

    __slots__ = ("_address", "_addresses", "_conditions", "_meta", "deleting", "deployment", "is_control_plane",
                 "name", "node_name", "obj", "phase", "ready")

    def __init__(self, obj: Obj) -> None:
        # Hot path (once per Machine per poll): plain dict lookups only, no ABC isinstance checks.
        self.obj = obj
        md = obj.get("metadata") or _EMPTY
        status = obj.get("status") or _EMPTY
        labels = md.get("labels") or _EMPTY
        self.name: str = md.get("name", "")
        self.is_control_plane: bool = CONTROL_PLANE_LABEL in labels
        self.deployment: str | None = labels.get(DEPLOYMENT_NAME_LABEL)
        self.phase: str = status.get("phase") or "Unknown"
        node_ref = status.get("nodeRef")
        self.node_name: str | None = node_ref.get("name") or None if node_ref else None
        self.deleting: bool = "deletionTimestamp" in md and bool(md["deletionTimestamp"])
        self.ready: bool = _ready(status) if status else False
        self._meta: Meta | None = None
        self._conditions: Mapping[str, Condition] | None = None
        self._addresses: tuple[Address, ...] | None = None
        self._address: bool | str | None = False  # False = not computed yet

    @classmethod
    def from_obj(cls, obj: Obj) -> Machine:
        return cls(obj)

    def __repr__(self) -> str:
        return f"Machine({self.name!r}, phase={self.phase}, node={self.node_name}, ready={self.ready})"

    @property
    def meta(self) -> Meta:
        if self._meta is None:
            self._meta = Meta.from_obj(self.obj)
        return self._meta

    @property
    def conditions(self) -> Mapping[str, Condition]:
        if self._conditions is None:
            self._conditions = conditions_of(self.obj)
        return self._conditions

    @property
    def addresses(self) -> tuple[Address, ...]:
        if self._addresses is None:
            self._addresses = tuple(
                Address(str(a.get("type", "")), str(a.get("address", "")))
                for a in _get(self.obj, "status", "addresses") or []
                if isinstance(a, Mapping) and a.get("address")
            )
        return self._addresses

    @property
    def version(self) -> str | None:
        value = _get(self.obj, "spec", "version")
        return str(value) if value else None

    @property
    def failed(self) -> bool:
        return self.phase == "Failed"

    @property
    def healthy(self) -> bool:
        """Serving: not deleting, not failed, has a node and is Ready."""
        return self.ready and not self.deleting and self.node_name is not None and self.phase != "Failed"

    @property
    def address(self) -> str | None:
        """The address to dial Talos on: InternalIP, then ExternalIP, then a DNS name, then Hostname."""
        if self._address is False:
            self._address = next(
                (a.address for kind in ("InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS", "Hostname")
                 for a in self.addresses if a.type == kind),
                None,
            )
        return self._address  # type: ignore[return-value]

    @property
    def not_ready_since(self) -> datetime | None:
        """When a Machine with a node stopped being Ready (its Ready, else NodeHealthy, condition's
        lastTransitionTime); None when it is Ready, has no node, or the time is unknown."""
        if self.ready or self.node_name is None:
            return None
        cond = self.conditions.get("Ready") or self.conditions.get("NodeHealthy")
        return cond.since if cond is not None and not cond.is_true else None

    @property
    def identity(self) -> str | None:
        """The name the node answering Talos at :attr:`address` must report before it is rebooted: the nodeRef's
        name, else the Machine's ``Hostname`` address (set by infrastructure providers before a node exists);
        None when there is neither, and then nothing can prove the answering node is this Machine's."""
        if self.node_name:
            return self.node_name
        return next((a.address for a in self.addresses if a.type == "Hostname" and a.address), None)

    @property
    def skip_remediation(self) -> bool:
        return SKIP_REMEDIATION_ANNOTATION in ((self.obj.get("metadata") or {}).get("annotations") or {})


_EMPTY: dict[str, Any] = {}


def _ready(status: Mapping[str, Any]) -> bool:
    """Ready condition True; NodeHealthy as a fallback for providers that do not set Ready (either shape)."""
    fallback: bool | None = None
    for source in (status.get("conditions") or (), (status.get("v1beta2") or {}).get("conditions") or ()):
        for c in source:
            kind = c.get("type")
            if kind == "Ready":
                return bool(c.get("status") == "True")
            if kind == "NodeHealthy" and fallback is None:
                fallback = c.get("status") == "True"
    return bool(fallback)


@dataclass(frozen=True)
class Cluster:
    meta: Meta
    paused: bool
    control_plane_kind: str | None
    control_plane_name: str | None

    @classmethod
    def from_obj(cls, obj: Obj) -> Cluster:
        ref = _get(obj, "spec", "controlPlaneRef") or {}
        return cls(
            meta=Meta.from_obj(obj),
            paused=bool(_get(obj, "spec", "paused")),
            control_plane_kind=ref.get("kind"),
            control_plane_name=ref.get("name"),
        )


@dataclass(frozen=True)
class ControlPlane:
    """A TalosControlPlane (``controlplane.cluster.x-k8s.io/v1alpha3``)."""

    meta: Meta
    spec_replicas: int
    version: str | None
    strategy_type: str | None
    max_surge: int | str | None
    status_replicas: int
    ready_replicas: int
    unavailable_replicas: int
    observed_generation: int
    conditions: Mapping[str, Condition]

    @classmethod
    def from_obj(cls, obj: Obj) -> ControlPlane:
        strategy = _get(obj, "spec", "rolloutStrategy") or {}
        return cls(
            meta=Meta.from_obj(obj),
            spec_replicas=_int(_get(obj, "spec", "replicas")) if _get(obj, "spec", "replicas") is not None else 1,
            version=_get(obj, "spec", "version"),
            strategy_type=strategy.get("type"),
            max_surge=_get(strategy, "rollingUpdate", "maxSurge"),
            status_replicas=_int(_get(obj, "status", "replicas")),
            ready_replicas=_int(_get(obj, "status", "readyReplicas")),
            unavailable_replicas=_int(_get(obj, "status", "unavailableReplicas")),
            observed_generation=_int(_get(obj, "status", "observedGeneration")),
            conditions=conditions_of(obj),
        )

    @property
    def spec_up_to_date(self) -> Condition | None:
        return self.conditions.get("MachinesSpecUpToDate")


@dataclass(frozen=True)
class MachineDeployment:
    """A MachineDeployment in either shape; ``up_to_date`` is v1beta2 upToDateReplicas / v1beta1 updatedReplicas."""

    meta: Meta
    api_version: str
    spec_replicas: int
    paused: bool
    strategy_type: str | None
    max_surge: int | str | None
    max_unavailable: int | str | None
    replicas: int
    up_to_date: int
    ready: int
    available: int
    observed_generation: int
    conditions: Mapping[str, Condition] = field(default_factory=dict)

    @classmethod
    def from_obj(cls, obj: Obj) -> MachineDeployment:
        version = api_version_of(obj)
        if version == "v1beta1":
            strategy = _get(obj, "spec", "strategy") or {}
            up_to_date = _get(obj, "status", "updatedReplicas")
        else:
            strategy = _get(obj, "spec", "rollout", "strategy") or {}
            up_to_date = _get(obj, "status", "upToDateReplicas")
        rolling = strategy.get("rollingUpdate") or {}
        return cls(
            meta=Meta.from_obj(obj),
            api_version=version,
            spec_replicas=_int(_get(obj, "spec", "replicas")) if _get(obj, "spec", "replicas") is not None else 1,
            paused=bool(_get(obj, "spec", "paused")),
            strategy_type=strategy.get("type"),
            max_surge=rolling.get("maxSurge"),
            max_unavailable=rolling.get("maxUnavailable"),
            replicas=_int(_get(obj, "status", "replicas")),
            up_to_date=_int(up_to_date),
            ready=_int(_get(obj, "status", "readyReplicas")),
            available=_int(_get(obj, "status", "availableReplicas")),
            observed_generation=_int(_get(obj, "status", "observedGeneration")),
            conditions=conditions_of(obj),
        )


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Mapping[str, str]
    match_expressions: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_obj(cls, obj: Obj | None) -> LabelSelector:
        obj = obj or {}
        return cls(dict(obj.get("matchLabels") or {}), tuple(obj.get("matchExpressions") or ()))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes label-selector semantics (an empty selector matches everything)."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for expr in self.match_expressions:
            key, op, values = expr.get("key", ""), expr.get("operator", ""), list(expr.get("values") or [])
            present = key in labels
            if (
                (op == "In" and (not present or labels[key] not in values))
                or (op == "NotIn" and present and labels[key] in values)
                or (op == "Exists" and not present)
                or (op == "DoesNotExist" and present)
            ):
                return False
        return True


@dataclass(frozen=True)
class HealthCheck:
    """A MachineHealthCheck: which Machines of which cluster it selects."""

    meta: Meta
    cluster_name: str
    selector: LabelSelector

    @classmethod
    def from_obj(cls, obj: Obj) -> HealthCheck:
        return cls(
            meta=Meta.from_obj(obj),
            cluster_name=str(_get(obj, "spec", "clusterName") or ""),
            selector=LabelSelector.from_obj(_get(obj, "spec", "selector")),
        )

    def selects(self, machine: Machine) -> bool:
        return (
            machine.meta.labels.get(CLUSTER_NAME_LABEL) == self.cluster_name
            and self.selector.matches(machine.meta.labels)
        )


def machines_of_control_plane(machines: Sequence[Machine]) -> list[Machine]:
    return [m for m in machines if m.is_control_plane]


def machines_of_deployment(machines: Sequence[Machine], deployment: str) -> list[Machine]:
    return [m for m in machines if m.deployment == deployment and not m.is_control_plane]
