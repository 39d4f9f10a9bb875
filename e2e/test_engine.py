"""What only a real Argo engine can show: its controller dying mid-phase, ``argo stop`` vs ``argo terminate``, the
custom metrics as the controller emits them, and (on the real node) a namespace with no way out.

These play on a cluster backend (the real node by default, kind, a drill): the workflow-controller is a pod
there. The local emulator has no controller to kill, no shutdown strategy and no metrics, so it skips them and says
why; the namespace test needs the real node (``E2E_CLUSTER=node``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from capi_rollout.waiting import wait_until
from e2e.argo_local import KillStep, WorkflowRun, run_from_argo_workflow
from e2e.harness import Stage, parameters, scaled
from e2e.node import netns
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


# ------------------------------------------------------------------------------------------ custom metrics


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _controller_metrics(backend: Any) -> list[tuple[str, dict[str, str], float]]:
    """The running workflow-controller's /metrics (port 9090, HTTPS by Argo's default), through the API server's
    pod proxy: ``(name, labels, value)`` per sample."""
    from kubernetes import client

    (pod,) = [p for p in _controller_pods(backend) if (p.get("status") or {}).get("phase") == "Running"]
    text = client.CoreV1Api(backend.api).connect_get_namespaced_pod_proxy_with_path(
        f"https:{pod['metadata']['name']}:9090", "argo", "metrics")
    samples = []
    for line in str(text).splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            samples.append((match[1], dict(_LABEL.findall(match[2] or "")), float(match[3])))
    return samples


def _metric(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> list[float]:
    return [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]


def test_17_custom_metrics_count_each_remediation_once_across_a_retried_step(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    """Argo emits a template's metrics per attempt; the counters live on the summary step, so a control-plane step
    lost mid-phase and retried (scenario 12) still counts each remediation once. No ``MetricsError`` condition."""
    backend = _cluster_stage(stage)
    s = scaled("cp-stall-provisioning-never")
    out = stage.run(request.node.name, s, parameters(s, maxRemediations="2", controlPlaneTimeout="150s"),
                    faults=[KillStep("control-plane", after=11.0, attempt=0)])

    assert len(out.run.attempts("control-plane")) == 2, out.run.text()
    assert out.summary is not None and out.summary["remediations"] == 2, out.run.text()
    from kubernetes import client

    obj = client.CustomObjectsApi(backend.api).get_namespaced_custom_object(*ARGO, backend.namespace, "workflows",
                                                                           out.run.name)
    conditions = (cast(dict[str, Any], obj).get("status") or {}).get("conditions") or []
    assert not [c for c in conditions if c.get("type") == "MetricsError"], conditions
    cluster = {"cluster_namespace": out.run.parameters["clusterNamespace"],
               "cluster_name": out.run.parameters["clusterName"]}
    samples: list[tuple[str, dict[str, str], float]] = []

    def scraped() -> bool:  # the summary's metrics appear when the controller has seen the step end
        samples[:] = _controller_metrics(backend)
        return bool(_metric(samples, "argo_workflows_capi_rollout_result_total", **cluster))

    wait_until(scraped, timeout=60, interval=0.5, what="the summary's metrics on the controller's /metrics")
    names = sorted({n for n, _, _ in samples if n.startswith("argo_workflows_capi_rollout_")})
    print(f"custom metrics scraped: {names}")
    assert _metric(samples, "argo_workflows_capi_rollout_remediations_total", **cluster) == [2.0], names
    assert _metric(samples, "argo_workflows_capi_rollout_result_total", result="Failed", **cluster) == [1.0]
    # The histogram is emitted per attempt: both control-plane attempts are in it.
    attempts = _metric(samples, "argo_workflows_capi_rollout_phase_duration_seconds_count", phase="control-plane",
                       **cluster)
    assert sum(attempts) == 2, [x for x in samples if x[0].startswith("argo_workflows_capi_rollout_phase")]


# ------------------------------------------------------------------------------------------ no way out


def _node_layout() -> Any:
    if os.environ.get("E2E_CLUSTER") != "node":
        pytest.skip("needs the real node (E2E_CLUSTER=node): the test runs inside its network namespace")
    from e2e.node.setup import default_layout

    return default_layout()


def _json(*argv: str) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], json.loads(subprocess.run(argv, check=True, capture_output=True,
                                                                text=True).stdout or "[]"))


def _address(endpoint: str) -> str:
    """The address of an ``ss`` endpoint (``10.0.0.1:80``, ``[::1]:53``, ``*:10250``, ``127.0.0.53%lo:53``)."""
    host = endpoint.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    return "0.0.0.0" if host == "*" else host


def test_18_the_live_node_namespace_has_no_route_out_and_nothing_listens_or_dials_outside(stage: Stage) -> None:
    """After the bridge, kube-proxy, containerd and the pods set the namespace up (the stage has run pods): no
    default route, no route to an address outside the node's, pods' and Services' ranges, no address outside them
    on any interface, and every socket (listening or connected) bound to and talking to such addresses only."""
    layout = _node_layout()
    inside = [ipaddress.ip_network(n, strict=False) for n in (
        f"{layout.node_ip}/{layout.node_prefix}", layout.pod_cidr, layout.service_cidr, "127.0.0.0/8", "::1/128",
        "fe80::/10", "ff00::/8", "224.0.0.0/4")]

    def is_inside(address: str) -> bool:
        net = ipaddress.ip_network(address, strict=False)
        mapped = getattr(net.network_address, "ipv4_mapped", None)  # ::ffff:a.b.c.d, a dual-stack socket's view
        if mapped is not None:
            net = ipaddress.ip_network(mapped)
        return net.network_address.is_unspecified or any(
            net.version == n.version and net.network_address in n and net.prefixlen >= n.prefixlen for n in inside)

    routes = _json("ip", "-json", "-4", "route", "show", "table", "all") + \
        _json("ip", "-json", "-6", "route", "show", "table", "all")
    assert routes and netns.route_out(routes) == [], netns.route_out(routes)
    assert not [r for r in routes if r.get("dst") == "default" or not is_inside(str(r["dst"]))], routes
    links = _json("ip", "-json", "addr", "show")
    addresses = [a["local"] for link in links for a in link.get("addr_info", [])]
    assert any(a == layout.node_ip for a in addresses) and any(
        ipaddress.ip_address(a) in ipaddress.ip_network(layout.pod_cidr) for a in addresses), addresses
    assert [a for a in addresses if not is_inside(a)] == [], addresses  # so a wildcard listener is inside too
    sockets = []
    for flags in ("-Hltn", "-Hlun", "-Htan", "-Huan"):
        out = subprocess.run(["ss", flags], check=True, capture_output=True, text=True).stdout
        sockets += [(flags, line.split()[3], line.split()[4]) for line in out.splitlines() if line.strip()]
    assert any(flags == "-Hltn" and _address(local) == layout.node_ip for flags, local, _ in sockets), sockets
    outside = [(f, local, peer) for f, local, peer in sockets
               if not is_inside(_address(local)) or (peer not in ("*:*", "0.0.0.0:*", "[::]:*")
                                                     and not is_inside(_address(peer)))]
    assert outside == [], outside
