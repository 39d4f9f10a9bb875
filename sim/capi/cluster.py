"""The simulator's state of one simulated cluster and how its Machines come to exist.

Contract: :class:`SimulatedCluster` holds what the API cannot (per-Machine :class:`SimMachine` records: timings,
armed faults, reboots; counters and ordinals; the simulated :class:`SimClock`), creates Machines and MachineSets
through the :class:`~sim.capi.kube.Store` with the scenario's faults armed as each Machine is born, and batches a
reconcile pass's independent writes (:meth:`SimulatedCluster._defer`, sent together by
:meth:`SimulatedCluster._flush`). It decides nothing: the owner controllers (:mod:`sim.capi.owners`) and the
Machine controller and loop (:mod:`sim.capi.controller`) build on it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sim import objects as o
from sim.capi import faults as flt
from sim.capi.kube import Store
from sim.scenario import DeploymentSpec, Fault, Scenario
from sim.timeline import Timeline


class NodeFleet(Protocol):
    """The part of :class:`sim.talos.FakeTalosFleet` the controllers use."""

    def add_node(self, name: str, address: str | None = None, *, talos_version: str = ..., stage: str = ...,
                 ready: bool = ...) -> Any: ...
    def remove_node(self, name: str) -> None: ...
    def set_maintenance(self, name: str) -> None: ...
    def set_unreachable(self, name: str, unreachable: bool) -> None: ...


class SimClock:
    """Simulated seconds since start: wall time multiplied by the scenario's time scale."""

    def __init__(self, scale: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.scale = scale
        self._monotonic = monotonic
        self._start = monotonic()

    def now(self) -> float:
        return (self._monotonic() - self._start) * self.scale

    def wall(self, sim_seconds: float) -> float:
        return sim_seconds / self.scale


@dataclass
class SimMachine:
    """The simulator's own record of one Machine (what the API cannot hold: timings, faults, reboots)."""

    name: str
    role: str  # "cp" | "worker"
    owner: str  # TalosControlPlane or MachineSet name
    deployment: str | None  # scenario MachineDeployment name (workers)
    ordinal: int | None  # rank among machines of its role created after the trigger; None before
    created_at: float
    jitter: float
    talos_version: str
    armed: list[flt.Armed] = field(default_factory=list)
    reboots: list[float] = field(default_factory=list)
    deleting_since: float | None = None
    node: Any = None
    last_signature: tuple[Any, ...] | None = None
    last_phase: str | None = None
    last_ready: bool = False
    last_stage: tuple[str, bool] | None = None
    unreachable: bool = False
    releasing: bool = False  # its finalizer removal is on its way

    def facts(self, reboot_duration: float) -> Any:
        return flt.facts(
            created_at=self.created_at, jitter=self.jitter, armed=self.armed, reboots=self.reboots,
            reboot_duration=reboot_duration, deleting_since=self.deleting_since,
        )


class SimulatedCluster:
    """The records and Machine creation shared by the fake controllers (see the module docstring)."""

    def __init__(
        self, store: Store, scenario: Scenario, *, fleet: NodeFleet | None, timeline: Timeline, clock: SimClock,
        min_interval: float = 0.01, max_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.s = scenario
        self.t = scenario.timings
        self.fleet = fleet
        self.timeline = timeline
        self.clock = clock
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.machines: dict[str, SimMachine] = {}
        self.errors: list[str] = []
        self.triggered_at: float | None = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._rng = random.Random(scenario.timings.seed)
        self._counters: dict[str, int] = {}
        self._ordinals: dict[str, int] = {}
        self._inherit: dict[str, list[Fault]] = {}
        self._rolling: dict[str, int] = {}  # object name -> generation whose rollout is in progress
        self._tcp_name = f"{scenario.cluster}-cp"
        self.cluster_uid = ""
        self.passes = 0
        # This pass's independent writes (statuses, creations, deletions, finalizer removals), sent together at
        # its end: (the write, what to do once it succeeded or None, what to do if it failed or None).
        self._deferred: list[tuple[Callable[[], Any], Callable[[], None] | None, Callable[[], None] | None]] = []
        self._actions = list(scenario.actions)  # not yet applied
        self._cp_version: str | None = None  # the TCP's status.version as last written
        self._cp_stable = True  # neither upgrading nor rolling (CAPI's ControlPlaneIsStable)
        self._held: set[str] = set()  # MachineDeployments / MachineSets whose hold was recorded

    # ------------------------------------------------------------------------------------------ names

    def md_name(self, d: DeploymentSpec) -> str:
        return f"{self.s.cluster}-{d.name}"

    @property
    def tcp_name(self) -> str:
        return self._tcp_name

    def _next(self, key: str) -> int:
        n = self._counters.get(key, 0)
        self._counters[key] = n + 1
        return n

    def _jitter(self) -> float:
        j = self.t.jitter
        return 1.0 + self._rng.uniform(-j, j) if j else 1.0

    def _arm(self, m: SimMachine, *, existing: bool) -> None:
        """Attach the scenario faults that target ``m`` (and faults inherited from a replaced machine)."""
        now = self.clock.now()
        for f in self.s.faults:
            ordinal = m.ordinal
            if f.target.deployment is not None and m.ordinal is not None:
                ordinal = self._ordinals.get(f"new-{m.role}-{m.deployment}", 0) - 1
            if not flt.matches(f, name=m.name, role=m.role, deployment=m.deployment, ordinal=ordinal):
                continue
            if existing and (f.kind == "slow" or f.when in ("mid", "at")):
                continue  # existing machines already booted: slowness is moot; `mid`/`at` faults arm at the trigger
            armed_at = m.created_at if not existing else min(now, 0.0)
            if f.when == "at" and self.triggered_at is not None:
                armed_at = max(armed_at, self.triggered_at + f.at)
            m.armed.append(flt.Armed(f, armed_at))
            self.timeline.record("fault.injected", m.name, fault=f.kind, when=f.when, recover=f.recover)
        family = m.owner if m.role == "cp" else (m.deployment or m.owner)
        for f in self._inherit.pop(family, []):
            m.armed.append(flt.Armed(f, m.created_at))
            self.timeline.record("fault.injected", m.name, fault=f.kind, when=f.when, recover=f.recover,
                                 inherited=True)

    def _register(self, m: SimMachine, *, existing: bool) -> None:
        with self._lock:
            self._arm(m, existing=existing)
            self.machines[m.name] = m
        self.timeline.record("machine.created", m.name, role=m.role, owner=m.owner,
                             **({"ordinal": m.ordinal} if m.ordinal is not None else {}))

    def _new_ordinal(self, role: str, deployment: str | None) -> int | None:
        if self.triggered_at is None:
            return None
        key = f"new-{role}"
        n = self._ordinals.get(key, 0)
        self._ordinals[key] = n + 1
        dkey = f"new-{role}-{deployment}"
        self._ordinals[dkey] = self._ordinals.get(dkey, 0) + 1
        return n

    def _create_cp_machine(self, tcp: Mapping[str, Any], *, created_at: float | None = None) -> None:
        s = self.s
        name = f"{s.cluster}-cp-{self._next('cp')}"
        talos = tcp["spec"].get("controlPlaneConfig", {}).get("controlplane", {}).get("talosVersion", s.talos_version)
        m = SimMachine(
            name=name, role="cp", owner=self.tcp_name, deployment=None,
            ordinal=self._new_ordinal("cp", None) if created_at is None else None,
            created_at=self.clock.now() if created_at is None else created_at, jitter=self._jitter(),
            talos_version=talos,
        )
        self._register(m, existing=created_at is not None)
        self.store.create("machines", o.machine(
            s.capi_line, name=name, namespace=s.namespace, cluster_name=s.cluster, owner=tcp,
            version=tcp["spec"]["version"], infra_template=tcp["spec"]["infrastructureTemplate"]["name"],
            labels={o.CONTROL_PLANE_LABEL: ""},
            annotations={o.SPEC_HASH_ANNOTATION: o.tcp_spec_hash(tcp)},
        ))

    def _create_machine_set(self, md: Mapping[str, Any], *, replicas: int) -> dict[str, Any]:
        name = f"{md['metadata']['name']}-r{self._next('ms-' + md['metadata']['name']) + 1}"
        ms = self.store.create("machinesets", o.machine_set(
            self.s.capi_line, name=name, namespace=self.s.namespace, md=md, replicas=replicas,
            hash_=o.template_hash(md["spec"]["template"]),
        ))
        self.timeline.record("machineset.created", name, deployment=md["metadata"]["name"], replicas=replicas)
        return ms

    def _create_worker_machine(
        self, ms: Mapping[str, Any], d: DeploymentSpec, *, created_at: float | None = None, defer: bool = False,
    ) -> None:
        s = self.s
        ms_name = ms["metadata"]["name"]
        name = f"{ms_name}-{self._next('m-' + ms_name)}"
        tpl = ms["spec"]["template"]["spec"]
        version = tpl.get("version", s.kubernetes_version)
        m = SimMachine(
            name=name, role="worker", owner=ms_name, deployment=d.name,
            ordinal=self._new_ordinal("worker", d.name) if created_at is None else None,
            created_at=self.clock.now() if created_at is None else created_at, jitter=self._jitter(),
            talos_version=s.target_talos_version if version == s.target_kubernetes_version else s.talos_version,
        )
        self._register(m, existing=created_at is not None)
        labels = {
            o.DEPLOYMENT_NAME_LABEL: self.md_name(d), o.SET_NAME_LABEL: ms_name,
            o.TEMPLATE_HASH_LABEL: ms["metadata"]["labels"][o.TEMPLATE_HASH_LABEL],
        }
        body = o.machine(
            s.capi_line, name=name, namespace=s.namespace, cluster_name=s.cluster, owner=ms, version=version,
            infra_template=_ref_name(tpl.get("infrastructureRef", {})), labels=labels,
        )
        if defer:
            self._defer(lambda: self.store.create("machines", body))
        else:
            self.store.create("machines", body)

    # ------------------------------------------------------------------------------------------ batched writes

    def _defer(self, write: Callable[[], Any], *, ok: Callable[[], None] | None = None,
               failed: Callable[[], None] | None = None) -> None:
        self._deferred.append((write, ok, failed))

    def _flush(self) -> bool:
        """Send this pass's deferred writes together; True if one failed (the next pass comes at once)."""
        deferred, self._deferred = self._deferred, []
        if not deferred:
            return False
        errors = self.store.run_concurrently([w for w, _, _ in deferred])
        for (_, ok, failed), error in zip(deferred, errors, strict=True):
            callback = ok if error is None else failed
            if callback is not None:
                callback()
        problems = [e for e in errors if e is not None and getattr(e, "status", None) != 404]
        for e in problems[:3]:
            self.errors.append(f"{type(e).__name__}: {str(e)[:300]}")
            self.timeline.record("sim.error", self.s.cluster, error=type(e).__name__)
        return bool(problems)


def _ref_name(ref: Mapping[str, Any]) -> str:
    return str(ref.get("name", ""))
