"""The scenario kinds of issue 13, each played from its bundled file by the simulator on the in-memory store and on
the real local API server: a flapping node during a real stall, annotations/labels at a chosen moment, a Ready
node entering maintenance mode mid-rollout, control-plane-first rolling and CAPI's MachineSet preflight checks.

Bundled durations are kept; only the boot phases are shortened (:data:`FAST`), so each story takes seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from typing import Any

from capi_rollout.adapters.talos import ProbeState
from sim.scenario import Scenario
from sim.scenario_format import load
from sim.simulator import Simulator
from tests.sim.test_sim_scenarios import FAST, WAIT, completed, cond, make, sget, talos

__all__ = ["make"]  # the fixture, re-used


def bundled(name: str) -> Scenario:
    s = load(name)
    return dataclasses.replace(s, namespace=f"sim-{uuid.uuid4().hex[:8]}", timings=FAST).validate()


def ready(sim: Simulator, name: str) -> bool:
    c = cond(sget(sim, "machines", name), "Ready")
    return bool(c and c["status"] == "True")


def test_a_node_flaps_ready_not_ready_while_a_new_control_plane_node_really_stalls(make: Any) -> None:
    s = bundled("flap-during-stall")
    with make(s) as sim:
        sim.trigger_rollout()
        triggered = sim.now()
        sim.wait_until(lambda: len(sim.timeline.events("machine.not-ready", "demo-cp-2")) >= 3, WAIT)
        flips = [e.kind for e in sim.timeline.events("machine") if e.subject == "demo-cp-2"
                 and e.kind in ("machine.ready", "machine.not-ready") and e.sim_seconds >= triggered]
        assert flips.count("machine.not-ready") >= 3 and all(a != b for a, b in itertools.pairwise(flips)), flips
        # The stall is real meanwhile: the first new control-plane node joined but never became Ready.
        assert sget(sim, "machines", "demo-cp-3").get("status", {}).get("nodeRef")
        assert not ready(sim, "demo-cp-3") and not completed(sim, "demo-cp")


def test_an_action_annotates_and_labels_the_new_machine_once_it_exists(make: Any) -> None:
    s = bundled("skip-remediation")
    with make(s) as sim:
        assert "cluster.x-k8s.io/skip-remediation" not in (
            sget(sim, "machines", "demo-cp-0")["metadata"].get("annotations") or {})
        sim.trigger_rollout()
        sim.wait_until(lambda: "cluster.x-k8s.io/skip-remediation" in (
            sget(sim, "machines", "demo-cp-3").get("metadata", {}).get("annotations") or {}), WAIT)
        meta = sget(sim, "machines", "demo-cp-3")["metadata"]
        assert meta["annotations"]["cluster.x-k8s.io/skip-remediation"] == ""
        assert meta["labels"]["example.com/investigating"] == "true"
        event = sim.timeline.first("machine.annotated", "demo-cp-3")
        assert event is not None and event.details["cluster.x-k8s.io/skip-remediation"] == ""
        # Only that machine, once.
        assert [e.subject for e in sim.timeline.events("machine.annotated")] == ["demo-cp-3"]


def test_a_ready_node_enters_maintenance_mode_at_the_chosen_moment(make: Any) -> None:
    s = bundled("maintenance-mid")
    with make(s) as sim, talos(sim) as tc:
        before = time.time()
        sim.trigger_rollout()
        address = sim.node("demo-workers-r1-1").address
        assert ready(sim, "demo-workers-r1-1") and not sim.node("demo-workers-r1-1").maintenance
        assert tc.probe(address).state == ProbeState.RUNNING
        sim.wait_until(lambda: sim.node("demo-workers-r1-1").maintenance, WAIT)
        entered = sim.timeline.first("talos.maintenance", "demo-workers-r1-1")
        assert entered is not None
        assert (entered.wall - before) * s.timings.time_scale >= 119  # `at: 120` simulated seconds after the trigger
        sim.wait_until(lambda: tc.probe(address).state == ProbeState.MAINTENANCE, WAIT)  # its endpoint restarts
        sim.wait_until(lambda: not ready(sim, "demo-workers-r1-1"), WAIT)
        assert ready(sim, "demo-workers-r1-0")  # only the chosen machine


def test_control_plane_first_holds_the_machinedeployment_until_the_control_plane_is_rolled(make: Any) -> None:
    s = bundled("control-plane-first")
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: completed(sim, "demo-cp") and completed(sim, "demo-workers"), WAIT)
        held = sim.timeline.first("machinedeployment.held", "demo-workers")
        cp_done = sim.timeline.first("rollout.completed", "demo-cp")
        new_set = sim.timeline.first("machineset.created", "demo-workers-r2")
        assert held is not None and cp_done is not None and new_set is not None
        assert held.sim_seconds < cp_done.sim_seconds <= new_set.sim_seconds
        assert not [e for e in sim.timeline.events("machine.deleting") if e.subject.startswith("demo-workers")
                    and e.sim_seconds < cp_done.sim_seconds]


def test_machineset_preflight_creates_no_worker_while_the_control_plane_upgrades(make: Any) -> None:
    s = bundled("machineset-preflight")
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: completed(sim, "demo-cp") and completed(sim, "demo-workers"), WAIT)
        cp_done = sim.timeline.first("rollout.completed", "demo-cp")
        blocked = sim.timeline.first("machineset.preflight-blocked", "demo-workers-r2")
        assert cp_done is not None and blocked is not None
        assert "ControlPlaneIsStable" in blocked.details["reason"]
        new_workers = [e for e in sim.timeline.events("machine.created") if e.details.get("owner") == "demo-workers-r2"]
        assert new_workers and min(e.sim_seconds for e in new_workers) >= cp_done.sim_seconds
        # The old MachineSet still scaled down meanwhile (maxUnavailable 1): the workers ran one short.
        early = [e for e in sim.timeline.events("machine.deleting")
                 if e.subject.startswith("demo-workers-r1") and e.sim_seconds < cp_done.sim_seconds]
        assert early, sim.timeline.text()


def test_without_preflight_the_same_story_creates_workers_during_the_control_plane_rollout(make: Any) -> None:
    s = dataclasses.replace(bundled("machineset-preflight"), controllers=dataclasses.replace(
        load("machineset-preflight").controllers, machineset_preflight=False))
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: completed(sim, "demo-cp") and completed(sim, "demo-workers"), WAIT)
        cp_done = sim.timeline.first("rollout.completed", "demo-cp")
        assert cp_done is not None
        new_workers = [e for e in sim.timeline.events("machine.created") if e.details.get("owner") == "demo-workers-r2"]
        assert min(e.sim_seconds for e in new_workers) < cp_done.sim_seconds
        assert sim.timeline.first("machineset.preflight-blocked") is None
