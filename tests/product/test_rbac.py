"""capi-rollout-runner's and the Sensor's real permissions, from the RBAC rendered under overlay/management.

The manifests are applied to the local API server as they are; the per-cluster-namespace binding they document
is made for a test cluster namespace by cloning the manifest's own RoleBinding (or, for the narrowed variant,
by applying what ``capi-rollout render --cluster`` prints). A TokenRequest-minted token then acts as the
ServiceAccount, and SelfSubjectAccessReviews plus real calls prove what it can and, above all, cannot do: list
Secrets, read another cluster's kubeconfig Secret, change Argo's controller ConfigMap, create anything but
Workflows from the Sensor.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from capi_rollout.adapters.kube import Kube
from capi_rollout.domain.ledger import Ledger
from capi_rollout.ledger_store import KubeLedgerStore
from capi_rollout.workflow import rbac
from envtest import LocalAPIServer, assets, client_from_kubeconfig, rest
from tests.product.access import allowed, http_status

pytestmark = pytest.mark.apiserver

RBAC_MANIFEST = assets.REPO_ROOT / "overlay" / "management" / "argo-workflows" / "capi-rollout-rbac.yaml"
LEDGER_CRD = assets.REPO_ROOT / "overlay" / "management" / "argo-workflows" / "capi-rollout-ledger-crd.yaml"
EVENTS_RBAC = assets.REPO_ROOT / "overlay" / "management" / "capi-rollout" / "rbac.yaml"
RUNNER_NAMESPACE, RUNNER = "argo", "capi-rollout-runner"
SENSOR_NAMESPACE, SENSOR = "argo-events", "capi-rollout-sensor"
CONTROLLER_CONFIGMAP = "workflow-controller-configmap"
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
    apiserver.install_crds([LEDGER_CRD])
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


def _secret(name: str, namespace: str, cluster: str = "c1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "stringData": {"talosconfig" if name.endswith("-talosconfig") else "value": f"context: {cluster}"},
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
        assert allowed(runner.client, verb, group, resource, runner.cluster_namespace), (verb, resource)
        assert allowed(runner.client, verb, group, resource, ""), (verb, resource, "all namespaces")


def test_runner_cannot_read_machinesets_which_it_never_follows(runner: Runner) -> None:
    for verb in ("get", "list", "watch"):
        assert not allowed(runner.client, verb, CAPI, "machinesets", runner.cluster_namespace), verb


@pytest.mark.parametrize(("group", "resource"), CAPI_RESOURCES)
def test_runner_cannot_create_update_or_patch_any_capi_object_or_itshttp_status(
    runner: Runner, group: str, resource: str
) -> None:
    for namespace in (runner.cluster_namespace, RUNNER_NAMESPACE, ""):
        for verb in WRITE_VERBS:
            assert not allowed(runner.client, verb, group, resource, namespace), (verb, resource, namespace)
            assert not allowed(runner.client, verb, group, resource, namespace, subresource="status"), (
                verb,
                resource,
                "status",
            )
        assert not allowed(runner.client, "deletecollection", group, resource, namespace), (resource, namespace)


@pytest.mark.parametrize(("group", "resource"), [r for r in CAPI_RESOURCES if r[1] != "machines"])
def test_runner_cannot_delete_capi_objects_other_than_machines(runner: Runner, group: str, resource: str) -> None:
    assert not allowed(runner.client, "delete", group, resource, runner.cluster_namespace), resource


def test_runner_deletes_machines_only_in_a_bound_cluster_namespace(runner: Runner) -> None:
    assert allowed(runner.client, "delete", CAPI, "machines", runner.cluster_namespace)
    assert not allowed(runner.client, "delete", CAPI, "machines", runner.other_namespace)
    assert not allowed(runner.client, "delete", CAPI, "machines", "")


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
        http_status(
            lambda: rest.request_json(client, "PATCH", f"{base}/machines/c1-m1", body=label_patch, content_type=merge)
        )
        == 403
    )
    assert (
        http_status(
            lambda: rest.request_json(
                client, "PATCH", f"{base}/machines/c1-m1/status", body={"status": {}}, content_type=merge
            )
        )
        == 403
    )
    assert http_status(lambda: rest.request_json(client, "PUT", f"{base}/machines/c1-m1", body=machine)) == 403
    assert (
        http_status(
            lambda: rest.request_json(
                client, "PATCH", f"{base}/machinedeployments/c1-md", body={"spec": {"replicas": 0}}, content_type=merge
            )
        )
        == 403
    )
    new_machine = copy.deepcopy(_capi_objects(namespace)[0])
    new_machine["metadata"]["name"] = "c1-m2"
    assert http_status(lambda: rest.request_json(client, "POST", f"{base}/machines", body=new_machine)) == 403
    assert http_status(lambda: rest.request_json(client, "DELETE", f"{base}/machinedeployments/c1-md")) == 403

    assert http_status(lambda: rest.request_json(client, "DELETE", f"{base}/machines/c1-m1")) == 200
    assert http_status(lambda: rest.request_json(apiserver.admin, "GET", f"{base}/machines/c1-m1")) == 404
    assert http_status(lambda: rest.request_json(apiserver.admin, "GET", f"{base}/machinedeployments/c1-md")) == 200


def test_runner_gets_its_talosconfig_secret_by_name_but_cannot_list_or_watch_secrets(
    apiserver: LocalAPIServer, runner: Runner
) -> None:
    apiserver.apply_manifests([_secret("c1-talosconfig", runner.cluster_namespace),
                               _secret("c1-kubeconfig", runner.cluster_namespace)])
    client = runner.client
    mine = f"/api/v1/namespaces/{runner.cluster_namespace}/secrets"
    assert rest.request_json(client, "GET", f"{mine}/c1-talosconfig")["data"]["talosconfig"]
    assert http_status(lambda: rest.request_json(client, "GET", mine)) == 403
    assert http_status(lambda: rest.request_json(client, "GET", mine, query=[("labelSelector", "a=b")])) == 403
    assert http_status(lambda: rest.request_json(client, "GET", mine, query=[("watch", "1")])) == 403
    assert http_status(lambda: rest.request_json(client, "GET", "/api/v1/secrets")) == 403
    for verb in ("list", "watch", "create", "update", "patch", "delete", "deletecollection"):
        assert not allowed(client, verb, "", "secrets", runner.cluster_namespace), verb


def test_runner_reads_no_secret_outside_its_cluster_namespaces(apiserver: LocalAPIServer, runner: Runner) -> None:
    apiserver.apply_manifests([_secret("c2-talosconfig", runner.other_namespace, "c2"),
                               _secret("c2-kubeconfig", runner.other_namespace, "c2")])
    client = runner.client
    other = f"/api/v1/namespaces/{runner.other_namespace}/secrets"
    assert http_status(lambda: rest.request_json(client, "GET", f"{other}/c2-kubeconfig")) == 403
    assert http_status(lambda: rest.request_json(client, "GET", f"{other}/c2-talosconfig")) == 403
    assert http_status(lambda: rest.request_json(client, "GET", other)) == 403
    for namespace in (RUNNER_NAMESPACE, runner.other_namespace, ""):
        for verb in ("get", "list", "watch"):
            assert not allowed(client, verb, "", "secrets", namespace), (verb, namespace)


@pytest.fixture
def narrowed(apiserver: LocalAPIServer, kube_namespace: str) -> Iterator[ApiClient]:
    """The runner with the RBAC ``capi-rollout render --cluster <ns>/c1`` prints (and nothing else bound)."""
    apiserver.create_namespace(RUNNER_NAMESPACE)
    apiserver.install_crds([LEDGER_CRD])
    printed = rbac.to_yaml(rbac.runner_documents([rbac.parse_cluster(f"{kube_namespace}/c1")]))
    apiserver.apply_manifests([d for d in yaml.safe_load_all(printed) if d])
    client = client_from_kubeconfig(apiserver.serviceaccount_kubeconfig(RUNNER_NAMESPACE, RUNNER))
    try:
        yield client
    finally:
        cast(Any, client).close()


def test_narrowed_runner_cannot_read_another_clusters_kubeconfig_in_the_same_namespace(
    apiserver: LocalAPIServer, narrowed: ApiClient, kube_namespace: str
) -> None:
    secrets = [_secret("c1-talosconfig", kube_namespace), _secret("c1-kubeconfig", kube_namespace),
               _secret("c2-talosconfig", kube_namespace, "c2"), _secret("c2-kubeconfig", kube_namespace, "c2")]
    apiserver.apply_manifests(secrets)
    path = f"/api/v1/namespaces/{kube_namespace}/secrets"
    assert rest.request_json(narrowed, "GET", f"{path}/c1-talosconfig")["metadata"]["name"] == "c1-talosconfig"
    for name in ("c1-kubeconfig", "c2-kubeconfig", "c2-talosconfig"):
        assert http_status(lambda name=name: rest.request_json(narrowed, "GET", f"{path}/{name}")) == 403, name
    assert http_status(lambda: rest.request_json(narrowed, "GET", path)) == 403
    # The adapter the runner uses reads it the same way: by name, through the narrowed grant.
    kube = Kube(narrowed)
    assert (kube.get_secret(kube_namespace, "c1-talosconfig") or {})["metadata"]["name"] == "c1-talosconfig"
    # ... and the rest of the runner's rights are intact: delete Machines, create Events, keep its ledger.
    assert allowed(narrowed, "delete", CAPI, "machines", kube_namespace)
    assert allowed(narrowed, "create", "", "events", kube_namespace)
    assert allowed(narrowed, "create", rbac.LEDGER_GROUP, rbac.LEDGER_PLURAL, RUNNER_NAMESPACE)


def test_runner_cannot_read_or_change_argos_controller_configmap_or_any_configmap(
    apiserver: LocalAPIServer, runner: Runner
) -> None:
    path = f"/api/v1/namespaces/{RUNNER_NAMESPACE}/configmaps"
    apiserver.apply_manifests([{"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": CONTROLLER_CONFIGMAP, "namespace": RUNNER_NAMESPACE},
                                "data": {"executor": "image: quay.io/argoproj/argoexec"}}])
    client = runner.client
    evil = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONTROLLER_CONFIGMAP, "namespace": RUNNER_NAMESPACE},
            "data": {"executor": "image: evil.example/argoexec"}}
    merge = "application/merge-patch+json"
    assert http_status(lambda: rest.request_json(client, "PUT", f"{path}/{CONTROLLER_CONFIGMAP}", body=evil)) == 403
    assert http_status(lambda: rest.request_json(client, "PATCH", f"{path}/{CONTROLLER_CONFIGMAP}",
                                             body={"data": {"executor": "x"}}, content_type=merge)) == 403
    assert http_status(lambda: rest.request_json(client, "DELETE", f"{path}/{CONTROLLER_CONFIGMAP}")) == 403
    assert http_status(lambda: rest.request_json(client, "POST", path, body={
        **evil, "metadata": {"name": "anything", "namespace": RUNNER_NAMESPACE}})) == 403
    kept = rest.request_json(apiserver.admin, "GET", f"{path}/{CONTROLLER_CONFIGMAP}")
    assert kept["data"] == {"executor": "image: quay.io/argoproj/argoexec"}
    for namespace in (RUNNER_NAMESPACE, runner.cluster_namespace, runner.other_namespace, ""):
        for verb in ("get", "list", "create", "update", "patch", "delete"):
            assert not allowed(client, verb, "", "configmaps", namespace), (verb, namespace)
    # No other kind in argo that another component reads: Leases (leader election), Secrets, Workflows, Pods.
    for group, resource in (("coordination.k8s.io", "leases"), ("", "secrets"), ("argoproj.io", "workflows"),
                            ("argoproj.io", "workflowtemplates"), ("", "pods"), ("", "serviceaccounts")):
        for verb in ("create", "update", "patch"):
            assert not allowed(client, verb, group, resource, RUNNER_NAMESPACE), (verb, resource)


def test_runner_keeps_its_ledger_in_rolloutledgers_in_argo_and_records_events_in_its_cluster_namespace(
    runner: Runner,
) -> None:
    client = runner.client
    for verb in ("get", "create", "update"):
        assert allowed(client, verb, rbac.LEDGER_GROUP, rbac.LEDGER_PLURAL, RUNNER_NAMESPACE), verb
        assert not allowed(client, verb, rbac.LEDGER_GROUP, rbac.LEDGER_PLURAL, runner.other_namespace), verb
    assert not allowed(client, "delete", rbac.LEDGER_GROUP, rbac.LEDGER_PLURAL, RUNNER_NAMESPACE)
    assert allowed(client, "create", "", "events", runner.cluster_namespace)
    assert not allowed(client, "create", "", "events", runner.other_namespace)
    for verb in ("create", "patch"):
        assert allowed(client, verb, "argoproj.io", "workflowtaskresults", RUNNER_NAMESPACE), verb

    # The runner's own ledger store, with the runner's token: create, then replace with optimistic concurrency.
    run_id = f"wf-{uuid.uuid4().hex[:6]}"
    store = KubeLedgerStore(Kube(client), namespace=RUNNER_NAMESPACE, run_id=run_id)
    assert store.load() is None
    store.save(Ledger(cluster="c1", namespace=runner.cluster_namespace))
    store.save(Ledger(cluster="c1", namespace=runner.cluster_namespace, warnings=("w",)))
    again = KubeLedgerStore(Kube(client), namespace=RUNNER_NAMESPACE, run_id=run_id).load()
    assert again is not None and again.warnings == ("w",)
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


def test_one_rollout_per_cluster_the_claim_with_the_runners_own_token(apiserver: LocalAPIServer,
                                                                       runner: Runner) -> None:
    """Two Workflows of one cluster: the first takes the claim; the second sees it live and may not take it; once
    the first has ended, the second takes it over. The runner may read Workflows by name, never list them."""
    from capi_rollout.claim_store import ClaimUnusable, ClusterClaim
    from capi_rollout.domain.claim import Holder, decide_claim

    assert allowed(runner.client, "get", "argoproj.io", "workflows", RUNNER_NAMESPACE)
    for verb in ("list", "watch", "create", "update", "patch", "delete"):
        assert not allowed(runner.client, verb, "argoproj.io", "workflows", RUNNER_NAMESPACE), verb
    assert not allowed(runner.client, "get", "argoproj.io", "workflows", runner.other_namespace)
    workflows = f"/apis/argoproj.io/v1alpha1/namespaces/{RUNNER_NAMESPACE}/workflows"
    suffix = uuid.uuid4().hex[:6]

    def workflow(name: str) -> dict[str, Any]:
        body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": name, "namespace": RUNNER_NAMESPACE},
                "spec": {"workflowTemplateRef": {"name": "capi-rollout"}}, "status": {"phase": "Running"}}
        return cast(dict[str, Any], rest.request_json(apiserver.admin, "POST", workflows, body=body))

    def claim_of(wf: dict[str, Any]) -> ClusterClaim:
        md = wf["metadata"]
        owner = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": md["name"], "uid": md["uid"]}
        return ClusterClaim(Kube(runner.client), namespace=RUNNER_NAMESPACE, cluster_namespace="default",
                            cluster=f"c-{suffix}", me=Holder(md["name"], md["uid"], "2026-03-01T12:00:00Z"),
                            owner=owner)

    first, second = claim_of(workflow(f"first-{suffix}")), claim_of(workflow(f"second-{suffix}"))
    assert first.read() == (None, None)
    assert first.write(None)
    assert not second.write(None), "an existing claim cannot be created again (409)"
    holder, version = second.read()
    assert holder is not None and holder.same_run(first.me)
    assert second.holder_phase(holder) == "Running"
    decision = decide_claim(cluster="default/c", current=holder, me=second.me, holder_phase="Running")
    assert decision.action == "held"

    # The first Workflow ends: the second takes the claim over, with the version it read.
    done = rest.request_json(apiserver.admin, "GET", f"{workflows}/first-{suffix}")
    done["status"] = {"phase": "Succeeded"}
    rest.request_json(apiserver.admin, "PUT", f"{workflows}/first-{suffix}", body=done)
    assert second.holder_phase(holder) == "Succeeded"
    assert second.write(version)
    assert not first.write(version), "a stale version loses"
    now, _ = first.read()
    assert now is not None and now.same_run(second.me)
    obj = rest.request_json(apiserver.admin, "GET",
                            f"/apis/capi-rollout.io/v1alpha1/namespaces/{RUNNER_NAMESPACE}/rolloutledgers/"
                            f"{first.name}")
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref["name"] == f"second-{suffix}", "owned by the holder: garbage-collected with it"

    # The holder Workflow deleted: gone; a claim someone else wrote is refused, not trusted.
    rest.request_json(apiserver.admin, "DELETE", f"{workflows}/second-{suffix}")
    assert first.holder_phase(now) is None
    obj["spec"] = {"ledger": "{}"}
    obj["metadata"]["labels"] = {}
    rest.request_json(apiserver.admin, "PUT",
                      f"/apis/capi-rollout.io/v1alpha1/namespaces/{RUNNER_NAMESPACE}/rolloutledgers/{first.name}",
                      body=obj)
    with pytest.raises(ClaimUnusable, match="not a claim capi-rollout wrote"):
        first.read()
    # The CRD refuses a RolloutLedger that is both a ledger and a claim.
    bad = {"apiVersion": "capi-rollout.io/v1alpha1", "kind": "RolloutLedger",
           "metadata": {"name": f"both-{suffix}", "namespace": RUNNER_NAMESPACE},
           "spec": {"ledger": "{}", "holder": {"workflow": "w", "uid": "u"}}}
    with pytest.raises(ApiException) as err:
        rest.request_json(apiserver.admin, "POST",
                          f"/apis/capi-rollout.io/v1alpha1/namespaces/{RUNNER_NAMESPACE}/rolloutledgers", body=bad)
    assert err.value.status == 422 and "either a run's ledger or a cluster's claim" in str(err.value.body)
