"""The per-poll decision: complete, wait, remediate or fail, with the reason in words."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from capi_rollout.domain.decide import addresses_to_probe, decide
from capi_rollout.domain.ledger import PhaseRecord, Remediation
from capi_rollout.domain.params import parse_params
from capi_rollout.domain.state import ClusterState, NodeStatus
from tests import builders as b

T0 = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
PARAMS = parse_params({"clusterName": "homelab", "stallTimeout": "10m", "controlPlaneTimeout": "45m",
                       "workersTimeout": "60m", "maxRemediations": "2"})


def cp_state(machines: list[dict[str, Any]], **tcp: Any) -> ClusterState:
    return ClusterState.from_objects(cluster=b.cluster(), control_plane=b.tcp(**tcp), machines=machines)


def healthy_cp(n: int = 3) -> list[dict[str, Any]]:
    return [b.machine(f"cp-{i}", cp=True, address=f"10.0.0.{i}") for i in range(n)]


def record(*, started: datetime = T0, last_progress: datetime | None = None, fingerprint: str = "",
           remediations: int = 0) -> PhaseRecord:
    rems = tuple(
        Remediation(at=T0, machine=f"m{i}", node=None, address=None, reason="r", reboot_mode="powercycle",
                    deleted=True, rebooted=False, outcome="deleted")
        for i in range(remediations)
    )
    return PhaseRecord(name="control-plane", started=started, last_progress=last_progress or started,
                       fingerprint=fingerprint, remediations=rems)


def settled(state: ClusterState, phase: str = "control-plane", **kw: Any) -> PhaseRecord:
    """A record whose fingerprint already matches the state, i.e. nothing has moved since ``last_progress``."""
    first = decide(phase=phase, state=state, record=record(**kw), nodes={}, now=T0, params=PARAMS)
    return first.record


def test_a_rolled_out_control_plane_is_complete() -> None:
    action = decide(phase="control-plane", state=cp_state(healthy_cp()), record=record(), nodes={}, now=T0,
                    params=PARAMS)
    assert action.kind == "complete"
    assert action.reason == "control plane rollout complete: 3/3 machines, 3/3 ready, up to date"


def test_the_control_plane_is_incomplete_until_the_spec_is_up_to_date() -> None:
    state = cp_state(healthy_cp(), up_to_date=False)
    action = decide(phase="control-plane", state=state, record=record(), nodes={}, now=T0, params=PARAMS)
    assert action.kind == "wait"
    assert "condition MachinesSpecUpToDate is False (RollingUpdateInProgress)" in action.reason


def test_an_unobserved_generation_is_incomplete() -> None:
    state = cp_state(healthy_cp(), generation=2, observed=1)
    action = decide(phase="control-plane", state=state, record=record(), nodes={}, now=T0, params=PARAMS)
    assert action.kind == "wait" and "observedGeneration 1 < metadata.generation 2" in action.reason


def test_progress_restarts_the_stall_clock() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, node=False, phase="Provisioning")],
                     up_to_date=False, ready=2)
    old = record(last_progress=T0, fingerprint="something-else")
    now = T0 + timedelta(minutes=30)
    action = decide(phase="control-plane", state=state, record=old, nodes={}, now=now, params=PARAMS)
    assert action.kind == "wait"
    assert action.record.last_progress == now and action.record.fingerprint != "something-else"
    assert "no progress for 0s of 10m0s, 30m0s of 45m0s elapsed" in action.progress


def test_a_node_flapping_back_to_a_state_seen_before_is_not_progress() -> None:
    """An old node flapping Ready/NotReady while a new Machine really stalls: each return to an earlier state of
    the phase leaves the stall clock alone, so the stall is remediated on time (not after the flap ends)."""
    stalled = b.machine("cp-new", cp=True, ready=False, address="10.0.0.9")

    def state(old_ready: bool) -> ClusterState:
        return cp_state([b.machine("cp-0", cp=True, ready=old_ready, address="10.0.0.1"),
                         b.machine("cp-1", cp=True, address="10.0.0.2"), stalled],
                        up_to_date=False, ready=2 if old_ready else 1)

    rec = settled(state(True))
    now = T0
    for minute in range(1, 11):  # flaps every minute, for ten minutes
        now = T0 + timedelta(minutes=minute)
        action = decide(phase="control-plane", state=state(minute % 2 == 0), record=rec, nodes={}, now=now,
                        params=PARAMS)
        rec = action.record
        if minute == 1:
            assert rec.last_progress == now, "the first NotReady is a state never seen: progress"
        else:
            assert rec.last_progress == T0 + timedelta(minutes=1), f"minute {minute}: a flap is not progress"
    assert action.kind == "wait"  # minute 10: 9 minutes since the last real progress
    action = decide(phase="control-plane", state=state(True), record=rec, nodes={},
                    now=T0 + timedelta(minutes=11), params=PARAMS)
    assert action.kind == "remediate" and action.machine is not None and action.machine.name == "cp-new"
    # A state never seen before is progress again.
    moved = cp_state([b.machine("cp-0", cp=True, address="10.0.0.1"), b.machine("cp-1", cp=True, address="10.0.0.2"),
                      b.machine("cp-new", cp=True, address="10.0.0.9")], up_to_date=False, ready=3)
    action = decide(phase="control-plane", state=moved, record=rec, nodes={}, now=T0 + timedelta(minutes=11),
                    params=PARAMS)
    assert action.record.last_progress == T0 + timedelta(minutes=11)


def test_the_states_seen_survive_the_ledger_and_are_bounded() -> None:
    from capi_rollout.domain.ledger import MAX_SEEN, LedgerError

    rec = replace(record(), seen=("a" * 16, "b" * 16))
    assert PhaseRecord.from_dict(rec.to_dict()) == rec
    with pytest.raises(LedgerError, match="seen: must be at most"):
        PhaseRecord.from_dict({**rec.to_dict(), "seen": ["x"] * (MAX_SEEN + 1)})
    with pytest.raises(LedgerError, match="seen: must be at most"):
        PhaseRecord.from_dict({**rec.to_dict(), "seen": [1]})


def test_a_stalled_provisioning_machine_is_deleted_without_reboot_when_it_has_no_address() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, node=False, phase="Provisioning")],
                     up_to_date=False, ready=2)
    rec = settled(state)
    action = decide(phase="control-plane", state=state, record=rec, nodes={}, now=T0 + timedelta(minutes=10),
                    params=PARAMS)
    assert action.kind == "remediate"
    assert action.machine is not None and action.machine.name == "cp-new"
    assert (action.delete, action.reboot) == (True, False)
    assert "remediation 1 of 2: delete Machine cp-new — no nodeRef (phase Provisioning)" in action.reason


def test_nothing_is_remediated_before_the_stall_timeout() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False, address="10.0.0.9")],
                     up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=9, seconds=59), params=PARAMS)
    assert action.kind == "wait"


def test_a_not_ready_machine_is_deleted_and_its_node_rebooted() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False, address="10.0.0.9")],
                     up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=10), params=PARAMS)
    assert action.kind == "remediate" and (action.delete, action.reboot) == (True, True)
    assert "reboot 10.0.0.9 (powercycle)" in action.reason and "not Ready: NodeNotReady" in action.reason


def test_a_machine_stuck_deleting_is_rebooted_but_not_deleted_again() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-old", cp=True, address="10.0.0.7",
                                                  deleting="2026-01-01T00:40:00Z")], up_to_date=False)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=10), params=PARAMS)
    assert action.kind == "remediate" and (action.delete, action.reboot) == (False, True)
    assert "stuck deleting for 30m0s" in action.reason


def test_candidates_are_ranked_failed_then_no_node_then_not_ready_then_oldest_then_name() -> None:
    machines = [
        b.machine("w-notready-old", ready=False, created="2025-01-01T00:00:00Z"),
        b.machine("w-nonode", node=False, phase="Provisioning"),
        b.machine("w-failed-b", phase="Failed", created="2026-01-01T00:00:00Z"),
        b.machine("w-failed-a", phase="Failed", created="2026-01-01T00:00:00Z"),
        b.machine("w-failed-new", phase="Failed", created="2026-06-01T00:00:00Z"),
    ]
    state = ClusterState.from_objects(cluster=b.cluster(), control_plane=b.tcp(),
                                      deployments=[b.md(replicas=5, available=2)], machines=machines)
    chosen = []
    rec = settled(state, phase="workers")
    for _ in range(2):
        action = decide(phase="workers", state=state, record=rec, nodes={}, now=T0 + timedelta(minutes=10),
                        params=parse_params({"clusterName": "homelab", "maxRemediations": "9"}))
        assert action.machine is not None
        chosen.append(action.machine.name)
        state = ClusterState.from_objects(
            cluster=b.cluster(), control_plane=b.tcp(), deployments=[b.md(replicas=5, available=2)],
            machines=[m for m in machines if m["metadata"]["name"] not in chosen])
        rec = settled(state, phase="workers")
    assert chosen == ["w-failed-a", "w-failed-b"]


def test_the_budget_is_exhausted_after_max_remediations() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False)], up_to_date=False, ready=2)
    rec = settled(state, remediations=2)
    action = decide(phase="control-plane", state=state, record=rec, nodes={}, now=T0 + timedelta(minutes=10),
                    params=PARAMS)
    assert action.kind == "fail"
    assert action.reason.startswith("control plane: remediation budget exhausted (2 of 2 used)")
    assert "remediations done: m0 (r, deleted); m1 (r, deleted)" in action.reason


def test_with_max_remediations_zero_a_stall_fails_without_remediating() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False)], up_to_date=False, ready=2)
    params = parse_params({"clusterName": "homelab", "maxRemediations": "0"})
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=10), params=params)
    assert action.kind == "fail" and "remediation budget exhausted (0 of 0 used)" in action.reason


def test_the_phase_times_out_naming_the_phase_the_time_and_what_is_incomplete() -> None:
    state = cp_state(healthy_cp(), up_to_date=False)
    action = decide(phase="control-plane", state=state, record=record(fingerprint="x"),
                    nodes={}, now=T0 + timedelta(minutes=45), params=PARAMS)
    assert action.kind == "fail"
    assert action.reason == ("control plane phase timed out after 45m0s (limit 45m0s); incomplete: condition "
                             "MachinesSpecUpToDate is False (RollingUpdateInProgress)")


def test_an_unhealthy_machine_in_maintenance_fails_at_once_without_waiting_for_the_stall() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False, address="10.0.0.9")],
                     up_to_date=False, ready=2)
    nodes = {"10.0.0.9": NodeStatus("10.0.0.9", "maintenance")}
    action = decide(phase="control-plane", state=state, record=record(), nodes=nodes, now=T0, params=PARAMS)
    assert action.kind == "fail"
    assert action.reason.startswith("node node-cp-new (10.0.0.9) is in Talos maintenance mode: manual intervention "
                                    "required")
    # The warning comes before any advice to run apply-config --insecure.
    assert "WARNING: maintenance mode cannot prove who answers; before `talosctl apply-config --insecure`" \
        in action.reason


def test_the_quorum_guard_refuses_when_two_of_three_control_plane_machines_are_unhealthy() -> None:
    machines = [b.machine("cp-0", cp=True), b.machine("cp-1", cp=True, ready=False),
                b.machine("cp-2", cp=True, ready=False)]
    state = cp_state(machines, up_to_date=False, ready=1)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=10), params=PARAMS)
    assert action.kind == "fail"
    assert "would leave 1 healthy of 2 etcd members, below the quorum of 2" in action.reason


def test_the_quorum_guard_allows_one_unhealthy_member_of_three() -> None:
    machines = [b.machine("cp-0", cp=True), b.machine("cp-1", cp=True), b.machine("cp-2", cp=True, ready=False)]
    state = cp_state(machines, up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=10), params=PARAMS)
    assert action.kind == "remediate" and action.machine is not None and action.machine.name == "cp-2"


def test_a_stall_without_unhealthy_machines_waits_for_the_timeout() -> None:
    state = cp_state(healthy_cp(), up_to_date=False)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=20), params=PARAMS)
    assert action.kind == "wait" and "no unhealthy Machine to remediate" in action.reason
    # the wait is not plain progress: it says why in the progress line, the counters and the ledger (summary)
    assert "waiting: no progress since 2026-" in action.progress and "MachineSet preflight" in action.progress
    assert action.record.waiting.startswith("no progress since ") and "waiting: no progress" in action.counters
    later = decide(phase="control-plane", state=state, record=action.record, nodes={},
                   now=T0 + timedelta(minutes=21), params=PARAMS)
    assert later.record.waiting == action.record.waiting  # stable words: stored once, not on every poll


def test_skip_remediation_machines_are_never_chosen() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False,
                                                  annotations={"cluster.x-k8s.io/skip-remediation": ""})],
                     up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=10), params=PARAMS)
    assert action.kind == "wait"


@pytest.mark.parametrize("v", ["v1beta1", "v1beta2"])
def test_workers_are_complete_only_when_every_machine_deployment_is(v: str) -> None:
    done = b.md("md-a", v=v)
    rolling = b.md("md-b", v=v, up_to_date=1)
    state = ClusterState.from_objects(cluster=b.cluster(v=v), control_plane=b.tcp(), deployments=[done, rolling])
    action = decide(phase="workers", state=state, record=record(), nodes={}, now=T0, params=PARAMS)
    assert action.kind == "wait"
    assert "MachineDeployment md-b: upToDate 1, replicas 2, available 2, want 2" in action.reason
    state = ClusterState.from_objects(cluster=b.cluster(v=v), control_plane=b.tcp(), deployments=[done])
    assert decide(phase="workers", state=state, record=record(), nodes={}, now=T0, params=PARAMS).kind == "complete"


def test_a_machine_deployment_with_a_deleting_machine_is_not_complete() -> None:
    state = ClusterState.from_objects(cluster=b.cluster(), control_plane=b.tcp(), deployments=[b.md()],
                                      machines=[b.machine("w-1", deleting="2026-01-01T00:59:00Z")])
    action = decide(phase="workers", state=state, record=record(), nodes={}, now=T0, params=PARAMS)
    assert action.kind == "wait" and "deleting: w-1" in action.reason


def test_a_cluster_without_machine_deployments_has_nothing_to_roll_for_workers() -> None:
    state = ClusterState.from_objects(cluster=b.cluster(), control_plane=b.tcp())
    action = decide(phase="workers", state=state, record=record(), nodes={}, now=T0, params=PARAMS)
    assert action.kind == "complete" and "no MachineDeployments" in action.reason


def test_only_unhealthy_machines_addresses_are_probed() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False, address="10.0.0.9"),
                      b.machine("cp-prov", cp=True, node=False)], up_to_date=False)
    assert addresses_to_probe(phase="control-plane", state=state, now=T0, params=PARAMS) == ["10.0.0.9"]


def test_machine_views_are_reused_only_while_the_resource_version_is_unchanged() -> None:
    from capi_rollout.observation import MachineViews

    objs = [b.machine("cp-0", cp=True), b.machine("cp-1", cp=True, ready=False)]
    for i, o in enumerate(objs):
        o["metadata"]["resourceVersion"] = str(i + 1)
    views = MachineViews()
    first = views.read(objs)
    assert views.reused == 0
    changed = b.machine("cp-1", cp=True, ready=True)
    changed["metadata"]["resourceVersion"] = "9"
    second = views.read([objs[0], changed])
    assert views.reused == 1
    assert second[0] is first[0] and second[1] is not first[1] and second[1].ready


SKIP = {"cluster.x-k8s.io/skip-remediation": ""}


def test_a_stall_whose_only_unhealthy_machine_skips_remediation_says_so_in_the_progress_line_and_the_ledger() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False, annotations=SKIP)],
                     up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=20), params=PARAMS)
    assert action.kind == "wait"
    why = ("Machine cp-new (node node-cp-new not Ready: NodeNotReady) carries the annotation "
           "cluster.x-k8s.io/skip-remediation: it is never remediated; fix it by hand or remove the annotation")
    assert action.progress.endswith(f"; waiting: {why}")
    assert action.record.waiting == why
    assert "no Machine can be remediated" in action.reason and why in action.reason
    assert why in action.counters


def test_a_skip_annotation_is_said_before_the_stall_too() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False, annotations=SKIP)],
                     up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=record(), nodes={}, now=T0, params=PARAMS)
    assert action.kind == "wait" and "carries the annotation cluster.x-k8s.io/skip-remediation" in action.progress


def test_the_phase_timeout_names_the_skip_annotation_it_waited_on() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False, annotations=SKIP)],
                     up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=45), params=PARAMS)
    assert action.kind == "fail" and action.reason.startswith("control plane phase timed out after 45m0s")
    assert "waiting: Machine cp-new (node node-cp-new not Ready: NodeNotReady) carries the annotation " \
           "cluster.x-k8s.io/skip-remediation" in action.reason


def test_a_remediation_in_flight_is_named_while_its_machine_deletes() -> None:
    state = cp_state([*healthy_cp(2), b.machine("m0", cp=True, deleting="2026-01-01T00:58:00Z")],
                     up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=record(remediations=1), nodes={}, now=T0,
                    params=PARAMS)
    assert action.kind == "wait"
    assert action.record.waiting == "remediation 1 in flight: Machine m0 deleting since 2026-01-01T00:58:00Z"
    assert action.progress.endswith("; waiting: remediation 1 in flight: Machine m0 deleting since "
                                    "2026-01-01T00:58:00Z")


def test_a_spent_budget_is_said_before_the_next_stall_fails_the_phase() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False)], up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=record(remediations=2), nodes={}, now=T0,
                    params=PARAMS)
    assert action.kind == "wait"
    assert action.record.waiting == ("remediation budget spent (2 of 2 used) with unhealthy cp-new (node "
                                     "node-cp-new not Ready: NodeNotReady): a stall fails the phase")


def test_remediation_disabled_by_max_remediations_zero_is_said_while_waiting() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False)], up_to_date=False, ready=2)
    params = parse_params({"clusterName": "homelab", "maxRemediations": "0"})
    action = decide(phase="control-plane", state=state, record=record(), nodes={}, now=T0, params=params)
    assert "waiting: remediation disabled (maxRemediations 0) with unhealthy cp-new" in action.progress


def test_the_quorum_guard_is_said_before_the_stall_fails_the_phase() -> None:
    machines = [b.machine("cp-0", cp=True), b.machine("cp-1", cp=True, ready=False),
                b.machine("cp-2", cp=True, ready=False)]
    state = cp_state(machines, up_to_date=False, ready=1)
    action = decide(phase="control-plane", state=state, record=record(), nodes={}, now=T0, params=PARAMS)
    assert action.kind == "wait"
    assert "waiting: the etcd quorum guard would refuse to remediate: removing control-plane Machine cp-1 would " \
           "leave 1 healthy of 2 etcd members" in action.progress


def test_plain_progress_gives_no_reason_to_wait() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, node=False, phase="Provisioning")],
                     up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=record(), nodes={}, now=T0, params=PARAMS)
    assert action.kind == "wait" and action.record.waiting == "" and "waiting:" not in action.progress


def test_a_completed_phase_forgets_why_it_waited() -> None:
    rec = replace(record(), waiting="remediation 1 in flight: Machine m0 deleting")
    action = decide(phase="control-plane", state=cp_state(healthy_cp()), record=rec, nodes={}, now=T0,
                    params=PARAMS)
    assert action.kind == "complete" and action.record.waiting == ""


def _no_noderef_with_address(hostname: str | None) -> dict[str, Any]:
    obj = b.machine("cp-new", cp=True, node=False, phase="Provisioned")
    addresses = [{"type": "InternalIP", "address": "10.0.0.9"}]
    if hostname:
        addresses.append({"type": "Hostname", "address": hostname})
    obj["status"]["addresses"] = addresses
    return obj


def test_a_machine_without_a_noderef_or_hostname_is_deleted_but_never_rebooted_blind() -> None:
    """Nothing could prove that the node answering at its address is this Machine's, so no reboot is sent."""
    state = cp_state([*healthy_cp(2), _no_noderef_with_address(None)], up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=10), params=PARAMS)
    assert action.kind == "remediate" and (action.delete, action.reboot) == (True, False)
    assert "no reboot of 10.0.0.9: the Machine has no nodeRef and no Hostname address" in action.reason


def test_a_machine_without_a_noderef_is_rebooted_only_as_its_hostname_address() -> None:
    state = cp_state([*healthy_cp(2), _no_noderef_with_address("cp-new-host")], up_to_date=False, ready=2)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=10), params=PARAMS)
    assert action.kind == "remediate" and (action.delete, action.reboot) == (True, True)
    assert action.machine is not None and action.machine.identity == "cp-new-host"


def _not_ready_since(obj: dict[str, Any], when: datetime) -> dict[str, Any]:
    obj["status"]["conditions"][0]["lastTransitionTime"] = when.isoformat().replace("+00:00", "Z")
    return obj


def test_of_two_not_ready_machines_the_one_not_ready_longest_is_remediated_not_the_oldest() -> None:
    """A node flapping NotReady for a moment must not take the turn of the Machine that stalled the rollout."""
    now = T0 + timedelta(minutes=10)
    machines = [b.machine("cp-0", cp=True), b.machine("cp-1", cp=True),
                b.machine("cp-2", cp=True, address="10.0.0.2"),
                _not_ready_since(b.machine("cp-old", cp=True, ready=False, created="2025-01-01T00:00:00Z"),
                                 now - timedelta(seconds=20)),
                _not_ready_since(b.machine("cp-new", cp=True, ready=False, created="2026-01-01T00:30:00Z"),
                                 T0 - timedelta(minutes=5))]
    state = cp_state(machines, up_to_date=False, ready=3, replicas=5)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={}, now=now, params=PARAMS)
    assert action.kind == "remediate" and action.machine is not None and action.machine.name == "cp-new"


def test_the_quorum_guard_waits_out_a_member_that_just_went_not_ready_and_fails_once_it_lasts() -> None:
    now = T0 + timedelta(minutes=10)
    stuck = _not_ready_since(b.machine("cp-new", cp=True, ready=False), T0 - timedelta(minutes=5))

    def state_with(flap_since: datetime) -> ClusterState:
        flapping = _not_ready_since(b.machine("cp-1", cp=True, ready=False), flap_since)
        return cp_state([b.machine("cp-0", cp=True), flapping, stuck], up_to_date=False, ready=1)

    flapping = state_with(now - timedelta(seconds=30))
    action = decide(phase="control-plane", state=flapping, record=settled(flapping), nodes={}, now=now,
                    params=PARAMS)
    assert action.kind == "wait"
    assert "the etcd quorum guard refuses for now, because cp-1 (not Ready since " in action.reason
    assert "below the quorum of 2" in action.reason and "quorum guard would refuse" in action.progress

    lasting = state_with(now - timedelta(minutes=10))  # NotReady for a whole stallTimeout: not a flap
    action = decide(phase="control-plane", state=lasting, record=settled(lasting), nodes={}, now=now,
                    params=PARAMS)
    assert action.kind == "fail" and "below the quorum of 2" in action.reason
