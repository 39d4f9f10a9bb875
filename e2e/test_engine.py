"""What only a real Argo engine can show: its controller dying mid-phase, and ``argo stop`` vs ``argo terminate``.

These play on a cluster backend (the real node by default, kind, a drill): the workflow-controller is a pod
there. The local emulator has no controller to kill and no shutdown strategy, so it skips them and says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from capi_rollout.waiting import wait_until
from e2e.argo_local import WorkflowRun, run_from_argo_workflow
from e2e.harness import Stage, parameters, scaled
from e2e.simhandles import SimHandle

pytestmark = pytest.mark.e2e

ARGO = ("argoproj.io", "v1alpha1")


def _cluster_stage(stage: Stage) -> Any:
    from e2e.backends.existing import ClusterBackend

    if not isinstance(stage.backend, ClusterBackend):
        pytest.skip("needs a real Argo controller (E2E_CLUSTER=node, kind or existing); the local emulator has none")
    return stage.backend


def _workflow(backend: Any, name: str) -> WorkflowRun:
    from kubernetes import client

    obj = client.CustomObjectsApi(backend.api).get_namespaced_custom_object(*ARGO, backend.namespace, "workflows",
                                                                           name)
    return run_from_argo_workflow(cast(dict[str, Any], obj))


def _step_running(backend: Any, run: WorkflowRun, step: str) -> Callable[[], bool]:
    def check() -> bool:
        attempts = _workflow(backend, run.name).attempts(step)
        return bool(attempts) and attempts[-1].phase == "Running"
    return check


def _controller_pods(backend: Any) -> list[dict[str, Any]]:
    from envtest import rest

    pods = rest.request_json(backend.api, "GET", "/api/v1/namespaces/argo/pods",
                             query=[("labelSelector", "app=workflow-controller")])
    return cast(list[dict[str, Any]], pods.get("items") or [])


def test_15_the_workflow_controller_killed_mid_phase_keeps_the_running_step_and_the_mutex(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    backend = _cluster_stage(stage)
    s = scaled("cp-stall-recover-after-reboot")
    params = parameters(s, controlPlaneTimeout="150s", workersTimeout="150s")
    seen: dict[str, Any] = {}

    def kill_the_controller(sim: SimHandle, run: WorkflowRun) -> None:
        from envtest import rest

        wait_until(_step_running(backend, run, "control-plane"), timeout=120, interval=0.5,
                   what="the control-plane step running")
        second = backend.submit(params)  # same cluster: must wait on the mutex, across the restart too
        wait_until(lambda: "Waiting for" in (_workflow(backend, second.name).message or ""), timeout=60,
                   interval=0.5, what=f"{second.name} waiting on the mutex")
        old = [p["metadata"]["uid"] for p in _controller_pods(backend)]
        for pod in _controller_pods(backend):  # SIGKILL, as a crashed or OOM-killed controller
            rest.request_json(backend.api, "DELETE", f"/api/v1/namespaces/argo/pods/{pod['metadata']['name']}",
                              query=[("gracePeriodSeconds", "0")])
        seen["killed_at"] = time.time()
        wait_until(lambda: any(p["metadata"]["uid"] not in old and (p.get("status") or {}).get("phase") == "Running"
                               for p in _controller_pods(backend)),
                   timeout=120, interval=0.5, what="a new workflow-controller pod running")
        seen["second"] = second
        seen["second_message"] = _workflow(backend, second.name).message

    out = stage.run(request.node.name, s, params, during=kill_the_controller, timeout=300.0)

    assert out.run.phase == "Succeeded", out.run.text()
    attempts = out.run.attempts("control-plane")
    assert len(attempts) == 1, "the step pod kept running while its controller was replaced: no retry"
    assert attempts[0].finished is not None and attempts[0].finished > seen["killed_at"]
    assert len(out.remediations("control-plane")) == 1
    # The second run acted only after the first ended, although the controller that queued it died. Argo v4.0.2
    # may lose the templated mutex on that restart (its sync manager cannot place a workflowTemplateRef's mutex
    # when it rebuilds): then the second run starts at once, finds the cluster's claim held by the first and ends
    # without acting. (With the mutex kept, it finds the simulator gone with the first run's scenario, so its own
    # result is not the point.)
    second = backend.wait(seen["second"], 300.0)
    assert "Waiting for" in seen["second_message"], seen["second_message"]
    assert second.phase in ("Succeeded", "Failed") and second.attempts("resolve"), second.text()
    assert out.run.finished is not None
    resolve = second.attempts("resolve")[0]
    assert resolve.started is not None
    mutex_held = resolve.started >= out.run.finished - 1.0
    print(f"second run: Argo's mutex {'held' if mutex_held else 'was lost in the restart; the claim held'} "
          f"(resolve started {resolve.started - out.run.finished:+.0f}s after the first run ended)")
    if not mutex_held:
        assert second.phase == "Failed" and "another rollout of" in second.text(), second.text()
        assert not second.attempts("preflight"), "refused at resolve: it never acted"
    acted = [n.started for step in ("preflight", "control-plane", "workers") for n in second.attempts(step)
             if n.started is not None]
    assert all(t >= out.run.finished - 1.0 for t in acted), "the second run acted while the first was rolling"


@pytest.mark.parametrize(("strategy", "summary_runs"), [("Stop", True), ("Terminate", False)])
def test_16_argo_stop_writes_the_summary_and_argo_terminate_skips_it(
        request: pytest.FixtureRequest, stage: Stage, strategy: str, summary_runs: bool) -> None:
    from kubernetes import client

    backend = _cluster_stage(stage)
    s = scaled("cp-stall-provisioning-never")
    params = parameters(s, maxRemediations="0", controlPlaneTimeout="150s")

    def shut_down(sim: SimHandle, run: WorkflowRun) -> None:
        wait_until(_step_running(backend, run, "control-plane"), timeout=120, interval=0.5,
                   what="the control-plane step running")
        # What `argo stop` / `argo terminate` do: set the workflow's shutdown strategy.
        client.CustomObjectsApi(backend.api).patch_namespaced_custom_object(
            *ARGO, backend.namespace, "workflows", run.name, {"spec": {"shutdown": strategy}})

    out = stage.run(request.node.name, s, params, during=shut_down, timeout=300.0)

    assert out.run.phase == "Failed", out.run.text()
    assert out.run.attempts("control-plane")[-1].phase != "Succeeded"
    assert len(out.run.attempts("control-plane")) == 1, "a shut-down step is never retried"
    if summary_runs:
        assert out.summary is not None, out.run.text()
        assert out.summary["result"] == "Failed" and out.summary["remediations"] == 0
    else:
        assert out.summary is None, "terminate skips the exit handler: no summary"
        assert not out.run.attempts("summary"), out.run.text()
