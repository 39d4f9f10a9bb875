"""The local API server is a real, RBAC-enforcing kube-apiserver with the pinned upstream CRDs installed.

Needs `make tools`. One server per session (the ``apiserver`` fixture); the lifecycle tests start their own
small servers (no CRDs) to prove clean teardown.
"""

from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from envtest import LocalAPIServer, assets, client_from_kubeconfig, rest
from envtest.processes import ProcessFailedError
from tests.apiserver.procs import live_processes_mentioning

pytestmark = pytest.mark.apiserver


def _get(client: ApiClient, path: str) -> Any:
    return rest.request_json(client, "GET", path)


def _crd(client: ApiClient, name: str) -> dict[str, Any]:
    crd: dict[str, Any] = _get(client, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return crd


def _storage_version(crd: dict[str, Any]) -> str:
    return str(next(v["name"] for v in crd["spec"]["versions"] if v["storage"]))


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_version_endpoint_reports_the_pinned_kubernetes_release(admin_api_client: ApiClient) -> None:
    version = _get(admin_api_client, "/version")
    pinned = assets.versions()["KUBERNETES_VERSION"]
    assert version["gitVersion"] == pinned
    assert f"v{version['major']}.{version['minor']}" == pinned.rsplit(".", 1)[0]


def test_capi_1_14_line_stores_v1beta2_and_still_serves_v1beta1(admin_api_client: ApiClient) -> None:
    for plural in ("clusters", "machines", "machinesets", "machinedeployments", "machinehealthchecks"):
        crd = _crd(admin_api_client, f"{plural}.cluster.x-k8s.io")
        assert _storage_version(crd) == "v1beta2", plural
        served = {v["name"] for v in crd["spec"]["versions"] if v["served"]}
        assert {"v1beta1", "v1beta2"} <= served, plural


def test_capi_1_10_line_stores_v1beta1_and_serves_no_v1beta2(apiserver_v110: LocalAPIServer) -> None:
    crd = _crd(apiserver_v110.admin, "machinedeployments.cluster.x-k8s.io")
    assert _storage_version(crd) == "v1beta1"
    assert "v1beta2" not in {v["name"] for v in crd["spec"]["versions"]}
    with pytest.raises(LookupError):
        apiserver_v110.mapper.resolve("cluster.x-k8s.io/v1beta2", "MachineDeployment")


def test_talos_argo_workflows_and_argo_events_kinds_are_served(apiserver: LocalAPIServer) -> None:
    for api_version, kind in [
        ("controlplane.cluster.x-k8s.io/v1alpha3", "TalosControlPlane"),
        ("bootstrap.cluster.x-k8s.io/v1alpha3", "TalosConfigTemplate"),
        ("argoproj.io/v1alpha1", "WorkflowTemplate"),
        ("argoproj.io/v1alpha1", "Workflow"),
        ("argoproj.io/v1alpha1", "EventSource"),
        ("argoproj.io/v1alpha1", "Sensor"),
        ("argoproj.io/v1alpha1", "EventBus"),
        ("argoproj.io/v1alpha1", "Application"),
    ]:
        assert apiserver.mapper.resolve(api_version, kind).namespaced, kind


def test_the_full_argo_crd_schema_rejects_an_unknown_workflow_template_field(
    apiserver: LocalAPIServer, kube_namespace: str
) -> None:
    template: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "schema-check", "namespace": kube_namespace},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "suspend": {}, "notAField": 1}]},
    }
    with pytest.raises(ApiException) as rejected:
        apiserver.apply_manifests([template], dry_run=True)
    # Server-side apply reports schema violations of custom resources as 500 "failed to create typed patch object".
    assert ".spec.templates[0].notAField: field not declared in schema" in str(rejected.value.body)
    del template["spec"]["templates"][0]["notAField"]
    accepted = apiserver.apply_manifests([template], dry_run=True)
    assert accepted[0]["spec"]["entrypoint"] == "main"


def test_rbac_is_enforced_for_a_service_account_with_a_minted_token(
    apiserver: LocalAPIServer, kube_namespace: str
) -> None:
    apiserver.apply_manifests(
        [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": kube_namespace}}]
    )
    kubeconfig = apiserver.serviceaccount_kubeconfig(kube_namespace, "nobody", expiration_seconds=600)
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    client = client_from_kubeconfig(kubeconfig)
    try:
        review = rest.request_json(
            client,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{kube_namespace}:nobody"
        with pytest.raises(ApiException) as denied:
            _get(client, f"/api/v1/namespaces/{kube_namespace}/configmaps")
        assert denied.value.status == 403
    finally:
        cast(Any, client).close()


def test_kube_namespace_fixture_creates_a_fresh_namespace(admin_api_client: ApiClient, kube_namespace: str) -> None:
    namespace = _get(admin_api_client, f"/api/v1/namespaces/{kube_namespace}")
    assert namespace["status"]["phase"] == "Active"


def test_restarting_the_apiserver_from_a_thread_keeps_url_and_data(
    apiserver: LocalAPIServer, kube_namespace: str
) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "survives", "namespace": kube_namespace},
        "data": {"k": "v"},
    }
    apiserver.apply_manifests([config_map])
    url = apiserver.url
    # From a short-lived thread, as tests that kill the server mid-call do: the new process must outlive it.
    restarter = threading.Thread(target=apiserver.restart_apiserver)
    restarter.start()
    restarter.join(timeout=60)
    assert not restarter.is_alive()
    assert apiserver.url == url
    read = _get(apiserver.admin, f"/api/v1/namespaces/{kube_namespace}/configmaps/survives")
    assert read["data"] == {"k": "v"}


def test_stop_ends_both_processes_frees_the_port_and_removes_the_workdir() -> None:
    server = LocalAPIServer(extra_crds=())
    with server:
        workdir, url = server.workdir, server.url
        assert len(live_processes_mentioning(str(workdir))) == 2  # etcd and kube-apiserver
        assert _port_open(url)
        assert server.timings["ready_seconds"] < 30
    assert not workdir.exists()
    assert not _port_open(url)
    assert live_processes_mentioning(str(workdir)) == []
    server.stop()  # idempotent


def test_a_failing_start_stops_etcd_and_reports_the_log(tmp_path: Path) -> None:
    real = assets.binaries()
    broken_apiserver = tmp_path / "kube-apiserver"
    broken_apiserver.write_text("#!/bin/sh\necho 'boom: cannot serve' >&2\nexit 3\n")
    broken_apiserver.chmod(0o755)
    workdir = tmp_path / "work"
    server = LocalAPIServer(extra_crds=(), workdir=workdir, binaries=assets.Assets(broken_apiserver, real.etcd, None))
    with pytest.raises(ProcessFailedError, match="boom: cannot serve"):
        server.start()
    assert (workdir / "etcd.log").exists()  # etcd did start
    assert live_processes_mentioning(str(workdir)) == []
