"""Issue 6 scenarios 1-6, 10, 12 and 13: the rendered WorkflowTemplate rolls a simulated Talos cluster.

Each test plays one story of the simulator (``sim/scenarios/*.yaml``, durations scaled by ``e2e.harness``) with
the real template on the selected backend (the simulator in the test process, a child process or a pod: see
``e2e/harness.py``), then asserts the workflow's outcome, the ledger, the exit handler's
summary and the simulator's timeline. Every run leaves ``results/e2e/<test>/`` (run, timeline, summary).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from e2e.argo_local import KillStep
from e2e.harness import Stage, parameters, scaled
from e2e.outcome import Outcome
from sim.scenario import Fault, Target

pytestmark = pytest.mark.e2e

LINES = ["v1.14", "v1.10"]


def _stage(request: pytest.FixtureRequest, line: str) -> Stage:
    stage: Stage = request.getfixturevalue("stage" if line == "v1.14" else "stage_v110")
    return stage


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _reboots(out: Outcome) -> list[tuple[str, str]]:
    return [(e.subject, str(e.details.get("mode"))) for e in out.reboots()]


def _succeeded(out: Outcome) -> dict[str, Any]:
    assert out.run.phase == "Succeeded", out.run.text()
    summary = out.summary
    assert summary is not None and summary["result"] == "Succeeded", summary
    return summary


def _failed_with(out: Outcome, phrase: str) -> dict[str, Any]:
    assert out.run.phase == "Failed", out.run.text()
    summary = out.summary
    assert summary is not None and summary["result"] == "Failed", summary
    assert any(phrase in r for r in summary["reasons"]), summary["reasons"]
    return summary


@pytest.mark.parametrize("line", LINES)
def test_1_happy_path_rolls_the_control_plane_before_the_workers_without_remediation(
        request: pytest.FixtureRequest, line: str) -> None:
    stage = _stage(request, line)
    s = scaled("happy", capi_line=line)  # trigger: both — TCP and MachineDeployment changed together
    out = stage.run(request.node.name, s, parameters(s))

    summary = _succeeded(out)
    assert summary["remediations"] == 0 and out.remediations() == []
    assert out.engine_deletions() == [] and out.reboots() == []
    cp, workers = out.phase("control-plane"), out.phase("workers")
    assert cp is not None and workers is not None
    assert _wall(cp["finished"]) <= _wall(workers["started"])
    cp_pod, workers_pod = out.run.attempts("control-plane")[-1], out.run.attempts("workers")[0]
    assert cp_pod.finished is not None and workers_pod.started is not None
    assert cp_pod.finished <= workers_pod.started
    # The simulated CAPI controllers really rolled both: every old machine replaced.
    assert out.timeline.first("rollout.completed", "demo-cp") is not None
    assert out.timeline.first("rollout.completed", "demo-workers") is not None
    text = out.timeline_text()
    assert text.index("engine.phase-succeeded control-plane") < text.index("engine.phase-started   workers")


@pytest.mark.parametrize("line", LINES)
def test_2_a_control_plane_stall_is_recovered_by_one_remediation(request: pytest.FixtureRequest, line: str) -> None:
    stage = _stage(request, line)
    s = scaled("cp-stall-recover-after-reboot", capi_line=line)
    out = stage.run(request.node.name, s, parameters(s))

    summary = _succeeded(out)
    stalled = out.timeline.first("fault.injected")
    assert stalled is not None and stalled.subject == "demo-cp-3"
    assert out.engine_deletions() == ["demo-cp-3"]
    assert _reboots(out) == [("demo-cp-3", "powercycle")]
    (rem,) = summary["phases"]["control-plane"]["remediations"]
    assert rem["machine"] == "demo-cp-3" and rem["deleted"] and rem["rebooted"] and rem["reboot_mode"] == "powercycle"
    assert summary["phases"]["workers"]["remediations"] == []
    assert out.timeline.first("rollout.completed", "demo-cp") is not None
    assert "demo-cp-3" in out.run.exit_outputs["summary"]
    assert summary["headline"] == "control plane: 3/3 replaced, 1 remediation; workers: 2/2 replaced, 0 remediations"
    picture = out.picture()  # results/e2e/<test>/rollout.svg
    for machine in {e.subject for e in out.timeline.events("machine.created")}:
        assert f">{machine}<" in picture
    assert f"remediation 1: delete demo-cp-3, reboot {rem['address']}" in picture


def test_3_a_worker_stall_is_recovered_by_one_remediation_with_the_default_reboot_mode(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("worker-recover-after-replacement")  # trigger: md-template; the second new worker stays NotReady
    out = stage.run(request.node.name, s, parameters(s, rebootMode="default"))

    summary = _succeeded(out)
    stalled = out.timeline.first("fault.injected")
    assert stalled is not None and stalled.details["fault"] == "node-not-ready"
    assert out.engine_deletions() == [stalled.subject]
    assert _reboots(out) == [(stalled.subject, "default")]
    assert summary["phases"]["control-plane"]["remediations"] == []
    (rem,) = summary["phases"]["workers"]["remediations"]
    assert rem["machine"] == stalled.subject and rem["reboot_mode"] == "default"
    assert out.timeline.first("rollout.completed", "demo-workers") is not None


def test_4_a_persistent_stall_spends_exactly_the_budget_then_fails(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("cp-stall-provisioning-never")
    out = stage.run(request.node.name, s, parameters(s, maxRemediations="2"))

    summary = _failed_with(out, "remediation budget exhausted (2 of 2 used)")
    assert len(out.engine_deletions()) == 2 and len(out.reboots()) == 2
    assert [r["machine"] for r in summary["phases"]["control-plane"]["remediations"]] == out.engine_deletions()
    assert [m for m, _ in _reboots(out)] == out.engine_deletions()
    assert not out.step_ran("workers")


def test_4_a_persistent_stall_with_a_zero_budget_fails_without_any_remediation(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("cp-stall-provisioning-never")
    out = stage.run(request.node.name, s, parameters(s, maxRemediations="0"))

    _failed_with(out, "remediation budget exhausted (0 of 0 used)")
    assert out.engine_deletions() == [] and out.reboots() == [] and out.remediations() == []


def test_5_a_control_plane_timeout_fails_the_run_and_the_workers_phase_never_starts(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("slow-timeout")  # every new machine 20x slower; the stall clock is kept out of the way
    out = stage.run(request.node.name, s, parameters(s, controlPlaneTimeout="6s", stallTimeout="60s"))

    summary = _failed_with(out, "control plane phase timed out after")
    assert "(limit 6s)" in summary["phases"]["control-plane"]["message"]
    assert not out.step_ran("workers") and out.phase("workers") is None
    assert summary["phases"]["workers"] == {"result": "not started"}
    assert out.engine_deletions() == [] and out.reboots() == []


def test_6_a_workers_timeout_fails_the_run_after_the_control_plane_succeeded(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("slow-timeout", trigger="md-template",
               faults=(Fault(kind="slow", factor=40, target=Target(role="worker")),))
    out = stage.run(request.node.name, s, parameters(s, workersTimeout="6s", stallTimeout="60s"))

    summary = _failed_with(out, "workers phase timed out after")
    assert summary["phases"]["control-plane"]["result"] == "succeeded"
    assert "(limit 6s)" in summary["phases"]["workers"]["message"]
    assert out.engine_deletions() == [] and out.reboots() == []


def test_10_dry_run_reports_the_stall_and_touches_nothing(request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("cp-stall-recover-after-reboot")
    out = stage.run(request.node.name, s, parameters(s, dryRun="true", maxRemediations="1"))

    assert out.engine_deletions() == [] and out.reboots() == []
    rems = out.remediations("control-plane")
    assert rems and all(r["dry_run"] and r["machine"] == "demo-cp-3" for r in rems)
    assert "DRY RUN" in out.step_log("control-plane")
    # Nothing was fixed, so the stall outlives the (dry) budget.
    _failed_with(out, "remediation budget exhausted")


def test_12_a_step_killed_mid_phase_and_retried_keeps_its_remediation_count(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("cp-stall-provisioning-never")
    # Killed (a lost pod: node Error "pod deleted", retried) between the first remediation and the second: once
    # the ledger shows the first one finished (its outcome written), which leaves a stall timeout before the
    # second one's intent. A kill placed by the clock instead (11 s in) landed inside the first remediation on a
    # loaded CI machine. A real Argo waits its retry backoff (15 s, unscaled) before the second attempt: a phase
    # timeout that leaves room for it, so that the budget, not the clock, ends the phase.
    out = stage.run(request.node.name, s, parameters(s, maxRemediations="2", controlPlaneTimeout="150s"),
                    faults=[KillStep("control-plane", after=0.0, attempt=0, after_remediations=1)])

    first, retry = out.run.attempts("control-plane")
    assert first.phase == "Error" and first.message == "pod deleted", out.run.text()
    assert first.finished is not None
    rems = out.remediations("control-plane")
    before_kill = [r for r in rems if _wall(r["at"]) < first.finished]
    assert before_kill, "the kill landed before the first remediation: the scenario proves nothing"
    summary = _failed_with(out, "remediation budget exhausted (2 of 2 used)")
    assert len(rems) == 2 and len(out.engine_deletions()) == 2 and len(out.reboots()) == 2
    assert retry.phase == "Failed"
    assert f"{len(before_kill)} remediations so far" in out.step_log("control-plane", attempt=1)
    assert summary["remediations"] == 2


@pytest.mark.parametrize("how", ["graceful", "evict"])
def test_12_a_step_deleted_gracefully_or_evicted_mid_phase_is_retried_and_keeps_its_remediation_count(
        request: pytest.FixtureRequest, stage: Stage, how: str) -> None:
    s = scaled("cp-stall-provisioning-never")
    # Deleted with a grace period (kubectl delete pod, a drain) or evicted: the kubelet marks the pod Failed and
    # main dies of the signal (exit 143/137), which OnError never retried; the retry expression does, once. Placed
    # by the ledger between the two remediations, as in the test above.
    out = stage.run(request.node.name, s, parameters(s, maxRemediations="2", controlPlaneTimeout="150s"),
                    faults=[KillStep("control-plane", after=0.0, attempt=0, how=how, after_remediations=1)])

    first, retry = out.run.attempts("control-plane")
    # The kubelet stops main (exit 143, or 137 after the grace period) and marks the pod Failed, then removes the
    # pod object: Argo records whichever it saw last, Failed with main's exit code or Error "pod deleted" (seen on
    # the real engine). Both are retried; OnError alone retried only the second.
    assert (first.phase == "Failed" and first.exit_code in (137, 143)) or (
        first.phase == "Error" and first.message == "pod deleted"), out.run.text()
    assert "deadline" not in first.message
    assert first.finished is not None
    rems = out.remediations("control-plane")
    before_kill = [r for r in rems if _wall(r["at"]) < first.finished]
    assert before_kill, "the deletion landed before the first remediation: the scenario proves nothing"
    summary = _failed_with(out, "remediation budget exhausted (2 of 2 used)")
    assert len(rems) == 2 and len(out.engine_deletions()) == 2 and len(out.reboots()) == 2
    assert retry.phase == "Failed" and retry.exit_code == 1, "the phase's own failure is final: not retried"
    assert len(out.run.attempts("control-plane")) == 2
    assert summary["remediations"] == 2


def test_both_changed_at_once_warns_that_workers_roll_before_the_control_plane_is_complete(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    # Six times slower than the other scenarios: the simulated CAPI must still be rolling both when preflight
    # runs, which on a real Argo engine is ~10 s after the trigger (two pods), not ~2 s as on the emulator.
    s = scaled("both-at-once", timings={"time_scale": 10})
    out = stage.run(request.node.name, s, parameters(s))

    summary = _succeeded(out)  # a warning, never a failure: the workflow never patches CAPI
    ahead = [w for w in summary["warnings"]
             if w.startswith("MachineDeployment demo-workers is rolling before TalosControlPlane demo-cp is complete")]
    assert len(ahead) == 1, summary["warnings"]  # once, whether preflight or the control-plane phase saw it first
    assert "commit the control-plane change first" in ahead[0]
    # The simulated CAPI really rolled the workers while the control plane was rolling.
    cp_done = out.timeline.first("rollout.completed", "demo-cp")
    workers_done = out.timeline.first("rollout.completed", "demo-workers")
    assert cp_done is not None and workers_done is not None
