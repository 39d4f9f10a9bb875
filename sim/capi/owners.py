"""The fake owner controllers: CACPPT (TalosControlPlane) and CAPI's MachineDeployment and MachineSet controllers.

Contract: each pass reads the owners and their Machines from the store's cache, asks the pure planners
(:mod:`sim.capi.rollout`) what to do next, creates or deletes Machines and MachineSets through
:class:`~sim.capi.cluster.SimulatedCluster` and writes each owner's status only when it changed (deferred to the
end of the pass). Every decision is recorded in the timeline with its reason (``controller.delete``,
``machineset.scaled``, holds and their release).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

from sim import objects as o
from sim.capi import rollout
from sim.capi.cluster import SimulatedCluster
from sim.scenario import DeploymentSpec


class OwnerControllers(SimulatedCluster):
    """CACPPT and the MachineDeployment / MachineSet controllers (see the module docstring)."""

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
