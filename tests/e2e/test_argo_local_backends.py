"""Backend selection, the kind backend's pure decisions, and the local backend on the real local API server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.argo_local import run_from_argo_workflow
from e2e.backends.argo_install import ARGO_MODULE, argo_kustomization, build_argo_install, module_zip
from e2e.backends.base import load_manifests
from e2e.backends.existing import override_images, rehome, workflow_object
from e2e.backends.local import LocalBackend
from e2e.backends.selection import docker_available, select_backend

# --- selection ---------------------------------------------------------------------------------------------


def test_e2e_cluster_wins_over_docker_detection() -> None:
    assert select_backend({"E2E_CLUSTER": "local"}, lambda: (True, "engine"))[0] == "local"
    assert select_backend({"E2E_CLUSTER": "existing"}, lambda: (False, "none"))[0] == "existing"


def test_without_e2e_cluster_kind_is_chosen_only_where_docker_answers() -> None:
    assert select_backend({}, lambda: (True, "Docker engine 27")) == ("kind", "Docker engine 27")
    assert select_backend({}, lambda: (False, "no docker CLI on PATH")) == ("local", "local: no docker CLI on PATH")


def test_an_unknown_backend_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected one of local, kind, existing"):
        select_backend({"E2E_CLUSTER": "minikube"})


def test_docker_available_reports_why_not() -> None:
    assert docker_available(which=lambda _: None) == (False, "no docker CLI on PATH")

    def engine_down(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(argv, 1, b"", b"Cannot connect to the Docker daemon")

    ok, why = docker_available(which=lambda _: "/usr/bin/docker", run=engine_down)
    assert not ok and "Cannot connect to the Docker daemon" in why

    def engine_up(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(argv, 0, b"27.1.0\n", b"")

    assert docker_available(which=lambda _: "/usr/bin/docker", run=engine_up) == (True, "Docker engine 27.1.0")


# --- the kind/existing backends' pure parts ----------------------------------------------------------------


def test_the_submitted_workflow_references_the_template_like_argo_submit_from() -> None:
    wf = workflow_object("capi-rollout", "argo", {"clusterName": "c1", "maxRemediations": "1"})
    assert wf["kind"] == "Workflow" and wf["metadata"]["generateName"] == "capi-rollout-"
    assert wf["spec"] == {
        "workflowTemplateRef": {"name": "capi-rollout"},
        "arguments": {"parameters": [{"name": "clusterName", "value": "c1"}, {"name": "maxRemediations",
                                                                              "value": "1"}]},
    }


def test_images_are_overridden_only_where_named() -> None:
    wft: dict[str, Any] = {"kind": "WorkflowTemplate", "metadata": {"name": "t"}, "spec": {"templates": [
        {"name": "a", "script": {"image": "ghcr.io/x/capi-rollout:1"}},
        {"name": "b", "container": {"image": "busybox"}}, {"name": "c", "steps": []}]}}
    out = override_images(wft, {"ghcr.io/x/capi-rollout:1": "capi-rollout:e2e"})
    assert [t.get("script", t.get("container", {})).get("image") for t in out["spec"]["templates"]] == [
        "capi-rollout:e2e", "busybox", None]
    assert wft["spec"]["templates"][0]["script"]["image"] == "ghcr.io/x/capi-rollout:1", "input left untouched"


def test_rehome_moves_namespaced_objects_and_binding_subjects_into_the_throwaway_namespace() -> None:
    sa = rehome({"kind": "ServiceAccount", "metadata": {"name": "r", "namespace": "argo"}}, "e2e-1")
    crb = rehome({"kind": "ClusterRoleBinding", "metadata": {"name": "r"}, "subjects": [
        {"kind": "ServiceAccount", "name": "r", "namespace": "argo"}]}, "e2e-1")
    cr = rehome({"kind": "ClusterRole", "metadata": {"name": "r"}}, "e2e-1")
    assert sa["metadata"] == {"name": "r", "namespace": "e2e-1"}
    assert crb["subjects"][0]["namespace"] == "e2e-1" and crb["metadata"] == {"name": "r-e2e-1"}
    assert cr["metadata"] == {"name": "r-e2e-1"}


def test_a_drill_never_overwrites_the_deployed_rbac_and_knows_what_it_added_outside_its_namespace() -> None:
    from e2e.backends.existing import outside
    from e2e.harness import RBAC_PATH

    shipped = load_manifests([RBAC_PATH])
    roles = {d["metadata"]["name"] for d in shipped if d["kind"] == "ClusterRole"}
    docs = [rehome(d, "e2e-1", cluster_roles=roles) for d in shipped]
    for before, after in zip(shipped, docs, strict=True):
        if after["metadata"].get("namespace") != "e2e-1":  # cluster-scoped or in another namespace: suffixed
            assert after["metadata"]["name"] == before["metadata"]["name"] + "-e2e-1", after
        ref = after.get("roleRef")
        if ref and ref["kind"] == "ClusterRole":
            assert ref["name"] == before["roleRef"]["name"] + "-e2e-1"
        for subject in after.get("subjects") or []:
            assert subject["namespace"] == "e2e-1"
    added = {outside(d, "e2e-1") for d in docs} - {None}
    rbac = "rbac.authorization.k8s.io/v1"
    assert added == {(rbac, "ClusterRole", None, "capi-rollout-read-capi-e2e-1"),
                     (rbac, "ClusterRole", None, "capi-rollout-cluster-namespace-e2e-1"),
                     (rbac, "ClusterRoleBinding", None, "capi-rollout-read-capi-e2e-1"),
                     (rbac, "RoleBinding", "default", "capi-rollout-runner-e2e-1")}
    view = rehome({"kind": "RoleBinding", "metadata": {"name": "v", "namespace": "argo"},
                   "roleRef": {"kind": "ClusterRole", "name": "view"}}, "e2e-1", cluster_roles=roles)
    assert view["roleRef"]["name"] == "view", "a ClusterRole the drill did not install keeps its name"


def test_the_argo_install_is_built_from_the_pinned_module_zip_with_pinned_images() -> None:
    from envtest import assets

    version = assets.versions()["ARGO_WORKFLOWS_VERSION"]
    assert argo_kustomization(version)["images"][0] == {"name": "quay.io/argoproj/workflow-controller",
                                                         "newTag": version}
    docs = build_argo_install(module_zip(assets.cache_dir(), ARGO_MODULE, version), version, assets.kustomize())
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    controller = deployments["workflow-controller"]["spec"]["template"]["spec"]["containers"][0]
    assert controller["image"] == f"quay.io/argoproj/workflow-controller:{version}"
    assert all(d["metadata"].get("namespace", "argo") == "argo" for d in docs if d["kind"] != "ClusterRole")


def test_a_real_argo_workflow_status_converts_to_the_shared_run_record() -> None:
    wf = {
        "metadata": {"name": "wf-1", "namespace": "argo", "uid": "u"},
        "spec": {"arguments": {"parameters": [{"name": "clusterName", "value": "c1"}]}},
        "status": {"phase": "Failed", "message": "child 'wf-1-2' failed", "startedAt": "2025-01-01T00:00:00Z",
                   "nodes": {
                       "wf-1": {"id": "wf-1", "name": "wf-1", "displayName": "wf-1", "type": "Steps",
                                "templateName": "main", "phase": "Failed", "children": ["wf-1-1"],
                                "startedAt": "2025-01-01T00:00:00Z"},
                       "wf-1-1": {"id": "wf-1-1", "name": "wf-1[0]", "displayName": "[0]", "type": "StepGroup",
                                  "templateName": "main", "phase": "Failed", "children": ["wf-1-2"],
                                  "startedAt": "2025-01-01T00:00:01Z"},
                       "wf-1-2": {"id": "wf-1-2", "name": "wf-1[0].resolve", "displayName": "resolve",
                                  "type": "Pod", "templateName": "resolve", "phase": "Failed",
                                  "message": "main: Error (exit code 1)", "startedAt": "2025-01-01T00:00:02Z",
                                  "outputs": {"exitCode": "1", "parameters": [{"name": "n", "value": "3"}]}},
                       "wf-1-3": {"id": "wf-1-3", "name": "wf-1.onExit", "displayName": "wf-1.onExit",
                                  "type": "Pod", "templateName": "summary", "phase": "Succeeded",
                                  "startedAt": "2025-01-01T00:00:03Z",
                                  "outputs": {"parameters": [{"name": "summary", "value": "{}"}]}},
                   }},
    }
    run = run_from_argo_workflow(wf)
    assert (run.phase, run.parameters) == ("Failed", {"clusterName": "c1"})
    resolve = run.node("resolve")
    assert (resolve.exit_code, resolve.outputs, resolve.message) == (1, {"n": "3"}, "main: Error (exit code 1)")
    assert run.exit_outputs == {"summary": "{}"}
    assert "✖ resolve" in run.text()


def test_manifests_load_from_paths_text_and_dicts(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("kind: A\nmetadata: {name: a}\n---\n---\nkind: B\nmetadata: {name: b}\n")
    docs = load_manifests([f, "kind: C\nmetadata: {name: c}\n", {"kind": "D", "metadata": {"name": "d"}}])
    assert [d["kind"] for d in docs] == ["A", "B", "C", "D"]


@pytest.mark.kind
def test_the_kind_backend_runs_a_toy_template_through_a_real_argo_controller(tmp_path: Path) -> None:
    ok, why = docker_available()
    if not ok:
        pytest.skip(f"kind backend needs a Docker engine: {why}")
    from e2e.backends.kind import KindBackend

    backend = KindBackend(tmp_path, cluster_name="argo-local-selftest")
    try:
        backend.install([_rbac("argo"), _toy_template("busybox:1.36")])
        run = backend.wait(backend.submit({"who": "kind"}), timeout=300)
        assert run.phase == "Succeeded", run.text()
        assert "kind" in Path(run.node("hello").log_path or "").read_text()
    finally:
        backend.close()


# --- the local backend on the real API server --------------------------------------------------------------


def _rbac(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "capi-rollout-runner", "namespace": namespace}}


def _toy_template(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
        "metadata": {"name": "probe", "namespace": "argo"},
        "spec": {"entrypoint": "main", "serviceAccountName": "capi-rollout-runner",
                 "arguments": {"parameters": [{"name": "who"}]},
                 "templates": [
                     {"name": "main", "steps": [[{"name": "hello", "template": "hello"}]]},
                     {"name": "hello",
                      "container": {"image": image, "command": ["echo", "{{workflow.parameters.who}}"]}},
                 ]},
    }


def test_the_local_backend_runs_steps_under_the_runner_service_accounts_real_token(
    apiserver: Any, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    rbac: list[dict[str, Any]] = [
        _rbac(ns),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": ns},
         "data": {"k": "seen"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "probe", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "probe", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe"},
         "subjects": [{"kind": "ServiceAccount", "name": "capi-rollout-runner", "namespace": ns}]},
    ]
    source = (
        "from kubernetes import client, config\n"
        "from kubernetes.client.exceptions import ApiException\n"
        "config.load_kube_config()\n"
        "core = client.CoreV1Api()\n"
        "print(core.read_namespaced_config_map('probe', '{{workflow.namespace}}').data['k'], end=' ')\n"
        "try:\n    core.read_namespaced_secret('x', '{{workflow.namespace}}')\n"
        "except ApiException as e:\n    print(e.status, end=' ')\n"
        "print('{{workflow.parameters.who}}')\n"
    )
    wft = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {"entrypoint": "main", "serviceAccountName": "capi-rollout-runner",
                 "arguments": {"parameters": [{"name": "who"}]},
                 "templates": [
                     {"name": "main", "steps": [[{"name": "hello", "template": "hello"}]]},
                     {"name": "hello", "script": {"image": "capi-rollout:dev", "command": ["python"],
                                                  "source": source}},
                 ]},
    }
    lines: list[str] = []
    backend = LocalBackend(apiserver, tmp_path, namespace=ns, python=sys.executable, echo=lines.append)
    backend.install([*rbac, wft])
    run = backend.wait(backend.submit({"who": "local"}), timeout=60)
    assert run.phase == "Succeeded", run.text()
    assert run.node("hello").result == "seen 403 local"
    assert any(line.endswith("seen 403 local") for line in lines)
    assert (tmp_path / run.name / "workflow.txt").is_file()
