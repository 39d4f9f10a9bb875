"""capi-rollout-runner's real permissions, from overlay/management/argo-workflows/capi-rollout-rbac.yaml.

The manifest is applied to the local API server as is; the per-cluster-namespace binding it documents is made
for a test cluster namespace by cloning the manifest's own RoleBinding. A TokenRequest-minted token then acts
as the ServiceAccount, and SelfSubjectAccessReviews plus real calls prove what it can and cannot do.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sim.envtest import LocalAPIServer, assets, client_from_kubeconfig, rest

pytestmark = pytest.mark.apiserver

RBAC_MANIFEST = assets.REPO_ROOT / "overlay" / "management" / "argo-workflows" / "capi-rollout-rbac.yaml"
RUNNER_NAMESPACE, RUNNER = "argo", "capi-rollout-runner"
PER_CLUSTER_ROLE = "capi-rollout-cluster-namespace"

CAPI = "cluster.x-k8s.io"
CAPI_RESOURCES = [
    (CAPI, "clusters"),
    (CAPI, "machinedeployments"),
    (CAPI, "machines"),
    (CAPI, "machinehealthchecks"),
    ("controlplane.cluster.x-k8s.io", "taloscontrolplanes"),
]
WRITE_VERBS = ["create", "update", "patch"]


@dataclass(frozen=True)
class Runner:
    """The runner's client and the namespaces of one test."""

    client: ApiClient
    cluster_namespace: str
    other_namespace: str


def _documents() -> list[dict[str, Any]]:
    return rest.load_documents([RBAC_MANIFEST])


def _per_cluster_binding(namespace: str) -> dict[str, Any]:
    """The manifest's RoleBinding of the per-cluster ClusterRole, moved to ``namespace``."""
    template = next(
        d
        for d in _documents()
        if d["kind"] == "RoleBinding"
        and d["roleRef"]["kind"] == "ClusterRole"
        and d["roleRef"]["name"] == PER_CLUSTER_ROLE
    )
    binding = copy.deepcopy(template)
    binding["metadata"]["namespace"] = namespace
    return binding


@pytest.fixture
def runner(apiserver: LocalAPIServer, kube_namespace: str) -> Iterator[Runner]:
    assert RBAC_MANIFEST.is_file(), f"{RBAC_MANIFEST} is missing"
    for namespace in {d["metadata"].get("namespace") for d in _documents()} - {None}:
        apiserver.create_namespace(namespace)
    apiserver.apply_manifests([RBAC_MANIFEST])
    apiserver.apply_manifests([_per_cluster_binding(kube_namespace)])
    other = f"other-{uuid.uuid4().hex[:8]}"
    apiserver.create_namespace(other)
    client = client_from_kubeconfig(apiserver.serviceaccount_kubeconfig(RUNNER_NAMESPACE, RUNNER))
    try:
        yield Runner(client, kube_namespace, other)
    finally:
        cast(Any, client).close()
        apiserver.delete_namespace(other)


def _allowed(client: ApiClient, verb: str, group: str, resource: str, namespace: str, **extra: str) -> bool:
    review = rest.request_json(
        client,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "namespace": namespace,
                    **extra,
                }
            },
        },
    )
    return bool(review["status"].get("allowed"))


def _status(call: Any) -> int:
    """The HTTP status of a call: 200 when it succeeds, the error status when the server refuses it."""
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


def _capi_objects(namespace: str) -> list[dict[str, Any]]:
    labels = {"cluster.x-k8s.io/cluster-name": "c1"}
    refs = {
        "bootstrap": {"dataSecretName": "c1-bootstrap"},
        "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "FakeMachine", "name": "m"},
    }
    return [
        {
            "apiVersion": f"{CAPI}/v1beta2",
            "kind": "Machine",
            "metadata": {"name": "c1-m1", "namespace": namespace, "labels": labels},
            "spec": {"clusterName": "c1", **refs},
        },
        {
            "apiVersion": f"{CAPI}/v1beta2",
            "kind": "MachineDeployment",
            "metadata": {"name": "c1-md", "namespace": namespace, "labels": labels},
            "spec": {
                "clusterName": "c1",
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"clusterName": "c1", **refs}},
            },
        },
    ]


def _secret(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"talosconfig": "context: c1"},
    }


def test_the_token_acts_as_the_runner_service_account(runner: Runner) -> None:
    review = rest.request_json(
        runner.client,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{RUNNER_NAMESPACE}:{RUNNER}"


@pytest.mark.parametrize(("group", "resource"), CAPI_RESOURCES)
def test_runner_can_read_and_watch_every_capi_object_it_follows(runner: Runner, group: str, resource: str) -> None:
    for verb in ("get", "list", "watch"):
        assert _allowed(runner.client, verb, group, resource, runner.cluster_namespace), (verb, resource)
        assert _allowed(runner.client, verb, group, resource, ""), (verb, resource, "all namespaces")


def test_runner_cannot_read_machinesets_which_it_never_follows(runner: Runner) -> None:
    for verb in ("get", "list", "watch"):
        assert not _allowed(runner.client, verb, CAPI, "machinesets", runner.cluster_namespace), verb


@pytest.mark.parametrize(("group", "resource"), CAPI_RESOURCES)
def test_runner_cannot_create_update_or_patch_any_capi_object_or_its_status(
    runner: Runner, group: str, resource: str
) -> None:
    for namespace in (runner.cluster_namespace, RUNNER_NAMESPACE, ""):
        for verb in WRITE_VERBS:
            assert not _allowed(runner.client, verb, group, resource, namespace), (verb, resource, namespace)
            assert not _allowed(runner.client, verb, group, resource, namespace, subresource="status"), (
                verb,
                resource,
                "status",
            )
        assert not _allowed(runner.client, "deletecollection", group, resource, namespace), (resource, namespace)


@pytest.mark.parametrize(("group", "resource"), [r for r in CAPI_RESOURCES if r[1] != "machines"])
def test_runner_cannot_delete_capi_objects_other_than_machines(runner: Runner, group: str, resource: str) -> None:
    assert not _allowed(runner.client, "delete", group, resource, runner.cluster_namespace), resource


def test_runner_deletes_machines_only_in_a_bound_cluster_namespace(runner: Runner) -> None:
    assert _allowed(runner.client, "delete", CAPI, "machines", runner.cluster_namespace)
    assert not _allowed(runner.client, "delete", CAPI, "machines", runner.other_namespace)
    assert not _allowed(runner.client, "delete", CAPI, "machines", "")


def test_real_calls_read_capi_objects_and_delete_a_machine_but_never_write_them(
    apiserver: LocalAPIServer, runner: Runner
) -> None:
    namespace = runner.cluster_namespace
    apiserver.apply_manifests(_capi_objects(namespace))
    base = f"/apis/{CAPI}/v1beta2/namespaces/{namespace}"
    client = runner.client

    machines = rest.request_json(client, "GET", f"{base}/machines")
    assert [m["metadata"]["name"] for m in machines["items"]] == ["c1-m1"]
    clusters_everywhere = rest.request_json(client, "GET", f"/apis/{CAPI}/v1beta2/clusters")
    assert clusters_everywhere["kind"] == "ClusterList"
    machine = rest.request_json(client, "GET", f"{base}/machines/c1-m1")

    merge = "application/merge-patch+json"
    label_patch = {"metadata": {"labels": {"touched": "yes"}}}
    assert (
        _status(
            lambda: rest.request_json(client, "PATCH", f"{base}/machines/c1-m1", body=label_patch, content_type=merge)
        )
        == 403
    )
    assert (
        _status(
            lambda: rest.request_json(
                client, "PATCH", f"{base}/machines/c1-m1/status", body={"status": {}}, content_type=merge
            )
        )
        == 403
    )
    assert _status(lambda: rest.request_json(client, "PUT", f"{base}/machines/c1-m1", body=machine)) == 403
    assert (
        _status(
            lambda: rest.request_json(
                client, "PATCH", f"{base}/machinedeployments/c1-md", body={"spec": {"replicas": 0}}, content_type=merge
            )
        )
        == 403
    )
    new_machine = copy.deepcopy(_capi_objects(namespace)[0])
    new_machine["metadata"]["name"] = "c1-m2"
    assert _status(lambda: rest.request_json(client, "POST", f"{base}/machines", body=new_machine)) == 403
    assert _status(lambda: rest.request_json(client, "DELETE", f"{base}/machinedeployments/c1-md")) == 403

    assert _status(lambda: rest.request_json(client, "DELETE", f"{base}/machines/c1-m1")) == 200
    assert _status(lambda: rest.request_json(apiserver.admin, "GET", f"{base}/machines/c1-m1")) == 404
    assert _status(lambda: rest.request_json(apiserver.admin, "GET", f"{base}/machinedeployments/c1-md")) == 200


def test_runner_reads_secrets_only_in_its_cluster_namespace(apiserver: LocalAPIServer, runner: Runner) -> None:
    apiserver.apply_manifests([_secret("c1-talosconfig", runner.cluster_namespace)])
    apiserver.apply_manifests([_secret("c1-talosconfig", runner.other_namespace)])
    client = runner.client
    mine = f"/api/v1/namespaces/{runner.cluster_namespace}/secrets"
    other = f"/api/v1/namespaces/{runner.other_namespace}/secrets"
    assert rest.request_json(client, "GET", f"{mine}/c1-talosconfig")["data"]["talosconfig"]
    listed = rest.request_json(client, "GET", mine, query=[("labelSelector", "")])
    assert "c1-talosconfig" in [item["metadata"]["name"] for item in listed["items"]]
    assert _status(lambda: rest.request_json(client, "GET", f"{other}/c1-talosconfig")) == 403
    assert _status(lambda: rest.request_json(client, "GET", other)) == 403
    assert _status(lambda: rest.request_json(client, "GET", "/api/v1/secrets")) == 403
    for namespace in (RUNNER_NAMESPACE, runner.other_namespace, ""):
        for verb in ("get", "list", "watch"):
            assert not _allowed(client, verb, "", "secrets", namespace), (verb, namespace)
    for verb in ("watch", "create", "update", "patch", "delete"):
        assert not _allowed(client, verb, "", "secrets", runner.cluster_namespace), verb


def test_runner_keeps_its_ledger_in_argo_and_records_events_in_its_cluster_namespace(runner: Runner) -> None:
    client = runner.client
    for verb in ("get", "create", "update"):
        assert _allowed(client, verb, "", "configmaps", RUNNER_NAMESPACE), verb
    for verb in ("get", "create", "update"):
        assert not _allowed(client, verb, "", "configmaps", runner.other_namespace), verb
    assert _allowed(client, "create", "", "events", runner.cluster_namespace)
    assert not _allowed(client, "create", "", "events", runner.other_namespace)
    for verb in ("create", "patch"):
        assert _allowed(client, verb, "argoproj.io", "workflowtaskresults", RUNNER_NAMESPACE), verb

    ledger: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"ledger-{uuid.uuid4().hex[:6]}", "namespace": RUNNER_NAMESPACE},
        "data": {"remediations": "[]"},
    }
    path = f"/api/v1/namespaces/{RUNNER_NAMESPACE}/configmaps"
    created = rest.request_json(client, "POST", path, body=ledger)
    created["data"] = {"remediations": "[1]"}
    replaced = rest.request_json(client, "PUT", f"{path}/{ledger['metadata']['name']}", body=created)
    assert rest.request_json(client, "GET", f"{path}/{ledger['metadata']['name']}")["data"] == replaced["data"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "capi-rollout-", "namespace": runner.cluster_namespace},
        "involvedObject": {"kind": "Machine", "name": "c1-m1", "namespace": runner.cluster_namespace},
        "reason": "MachineDeleted",
        "message": "capi-rollout deleted the stalled Machine",
        "type": "Normal",
    }
    rest.request_json(client, "POST", f"/api/v1/namespaces/{runner.cluster_namespace}/events", body=event)


def test_the_manifest_names_the_runner_used_by_the_workflow_template() -> None:
    template_path = Path(RBAC_MANIFEST.parent, "capi-rollout-workflowtemplate.yaml")
    template = next(d for d in rest.load_documents([template_path]) if d["kind"] == "WorkflowTemplate")
    service_accounts = {template["spec"].get("serviceAccountName")} | {
        t.get("serviceAccountName") for t in template["spec"].get("templates", []) if t.get("serviceAccountName")
    }
    service_accounts.discard(None)
    assert service_accounts == {RUNNER}
    assert any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == RUNNER for d in _documents())
