"""The fake CAPI controllers: one reconcile loop that plays CACPPT, the MachineDeployment, MachineSet and
Machine controllers and the infrastructure provider, for one simulated cluster.

Contract: all Kubernetes I/O goes through a :class:`~sim.capi.kube.Store`; all Talos node changes go
through a :class:`NodeFleet`; every decision comes from the pure planners (``phases``, ``rollout``,
``faults``) fed with the simulated time of a :class:`SimClock`. :meth:`Controllers.reconcile` is one
pass (list → plan → write) and returns when it next needs to run; its lists come from the store's watch cache
and its independent writes (statuses, Machine creations and deletions, finalizer removals) leave together at
the end of the pass (:meth:`~sim.capi.kube.Store.run_concurrently`); :meth:`Controllers.run` repeats it
until stopped, woken early by API watches and Talos reboots. The controller only touches objects it
created (label ``capi-rollout.dev/simulated=true``), removes its own finalizers and deletes a
MachineSet's machines itself (the test API server has no garbage collector).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from sim import objects as o
from sim.capi import faults as flt
from sim.capi import rollout
from sim.capi.kube import Store
from sim.capi.phases import Progress, progress
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


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


class Controllers:
    """The fake controllers of one simulated cluster (see the module docstring)."""

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

    # ------------------------------------------------------------------------------------------ setup

    def bootstrap(self) -> None:
        """Create the cluster as it is before the rollout: every machine Running and Ready."""
        s, line = self.s, self.s.capi_line
        cl = self.store.create("clusters", o.cluster(line, s.cluster, s.namespace))
        self.cluster_uid = cl["metadata"]["uid"]
        self.store.patch_status("clusters", s.cluster, o.cluster_status(line, _iso_now()))
        tcp = self.store.create("taloscontrolplanes", o.talos_control_plane(
            name=self.tcp_name, namespace=s.namespace, cluster_name=s.cluster, replicas=s.cp_replicas,
            version=s.kubernetes_version, max_surge=s.cp_max_surge, talos_version=s.talos_version,
        ))
        settled = -(self.t.pending + self.t.provisioning + self.t.boot + self.t.node_ready) * 2 - 1
        for _ in range(s.cp_replicas):
            self._create_cp_machine(tcp, created_at=settled)
        for d in s.deployments:
            template = o.machine_template(
                line, cluster_name=s.cluster, namespace=s.namespace, version=s.kubernetes_version,
                infra_template=o.infra_template_name(s.cluster, d.name, 1),
                bootstrap_template=f"{s.cluster}-{d.name}",
            )
            md = self.store.create("machinedeployments", o.machine_deployment(
                line, name=self.md_name(d), namespace=s.namespace, cluster_name=s.cluster, replicas=d.replicas,
                max_surge=d.max_surge, max_unavailable=d.max_unavailable, strategy=d.strategy, template=template,
            ))
            ms = self._create_machine_set(md, replicas=d.replicas)
            for _ in range(d.replicas):
                self._create_worker_machine(ms, d, created_at=settled)
        self.reconcile()

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

    # ------------------------------------------------------------------------------------------ the user

    def trigger_rollout(self, trigger: str | None = None) -> None:
        """Change the specs as a GitOps commit would (the simulator acting as the *user*, not the engine)."""
        s = self.s
        trigger = trigger or s.trigger
        with self._lock:
            self.triggered_at = self.clock.now()
            for m in list(self.machines.values()):
                for f in s.faults:
                    if f.when in ("mid", "at") and f.kind != "slow" and f.target.machine == m.name:
                        m.armed.append(flt.Armed(f, self.triggered_at + (f.at if f.when == "at" else 0.0)))
                        self.timeline.record("fault.injected", m.name, fault=f.kind, when=f.when, recover=f.recover)
        if trigger in ("tcp-version", "both"):
            self.store.patch("taloscontrolplanes", self.tcp_name, {"spec": {
                "version": s.target_kubernetes_version,
                "infrastructureTemplate": {"name": o.infra_template_name(s.cluster, "cp", 2)},
                "controlPlaneConfig": {"controlplane": {"talosVersion": s.target_talos_version}},
            }})
        if trigger in ("md-template", "both"):
            for d in s.deployments:
                ref_key = "infrastructureRef"
                self.store.patch("machinedeployments", self.md_name(d), {"spec": {"template": {"spec": {
                    "version": s.target_kubernetes_version,
                    ref_key: {"name": o.infra_template_name(s.cluster, d.name, 2)},
                }}}})
        self.timeline.record("rollout.triggered", s.cluster, trigger=trigger)
        self.wake()

    # ------------------------------------------------------------------------------------------ Talos

    def on_reboot(self, node_name: str, mode: str = "", role: str = "") -> str | None:
        """A Talos reboot reached ``node_name``: record it and say how the node comes back —
        ``"maintenance"`` if a maintenance fault is in force once it is up again, else ``None`` (running;
        the next reconcile pass makes the node report whatever the phase model says, e.g. NotReady).

        Runs on the fake Talos loop: it takes no controller lock and never calls the fleet.
        """
        now = self.clock.now()
        m = self.machines.get(node_name)
        if m is None:
            return None
        m.reboots.append(now)
        factor = m.facts(self.t.reboot).factor
        back = now + self.t.reboot * factor
        maintenance = any(
            a.fault.kind == "maintenance" and (w := flt.window(a, m.reboots, self.t.reboot * factor)) is not None
            and w[0] <= back < w[1]
            for a in m.armed
        )
        self.timeline.record("sim.reboot", node_name, mode=mode, role=role,
                             outcome="maintenance" if maintenance else "running")
        self.wake()
        return "maintenance" if maintenance else None

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        """Reconcile until ``stop`` is set; each pass sleeps until its next due time or a wake-up."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                due = self.reconcile()
            except Exception as exc:  # the API hiccups (conflicts, a restarting server): retry soon
                self.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                self.timeline.record("sim.error", self.s.cluster, error=type(exc).__name__)
                due = self.clock.now() + self.clock.scale * 0.2
            wait = self.max_interval
            if due is not None:
                wait = min(wait, max(0.0, self.clock.wall(due - self.clock.now())))
            wait = max(wait, self.min_interval - (time.monotonic() - started))
            self._wake.wait(wait)
            self._wake.clear()

    def reconcile(self) -> float | None:
        """One pass over every simulated object; returns the simulated time it next needs to run."""
        self.passes += 1
        now = self.clock.now()
        iso = _iso_now()
        api_machines = {m["metadata"]["name"]: m for m in self.store.list("machines")}
        due: list[float] = []
        self._deferred = []
        for name, obj in api_machines.items():
            m = self.machines.get(name)
            if m is not None:
                nxt = self._reconcile_machine(m, obj, now, iso)
                if nxt is not None:
                    due.append(nxt)
        for name in [n for n, m in list(self.machines.items()) if n not in api_machines and m.last_signature]:
            self._forget(self.machines[name], "machine.deleted")
        self._apply_actions(api_machines, now)
        changed = self._reconcile_tcp(api_machines, now, iso)
        changed |= self._reconcile_deployments(api_machines, now, iso)
        if self._flush():
            return now
        if changed:
            return now
        return min(due) if due else None

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

    def _apply_actions(self, api_machines: Mapping[str, Mapping[str, Any]], now: float) -> None:
        """Scenario actions that are due: annotate / label their Machine (once it exists)."""
        if self.triggered_at is None or not self._actions:
            return
        for action in list(self._actions):
            if now < self.triggered_at + action.at:
                continue
            name = self._action_target(action.target)
            if name is None or name not in api_machines:
                continue
            meta = {k: dict(v) for k, v in (("annotations", action.annotations), ("labels", action.labels)) if v}
            self.store.patch("machines", name, {"metadata": meta})  # merge patch: a null value removes the key
            self._actions.remove(action)
            self.timeline.record("machine.annotated", name, **{k: "-" if v is None else v for k, v in
                                                               {**action.annotations, **action.labels}.items()})

    def _action_target(self, t: Any) -> str | None:
        if t.machine is not None:
            return str(t.machine)
        with self._lock:
            new = sorted((m for m in self.machines.values() if m.role == t.role and m.ordinal is not None
                          and (t.deployment is None or m.deployment == t.deployment)), key=lambda m: m.ordinal or 0)
        return new[t.ordinal].name if t.ordinal is not None and t.ordinal < len(new) else None

    def _forget(self, m: SimMachine, kind: str) -> None:
        with self._lock:
            self.machines.pop(m.name, None)
        if m.node is not None and self.fleet is not None:
            self.fleet.remove_node(m.name)
        self.timeline.record(kind, m.name)

    def _reconcile_machine(self, m: SimMachine, obj: Mapping[str, Any], now: float, iso: str) -> float | None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and m.deleting_since is None:
            m.deleting_since = now
            self.timeline.record("machine.deleting", m.name, phase=m.last_phase)
            family = m.owner if m.role == "cp" else (m.deployment or m.owner)
            for a in m.armed:
                if a.fault.recover == "never" and a.fault.kind != "stall-deletion":
                    self._inherit.setdefault(family, []).append(a.fault)
        factor = m.facts(self.t.reboot).factor
        reboot_dur = self.t.reboot * factor
        p = progress(m.facts(self.t.reboot), now, self.t)
        due = p.next_change
        if m.deleting_since is not None:
            done_at = m.deleting_since + self.t.deletion * factor
            stalled = flt.in_force(m.armed, "stall-deletion", m.reboots, now, reboot_dur)
            if not stalled and now >= done_at:
                if not m.releasing:
                    m.releasing = True
                    self._defer(partial(self.store.patch, "machines", m.name, {"metadata": {"finalizers": None}}),
                                ok=partial(self._forget, m, "machine.deleted"),
                                failed=partial(setattr, m, "releasing", False))
                return None
            if not stalled:
                due = done_at if due is None else min(due, done_at)
        retry = self._sync_node(m, p, now, reboot_dur)
        if retry is not None:
            due = retry if due is None else min(due, retry)
        address = m.node.address if m.node is not None else None
        sig = (p.phase, address, p.node_ref, p.ready, p.reason, m.deleting_since is not None)
        if sig != m.last_signature:
            status = o.machine_status(
                self.s.capi_line, phase=p.phase, address=address if p.has_addresses else None, hostname=m.name,
                node_ref=p.node_ref, ready=p.ready, reason=p.reason, now=iso,
                generation=int(meta.get("generation", 1)), deleting=m.deleting_since is not None,
            )
            old = obj.get("status", {})
            o.keep_transition_times(old.get("conditions"), status["conditions"])
            if "deprecated" in status:
                o.keep_transition_times(
                    old.get("deprecated", {}).get("v1beta1", {}).get("conditions"),
                    status["deprecated"]["v1beta1"]["conditions"],
                )
            self._defer(partial(self.store.patch_status, "machines", m.name, status),
                        failed=partial(setattr, m, "last_signature", None))  # a failed write: again next pass
            m.last_signature = sig
            if p.phase != m.last_phase:
                self.timeline.record("machine.phase", m.name, phase=p.phase)
                m.last_phase = p.phase
            if p.ready != m.last_ready:
                self.timeline.record("machine.ready" if p.ready else "machine.not-ready", m.name)
                m.last_ready = p.ready
        return due

    def _sync_node(self, m: SimMachine, p: Progress, now: float, reboot_dur: float) -> float | None:
        """Make the fake Talos node say what the phase model says; returns a retry time if it cannot yet.

        Never called with the controller lock held: fleet calls wait for the fleet loop, whose reboot
        callback (:meth:`on_reboot`) must be able to run meanwhile.
        """
        if self.fleet is None or p.talos_stage is None:
            return None
        if m.node is None:
            stage = "booting" if p.talos_stage == "rebooting" else p.talos_stage
            m.node = self.fleet.add_node(m.name, talos_version=m.talos_version, stage=stage, ready=p.ready)
        unreachable = flt.in_force(m.armed, "talos-unreachable", m.reboots, now, reboot_dur)
        if unreachable != m.unreachable:
            self.fleet.set_unreachable(m.name, unreachable)
            m.unreachable = unreachable
        if p.talos_stage == "rebooting" or unreachable:
            return None
        if not m.node.up:  # the fleet is still rebooting it: look again shortly
            return now + self.clock.scale * 0.05
        if p.talos_stage == "maintenance":
            if not m.node.maintenance:
                self.fleet.set_maintenance(m.name)
        elif (m.node.stage, m.node.ready) != (p.talos_stage, p.ready):
            m.node.set_stage(p.talos_stage, p.ready)
        return None

    # ------------------------------------------------------------------------------------------ CACPPT

    def _reconcile_tcp(self, api_machines: Mapping[str, Mapping[str, Any]], now: float, iso: str) -> bool:
        tcps = [t for t in self.store.list("taloscontrolplanes") if t["metadata"]["name"] == self.tcp_name]
        if not tcps:
            return False
        tcp = tcps[0]
        current = o.tcp_spec_hash(tcp)
        generation = int(tcp["metadata"].get("generation", 1))
        replicas = int(tcp["spec"].get("replicas", 1))
        strategy = tcp["spec"].get("rolloutStrategy") or {}
        max_surge = rollout.scaled_int_or_percent(
            (strategy.get("rollingUpdate") or {}).get("maxSurge", 1), replicas, round_up=True
        )
        views = []
        cp_objs = [m for m in api_machines.values() if o.CONTROL_PLANE_LABEL in m["metadata"].get("labels", {})]
        with self._lock:
            for obj in cp_objs:
                name = obj["metadata"]["name"]
                sm = self.machines.get(name)
                views.append(rollout.MachineView(
                    name, sm.created_at if sm else 0.0,
                    up_to_date=obj["metadata"].get("annotations", {}).get(o.SPEC_HASH_ANNOTATION) == current,
                    ready=bool(sm and sm.last_ready),
                    deleting=bool(obj["metadata"].get("deletionTimestamp")) or bool(sm and sm.deleting_since),
                ))
        step = rollout.plan_control_plane(views, replicas=replicas, max_surge=max_surge)
        outdated = any(not v.up_to_date for v in views if not v.deleting)
        self._track_rollout(self.tcp_name, generation, rolling=outdated or step.action != "done")
        changed = False
        if step.action == "create":
            self._create_cp_machine(tcp)
            changed = True
        elif step.action == "delete" and step.machine:
            self.timeline.record("controller.delete", step.machine, reason=step.reason)
            self.store.delete("machines", step.machine)
            changed = True
        ready = sum(1 for v in views if v.ready and not v.deleting)
        versions = [m["spec"].get("version", "") for m in cp_objs]
        self._cp_version = min(versions, key=_semver) if versions else tcp["spec"]["version"]
        self._cp_stable = rollout.control_plane_stable(
            spec_version=tcp["spec"]["version"], status_version=self._cp_version,
            rolling=outdated or step.action != "done" or changed,
        )
        status = o.tcp_status(
            replicas=len(views), ready_replicas=ready, unavailable=max(0, replicas - ready),
            up_to_date=not outdated and not changed, generation=generation,
            version=self._cp_version,
            selector=o.selector_string({o.CAPI_CLUSTER_LABEL: self.s.cluster, o.CONTROL_PLANE_LABEL: ""}),
            now=iso,
        )
        self._write_status("taloscontrolplanes", tcp, status)
        return changed

    def _track_rollout(self, name: str, generation: int, *, rolling: bool) -> None:
        if rolling and name not in self._rolling and self.triggered_at is not None:
            self._rolling[name] = generation
            self.timeline.record("rollout.started", name, generation=generation)
        elif not rolling and name in self._rolling:
            self.timeline.record("rollout.completed", name, generation=self._rolling.pop(name))

    def _write_status(self, plural: str, obj: Mapping[str, Any], status: dict[str, Any]) -> None:
        old = obj.get("status") or {}
        if "conditions" in status:
            o.keep_transition_times(old.get("conditions"), status["conditions"])
        if _strip_times(old) != _strip_times(status):
            name = obj["metadata"]["name"]
            self._defer(lambda: self.store.patch_status(plural, name, status))

    # ------------------------------------------------------------------------------------------ MD + MS

    def _reconcile_deployments(self, api_machines: Mapping[str, Mapping[str, Any]], now: float, iso: str) -> bool:
        changed = False
        mds = {m["metadata"]["name"]: m for m in self.store.list("machinedeployments")}
        sets = self.store.list("machinesets")
        by_set: dict[str, list[Mapping[str, Any]]] = {}
        for m in api_machines.values():
            set_name = m["metadata"].get("labels", {}).get(o.SET_NAME_LABEL)
            if set_name:
                by_set.setdefault(set_name, []).append(m)
        for d in self.s.deployments:
            md = mds.get(self.md_name(d))
            if md is None:
                continue
            changed |= self._reconcile_md(md, d, [s for s in sets if _owned_by(s, md)], by_set, iso)
        return changed

    def _set_views(self, sets: list[dict[str, Any]], by_set: Mapping[str, list[Mapping[str, Any]]],
                   current: str) -> list[rollout.SetView]:
        views = []
        with self._lock:
            for s in sets:
                live = [m for m in by_set.get(s["metadata"]["name"], []) if not m["metadata"].get("deletionTimestamp")]
                available = sum(1 for m in live if (sm := self.machines.get(m["metadata"]["name"])) and sm.last_ready)
                views.append(rollout.SetView(
                    s["metadata"]["name"], _created(s),
                    s["metadata"].get("labels", {}).get(o.TEMPLATE_HASH_LABEL) == current,
                    int(s["spec"].get("replicas", 0)), available,
                ))
        return views

    def _reconcile_md(
        self, md: dict[str, Any], d: DeploymentSpec, sets: list[dict[str, Any]],
        by_set: Mapping[str, list[Mapping[str, Any]]], iso: str,
    ) -> bool:
        changed = False
        current = o.template_hash(md["spec"]["template"])
        generation = int(md["metadata"].get("generation", 1))
        replicas = int(md["spec"].get("replicas", 1))
        held = False
        if not any(s["metadata"].get("labels", {}).get(o.TEMPLATE_HASH_LABEL) == current for s in sets):
            held = bool(sets) and self.s.controllers.order == "control-plane-first" and not self._cp_stable
            if not held:
                sets.append(self._create_machine_set(md, replicas=0 if sets else replicas))
                changed = True
        self._note_hold(md["metadata"]["name"], "machinedeployment.held",
                        "control-plane-first: the rollout waits until the control plane is rolled out" if held
                        else None)
        strat = o.md_strategy(md)
        views = self._set_views(sets, by_set, current)
        scales = [] if held else rollout.plan_deployment(
            views, replicas=replicas, max_surge=strat["maxSurge"], max_unavailable=strat["maxUnavailable"],
            strategy=strat["type"],
        )
        for sc in scales:
            self._defer(partial(self.store.patch, "machinesets", sc.machine_set, {"spec": {"replicas": sc.replicas}}))
            self.timeline.record("machineset.scaled", sc.machine_set, replicas=sc.replicas, reason=sc.reason)
            sets = [{**s, "spec": {**s["spec"], "replicas": sc.replicas}} if s["metadata"]["name"] == sc.machine_set
                    else s for s in sets]  # objects from the store's cache are shared: never changed in place
            changed = True
        for s in sets:
            changed |= self._reconcile_ms(s, d, by_set.get(s["metadata"]["name"], []))
        # Status
        all_machines = [m for s in sets for m in by_set.get(s["metadata"]["name"], [])]
        new_sets = {s["metadata"]["name"] for s in sets if s["metadata"].get("labels", {}).get(o.TEMPLATE_HASH_LABEL)
                    == current}
        with self._lock:
            ready_names = {n for n, sm in self.machines.items() if sm.last_ready and sm.deleting_since is None}
        live = [m for m in all_machines if not m["metadata"].get("deletionTimestamp")]
        up_to_date = sum(1 for m in live if m["metadata"]["labels"].get(o.SET_NAME_LABEL) in new_sets)
        ready = sum(1 for m in live if m["metadata"]["name"] in ready_names)
        rolling = any(int(s["spec"].get("replicas", 0)) > 0 or by_set.get(s["metadata"]["name"])
                      for s in sets if s["metadata"]["name"] not in new_sets)
        self._track_rollout(md["metadata"]["name"], generation, rolling=bool(rolling) or up_to_date < replicas)
        status = o.md_status(
            self.s.capi_line, replicas=len(all_machines), up_to_date=up_to_date, ready=ready, available=ready,
            desired=replicas, generation=generation,
            selector=o.selector_string(md["spec"]["selector"]["matchLabels"]), now=iso, rolling=bool(rolling),
        )
        self._write_status("machinedeployments", md, status)
        # Old sets that are empty and scaled to zero are removed, as CAPI's MachineDeployment sync does.
        for s in sets:
            name = s["metadata"]["name"]
            if name not in new_sets and int(s["spec"].get("replicas", 0)) == 0 and not by_set.get(name):
                self.store.delete("machinesets", name)
                self.timeline.record("machineset.deleted", name)
        return changed

    def _reconcile_ms(self, ms: dict[str, Any], d: DeploymentSpec, machines: list[Mapping[str, Any]]) -> bool:
        with self._lock:
            views = [
                rollout.MachineView(
                    m["metadata"]["name"], sm.created_at if (sm := self.machines.get(m["metadata"]["name"])) else 0.0,
                    ready=bool(sm and sm.last_ready),
                    deleting=bool(m["metadata"].get("deletionTimestamp")) or bool(sm and sm.deleting_since),
                )
                for m in machines
            ]
        plan = rollout.plan_machine_set(views, replicas=int(ms["spec"].get("replicas", 0)))
        blocked = None
        if plan.create and self.s.controllers.machineset_preflight:
            blocked = rollout.machineset_preflight(
                cp_stable=self._cp_stable, cp_version=self._cp_version,
                machine_version=str(ms["spec"]["template"]["spec"].get("version", "")),
            )
        self._note_hold(ms["metadata"]["name"], "machineset.preflight-blocked", blocked)
        for _ in range(0 if blocked else plan.create):
            self._create_worker_machine(ms, d, defer=True)
        for name in plan.delete:
            self.timeline.record("controller.delete", name, reason=plan.reason)
            self._defer(partial(self.store.delete, "machines", name))
        live = [v for v in views if not v.deleting]
        ready = sum(1 for v in live if v.ready)
        status = o.ms_status(
            self.s.capi_line, replicas=len(views), ready=ready, available=ready,
            up_to_date=len(live), generation=int(ms["metadata"].get("generation", 1)),
            selector=o.selector_string(ms["spec"]["selector"]["matchLabels"]),
        )
        self._write_status("machinesets", ms, status)
        return bool((plan.create and not blocked) or plan.delete)

    def _note_hold(self, name: str, kind: str, reason: str | None) -> None:
        """Record when ``name`` starts being held (``reason``) and when it is released, once each."""
        if reason is not None and name not in self._held:
            self._held.add(name)
            self.timeline.record(kind, name, reason=reason)
        elif reason is None and name in self._held:
            self._held.discard(name)
            self.timeline.record(kind.rsplit(".", 1)[0] + ".released", name)


def _ref_name(ref: Mapping[str, Any]) -> str:
    return str(ref.get("name", ""))


def _owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = owner["metadata"].get("uid")
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences", []))


def _created(obj: Mapping[str, Any]) -> float:
    ts = obj["metadata"].get("creationTimestamp")
    if not ts:
        return 0.0
    return dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


def _semver(v: str) -> tuple[float, ...]:
    core = v.lstrip("v").split("-")[0].split("+")[0]
    try:
        return tuple(float(x) for x in core.split("."))
    except ValueError:
        return (math.inf,)


def _strip_times(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value
