"""The simulator's pure parts: phase progression, rollout arithmetic, fault windows, scenario parsing."""

from __future__ import annotations

import math

import pytest

from sim.capi import faults, rollout
from sim.capi.phases import MachineFacts, Window, progress
from sim.scenario import Fault, ScenarioError, Target, Timings
from sim.scenario_format import bundled, from_dict, load

T = Timings(pending=1, provisioning=10, boot=20, node_ready=5, deletion=3, reboot=4)


# ------------------------------------------------------------------ phases


@pytest.mark.parametrize(
    ("now", "phase", "node_ref", "ready", "stage"),
    [
        (0.5, "Pending", False, False, None),
        (2, "Provisioning", False, False, "installing"),
        (12, "Provisioned", False, False, "booting"),
        (32, "Running", True, False, "running"),
        (36, "Running", True, True, "running"),
    ],
)
def test_a_machine_moves_through_the_phases_in_order(now: float, phase: str, node_ref: bool, ready: bool,
                                                     stage: str | None) -> None:
    p = progress(MachineFacts(created_at=0), now, T)
    assert (p.phase, p.node_ref, p.ready, p.talos_stage) == (phase, node_ref, ready, stage)


def test_next_change_is_the_next_phase_boundary_and_none_once_settled() -> None:
    assert progress(MachineFacts(created_at=0), 2, T).next_change == 11
    assert progress(MachineFacts(created_at=0), 40, T).next_change is None


def test_the_factor_stretches_every_phase() -> None:
    assert progress(MachineFacts(created_at=0, factor=2), 30, T).phase == "Provisioned"


def test_a_held_provisioning_never_gets_a_node_ref() -> None:
    p = progress(MachineFacts(created_at=0, hold_provisioning_until=math.inf), 10_000, T)
    assert (p.phase, p.node_ref, p.has_addresses) == ("Provisioning", False, True)
    assert "stalled" in p.reason


def test_maintenance_before_joining_holds_the_machine_provisioned_in_maintenance() -> None:
    p = progress(MachineFacts(created_at=0, unready=(Window(0, math.inf, maintenance=True),)), 500, T)
    assert (p.phase, p.node_ref, p.talos_stage) == ("Provisioned", False, "maintenance")


def test_a_reboot_takes_the_node_down_for_the_reboot_duration() -> None:
    f = MachineFacts(created_at=0, reboots=(50,))
    assert progress(f, 51, T).talos_stage == "rebooting"
    assert not progress(f, 51, T).ready
    assert progress(f, 54.5, T).ready


def test_deletion_shows_the_deleting_phase() -> None:
    assert progress(MachineFacts(created_at=0, deleting_since=40), 41, T).phase == "Deleting"


# ------------------------------------------------------------------ rollout arithmetic


def cp(name: str, created: float, *, new: bool = False, ready: bool = True, deleting: bool = False
       ) -> rollout.MachineView:
    return rollout.MachineView(name, created, up_to_date=new, ready=ready, deleting=deleting)


def test_cp_with_max_surge_0_deletes_the_oldest_outdated_machine_first() -> None:
    step = rollout.plan_control_plane([cp("a", 1), cp("b", 2), cp("c", 3)], replicas=3, max_surge=0)
    assert (step.action, step.machine) == ("delete", "a")
    assert "3 machines ≥ 3 spec.replicas + 0 maxSurge" in step.reason


def test_cp_creates_the_replacement_once_a_machine_is_gone() -> None:
    step = rollout.plan_control_plane([cp("b", 2), cp("c", 3), cp("a", 1, deleting=True)], replicas=3, max_surge=0)
    assert step.action == "create"


def test_cp_waits_for_a_deletion_before_deleting_the_next_one() -> None:
    machines = [cp("b", 2), cp("c", 3), cp("d", 4, new=True), cp("a", 1, deleting=True)]
    assert rollout.plan_control_plane(machines, replicas=3, max_surge=0).action == "wait"


def test_cp_waits_while_a_new_machine_is_not_ready() -> None:
    machines = [cp("b", 2), cp("c", 3), cp("d", 4, new=True, ready=False)]
    step = rollout.plan_control_plane(machines, replicas=3, max_surge=0)
    assert step.action == "wait" and "d" in step.reason


def test_cp_with_max_surge_1_scales_up_first() -> None:
    step = rollout.plan_control_plane([cp("a", 1), cp("b", 2), cp("c", 3)], replicas=3, max_surge=1)
    assert step.action == "create"


def test_cp_is_done_when_all_are_up_to_date_and_ready() -> None:
    machines = [cp("d", 4, new=True), cp("e", 5, new=True), cp("f", 6, new=True)]
    assert rollout.plan_control_plane(machines, replicas=3, max_surge=0).action == "done"


@pytest.mark.parametrize(
    ("value", "total", "up", "expected"),
    [(1, 3, True, 1), ("25%", 3, True, 1), ("25%", 3, False, 0), ("50%", 4, False, 2), ("100%", 3, True, 3)],
)
def test_int_or_percent_resolves_like_upstream(value: int | str, total: int, up: bool, expected: int) -> None:
    assert rollout.scaled_int_or_percent(value, total, round_up=up) == expected


def test_md_rolling_update_surges_the_new_set_then_scales_the_old_one_down() -> None:
    sets = [rollout.SetView("old", 1, False, 3, 3), rollout.SetView("new", 2, True, 0, 0)]
    out = rollout.plan_deployment(sets, replicas=3, max_surge=1, max_unavailable=0, strategy="RollingUpdate")
    assert [(s.machine_set, s.replicas) for s in out] == [("new", 1)]
    sets = [rollout.SetView("old", 1, False, 3, 3), rollout.SetView("new", 2, True, 1, 1)]
    out = rollout.plan_deployment(sets, replicas=3, max_surge=1, max_unavailable=0, strategy="RollingUpdate")
    assert [(s.machine_set, s.replicas) for s in out] == [("old", 2)]


def test_md_never_goes_below_replicas_minus_max_unavailable() -> None:
    # the new machine is not available yet: the old set must keep all 3
    sets = [rollout.SetView("old", 1, False, 3, 3), rollout.SetView("new", 2, True, 1, 0)]
    out = rollout.plan_deployment(sets, replicas=3, max_surge=1, max_unavailable=0, strategy="RollingUpdate")
    assert out == []


def test_md_with_max_unavailable_scales_down_without_surging() -> None:
    sets = [rollout.SetView("old", 1, False, 3, 3), rollout.SetView("new", 2, True, 0, 0)]
    out = rollout.plan_deployment(sets, replicas=3, max_surge=0, max_unavailable=1, strategy="RollingUpdate")
    assert [(s.machine_set, s.replicas) for s in out] == [("old", 2)]


def test_machine_set_replaces_a_deleted_machine_and_removes_unready_surplus_first() -> None:
    ms = [cp("a", 1), cp("b", 2, deleting=True)]
    assert rollout.plan_machine_set(ms, replicas=2).create == 1
    plan = rollout.plan_machine_set([cp("a", 1), cp("b", 2, ready=False), cp("c", 3)], replicas=2)
    assert plan.delete == ("b",)


# ------------------------------------------------------------------ faults


def test_ordinal_targets_only_the_nth_new_machine_of_the_role() -> None:
    f = Fault(kind="node-not-ready", target=Target(role="cp", ordinal=1))
    assert faults.matches(f, name="x", role="cp", deployment=None, ordinal=1)
    assert not faults.matches(f, name="x", role="cp", deployment=None, ordinal=0)
    assert not faults.matches(f, name="x", role="worker", deployment="w", ordinal=1)
    assert not faults.matches(f, name="x", role="cp", deployment=None, ordinal=None)


def test_a_named_target_matches_only_that_machine() -> None:
    f = Fault(kind="maintenance", target=Target(machine="demo-cp-1"), when="before")
    assert faults.matches(f, name="demo-cp-1", role="cp", deployment=None, ordinal=None)
    assert not faults.matches(f, name="demo-cp-2", role="cp", deployment=None, ordinal=None)


@pytest.mark.parametrize(
    ("recover", "reboots", "expected_end"),
    [("after-reboot", [20.0], 24.0), ("after-n-reboots", [20.0], math.inf), ("after-n-reboots", [20.0, 30.0], 34.0),
     ("never", [20.0, 30.0], math.inf), ("after-replacement", [20.0], math.inf)],
)
def test_fault_windows_heal_per_recovery_policy(recover: str, reboots: list[float], expected_end: float) -> None:
    armed = faults.Armed(Fault(kind="node-not-ready", recover=recover, reboots=2), armed_at=10)
    assert faults.window(armed, reboots, 4.0) == (10, expected_end)


def test_an_after_reboot_fault_starts_with_the_first_reboot() -> None:
    armed = faults.Armed(Fault(kind="maintenance", when="after-reboot", recover="never"), armed_at=0)
    assert faults.window(armed, [], 4.0) is None
    assert faults.starts_on_reboot(armed, [], 7.0)
    assert faults.window(armed, [7.0], 4.0) == (7.0, math.inf)


def test_a_reboot_heals_a_stalled_provisioning_and_the_boot_resumes() -> None:
    armed = [faults.Armed(Fault(kind="stall-provisioning", recover="after-reboot"), armed_at=0)]
    stuck = faults.facts(created_at=0, jitter=1, armed=armed, reboots=[], reboot_duration=4)
    assert progress(stuck, 1000, T).phase == "Provisioning"
    healed = faults.facts(created_at=0, jitter=1, armed=armed, reboots=[100], reboot_duration=4)
    assert progress(healed, 110, T).phase == "Provisioned"
    assert progress(healed, 130, T).ready


def test_slow_multiplies_durations() -> None:
    armed = [faults.Armed(Fault(kind="slow", factor=10), armed_at=0)]
    f = faults.facts(created_at=0, jitter=1, armed=armed, reboots=[], reboot_duration=4)
    assert progress(f, 100, T).phase == "Provisioning"


# ------------------------------------------------------------------ scenarios


def test_every_bundled_scenario_parses() -> None:
    assert bundled(), "sim/scenarios/ ships examples"
    for name in bundled():
        assert load(name).name == name


def test_a_scenario_names_every_problem_at_once() -> None:
    with pytest.raises(ScenarioError) as err:
        from_dict({
            "cluster": "Bad_Name", "capi_line": "v1.9", "trigger": "all",
            "faults": [{"kind": "explode", "target": {"role": "cp", "ordinal": 0}}],
        })
    text = str(err.value)
    for needle in ("cluster", "capi_line", "trigger", "explode"):
        assert needle in text


def test_a_scenario_rejects_unknown_keys() -> None:
    with pytest.raises(ScenarioError, match="maxSurge"):
        from_dict({"deployments": [{"name": "w", "maxSurge": 1}]})


def test_a_scenario_reads_faults_and_the_n_reboots_shorthand() -> None:
    s = from_dict({
        "cluster": "demo", "control_plane": {"replicas": 3},
        "faults": [{"kind": "node-not-ready", "target": {"role": "cp", "ordinal": 0},
                    "recover": {"after-n-reboots": 2}}],
    })
    assert s.faults[0].recover == "after-n-reboots" and s.faults[0].reboots == 2
    assert s.faults[0].target.ordinal == 0


def test_both_surge_and_unavailable_zero_is_rejected() -> None:
    with pytest.raises(ScenarioError, match="both be 0"):
        from_dict({"deployments": [{"name": "w", "max_surge": 0, "max_unavailable": 0}]})


def test_maintenance_wins_over_a_plain_not_ready_window() -> None:
    f = MachineFacts(created_at=-100, unready=(Window(0), Window(10, maintenance=True)))
    assert progress(f, 20, T).talos_stage == "maintenance"
    assert progress(f, 5, T).talos_stage == "running"
