"""What lets the e2e scenarios play on a simulator outside the test process (a child process, a pod in kind or a
drill cluster): its timeline as JSON lines, the settled check from the API's Machines, fault injection by pod
deletion, the CAPI line a cluster can hold, drill images, and the runner's RoleBinding in the simulator namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e.argo_local import KillStep, run_from_argo_workflow
from e2e.argo_local.model import pod_name
from e2e.backends.existing import finished_remediations, image_overrides, kill_due, serves_capi_line
from e2e.backends.sim_pod import simulator_documents
from e2e.harness import RUNNER, Stage, Venue, per_cluster_binding, simulator_for
from e2e.simhandles import settled
from sim.deploy import SIM_IMAGE
from sim.scenario_format import load
from sim.timeline import Event, Timeline

# --- the timeline across a process boundary ----------------------------------------------------------------


def test_an_event_survives_its_json_line_and_odd_details_become_strings() -> None:
    event = Event(1700000000.25, 93.5, "talos.reboot", "demo-cp-3", {"mode": "powercycle", "where": Path("/x")})
    back = Event.from_json(event.to_json())
    assert back == Event(1700000000.25, 93.5, "talos.reboot", "demo-cp-3", {"mode": "powercycle", "where": "/x"})
    assert back.line() == event.line()


def test_a_parsed_timeline_keeps_only_the_event_lines_and_answers_queries() -> None:
    events = [Event(10.0, 0.0, "machine.created", "demo-cp-1"), Event(11.0, 60.0, "rollout.triggered", "demo"),
              Event(12.0, 120.0, "machine.deleting", "demo-cp-1")]
    text = "\n".join(["simulating demo in ns (v1.14, x60); talosconfig endpoints: 127.1.2.3",
                      events[0].to_json(), "{not json", '{"kind": "half an event"}', events[1].to_json(),
                      "Traceback (most recent call last):", events[2].to_json(), ""])
    timeline = Timeline.parse(text, scale=60)
    assert timeline.events() == events
    assert timeline.first("rollout.triggered") == events[1]
    assert timeline.events("machine") == [events[0], events[2]]
    assert timeline.scale == 60


def test_from_json_refuses_a_line_that_is_not_an_event() -> None:
    with pytest.raises(ValueError, match="not a timeline event"):
        Event.from_json('{"wall": 1}')


def test_the_pod_simulator_prints_its_timeline_as_json() -> None:
    docs = simulator_documents("happy", "sim-x", image="img:1")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--output") + 1] == "json" and "--allow-real-capi" not in args
    (drill,) = [d for d in simulator_documents("happy", "sim-x", image="img:1", allow_real_capi=True)
                if d["kind"] == "Deployment"]
    assert "--allow-real-capi" in drill["spec"]["template"]["spec"]["containers"][0]["args"]


# --- settled ------------------------------------------------------------------------------------------------


def _machines(*phases: str | None) -> list[dict[str, Any]]:
    return [{"metadata": {"name": f"m{i}"}, "status": ({"phase": p} if p else {})} for i, p in enumerate(phases)]


def test_a_simulated_cluster_is_settled_when_every_machine_exists_and_runs() -> None:
    s = load("happy")  # 3 control-plane + 2 workers
    assert settled(_machines(*["Running"] * 5), s) == (True, "5 Machines Running")
    assert settled(_machines(*["Running"] * 4), s) == (False, "4 of 5 Machines exist, 4 Running")
    assert settled(_machines(*["Running"] * 4, "Provisioning"), s) == (False, "5 of 5 Machines exist, 4 Running")
    assert settled(_machines(*["Running"] * 4, None), s)[0] is False
    assert settled(_machines(*["Running"] * 6), s)[0] is False


# --- fault injection on a real Argo: delete the attempt's pod ----------------------------------------------


def _workflow(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "wf-1", "namespace": "argo"}, "spec": {},
            "status": {"phase": "Running", "nodes": {n["id"]: n for n in nodes}}}


def _pod(node_id: str, display: str, phase: str, started: str | None) -> dict[str, Any]:
    return {"id": node_id, "name": f"wf-1[2].{display}", "displayName": display, "type": "Pod",
            "templateName": "control-plane", "phase": phase, "startedAt": started}


def test_a_kill_is_due_only_once_its_attempt_has_run_for_the_given_time() -> None:
    fault = KillStep("control-plane", after=13.0, attempt=0)
    started = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    run = run_from_argo_workflow(_workflow(_pod("a", "control-plane(0)", "Running", "2027-01-15T08:00:00Z")))
    assert kill_due(run, fault, now=started + 12.9) is None
    assert kill_due(run, fault, now=started + 13.0) == pod_name("wf-1", "wf-1[2].control-plane(0)", "control-plane")


def test_a_kill_placed_by_the_ledger_waits_for_that_many_finished_remediations_of_its_phase() -> None:
    fault = KillStep("control-plane", after=0.0, attempt=0, after_remediations=1)
    run = run_from_argo_workflow(_workflow(_pod("a", "control-plane(0)", "Running", "2027-01-15T08:00:00Z")))
    later = 1_900_000_000.0

    def ledger(*outcomes: str, phase: str = "control-plane") -> dict[str, Any]:
        return {"phases": {phase: {"remediations": [{"machine": f"m{i}", "outcome": o}
                                                    for i, o in enumerate(outcomes)]}}}

    assert kill_due(run, fault, now=later, ledger=None) is None  # no ledger yet
    assert kill_due(run, fault, now=later, ledger=ledger("started")) is None  # intent only: it is acting now
    assert kill_due(run, fault, now=later, ledger=ledger("deleted", phase="workers")) is None  # another phase
    assert kill_due(run, fault, now=later, ledger=ledger("deleted Machine m0; reboot accepted", "started")) == (
        pod_name("wf-1", "wf-1[2].control-plane(0)", "control-plane"))
    assert finished_remediations(ledger("a", "started", "b"), "control-plane") == 2
    assert kill_due(run, KillStep("control-plane", 1.0), now=later, ledger=None) is not None  # time-only: no ledger
    with pytest.raises(ValueError, match="negative"):
        KillStep("control-plane", 0.0, after_remediations=-1)


def test_no_kill_for_an_attempt_not_started_ended_or_absent() -> None:
    later = 1_900_000_000.0
    assert kill_due(run_from_argo_workflow(_workflow()), KillStep("control-plane", 1.0), now=later) is None
    pending = run_from_argo_workflow(_workflow(_pod("a", "control-plane(0)", "Pending", None)))
    assert kill_due(pending, KillStep("control-plane", 1.0), now=later) is None
    ended = run_from_argo_workflow(_workflow(_pod("a", "control-plane(0)", "Failed", "2027-01-15T08:00:00Z")))
    assert kill_due(ended, KillStep("control-plane", 1.0), now=later) is None
    first_only = run_from_argo_workflow(_workflow(_pod("a", "control-plane(0)", "Running", "2027-01-15T08:00:00Z")))
    assert kill_due(first_only, KillStep("control-plane", 1.0, attempt=1), now=later) is None


# --- which CAPI line a cluster can hold, drill images ------------------------------------------------------


def _machine_crd(*versions: tuple[str, bool]) -> dict[str, Any]:
    return {"spec": {"versions": [{"name": n, "storage": st, "served": True} for n, st in versions]}}


def test_a_cluster_serves_a_capi_line_when_its_machine_crd_stores_that_lines_version() -> None:
    v114 = _machine_crd(("v1beta1", False), ("v1beta2", True))
    assert serves_capi_line(v114, "v1.14") == (True, "the Machine CRD stores v1beta2")
    ok, why = serves_capi_line(v114, "v1.10")
    assert not ok and why == ("the CAPI v1.10 scenarios write v1beta1 Machines, but this cluster's Machine CRD "
                              "stores v1beta2")
    assert serves_capi_line(_machine_crd(("v1beta1", True)), "v1.10")[0] is True


def test_drill_images_come_from_the_environment_and_replace_the_released_tags() -> None:
    from capi_rollout.workflow.image import IMAGE

    assert image_overrides({}) == {}
    assert image_overrides({"E2E_STEP_IMAGE": " registry.lan/capi-rollout:dev ", "E2E_SIM_IMAGE": ""}) == {
        IMAGE: "registry.lan/capi-rollout:dev"}
    assert image_overrides({"E2E_SIM_IMAGE": "registry.lan/sim:dev"}) == {SIM_IMAGE: "registry.lan/sim:dev"}


# --- where the local backend runs the simulator -----------------------------------------------------------


def test_locally_the_v110_line_plays_with_a_simulator_in_a_child_process_unless_told_otherwise() -> None:
    assert simulator_for("v1.14", {}) == "in-process"
    assert simulator_for("v1.10", {}) == "process"
    assert simulator_for("v1.14", {"E2E_SIMULATOR": "process"}) == "process"
    with pytest.raises(ValueError, match="expected one of in-process, process"):
        simulator_for("v1.14", {"E2E_SIMULATOR": "pod"})


# --- the runner's RoleBinding in the simulator namespace --------------------------------------------------


def test_the_runner_is_bound_in_the_simulator_namespace_as_the_stage_runner_namespace_service_account() -> None:
    applied: list[dict[str, Any]] = []
    venue = Venue(backend=object(), api=None, apply=applied.extend,  # type: ignore[arg-type]
                  start_simulator=lambda s: None,  # type: ignore[arg-type,return-value]
                  runner_namespace="capi-rollout-e2e-1a2b3c")
    Stage(venue, Path("unused")).bind_runner("e2e-happy-4d5e6f")
    (binding,) = applied
    shipped = per_cluster_binding("e2e-happy-4d5e6f")
    assert binding["metadata"] == shipped["metadata"] and binding["roleRef"] == shipped["roleRef"]
    assert binding["metadata"]["namespace"] == "e2e-happy-4d5e6f"
    assert [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]] == [
        ("ServiceAccount", RUNNER, "capi-rollout-e2e-1a2b3c")]


# --- a simulator pod that died ------------------------------------------------------------------------------


def test_a_simulator_pod_is_alive_until_its_container_exits_once() -> None:
    from e2e.backends.sim_pod import container_alive

    def pod(**status: Any) -> dict[str, Any]:
        return {"status": {"containerStatuses": [{"name": "simulator", "restartCount": 0, **status}]}}

    assert container_alive({"status": {}}) == (True, "container simulator not started yet")
    assert container_alive(pod(state={"running": {}})) == (True, "running")
    crashed = pod(state={"waiting": {"reason": "CrashLoopBackOff"}}, restartCount=3,
                  lastState={"terminated": {"exitCode": 1, "reason": "Error"}})
    assert container_alive(crashed) == (False, "container simulator exited with code 1 (Error); restarts: 3")
    assert container_alive(pod(state={"terminated": {"exitCode": 2}}))[0] is False


def test_a_remote_run_prints_each_step_attempt_and_the_workflow_when_their_phase_changes() -> None:
    from e2e.backends.existing import progress_lines

    seen: dict[str, str] = {}
    running = run_from_argo_workflow(_workflow(_pod("a", "control-plane(0)", "Running", "2027-01-15T08:00:00Z")))
    assert progress_lines(running, seen) == ["wf-1: control-plane(0) Running", "wf-1: workflow Running"]
    assert progress_lines(running, seen) == [], "nothing changed, nothing printed"
    lost = _pod("a", "control-plane(0)", "Error", "2027-01-15T08:00:00Z") | {"message": "pod deleted"}
    retry = _pod("b", "control-plane(1)", "Pending", None)
    assert sorted(progress_lines(run_from_argo_workflow(_workflow(lost, retry)), seen)) == [
        "wf-1: control-plane(0) Error: pod deleted", "wf-1: control-plane(1) Pending"]


def test_a_drill_copies_the_deployed_template_without_what_the_server_owns() -> None:
    from e2e.backends.existing import template_copy

    live = {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
            "metadata": {"name": "capi-rollout", "namespace": "argo", "uid": "u-1", "resourceVersion": "42",
                         "generation": 3, "creationTimestamp": "2026-11-01T00:00:00Z", "managedFields": [{}],
                         "labels": {"app.kubernetes.io/name": "capi-rollout"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                                         "argocd.argoproj.io/tracking-id": "capi-rollout:argoproj.io/x"}},
            "spec": {"entrypoint": "main", "templates": [{"name": "main"}]}}
    assert template_copy(live) == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
        "metadata": {"name": "capi-rollout", "namespace": "argo", "labels": {"app.kubernetes.io/name": "capi-rollout"},
                     "annotations": {"argocd.argoproj.io/tracking-id": "capi-rollout:argoproj.io/x"}},
        "spec": {"entrypoint": "main", "templates": [{"name": "main"}]}}
