"""The pure Talos rules: untrusted nodes, an unusable client certificate, force on old Talos, the quorum guard's
words for a single-member control plane, and an accepted-but-unobserved reboot in the runner's sequence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from capi_rollout.domain.decide import decide
from capi_rollout.domain.preflight import preflight, still_meant
from capi_rollout.domain.state import ClusterState, NodeStatus
from capi_rollout.step_table import StepFailed
from capi_rollout.summary import build_summary, render_table
from tests import builders as b
from tests.product.test_decide import PARAMS, T0, cp_state, healthy_cp, settled
from tests.product.test_runner_sequences import make


def report(state: ClusterState, **kw: Any) -> Any:
    return preflight(cluster=b.cluster(), control_plane=b.tcp(), deployments=[], state=state,
                     nodes=kw.pop("nodes", {}), **kw)


# --- untrusted certificates ----------------------------------------------------------------------------------
def test_an_unhealthy_machine_whose_talos_api_is_untrusted_fails_at_once_and_is_never_remediated() -> None:
    state = cp_state([*healthy_cp(2), b.machine("cp-new", cp=True, ready=False, address="10.0.0.9")],
                     up_to_date=False, ready=2)
    nodes = {"10.0.0.9": NodeStatus("10.0.0.9", "untrusted", "x509: certificate has expired; fingerprint X")}
    action = decide(phase="control-plane", state=state, record=settled(state), nodes=nodes,
                    now=T0 + timedelta(minutes=30), params=PARAMS)
    assert action.kind == "fail" and not action.reboot and not action.delete
    assert action.reason.startswith("the Talos API at 10.0.0.9 for node node-cp-new presents a certificate this "
                                    "tool cannot trust (x509: certificate has expired; fingerprint X)")


def test_preflight_refuses_an_untrusted_node_and_never_calls_it_maintenance() -> None:
    state = cp_state(healthy_cp(3))
    nodes = {"10.0.0.1": NodeStatus("10.0.0.1", "untrusted", "x509: certificate is valid for 10.0.0.7, not 10.0.0.1")}
    found = report(state, nodes=nodes)
    assert not found.ok
    assert "presents a certificate this tool cannot trust" in found.violations[0]
    assert "maintenance" not in found.violations[0]


def test_preflight_names_the_fingerprint_and_warns_before_apply_config_insecure() -> None:
    state = cp_state(healthy_cp(3))
    nodes = {"10.0.0.1": NodeStatus("10.0.0.1", "maintenance", "certificate SHA-256 fingerprint SHA256:AB:CD")}
    [violation] = report(state, nodes=nodes).violations
    assert "SHA256:AB:CD" in violation
    assert violation.index("WARNING") < violation.index("apply-config --insecure")


def test_an_answer_for_a_machine_deleted_while_preflight_asked_blocks_nothing_and_is_named() -> None:
    before = cp_state(healthy_cp(3))
    answer = NodeStatus("10.0.0.1", "untrusted", "x509: certificate is valid for node-w-9, not 10.0.0.1")
    nodes = {"10.0.0.0": NodeStatus("10.0.0.0", "running"), "10.0.0.1": answer,
             "10.0.0.2": NodeStatus("10.0.0.2", "maintenance", "fp X")}
    # cp-1 is gone; cp-2 is still there; a new Machine took cp-1's address (never asked about: not judged here)
    after = cp_state([*healthy_cp(3)[::2], b.machine("cp-9", cp=True, address="10.0.0.1")])
    kept, dropped = still_meant(before, after, nodes)
    assert set(kept) == {"10.0.0.0", "10.0.0.2"}
    [warning] = dropped
    assert warning.startswith("Machine cp-1 was deleted while preflight asked Talos about it")
    assert answer.detail in warning
    verdict = report(after, nodes=kept)
    assert len(verdict.violations) == 1 and "cp-2" in verdict.violations[0] and "maintenance" in verdict.violations[0]


def test_an_answer_is_kept_only_for_the_same_machine_at_the_same_address() -> None:
    before = cp_state(healthy_cp(2))
    nodes = {a: NodeStatus(a, "untrusted", "x") for a in ("10.0.0.0", "10.0.0.1")}
    recreated = b.machine("cp-0", cp=True, address="10.0.0.0")
    recreated["metadata"]["uid"] = "uid-cp-0-again"  # same name, another Machine
    moved = b.machine("cp-1", cp=True, address="10.0.0.8")  # same Machine, another address
    kept, dropped = still_meant(before, cp_state([recreated, moved]), nodes)
    assert kept == {}
    assert dropped[0].startswith("Machine cp-0 was deleted while preflight asked")
    assert dropped[1].startswith("Machine cp-1 moved to 10.0.0.8 while preflight asked")
    assert still_meant(before, before, nodes) == (nodes, [])
    quiet = {a: NodeStatus(a, "running") for a in nodes}
    assert still_meant(before, cp_state([]), quiet) == ({}, [])  # a running answer is not worth a warning


# --- the talosconfig client certificate ----------------------------------------------------------------------
def test_an_expired_client_certificate_is_a_preflight_failure_naming_the_expiry() -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    validity = (now - timedelta(days=400), now - timedelta(days=35))
    found = report(cp_state(healthy_cp(3)), client_certificate=validity, now=now)
    assert found.violations == (
        "the talosconfig client certificate expired at 2026-03-27T00:00:00Z (35 days ago): every Talos call would be "
        "refused; renew it (the bootstrap provider's <cluster>-talosconfig Secret) and resubmit",
    )


def test_a_client_certificate_not_yet_valid_is_a_preflight_failure() -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    found = report(cp_state(healthy_cp(3)), client_certificate=(now + timedelta(hours=2), now + timedelta(days=9)),
                   now=now)
    assert "not valid before 2026-05-01T02:00:00Z" in found.violations[0]


def test_the_runner_fails_preflight_on_an_expired_client_certificate_not_with_an_unreachable_warning() -> None:
    runner, kube, talos, _ = make()
    now = runner.clock()
    talos.client_validity = SimpleNamespace(not_before=now - timedelta(days=400), not_after=now - timedelta(days=1))
    runner.resolve()
    with pytest.raises(StepFailed, match=r"the talosconfig client certificate expired at "):
        runner.preflight()
    assert kube.deleted == [] and talos.reboots == []


# --- rebootMode=force on old Talos ---------------------------------------------------------------------------
def test_force_on_nodes_older_than_v1_12_is_refused_up_front_naming_nodes_and_versions() -> None:
    state = cp_state(healthy_cp(3))
    versions = {"10.0.0.0": "v1.12.1", "10.0.0.1": "v1.11.5", "10.0.0.2": "v1.10.7"}
    found = report(state, versions=versions)
    assert found.violations == (
        "rebootMode=force needs Talos v1.12 or later on every node, and 2 run older Talos: node-cp-1 (10.0.0.1) runs "
        "v1.11.5; node-cp-2 (10.0.0.2) runs v1.10.7 (older Talos silently does a default reboot); use "
        "rebootMode=powercycle or default",
    )


def test_force_with_an_unreadable_version_is_a_warning() -> None:
    found = report(cp_state(healthy_cp(1)), versions={"10.0.0.0": "unknown (connection refused)"})
    assert found.ok and "could not be read (node-cp-0 (10.0.0.0): unknown (connection refused))" in found.warnings[0]


def test_the_runner_refuses_force_in_preflight_before_any_machine_is_deleted() -> None:
    runner, kube, talos, _ = make({0: "not-ready"})
    runner.params = runner.params.__class__(**{**runner.params.__dict__, "reboot_mode": "force"})
    talos.tags["10.0.0.11"] = "v1.11.5"
    runner.resolve()
    with pytest.raises(StepFailed, match=r"node-cp-old-1 \(10.0.0.11\) runs v1.11.5"):
        runner.preflight()
    assert kube.deleted == [] and talos.reboots == []
    assert sorted(talos.version_reads) == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]


def test_the_runner_reads_no_versions_unless_the_mode_is_force() -> None:
    runner, _, talos, _ = make()
    runner.resolve()
    runner.preflight()
    assert talos.version_reads == []


# --- the quorum guard's words --------------------------------------------------------------------------------
def test_the_quorum_guard_says_in_plain_words_what_it_protects_for_a_single_member_control_plane() -> None:
    machines = [b.machine("cp-0", cp=True, ready=False, address="10.0.0.5", deleting="2026-01-01T00:30:00Z")]
    state = cp_state(machines, replicas=1, up_to_date=False, ready=0)
    action = decide(phase="control-plane", state=state, record=settled(state), nodes={},
                    now=T0 + timedelta(minutes=20), params=PARAMS)
    assert action.kind == "fail"
    assert "0 healthy of 0" not in action.reason
    assert "control-plane Machine cp-0 is the cluster's only etcd member (it is deleting)" in action.reason
    assert "would stop etcd, the store behind the workload cluster's Kubernetes API" in action.reason


def test_the_quorum_guard_for_several_members_says_what_losing_quorum_means() -> None:
    machines = [b.machine("cp-0", cp=True), b.machine("cp-1", cp=True, ready=False),
                b.machine("cp-2", cp=True, ready=False)]
    action = decide(phase="control-plane", state=cp_state(machines, up_to_date=False, ready=1),
                    record=settled(cp_state(machines, up_to_date=False, ready=1)), nodes={},
                    now=T0 + timedelta(minutes=10), params=PARAMS)
    assert "without a quorum etcd stops accepting writes" in action.reason


# --- reboots that do not happen ------------------------------------------------------------------------------
def test_an_accepted_reboot_that_is_never_observed_is_reported_and_still_counts() -> None:
    runner, kube, talos, _ = make({1: "not-ready"})
    talos.dropped.add("10.0.1.1")
    runner.resolve()
    runner.phase("control-plane")
    rec = runner.ledger.phase("control-plane")
    assert rec is not None and len(rec.remediations) == 1
    [rem] = rec.remediations
    assert rem.rebooted and rem.reboot_observed is False
    assert "reboot requested but not observed within 10m" in rem.outcome or "within 600s" in rem.outcome
    assert any("remediation recorded:" in line and "reboot requested but not observed" in line for line in kube.log)
    table = render_table(build_summary(runner.ledger))
    assert "reboot requested but not observed" in table


def test_an_observed_reboot_is_recorded_as_observed() -> None:
    runner, _, _, _ = make({1: "not-ready"})
    runner.resolve()
    runner.phase("control-plane")
    rec = runner.ledger.phase("control-plane")
    assert rec is not None and rec.remediations[0].reboot_observed is True
    assert "reboot observed: boot id changed" in rec.remediations[0].outcome
