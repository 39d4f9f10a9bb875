"""Issue 13's scenario kinds played with the rendered WorkflowTemplate: each bundled story (``sim/scenarios``),
with its own workflow parameters (durations scaled by ``e2e.harness``), on the selected backend.

* ``skip-remediation``: the stalled new control-plane Machine is annotated ``cluster.x-k8s.io/skip-remediation`` as
  soon as it exists — the engine never touches it and the phase times out saying why;
* ``maintenance-mid``: a Ready worker drops into Talos maintenance mode mid-rollout — the run fails fast on it;
* ``control-plane-first`` / ``machineset-preflight``: the fake controllers hold the workers (a managed topology,
  CAPI's MachineSet preflight checks) — the run succeeds, the workers rolled only after the control plane;
* ``flap-during-stall``: an old control-plane node flaps while the first new one really stalls. The stalled
  Machine is remediated and the flapping one never is. (The engine's rule that a flap back to an earlier state is
  not progress is proven in tests/product/test_decide.py. Here the overlap depends on the backend: on the real node
  the workflow reaches the phase ~17 s after the trigger, when the 10-minute flap at 60x is over. A flap that is
  still running when the stall is declared can make the etcd quorum guard refuse — two control-plane Machines
  NotReady at that instant — and the phase fail: a known limit.)
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.harness import Stage, parameters, scaled
from e2e.outcome import Outcome

pytestmark = pytest.mark.e2e


def _summary(out: Outcome, phase: str) -> dict[str, Any]:
    assert out.run.phase == phase, out.run.text()
    summary = out.summary
    assert summary is not None and summary["result"] == phase, summary
    return summary


def test_a_machine_annotated_skip_remediation_mid_rollout_is_never_remediated(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("skip-remediation")
    out = stage.run(request.node.name, s, parameters(s, controlPlaneTimeout="12s"))

    summary = _summary(out, "Failed")
    assert out.timeline.first("machine.annotated", "demo-cp-3") is not None
    assert out.engine_deletions() == [] and out.reboots() == [] and out.remediations() == []
    assert any("skip-remediation" in r for r in summary["reasons"]), summary["reasons"]


def test_a_ready_worker_entering_maintenance_mid_rollout_fails_the_run(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("maintenance-mid")
    out = stage.run(request.node.name, s, parameters(s))

    summary = _summary(out, "Failed")
    assert out.timeline.first("talos.maintenance", "demo-workers-r1-1") is not None
    assert any("demo-workers-r1-1" in r and "maintenance mode" in r for r in summary["reasons"]), summary["reasons"]
    assert "demo-workers-r1-1" not in out.engine_deletions()
    assert [e for e in out.reboots() if e.subject == "demo-workers-r1-1"] == []


@pytest.mark.parametrize("story", ["control-plane-first", "machineset-preflight"])
def test_controllers_that_hold_the_workers_until_the_control_plane_is_done_roll_through(
        request: pytest.FixtureRequest, stage: Stage, story: str) -> None:
    s = scaled(story)
    out = stage.run(request.node.name, s, parameters(s))

    summary = _summary(out, "Succeeded")
    assert summary["remediations"] == 0 and out.engine_deletions() == []
    cp_done = out.timeline.first("rollout.completed", "demo-cp")
    assert cp_done is not None and out.timeline.first("rollout.completed", "demo-workers") is not None
    new_workers = [e for e in out.timeline.events("machine.created") if e.details.get("owner") == "demo-workers-r2"]
    assert new_workers and min(e.sim_seconds for e in new_workers) >= cp_done.sim_seconds


def test_a_node_flapping_during_a_real_stall_does_not_draw_the_remediation(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("flap-during-stall")
    out = stage.run(request.node.name, s, parameters(s))

    summary = _summary(out, "Succeeded")
    assert [r["machine"] for r in out.remediations("control-plane")] == ["demo-cp-3"], out.remediations()
    assert "demo-cp-2" not in [e.subject for e in out.reboots()]
    assert summary["remediations"] == 1
    flips = [e.wall for e in out.timeline.events("machine.not-ready", "demo-cp-2")]
    reboot = out.timeline.first("talos.reboot", "demo-cp-3")
    assert len(flips) >= 3 and reboot is not None
    overlap = "while the node still flapped" if reboot.wall < flips[-1] else "after the flap ended"
    print(f"flap-during-stall: demo-cp-3 remediated {overlap}")
