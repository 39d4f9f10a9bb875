"""The fake CAPI controllers: one reconcile loop that plays CACPPT, the MachineDeployment, MachineSet and
Machine controllers and the infrastructure provider, for one simulated cluster.

Contract: all Kubernetes I/O goes through a :class:`~sim.capi.kube.Store`; all Talos node changes go
through a :class:`~sim.capi.cluster.NodeFleet`; every decision comes from the pure planners (``phases``,
``rollout``, ``faults``) fed with the simulated time of a :class:`~sim.capi.cluster.SimClock`. This module is
the Machine controller and infrastructure provider (a Machine's phases, its status, its fake Talos node, its
deletion), the user (bootstrap, the rollout trigger, scenario actions) and the loop; the owner controllers are
:mod:`sim.capi.owners`, the records and Machine creation they share :mod:`sim.capi.cluster`.
:meth:`Controllers.reconcile` is one
pass (list → plan → write) and returns when it next needs to run; its lists come from the store's watch cache
and its independent writes (statuses, Machine creations and deletions, finalizer removals) leave together at
the end of the pass (:meth:`~sim.capi.kube.Store.run_concurrently`); :meth:`Controllers.run` repeats it
until stopped, woken early by API watches and Talos reboots. The controller only touches objects it
created (label ``capi-rollout.dev/simulated=true``), removes its own finalizers and deletes a
MachineSet's machines itself (the test API server has no garbage collector).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from sim import objects as o
from sim.capi import faults as flt
from sim.capi.cluster import SimMachine
from sim.capi.owners import OwnerControllers
from sim.capi.phases import Progress, progress


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controllers(OwnerControllers):
    """The fake controllers of one simulated cluster (see the module docstring)."""

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
