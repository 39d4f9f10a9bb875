"""The Sensor's admission policy on the real API server, with the Sensor's real token: it may create Workflows of
the capi-rollout template with the two cluster parameters, and nothing else; nobody else is matched."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from capi_rollout.waiting import wait_until
from envtest import LocalAPIServer, assets, client_from_kubeconfig, rest

pytestmark = pytest.mark.apiserver

EVENTS_RBAC = assets.REPO_ROOT / "overlay" / "management" / "capi-rollout" / "rbac.yaml"
ARGO, SENSOR_NAMESPACE, SENSOR = "argo", "argo-events", "capi-rollout-sensor"
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
