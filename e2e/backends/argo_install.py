"""Argo Workflows and Argo Events installed into a cluster as an Argo user installs them, from the pinned modules.

Contract: :func:`install_argo` installs Argo Workflows (``ARGO_WORKFLOWS_VERSION``) from the pinned
``github.com/argoproj/argo-workflows/v4`` module zip (``kustomize build`` of ``manifests/cluster-install-no-crds``
with the images pinned to the same version; the CRDs from the files ``make tools`` extracted, with ``kubectl apply
--server-side`` as Argo's install does) and waits for the controller; :func:`install_argo_events` installs Argo
Events (``ARGO_EVENTS_VERSION``) from the pinned ``github.com/argoproj/argo-events`` module zip (``go mod download``
into the project's GOMODCACHE, ``kustomize build`` of ``manifests/cluster-install``, images pinned to the same
version), an EventBus ``default`` and the ``overlay/management/capi-rollout`` EventSource/Sensor, and waits for the
controller and the EventBus. Both write through a :class:`~e2e.backends.cluster.ClusterClient` (server-side apply)
and wait with the ``kubectl`` commands an Argo user runs (``wait --for=condition``, ``rollout status``).

The pure helpers (:func:`argo_kustomization`, :func:`with_controller_env`, :func:`argo_events_members`,
:func:`argo_events_kustomization`, :func:`install_order`, :func:`jetstream_versions`, :func:`newest_release`,
:func:`eventbus_object`) carry the decisions and are unit-tested on the real module zips.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import yaml

from capi_rollout import kustomize as capi_kustomize
from capi_rollout.userfiles import manifest_objects
from e2e.backends.base import ARGO_GROUP, ARGO_VERSION
from e2e.backends.cluster import FIELD_MANAGER, ClusterClient

ARGO_MODULE = "github.com/argoproj/argo-workflows/v4"
ARGO_IMAGES = ("quay.io/argoproj/workflow-controller", "quay.io/argoproj/argocli")
# The parts of the module's manifests/ that cluster-install is built from.
# CRDs are applied from the files ``make tools`` extracted (kustomize is slow on the large full CRDs).
ARGO_INSTALL_DIRS = ("cluster-install-no-crds", "base/workflow-controller", "base/argo-server")
ARGO_EVENTS_MODULE = "github.com/argoproj/argo-events"
ARGO_EVENTS_IMAGE = "quay.io/argoproj/argo-events"
ARGO_EVENTS_NAMESPACE = "argo-events"
# The parts of the argo-events module's manifests/ that cluster-install is built from.
ARGO_EVENTS_DIRS = ("cluster-install", "base")
ARGO_EVENTS_CRDS = ("eventbus.argoproj.io", "eventsources.argoproj.io", "sensors.argoproj.io")
# The GitOps overlay with the EventSource, Sensor and their RBAC (relative to the repository root).
EVENTS_OVERLAY = Path("overlay/management/capi-rollout")


def argo_kustomization(version: str, namespace: str = "argo") -> dict[str, Any]:
    """A kustomization of the module's ``manifests/cluster-install-no-crds``; Argo images pinned to ``version``."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": ["manifests/cluster-install-no-crds"],
        "images": [{"name": image, "newTag": version} for image in ARGO_IMAGES],
    }


def with_controller_env(doc: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """``doc`` with ``env`` set on the workflow-controller Deployment's container (other documents unchanged)."""
    out = cast(dict[str, Any], yaml.safe_load(yaml.safe_dump(dict(doc))))
    if not env or out.get("kind") != "Deployment" or out["metadata"]["name"] != "workflow-controller":
        return out
    for container in out["spec"]["template"]["spec"]["containers"]:
        if container["name"] == "workflow-controller":
            kept = [e for e in container.get("env") or [] if e.get("name") not in env]
            container["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]
    return out


def module_zip(cache: Path, module: str, version: str) -> Path:
    """The Go module zip under the project's GOMODCACHE (``<cache>/go/mod``), as ``make tools`` fetched it."""
    return cache / "go" / "mod" / "cache" / "download" / module / "@v" / f"{version}.zip"


def build_argo_install(zip_path: Path, version: str, kustomize: Path) -> list[dict[str, Any]]:
    """``kustomize build`` of the module zip's ``manifests/cluster-install-no-crds``, images pinned to ``version``."""
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path} missing: run `make tools` (it fetches the Argo module zip)")
    prefix = f"{ARGO_MODULE}@{version}/"

    def wanted(names: Iterable[str]) -> list[str]:
        return [m for m in names if not m.endswith("/")
                and any(m.startswith(f"{prefix}manifests/{d}/") for d in ARGO_INSTALL_DIRS)]

    return kustomize_zip(zip_path, prefix, wanted, argo_kustomization(version), kustomize)


def kustomize_zip(zip_path: Path, prefix: str, members: Callable[[Iterable[str]], Iterable[str]],
                  kustomization: Mapping[str, Any], kustomize: Path) -> list[dict[str, Any]]:
    """``kustomize build`` of a module zip's ``members`` (extracted without ``prefix``) with ``kustomization``."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(zip_path) as z:
        for member in members(z.namelist()):
            target = Path(tmp) / member.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(member))
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(dict(kustomization)))
        return kustomize_build(Path(tmp), kustomize)


def download_module(cache: Path, module: str, version: str, *, timeout: float = 300) -> Path:
    """``go mod download -json <module>@<version>`` with ``GOMODCACHE=<cache>/go/mod`` (as ``tools/`` runs it);
    the module zip's path. A zip already in the cache is not fetched again (Go answers from the cache)."""
    import json

    env = {**os.environ, "GOMODCACHE": str(cache / "go" / "mod"), "GOCACHE": str(cache / "go" / "build"),
           "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=cache, env=env,
                          capture_output=True, text=True, timeout=timeout)
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or info.get("Error") or not info.get("Zip"):
        raise RuntimeError(f"go mod download {module}@{version} failed: {info.get('Error') or done.stderr.strip()}")
    return Path(info["Zip"])


def argo_events_members(names: Iterable[str], version: str) -> list[str]:
    """The members of the argo-events module zip that ``manifests/cluster-install`` is built from (its own
    directory and the ``base`` it references: CRDs, ServiceAccount, controller-manager), in zip order."""
    prefix = f"{ARGO_EVENTS_MODULE}@{version}/manifests/"
    return [n for n in names if not n.endswith("/") and any(n.startswith(f"{prefix}{d}/") for d in ARGO_EVENTS_DIRS)]


def argo_events_kustomization(version: str) -> dict[str, Any]:
    """A kustomization of the module's ``manifests/cluster-install`` (namespace ``argo-events``): the controller
    image and the image it starts EventSource/Sensor/EventBus pods with (``ARGO_EVENTS_IMAGE``) pinned to
    ``version``."""
    image = f"{ARGO_EVENTS_IMAGE}:{version}"
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "controller-manager"},
             "spec": {"template": {"spec": {"containers": [
                 {"name": "controller-manager", "env": [{"name": "ARGO_EVENTS_IMAGE", "value": image}]}]}}}}
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": ARGO_EVENTS_NAMESPACE,
        "resources": ["manifests/cluster-install"],
        "images": [{"name": ARGO_EVENTS_IMAGE, "newTag": version}],
        "patches": [{"patch": yaml.safe_dump(patch)}],
    }


def install_order(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``docs`` with Namespaces first, then CustomResourceDefinitions, then the rest (each group in its order)."""
    rank = {"Namespace": 0, "CustomResourceDefinition": 1}
    return sorted((dict(d) for d in docs), key=lambda d: rank.get(str(d.get("kind")), 2))


def build_argo_events_install(zip_path: Path, version: str, kustomize: Path) -> list[dict[str, Any]]:
    """The Argo Events controller install: the ``argo-events`` Namespace and ``kustomize build`` of the module
    zip's ``manifests/cluster-install`` (see :func:`argo_events_kustomization`), in :func:`install_order`."""
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path} missing: see download_module")
    built = kustomize_zip(zip_path, f"{ARGO_EVENTS_MODULE}@{version}/",
                          lambda names: argo_events_members(names, version), argo_events_kustomization(version),
                          kustomize)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ARGO_EVENTS_NAMESPACE}}
    return install_order([namespace, *built])


def kustomize_build(directory: Path, kustomize: Path) -> list[dict[str, Any]]:
    """The documents ``kustomize build <directory>`` prints with the pinned ``kustomize`` (e.g.
    :data:`EVENTS_OVERLAY`, the EventSource/Sensor/RBAC)."""
    built = capi_kustomize.build(directory, env={"KUSTOMIZE": str(kustomize)})
    return [obj for _, obj in manifest_objects(built, f"kustomize build {directory}")]


def jetstream_versions(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The JetStream versions the controller's ``argo-events-controller-config`` ConfigMap lists, in its order."""
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "argo-events-controller-config":
            config = yaml.safe_load(doc["data"]["controller-config.yaml"])
            return [str(v["version"]) for v in config["eventBus"]["jetstream"]["versions"]]
    raise ValueError("no argo-events-controller-config ConfigMap in the install")


def newest_release(versions: Iterable[str]) -> str:
    """The highest plain ``X.Y.Z`` of ``versions`` (``latest`` and ``-alpine`` variants are not pinned)."""
    plain = [v for v in versions if all(part.isdigit() for part in v.split("."))]
    if not plain:
        raise ValueError(f"no plain X.Y.Z version among {list(versions)}")
    return max(plain, key=lambda v: tuple(int(part) for part in v.split(".")))


def eventbus_object(jetstream_version: str, *, namespace: str = ARGO_EVENTS_NAMESPACE,
                    replicas: int = 1) -> dict[str, Any]:
    """The EventBus ``default`` the EventSource and Sensor publish to: JetStream at a version the controller
    lists; one server (a one-node kind cluster) and streams with as many replicas as servers."""
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
        "kind": "EventBus",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"jetstream": {"version": jetstream_version, "replicas": replicas,
                               "streamConfig": f"replicas: {replicas}\n"}},
    }


def install_argo(client: ClusterClient, *, cache: Path, version: str, kustomize: Path, namespace: str,
                 controller_env: Mapping[str, str] = MappingProxyType({}), timeout: float = 300) -> None:
    """Install Argo Workflows ``version`` from the pinned module zip and wait for the controller to be available
    (``controller_env``: added to the workflow-controller container; ``namespace``: where a namespaced document
    without one goes)."""
    docs = build_argo_install(module_zip(cache, ARGO_MODULE, version), version, kustomize)
    docs = [with_controller_env(d, controller_env) for d in docs]
    crd_dir = cache / "crds" / f"argo-workflows-{version}"  # written by `make tools`
    crds = [f"--filename={path}" for path in sorted(crd_dir.glob("*.yaml"))]  # one CRD each
    if len(crds) < 8:
        raise FileNotFoundError(f"{crd_dir}: the Argo CRDs are missing: run `make tools`")
    client.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argo"}}], namespace=namespace)
    # As Argo's install says: server-side (the full CRDs are too large for a client-side apply's annotation).
    client.kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", *crds,
                   timeout=300)
    client.kubectl("wait", "--for=condition=Established", "--timeout=120s", *crds, timeout=150)
    client.apply(docs, namespace=namespace)
    client.kubectl("-n", "argo", "rollout", "status", "deployment/workflow-controller", f"--timeout={int(timeout)}s",
                   timeout=timeout + 30)


def install_argo_events(client: ClusterClient, *, cache: Path, version: str, kustomize: Path, repo_root: Path,
                        namespace: str, adapt: Callable[[list[dict[str, Any]], str], list[dict[str, Any]]],
                        timeout: float = 300) -> None:
    """Install Argo Events ``version`` from the pinned module zip: the controller (server-side, CRDs established
    first; its documents through ``adapt(docs, jetstream_version)``), the EventBus ``default`` (JetStream, the
    newest plain version the controller's ConfigMap lists), then :data:`EVENTS_OVERLAY` built with the pinned
    kustomize. Waits for the controller and for the EventBus to be deployed."""
    docs = build_argo_events_install(download_module(cache, ARGO_EVENTS_MODULE, version), version, kustomize)
    jetstream = newest_release(jetstream_versions(docs))
    docs = adapt(docs, jetstream)
    first = [d for d in docs if d.get("kind") in ("Namespace", "CustomResourceDefinition")]
    client.apply(first, namespace=namespace)
    client.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                   *[f"crd/{name}" for name in ARGO_EVENTS_CRDS], timeout=150)
    client.apply([d for d in docs if d not in first], namespace=namespace)
    client.kubectl("-n", ARGO_EVENTS_NAMESPACE, "rollout", "status", "deployment/controller-manager",
                   f"--timeout={int(timeout)}s", timeout=timeout + 30)
    client.apply([eventbus_object(jetstream)], namespace=namespace)
    client.kubectl("-n", ARGO_EVENTS_NAMESPACE, "wait", "--for=condition=Deployed", "eventbus/default",
                   f"--timeout={int(timeout)}s", timeout=timeout + 30)
    client.kubectl("-n", ARGO_EVENTS_NAMESPACE, "rollout", "status", "statefulset/eventbus-default-js",
                   f"--timeout={int(timeout)}s", timeout=timeout + 30)
    client.apply(kustomize_build(repo_root / EVENTS_OVERLAY, kustomize), namespace=namespace)
