"""The ``existing`` (drill) backend on the real local API server, where the tool is already "deployed": what a drill
installs, what its runner may do, and that it leaves the deployed tool exactly as it found it.

No Argo controller runs here (no kubelet either), so the Workflow a drill submits is only accepted by the real Argo
CRD schema, not run; what runs on a cluster with Argo is the e2e suite with ``E2E_CLUSTER=existing``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.backends.existing import ClusterBackend
from e2e.harness import LEDGER_CRD_PATH, RBAC_PATH, RUNNER, SCALED_PARAMETERS, TEMPLATE_PATH, Stage
from envtest import LocalAPIServer, client_from_kubeconfig, rest


def _rbac_state(api: Any) -> dict[str, tuple[str, str, str]]:
    """The tool's RBAC objects (``capi-rollout-*``): ``Kind[/namespace]/name`` -> (resourceVersion, rules or roleRef,
    subjects)."""
    state: dict[str, tuple[str, str, str]] = {}
    for kind, path in (("ClusterRole", "clusterroles"), ("ClusterRoleBinding", "clusterrolebindings"),
                       ("RoleBinding", "rolebindings")):
        for obj in rest.request_json(api, "GET", f"/apis/rbac.authorization.k8s.io/v1/{path}")["items"]:
            meta = obj["metadata"]
            if meta["name"].startswith("capi-rollout-"):
                key = "/".join([kind, *([meta["namespace"]] if "namespace" in meta else []), meta["name"]])
                state[key] = (meta["resourceVersion"], str(obj.get("rules", obj.get("roleRef"))),
                              str(obj.get("subjects")))
    return state


def test_a_drill_plays_the_deployed_template_beside_the_deployed_tool_and_removes_only_what_it_added(
        apiserver: LocalAPIServer, admin_api_client: Any, tmp_path: Path) -> None:
    apiserver.create_namespace("argo")
    apiserver.install_crds([LEDGER_CRD_PATH])
    apiserver.apply_manifests([RBAC_PATH, TEMPLATE_PATH])  # the tool as Argo CD deployed it
    deployed = _rbac_state(admin_api_client)
    assert "RoleBinding/default/capi-rollout-runner" in deployed

    drill_ns = f"capi-rollout-e2e-{uuid.uuid4().hex[:6]}"
    backend = ClusterBackend(apiserver.kubeconfig_path, tmp_path, namespace=drill_ns)
    stage = Stage.on_cluster(backend, template=backend.deployed_template("argo/capi-rollout"))  # what is deployed
    custom = client.CustomObjectsApi(admin_api_client)
    played: Any = custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", drill_ns, "workflowtemplates",
                                                      "capi-rollout")
    live: Any = custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", "argo", "workflowtemplates",
                                                    "capi-rollout")
    assert played["spec"] == live["spec"] and played["metadata"]["uid"] != live["metadata"]["uid"]
    cluster_ns = f"sim-{uuid.uuid4().hex[:6]}"
    apiserver.create_namespace(cluster_ns)
    stage.bind_runner(cluster_ns)

    during = _rbac_state(admin_api_client)
    for name, (version, ref, subjects) in deployed.items():
        assert during[name] == (version, ref, subjects), f"the drill changed the deployed {name}"
    added = sorted(set(during) - set(deployed))
    assert added == sorted([
        f"ClusterRole/capi-rollout-cluster-namespace-{drill_ns}", f"ClusterRole/capi-rollout-read-capi-{drill_ns}",
        f"ClusterRoleBinding/capi-rollout-read-capi-{drill_ns}",
        f"RoleBinding/default/capi-rollout-runner-{drill_ns}",
        f"RoleBinding/{cluster_ns}/capi-rollout-runner-{drill_ns}", f"RoleBinding/{drill_ns}/capi-rollout-runner"])
    cluster_binding = during[f"RoleBinding/{cluster_ns}/capi-rollout-runner-{drill_ns}"]
    assert f"capi-rollout-cluster-namespace-{drill_ns}" in cluster_binding[1]

    # The drill's runner (a real token) reads the simulated cluster's namespace through its own binding only.
    runner = client_from_kubeconfig(apiserver.serviceaccount_kubeconfig(drill_ns, RUNNER))
    try:
        client.CustomObjectsApi(runner).list_namespaced_custom_object("cluster.x-k8s.io", "v1beta2", cluster_ns,
                                                                      "machines")
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(runner).list_namespaced_secret("kube-system")
        assert denied.value.status == 403
    finally:
        cast(Any, runner).close()

    run = backend.submit({"clusterName": "demo", "clusterNamespace": cluster_ns, **SCALED_PARAMETERS})
    wf: Any = custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", drill_ns, "workflows", run.name)
    assert wf["spec"]["workflowTemplateRef"] == {"name": "capi-rollout"}

    backend.close()  # cleanup: what the drill added, nothing else

    ns = rest.request_json(admin_api_client, "GET", f"/api/v1/namespaces/{drill_ns}")
    assert ns["metadata"].get("deletionTimestamp")  # no namespace controller here: it stays Terminating
    after = {k: v for k, v in _rbac_state(admin_api_client).items() if f"/{drill_ns}/" not in k}  # going with it
    assert after == deployed, "the deployed RBAC is exactly as before the drill"
