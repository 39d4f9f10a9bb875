"""The kind backend's Argo Events install, decided from the real pinned argo-events module zip (no Docker).

The zip is fetched with the same helper the backend uses (``go mod download`` into the project's GOMODCACHE; Go
answers from the cache when ``make tools`` already fetched it), and built with the pinned kustomize.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from e2e.backends.argo_install import (
    ARGO_EVENTS_CRDS,
    ARGO_EVENTS_IMAGE,
    ARGO_EVENTS_MODULE,
    EVENTS_OVERLAY,
    argo_events_members,
    build_argo_events_install,
    download_module,
    eventbus_object,
    install_order,
    jetstream_versions,
    kustomize_build,
    newest_release,
)


@pytest.fixture(scope="module")
def version() -> str:
    from envtest import assets

    return assets.versions()["ARGO_EVENTS_VERSION"]


@pytest.fixture(scope="module")
def events_zip(version: str) -> Path:
    from envtest import assets

    return download_module(assets.cache_dir(), ARGO_EVENTS_MODULE, version)


@pytest.fixture(scope="module")
def install(events_zip: Path, version: str) -> list[dict[str, Any]]:
    from envtest import assets

    return build_argo_events_install(events_zip, version, assets.kustomize())


def test_the_helper_returns_the_pinned_module_zip_under_the_project_gomodcache(events_zip: Path,
                                                                               version: str) -> None:
    from envtest import assets

    assert events_zip.is_file() and events_zip.name == f"{version}.zip"
    assert events_zip.is_relative_to(assets.cache_dir() / "go" / "mod")


def test_a_module_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="go mod download"):
        download_module(tmp_path, "example.invalid/no/such/module", "v0.0.1", timeout=60)


def test_only_cluster_install_and_the_base_it_references_are_read_from_the_zip(events_zip: Path,
                                                                               version: str) -> None:
    with zipfile.ZipFile(events_zip) as z:
        members = argo_events_members(z.namelist(), version)
    relative = {m.removeprefix(f"{ARGO_EVENTS_MODULE}@{version}/") for m in members}
    assert "manifests/cluster-install/kustomization.yaml" in relative
    assert "manifests/base/kustomization.yaml" in relative
    assert "manifests/base/controller-manager/controller-config.yaml" in relative
    assert {f"manifests/base/crds/argoproj.io_{n}.yaml" for n in ("eventbus", "eventsources", "sensors")} <= relative
    assert all(r.startswith(("manifests/cluster-install/", "manifests/base/")) for r in relative)
    # Not the pre-built bundles, the namespace-scoped variant, the webhook extension or test manifests.
    assert not any(r.startswith(("manifests/namespace-install", "manifests/extensions", "hack/", "test/"))
                   or r == "manifests/install.yaml" for r in relative)


def test_the_install_has_the_controller_crds_and_rbac_in_argo_events(install: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in install}
    assert ("Namespace", "argo-events") in kinds
    assert {("CustomResourceDefinition", n) for n in ARGO_EVENTS_CRDS} <= kinds
    assert {("Deployment", "controller-manager"), ("ServiceAccount", "argo-events-sa"),
            ("ConfigMap", "argo-events-controller-config"), ("ClusterRoleBinding", "argo-events-binding")} <= kinds
    namespaced = [d for d in install if d["kind"] in ("Deployment", "ServiceAccount", "ConfigMap")]
    assert all(d["metadata"]["namespace"] == "argo-events" for d in namespaced)
    (binding,) = [d for d in install if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "argo-events-sa", "namespace": "argo-events"}]


def test_the_controller_and_the_pods_it_starts_are_pinned_to_the_module_version(install: list[dict[str, Any]],
                                                                                 version: str) -> None:
    (deployment,) = [d for d in install if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{ARGO_EVENTS_IMAGE}:{version}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ARGO_EVENTS_IMAGE"] == f"{ARGO_EVENTS_IMAGE}:{version}"
    assert "NAMESPACE" in env, "the patch adds to the upstream env, it does not replace it"


def test_namespaces_then_crds_come_first(install: list[dict[str, Any]]) -> None:
    kinds = [d["kind"] for d in install]
    assert kinds[0] == "Namespace"
    assert kinds[1:4] == ["CustomResourceDefinition"] * 3
    assert "Namespace" not in kinds[1:] and "CustomResourceDefinition" not in kinds[4:]


def test_install_order_is_stable_within_each_group() -> None:
    docs = [{"kind": "Deployment", "metadata": {"name": "a"}}, {"kind": "CustomResourceDefinition",
                                                                 "metadata": {"name": "b"}},
            {"kind": "Namespace", "metadata": {"name": "c"}}, {"kind": "ConfigMap", "metadata": {"name": "d"}},
            {"kind": "CustomResourceDefinition", "metadata": {"name": "e"}}]
    assert [d["metadata"]["name"] for d in install_order(docs)] == ["c", "b", "e", "a", "d"]


def test_the_eventbus_uses_a_jetstream_version_the_controller_lists(install: list[dict[str, Any]]) -> None:
    listed = jetstream_versions(install)
    assert "latest" in listed and "2.8.1-alpine" in listed  # read from the zip's ConfigMap, as is
    chosen = newest_release(listed)
    assert chosen in listed and chosen.replace(".", "").isdigit()
    assert all(tuple(map(int, chosen.split("."))) >= tuple(map(int, v.split(".")))
               for v in listed if v.replace(".", "").isdigit())
    bus = eventbus_object(chosen)
    assert bus["apiVersion"] == "argoproj.io/v1alpha1" and bus["kind"] == "EventBus"
    assert bus["metadata"] == {"name": "default", "namespace": "argo-events"}
    assert bus["spec"]["jetstream"]["version"] == chosen
    assert bus["spec"]["jetstream"]["replicas"] == 1
    assert bus["spec"]["jetstream"]["streamConfig"] == "replicas: 1\n"


def test_newest_release_compares_numerically_and_skips_tags() -> None:
    assert newest_release(["latest", "2.9.16", "2.10.2", "2.10.2-alpine", "2.9.100"]) == "2.10.2"
    with pytest.raises(ValueError):
        newest_release(["latest", "2.8.1-alpine"])


def test_an_install_without_the_controller_config_is_an_error() -> None:
    with pytest.raises(ValueError, match="argo-events-controller-config"):
        jetstream_versions([{"kind": "ConfigMap", "metadata": {"name": "other"}, "data": {}}])


def test_the_events_overlay_builds_with_the_pinned_kustomize_into_argo_events() -> None:
    from envtest import assets

    root = Path(__file__).resolve().parents[2]
    docs = kustomize_build(root / EVENTS_OVERLAY, assets.kustomize())
    by_kind = {d["kind"]: d for d in docs}
    for kind in ("EventSource", "Sensor"):
        assert by_kind[kind]["metadata"] == {**by_kind[kind]["metadata"], "name": "capi-rollout",
                                             "namespace": "argo-events"}
    assert by_kind["Sensor"]["spec"].get("eventBusName", "default") == "default"


# --- the node's adaptation (e2e.backends.node.node_argo_events) ----------------------------------------------


def _controller_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    import yaml

    (cm,) = [d for d in docs
             if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "argo-events-controller-config"]
    return dict(yaml.safe_load(cm["data"]["controller-config.yaml"]))


def test_the_node_never_pulls_argo_events_images_and_idles_the_jetstream_side_containers(
        install: list[dict[str, Any]]) -> None:
    from e2e.backends.node import IDLE_SIDE_IMAGE, node_argo_events
    from envtest import assets

    jetstream = newest_release(jetstream_versions(install))
    adapted = node_argo_events(install, jetstream_version=jetstream,
                               nats_version=assets.versions()["NATS_SERVER_VERSION"])

    (deployment,) = [d for d in adapted if d.get("kind") == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["imagePullPolicy"] == "IfNotPresent"  # upstream: Always; the node has no registry
    assert {"name": "IMAGE_PULL_POLICY", "value": "IfNotPresent"} in container["env"]  # EventSource/Sensor pods
    entries = {str(v["version"]): v for v in _controller_config(adapted)["eventBus"]["jetstream"]["versions"]}
    assert entries[jetstream]["natsImage"] == f"nats:{jetstream}"  # the image the node builds from nats-server
    assert entries[jetstream]["configReloaderImage"] == entries[jetstream]["metricsExporterImage"] == IDLE_SIDE_IMAGE
    upstream = {str(v["version"]): v for v in _controller_config(install)["eventBus"]["jetstream"]["versions"]}
    assert {k: v for k, v in entries.items() if k != jetstream} == {k: v for k, v in upstream.items() if k != jetstream}
    assert len(adapted) == len(install) and [d for d in adapted if d.get("kind") not in ("Deployment", "ConfigMap")] \
        == [d for d in install if d.get("kind") not in ("Deployment", "ConfigMap")]
    assert _controller_config(install)["eventBus"]["jetstream"]["versions"] != \
        _controller_config(adapted)["eventBus"]["jetstream"]["versions"], "the input is not changed in place"


def test_the_node_refuses_a_jetstream_version_it_has_no_nats_server_for(install: list[dict[str, Any]]) -> None:
    from e2e.backends.node import node_argo_events

    with pytest.raises(ValueError, match=r"NATS_SERVER_VERSION in tools/versions\.env to v2\.10\.29"):
        node_argo_events(install, jetstream_version="2.10.29", nats_version="v2.9.16")
    with pytest.raises(ValueError, match=r"no JetStream 9\.9\.9 entry"):
        node_argo_events(install, jetstream_version="9.9.9", nats_version="v9.9.9")


def test_the_node_dns_is_the_kubernetes_coredns_addon_filled_in_without_a_forwarder() -> None:
    import zipfile

    import yaml

    from e2e.backends.argo_install import module_zip
    from e2e.backends.node import DNS_ADDON, cluster_dns
    from envtest import assets

    version = assets.versions()["KUBERNETES_VERSION"]
    with zipfile.ZipFile(module_zip(assets.cache_dir(), "k8s.io/kubernetes", version)) as z:
        base = z.read(f"k8s.io/kubernetes@{version}/{DNS_ADDON}").decode()
    docs = cluster_dns(base, dns_ip="10.96.0.10", domain="cluster.local")

    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "coredns"), ("Service", "kube-dns"), ("ConfigMap", "coredns"),
            ("ClusterRole", "system:coredns"), ("ServiceAccount", "coredns")} <= kinds
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["clusterIP"] == "10.96.0.10"
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"registry.k8s.io/coredns/coredns:{assets.versions()['COREDNS_VERSION']}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    corefile = config["data"]["Corefile"]
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile and "forward" not in corefile
    # Every other plugin of the addon's Corefile stays, and each is compiled into tools/coredns.
    main_go = (assets.REPO_ROOT / "tools" / "coredns" / "main.go").read_text()
    plugins = {"health": "health", "ready": "ready", "kubernetes": "kubernetes", "prometheus": "metrics",
               "cache": "cache", "loop": "loop", "reload": "reload", "loadbalance": "loadbalance", "errors": "errors"}
    for directive, package in plugins.items():
        assert any(line.split(" ")[0] == directive for line in (x.strip() for x in corefile.splitlines())), directive
        assert f'"github.com/coredns/coredns/plugin/{package}"' in main_go, package
    assert "__" not in yaml.safe_dump_all(docs)
