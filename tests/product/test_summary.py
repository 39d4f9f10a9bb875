"""The summary: JSON for machines, a table for people, the reasons for a failure in both."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from capi_rollout.domain.ledger import Ledger, PhaseRecord, Remediation
from capi_rollout.summary import build_summary, render_table

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def ledger(*, workers_result: str | None = "succeeded") -> Ledger:
    rem = Remediation(at=T0 + timedelta(minutes=12), machine="cp-new-1", node="node-1", address="10.0.1.1",
                      reason="node node-1 not Ready", reboot_mode="powercycle", deleted=True, rebooted=True,
                      outcome="deleted Machine cp-new-1; reboot 10.0.1.1 (powercycle) accepted")
    cp = PhaseRecord(name="control-plane", started=T0, last_progress=T0, finished=T0 + timedelta(minutes=20),
                     result="succeeded", message="control plane rollout complete", remediations=(rem,))
    workers = PhaseRecord(name="workers", started=T0 + timedelta(minutes=20), last_progress=T0,
                          finished=T0 + timedelta(minutes=50), result=workers_result,
                          message="workers phase timed out after 30m0s" if workers_result == "failed" else "done")
    return Ledger(cluster="homelab", namespace="default", warnings=("single replica",),
                  phases={"control-plane": cp, "workers": workers})


def test_a_successful_run_lists_each_phase_and_its_remediations() -> None:
    summary = build_summary(ledger(), workflow_status="Succeeded")
    assert summary["result"] == "Succeeded" and summary["remediations"] == 1
    cp = summary["phases"]["control-plane"]
    assert cp["durationSeconds"] == 1200 and cp["remediations"][0]["machine"] == "cp-new-1"
    assert cp["remediations"][0]["address"] == "10.0.1.1" and cp["remediations"][0]["reboot_mode"] == "powercycle"
    json.dumps(summary)
    table = render_table(summary)
    assert "control plane  succeeded    20m0s      1" in table
    assert "Machine cp-new-1 node node-1 (10.0.1.1), reboot powercycle: deleted Machine cp-new-1" in table
    assert "warning: single replica" in table


def test_a_failed_phase_fails_the_summary_and_says_why() -> None:
    summary = build_summary(ledger(workers_result="failed"), workflow_status="Failed",
                            workflow_failures=json.dumps([{"displayName": "workers", "message": "exit code 1"}]))
    assert summary["result"] == "Failed"
    assert summary["reasons"] == ["workers phase timed out after 30m0s"]  # the ledger's words, not Argo's
    assert "why: workers phase timed out after 30m0s" in render_table(summary)


def test_a_run_that_never_got_a_ledger_is_failed_with_argos_reasons() -> None:
    summary = build_summary(None, workflow_status="Failed",
                            workflow_failures=json.dumps([{"displayName": "resolve", "message": "no Cluster"}]))
    assert summary["result"] == "Failed" and summary["reasons"] == ["resolve: no Cluster"]


def test_phases_not_started_are_shown_as_such() -> None:
    only_cp = Ledger(cluster="c", namespace="n", phases={"control-plane": ledger().phases["control-plane"]})
    summary = build_summary(only_cp, workflow_status="Failed")
    assert summary["phases"]["workers"] == {"result": "not started"} and summary["result"] == "Failed"


def test_argos_double_encoded_failures_are_read() -> None:
    inner = json.dumps([{"displayName": "workers", "message": "Error (exit code 1)"}])
    summary = build_summary(None, workflow_status="Failed", workflow_failures=json.dumps(inner))
    assert summary["reasons"] == ["workers: Error (exit code 1)"]
    assert build_summary(None, workflow_status="Failed", workflow_failures=json.dumps("null"))["reasons"] == []


def test_a_resolve_failure_kept_in_the_ledger_is_the_reason() -> None:
    failed = Ledger(cluster="c", namespace="n", failure="cannot resolve the cluster: Cluster c not found")
    summary = build_summary(failed, workflow_status="Failed")
    assert summary["result"] == "Failed" and summary["reasons"] == ["cannot resolve the cluster: Cluster c not found"]


WHY = ("Machine w-1 (node node-w-1 not Ready: NodeNotReady) carries the annotation "
       "cluster.x-k8s.io/skip-remediation: it is never remediated; fix it by hand or remove the annotation")


def test_a_failed_phase_shows_why_it_was_waiting() -> None:
    base = ledger(workers_result="failed")
    workers = replace(base.phases["workers"], waiting=WHY)
    summary = build_summary(base.with_phase(workers), workflow_status="Failed")
    assert summary["phases"]["workers"]["waiting"] == WHY
    assert f"  waiting: {WHY}" in render_table(summary).splitlines()


def test_a_phase_cut_short_while_waiting_gives_its_reason_beside_argos() -> None:
    base = ledger(workers_result=None)
    workers = replace(base.phases["workers"], finished=None, waiting=WHY)
    summary = build_summary(base.with_phase(workers), workflow_status="Failed",
                            workflow_failures=json.dumps([{"displayName": "workers", "message": "deadline"}]))
    assert summary["reasons"] == ["workers: deadline", f"workers was still waiting: {WHY}"]


def test_a_succeeded_phase_does_not_show_an_old_reason_to_wait() -> None:
    base = ledger()
    cp = replace(base.phases["control-plane"], waiting="remediation 1 in flight: Machine cp-new-1 deleting")
    assert "waiting:" not in render_table(build_summary(base.with_phase(cp), workflow_status="Succeeded"))


def test_the_reason_to_wait_survives_the_ledger_round_trip() -> None:
    base = ledger(workers_result=None)
    text = base.with_phase(replace(base.phases["workers"], waiting=WHY)).to_json()
    assert Ledger.from_json(text).phases["workers"].waiting == WHY
