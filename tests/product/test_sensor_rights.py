"""The Sensor's rights on the real API server, with the Sensor's real token: RBAC lets it create Workflows in argo
and nothing else, and the admission policy lets it create only Workflows of the capi-rollout template with the two
cluster parameters; nobody else is matched."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from capi_rollout.waiting import wait_until
from capi_rollout.workflow import rbac
from envtest import LocalAPIServer, assets, client_from_kubeconfig, rest
from tests.product.access import allowed, http_status

pytestmark = pytest.mark.apiserver

EVENTS_RBAC = assets.REPO_ROOT / "overlay" / "management" / "capi-rollout" / "rbac.yaml"
ARGO, SENSOR_NAMESPACE, SENSOR, RUNNER = "argo", "argo-events", "capi-rollout-sensor", "capi-rollout-runner"
WORKFLOWS = f"/apis/argoproj.io/v1alpha1/namespaces/{ARGO}/workflows"
GOOD = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"generateName": "capi-rollout-", "namespace": ARGO},
        "spec": {"workflowTemplateRef": {"name": "capi-rollout"},
                 "arguments": {"parameters": [{"name": "clusterName", "value": "c1"},
                                              {"name": "clusterNamespace", "value": "default"}]}}}


@pytest.fixture
def sensor(apiserver: LocalAPIServer) -> Iterator[ApiClient]:
    for namespace in (ARGO, SENSOR_NAMESPACE):
        apiserver.create_namespace(namespace)
    apiserver.apply_manifests([EVENTS_RBAC])
    client = client_from_kubeconfig(apiserver.serviceaccount_kubeconfig(SENSOR_NAMESPACE, SENSOR))
    try:
        yield client
    finally:
        cast(Any, client).close()


def _create(client: ApiClient, body: dict[str, Any]) -> tuple[int, str]:
    try:
        created = rest.request_json(client, "POST", WORKFLOWS, body=body)
    except ApiException as error:
        return int(error.status), str(error.body)
    return 200, str(created["metadata"]["name"])


def _refused(client: ApiClient, admin: ApiClient, body: dict[str, Any]) -> bool:
    """Whether ``client`` is refused ``body``; a Workflow that got through is deleted again."""
    status, name = _create(client, body)
    if status == 200:
        rest.request_json(admin, "DELETE", f"{WORKFLOWS}/{name}")
    return status != 200


def _variant(change: Any) -> dict[str, Any]:
    body = copy.deepcopy(GOOD)
    change(body["spec"])
    return body


BAD = {
    "another template": (lambda s: s["workflowTemplateRef"].update(name="other"), "only run the WorkflowTemplate"),
    "a cluster-scoped template": (lambda s: s["workflowTemplateRef"].update(clusterScope=True),
                                  "only run the WorkflowTemplate"),
    "no template reference": (lambda s: s.pop("workflowTemplateRef"), "only run the WorkflowTemplate"),
    "inline templates": (lambda s: s.update(templates=[{"name": "x", "container": {"image": "busybox"}}]),
                         "only spec.workflowTemplateRef and spec.arguments"),
    "a service account": (lambda s: s.update(serviceAccountName="default"),
                          "only spec.workflowTemplateRef and spec.arguments"),
    "a pod spec patch": (lambda s: s.update(podSpecPatch="{}"), "only spec.workflowTemplateRef and spec.arguments"),
    "dryRun=false": (lambda s: s["arguments"]["parameters"].append({"name": "dryRun", "value": "false"}),
                     "only the clusterName and clusterNamespace parameters"),
    "an artifact": (lambda s: s["arguments"].update(artifacts=[{"name": "a"}]),
                    "only the clusterName and clusterNamespace parameters"),
}


def test_the_sensor_may_create_only_workflows_of_this_template_with_the_cluster_parameters(
        apiserver: LocalAPIServer, sensor: ApiClient) -> None:
    # the policy reaches the API server's admission through an informer: wait until it refuses the first bad case
    first_change, _ = BAD["another template"]
    wait_until(lambda: _refused(sensor, apiserver.admin, _variant(first_change)), timeout=30, interval=0.3,
               what="the admission policy in force")
    for case, (change, words) in BAD.items():
        status, text = _create(sensor, _variant(change))
        assert status in (403, 422), (case, status, text)
        assert words in text and "capi-rollout-sensor-workflows" in text, (case, text)
    status, name = _create(sensor, GOOD)
    assert status == 200, name
    rest.request_json(apiserver.admin, "DELETE", f"{WORKFLOWS}/{name}")


def test_the_policy_matches_only_the_sensor(apiserver: LocalAPIServer, sensor: ApiClient) -> None:
    bad = _variant(BAD["another template"][0])
    wait_until(lambda: _refused(sensor, apiserver.admin, bad), timeout=30, interval=0.3,
               what="the admission policy in force")
    status, name = _create(apiserver.admin, bad)  # an operator may still run anything RBAC lets them
    assert status == 200, name
    rest.request_json(apiserver.admin, "DELETE", f"{WORKFLOWS}/{name}")


def test_the_sensor_creates_workflows_in_argo_and_nothing_else(
    apiserver: LocalAPIServer, sensor: ApiClient, kube_namespace: str
) -> None:
    assert allowed(sensor, "create", "argoproj.io", "workflows", ARGO)
    for verb in ("get", "list", "watch", "update", "patch", "delete"):
        assert not allowed(sensor, verb, "argoproj.io", "workflows", ARGO), verb
    for namespace in (kube_namespace, SENSOR_NAMESPACE, ""):
        assert not allowed(sensor, "create", "argoproj.io", "workflows", namespace), namespace
    for group, resource in (("argoproj.io", "workflowtemplates"), ("argoproj.io", "cronworkflows"),
                            ("argoproj.io", "clusterworkflowtemplates"), ("argoproj.io", "workfloweventbindings"),
                            ("argoproj.io", "workflowtaskresults"), ("", "pods"), ("", "configmaps"),
                            ("", "secrets"), ("", "serviceaccounts"), ("batch", "jobs"),
                            (rbac.LEDGER_GROUP, rbac.LEDGER_PLURAL)):
        for verb in ("create", "update", "patch"):
            assert not allowed(sensor, verb, group, resource, ARGO), (verb, resource)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": ARGO},
           "spec": {"serviceAccountName": RUNNER, "containers": [{"name": "x", "image": "busybox"}]}}
    assert http_status(lambda: rest.request_json(sensor, "POST", f"/api/v1/namespaces/{ARGO}/pods",
                                             body=pod)) == 403
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"generateName": "capi-rollout-", "namespace": ARGO},
                "spec": {"workflowTemplateRef": {"name": "capi-rollout"},
                         "arguments": {"parameters": [{"name": "clusterName", "value": "c1"}]}}}
    workflows = f"/apis/argoproj.io/v1alpha1/namespaces/{ARGO}/workflows"
    created = rest.request_json(sensor, "POST", workflows, body=workflow)
    assert created["metadata"]["name"].startswith("capi-rollout-")
    rest.request_json(apiserver.admin, "DELETE", f"{workflows}/{created['metadata']['name']}")
