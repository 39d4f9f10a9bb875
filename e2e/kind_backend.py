"""The ``kind`` and ``existing`` e2e backends: the WorkflowTemplate run by a real Argo Workflows controller.

Contract: :class:`ClusterBackend` talks to a cluster that already runs Argo Workflows v4 (``existing``:
``KUBECONFIG``, a drill's throwaway namespace):

* ``install`` server-side-applies documents over REST (field manager ``capi-rollout-e2e``), each through
  :meth:`ClusterBackend.localize`: re-homed into the throwaway namespace, with every cluster-scoped object and every
  binding outside it renamed ``<name>-<namespace>`` (:func:`rehome`), so a drill never overwrites the deployed
  tool; step images overridden (``E2E_STEP_IMAGE``, ``E2E_SIM_IMAGE``). ``close`` removes exactly what was added
  (:meth:`ClusterBackend.cleanup`; ``E2E_KEEP=1`` keeps it);
* ``submit`` creates a ``Workflow`` with a ``workflowTemplateRef`` (what ``argo submit --from
  workflowtemplate/<name>`` creates); ``faults`` (:class:`~e2e.argo_local.KillStep`) force-delete the attempt's
  pod when due (:func:`kill_due`), which Argo reports as a lost pod;
* ``wait`` polls the phase with a deadline and converts it with :func:`e2e.argo_local.run_from_argo_workflow`,
  saving each pod's ``main`` log;
* ``deploy_simulator`` runs ``sim/deploy``'s manifests with the scenario (one Service per fake Talos node, so
  workflow pods reach it) once the cluster can hold its CAPI line (:meth:`ClusterBackend.capi_line_available`: a
  drill cluster is never changed, its Machine CRD must store the line's version); the :class:`SimDeployment`
  handle (an :class:`e2e.simhandles.RemoteSim`) reads the timeline from the pod's log (JSON lines), triggers the
  rollout with ``SIGUSR1`` through ``kubectl exec``, fails fast when its container exits, and removes it.

:class:`KindBackend` adds the cluster's life cycle (pytest-kind-ng; one cluster per CAPI line), the Argo install
from the pinned ``github.com/argoproj/argo-workflows/v4`` module zip (``kustomize build`` of
``manifests/cluster-install`` with the images pinned to the same version), the step/simulator images (``docker
build`` + ``kind load``) and the CAPI line's and Talos CRDs before a simulator runs; documents are installed as
shipped (the cluster is the test's own) and ``close`` deletes the cluster. On request
(:meth:`KindBackend.install_argo_events`, the Sensor test) it installs Argo Events from the pinned
``github.com/argoproj/argo-events`` module zip (``go mod download`` into the project's GOMODCACHE, ``kustomize
build`` of ``manifests/cluster-install``, images pinned to the same version), an EventBus ``default`` and the
``overlay/management/capi-rollout`` EventSource/Sensor.

Pure helpers (:func:`workflow_object`, :func:`argo_kustomization`, :func:`override_images`, :func:`rehome`,
:func:`outside`, :func:`image_overrides`, :func:`serves_capi_line`, :func:`kill_due`, :func:`container_alive`,
:func:`images_to_build`, :func:`simulator_documents`, :func:`simulator_ready`, :func:`argo_events_members`,
:func:`argo_events_kustomization`, :func:`install_order`, :func:`jetstream_versions`, :func:`newest_release`,
:func:`eventbus_object`) carry the decisions and are unit-tested; install, localize and cleanup run against the
real local API server (``tests/integration/test_drill_backend.py``); the rest needs Docker.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import yaml

from capi_rollout.workflow.image import IMAGE as STEP_IMAGE
from e2e.argo_local import KillStep, WorkflowRun, run_from_argo_workflow
from e2e.argo_local.model import COMPLETED_PHASES, POD, pod_name
from e2e.backends import RUNNER_SERVICE_ACCOUNT, Manifest, load_manifests
from e2e.simhandles import RemoteSim
from sim.deploy import NAME as SIM_NAME
from sim.deploy import SIM_IMAGE, manifests
from sim.scenario import Scenario
from sim.scenario_format import load
from sim.talos.exposure import SERVICE_LABEL

ARGO_GROUP, ARGO_VERSION = "argoproj.io", "v1alpha1"
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
POLL_SECONDS = 1.0
FAULT_POLL_SECONDS = 0.25
FIELD_MANAGER = "capi-rollout-e2e"
SIM_CONTAINER = "simulator"  # sim/deploy's container name
# Environment of the ``existing`` backend: the images a drill cluster pulls instead of the released tags.
IMAGE_ENV = {"E2E_STEP_IMAGE": STEP_IMAGE, "E2E_SIM_IMAGE": SIM_IMAGE}
# Kinds whose objects live in a namespace; anything else is cluster-scoped and applied as is.
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                            "PriorityClass", "ClusterWorkflowTemplate"})


# --- pure helpers ------------------------------------------------------------------------------------------


def workflow_object(template: str, namespace: str, parameters: Mapping[str, str], *,
                    generate_name: str | None = None) -> dict[str, Any]:
    """The Workflow ``argo submit --from workflowtemplate/<template> -p k=v`` creates."""
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
        "kind": "Workflow",
        "metadata": {"generateName": generate_name or f"{template}-", "namespace": namespace,
                     "labels": {"workflows.argoproj.io/workflow-template": template}},
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {"parameters": [{"name": k, "value": str(v)} for k, v in parameters.items()]},
        },
    }


def argo_kustomization(version: str, namespace: str = "argo") -> dict[str, Any]:
    """A kustomization of the module's ``manifests/cluster-install-no-crds``; Argo images pinned to ``version``."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": ["manifests/cluster-install-no-crds"],
        "images": [{"name": image, "newTag": version} for image in ARGO_IMAGES],
    }


def override_images(doc: Mapping[str, Any], images: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a WorkflowTemplate whose script/container ``image`` values are replaced per ``images``."""
    out = yaml.safe_load(yaml.safe_dump(dict(doc)))
    if out.get("kind") != "WorkflowTemplate":
        return dict(out)
    for tmpl in out["spec"].get("templates", []):
        for kind in ("script", "container"):
            if kind in tmpl and tmpl[kind].get("image") in images:
                tmpl[kind]["image"] = images[tmpl[kind]["image"]]
    return dict(out)


def rehome(doc: Mapping[str, Any], namespace: str, *, from_namespace: str = "argo",
           cluster_roles: Collection[str] = ()) -> dict[str, Any]:
    """A copy of ``doc`` for the throwaway namespace ``namespace`` of a shared (drill) cluster.

    Objects of ``from_namespace`` move into ``namespace`` and ServiceAccount subjects follow. Everything else —
    cluster-scoped objects, and objects left in another namespace (the per-cluster-namespace RoleBinding) — is
    renamed ``<name>-<namespace>``, and a ``roleRef`` to one of ``cluster_roles`` (the ClusterRoles installed, so
    renamed, for this namespace) follows: a drill never overwrites the deployed tool's RBAC, and removing what it
    added is removing what carries its suffix. Namespaces and CRDs keep their names."""
    out = yaml.safe_load(yaml.safe_dump(dict(doc)))
    kind, meta = out.get("kind"), out["metadata"]
    if kind in CLUSTER_SCOPED:
        if kind not in ("Namespace", "CustomResourceDefinition"):
            meta["name"] = f"{meta['name']}-{namespace}"
    elif meta.get("namespace", from_namespace) == from_namespace:
        meta["namespace"] = namespace
    else:
        meta["name"] = f"{meta['name']}-{namespace}"
    for subject in out.get("subjects", []) or []:
        if subject.get("kind") == "ServiceAccount" and subject.get("namespace", from_namespace) == from_namespace:
            subject["namespace"] = namespace
    ref = out.get("roleRef") or {}
    if ref.get("kind") == "ClusterRole" and ref.get("name") in cluster_roles:
        ref["name"] = f"{ref['name']}-{namespace}"
    return dict(out)


ObjectRef = tuple[str, str, str | None, str]  # apiVersion, kind, namespace (None: cluster-scoped), name


def outside(doc: Mapping[str, Any], namespace: str) -> ObjectRef | None:
    """Where a rehomed document lives if that is outside ``namespace`` (what deleting the namespace does not
    remove), else None. Namespaces and CRDs are never the drill's to remove."""
    kind, meta = str(doc.get("kind")), doc.get("metadata") or {}
    if kind in ("Namespace", "CustomResourceDefinition"):
        return None
    if kind in CLUSTER_SCOPED:
        return str(doc["apiVersion"]), kind, None, str(meta["name"])
    if meta.get("namespace") != namespace:
        return str(doc["apiVersion"]), kind, meta.get("namespace"), str(meta["name"])
    return None


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


def images_to_build() -> list[tuple[str, str]]:
    """(tag, Dockerfile) of every image the kind cluster needs from this repository: the step image the
    WorkflowTemplate runs and the simulator image ``sim/deploy`` runs."""
    return [(STEP_IMAGE, "Dockerfile"), (SIM_IMAGE, "sim/Dockerfile")]


def simulator_documents(scenario: Scenario | str, namespace: str, *, image: str = SIM_IMAGE,
                        trigger_after: float = -1.0, allow_real_capi: bool = False) -> list[dict[str, Any]]:
    """``sim/deploy``'s documents for ``scenario`` in ``namespace`` (the scenario's own namespace is replaced:
    the simulator, its objects and its per-node Services all live in one namespace); the timeline is printed as
    JSON lines, for :class:`SimDeployment` to read back. ``allow_real_capi``: the simulator's ``--allow-real-capi``
    (a drill cluster whose real CAPI controllers are confined by ``--watch-filter`` or ``--namespace``)."""
    s = load(scenario) if isinstance(scenario, str) else scenario
    extra = ("--output", "json", *(("--allow-real-capi",) if allow_real_capi else ()))
    return manifests(namespace=namespace, scenario=replace(s, namespace=namespace), image=image,
                     trigger_after=trigger_after, extra_args=extra)


def simulator_ready(*, deployment: Mapping[str, Any] | None, talosconfig: bool, services: int,
                    machines: int) -> tuple[bool, str]:
    """Is the simulator up (its pod ready: the cluster exists) with the talosconfig Secret and one Service per
    Machine? With the reason when not."""
    status = (deployment or {}).get("status") or {}
    if not status.get("readyReplicas"):
        return False, "the simulator pod is not ready yet (its readiness probe waits for the simulated cluster)"
    if not talosconfig:
        return False, "no talosconfig Secret yet"
    if machines == 0 or services != machines:
        return False, f"{services} per-node Services for {machines} Machines"
    return True, f"ready: {machines} Machines, each behind its Service"


def image_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """``{released tag: replacement}`` from ``E2E_STEP_IMAGE`` / ``E2E_SIM_IMAGE`` (a drill cluster pulls images
    from a registry it can reach; kind loads the locally built ones under the released tags)."""
    return {default: env[name].strip() for name, default in IMAGE_ENV.items() if env.get(name, "").strip()}


def serves_capi_line(crd: Mapping[str, Any], capi_line: str) -> tuple[bool, str]:
    """Does the Machine CRD ``crd`` store the version the simulator writes for ``capi_line``? (The simulator
    writes its line's version only; a cluster storing another one would convert through CAPI's webhook, which
    the e2e suite must not depend on.)"""
    from sim.objects import capi_version

    wanted = capi_version(capi_line)
    storage = [v.get("name") for v in (crd.get("spec") or {}).get("versions", []) if v.get("storage")]
    if wanted in storage:
        return True, f"the Machine CRD stores {wanted}"
    return False, (f"the CAPI {capi_line} scenarios write {wanted} Machines, but this cluster's Machine CRD stores "
                   f"{', '.join(str(v) for v in storage) or 'nothing'}")


def container_alive(pod: Mapping[str, Any], container: str = SIM_CONTAINER) -> tuple[bool, str]:
    """Has ``container`` of ``pod`` (a dict) never exited? With what happened when it did."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        for where in ("state", "lastState"):
            ended = (status.get(where) or {}).get("terminated")
            if ended:
                return False, (f"container {container} exited with code {ended.get('exitCode')} "
                               f"({ended.get('reason') or 'no reason'}); restarts: {status.get('restartCount', 0)}")
        return True, "running"
    return True, f"container {container} not started yet"


def progress_lines(run: WorkflowRun, seen: dict[str, str]) -> list[str]:
    """``<workflow>: <step attempt> <phase>[: message]`` for every Pod node whose phase differs from ``seen``
    (updated), and the workflow's own phase when it changed: what a test prints while a remote run goes on."""
    lines: list[str] = []
    for node in run.nodes.values():
        if node.type != POD or seen.get(node.name) == node.phase:
            continue
        seen[node.name] = node.phase
        lines.append(f"{run.name}: {node.display_name} {node.phase}" + (f": {node.message}" if node.message else ""))
    if seen.get(run.name) != run.phase:
        seen[run.name] = run.phase
        lines.append(f"{run.name}: workflow {run.phase}" + (f": {run.message}" if run.message else ""))
    return lines


def template_copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deployed WorkflowTemplate as a manifest to install elsewhere: kind, name, labels, annotations (minus
    kubectl's last-applied copy) and spec; nothing the server owns (uid, resourceVersion, managedFields...)."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    copied_meta: dict[str, Any] = {"name": meta["name"], "namespace": meta.get("namespace", "argo")}
    if meta.get("labels"):
        copied_meta["labels"] = dict(meta["labels"])
    if annotations:
        copied_meta["annotations"] = annotations
    return {"apiVersion": obj.get("apiVersion", f"{ARGO_GROUP}/{ARGO_VERSION}"), "kind": "WorkflowTemplate",
            "metadata": copied_meta, "spec": yaml.safe_load(yaml.safe_dump(obj["spec"]))}


def kill_due(run: WorkflowRun, fault: KillStep, *, now: float) -> str | None:
    """The pod to delete for ``fault`` now, or None: its attempt has started, is still running, and has run for
    ``fault.after`` seconds."""
    attempts = run.attempts(fault.step)
    if len(attempts) <= fault.attempt:
        return None
    node = attempts[fault.attempt]
    if node.phase not in ("Pending", "Running") or node.started is None or now < node.started + fault.after:
        return None
    return pod_name(run.name, node.name, node.template)


PROBE_SCRIPT = """\
import json, pathlib, sys
from capi_rollout.adapters.talos.sync import SyncTalosClient
from capi_rollout.adapters.talos.config import parse_talosconfig
path = sys.argv[1] if len(sys.argv) > 1 else "/etc/talos/talosconfig"
config = parse_talosconfig(pathlib.Path(path).read_text())
with SyncTalosClient(config, timeout=10.0) as talos:
    print(json.dumps({e: talos.probe(e).state.value for e in config.endpoints}))
"""


def talos_probe_job(namespace: str, cluster: str, *, image: str = STEP_IMAGE,
                    name: str = "talos-probe") -> dict[str, Any]:
    """A Job that probes every talosconfig endpoint (the Services' ClusterIPs, port 50000) from its own pod with
    the engine's Talos client, as the workflow's steps do, and prints ``{endpoint: state}`` as JSON."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 120, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-c", PROBE_SCRIPT],
                            "volumeMounts": [{"name": "talosconfig", "mountPath": "/etc/talos", "readOnly": True}]}],
            "volumes": [{"name": "talosconfig", "secret": {"secretName": f"{cluster}-talosconfig"}}],
        }}},
    }


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
    """``kustomize build <directory>``'s documents (e.g. :data:`EVENTS_OVERLAY`, the EventSource/Sensor/RBAC)."""
    built = subprocess.run([str(kustomize), "build", str(directory)], capture_output=True, text=True, check=True,
                           timeout=120).stdout
    return [d for d in yaml.safe_load_all(built) if d]


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


# --- a cluster that runs Argo ------------------------------------------------------------------------------


class ClusterBackend:
    """The ``existing`` backend (and the base of ``kind``): Argo already runs in the cluster of ``kubeconfig``."""

    name = "existing"

    def __init__(self, kubeconfig: Path, results_dir: Path, *, namespace: str | None = None,
                 images: Mapping[str, str] | None = None, kubectl: Sequence[str] = ("kubectl",),
                 keep: bool = False, echo: Callable[[str], None] | None = None,
                 allow_real_capi: bool = False) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.results_dir = Path(results_dir)
        self.namespace = namespace or f"capi-rollout-e2e-{uuid.uuid4().hex[:6]}"
        self.images = dict(images or {})
        self.kubectl_argv = list(kubectl)
        self.keep = keep
        self.echo = echo  # progress while waiting: one line per step attempt whose phase changed
        self.allow_real_capi = allow_real_capi  # E2E_SIM_ALLOW_REAL_CAPI=1: see sim/README.md, "Safety"
        self.templates: list[str] = []
        self._api: Any = None
        self._injectors: list[threading.Thread] = []
        self._cluster_roles: set[str] = set()  # installed for this namespace, so renamed (see rehome)
        self._added: list[ObjectRef] = []  # what install() put outside the namespace
        self._mapper: Any = None

    @classmethod
    def from_kubeconfig(cls, *, results_dir: Path, **options: Any) -> ClusterBackend:
        path = options.pop("kubeconfig", None) or os.environ.get("KUBECONFIG")
        if not path:
            raise ValueError("E2E_CLUSTER=existing needs KUBECONFIG (a cluster with Argo Workflows installed)")
        images = {**image_overrides(os.environ), **(options.pop("images", None) or {})}
        options.setdefault("keep", os.environ.get("E2E_KEEP", "") not in ("", "0"))
        options.setdefault("allow_real_capi", os.environ.get("E2E_SIM_ALLOW_REAL_CAPI", "") not in ("", "0"))
        return cls(Path(path), results_dir, images=images, **options)

    # -- plumbing -----------------------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        done = subprocess.run([*self.kubectl_argv, *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def apply(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Server-side apply, in order, as ``kubectl apply --server-side --force-conflicts`` would (field manager
        ``capi-rollout-e2e``; a namespaced document without namespace goes to this backend's)."""
        from envtest import rest

        if self._mapper is None:
            self._mapper = rest.ResourceMapper(self.api)
        for doc in docs:
            rest.apply_document(self.api, dict(doc), mapper=self._mapper, namespace=self.namespace,
                                field_manager=FIELD_MANAGER)

    def delete(self, ref: ObjectRef) -> None:
        """Delete one object (background propagation); absent is fine."""
        from kubernetes.client.exceptions import ApiException

        from envtest import rest

        api_version, kind, namespace, name = ref
        if self._mapper is None:
            self._mapper = rest.ResourceMapper(self.api)
        try:
            info = self._mapper.resolve(api_version, kind)
            rest.request_json(self.api, "DELETE", f"{info.collection_path(namespace)}/{name}",
                              query=[("propagationPolicy", "Background")])
        except ApiException as exc:
            if exc.status != 404:
                raise

    @property
    def api(self) -> Any:
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(str(self.kubeconfig))
        return self._api

    # -- Backend ------------------------------------------------------------------------------------------

    def localize(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """``doc`` as this backend installs it: rehomed into the throwaway namespace (:func:`rehome`), images
        overridden; what lands outside the namespace is remembered for :meth:`cleanup`."""
        if doc.get("kind") == "ClusterRole":
            self._cluster_roles.add(doc["metadata"]["name"])
        out = override_images(rehome(doc, self.namespace, cluster_roles=self._cluster_roles), self.images)
        where = outside(out, self.namespace)
        if where is not None and where not in self._added:
            self._added.append(where)
        return out

    def install(self, manifests: Iterable[Manifest]) -> None:
        raw = load_manifests(manifests)
        self._cluster_roles |= {d["metadata"]["name"] for d in raw if d.get("kind") == "ClusterRole"}
        docs = [self.localize(d) for d in raw]
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        self.apply([ns, *[d for d in docs if d.get("kind") == "Namespace"]])
        self.apply([d for d in docs if d.get("kind") != "Namespace"])
        self.templates += [n for n in (d["metadata"]["name"] for d in docs if d.get("kind") == "WorkflowTemplate")
                           if n not in self.templates]  # installing the same template again updates it

    def deployed_template(self, ref: str) -> dict[str, Any]:
        """A copy (:func:`template_copy`) of the WorkflowTemplate ``<namespace>/<name>`` the cluster runs, so a
        drill plays what is deployed rather than this checkout's rendering (``E2E_DEPLOYED_TEMPLATE``)."""
        from kubernetes import client

        namespace, _, name = ref.rpartition("/")
        if not namespace or not name:
            raise ValueError(f"E2E_DEPLOYED_TEMPLATE={ref!r}: expected <namespace>/<name>, e.g. argo/capi-rollout")
        obj = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            ARGO_GROUP, ARGO_VERSION, namespace, "workflowtemplates", name)
        return template_copy(cast(dict[str, Any], obj))

    def cleanup(self) -> None:
        """Remove what :meth:`install` added to the cluster: the throwaway namespace (template, runner
        ServiceAccount, Workflows, ledgers) and the suffixed objects outside it."""
        for ref in reversed(self._added):
            self.delete(ref)
        self.delete(("v1", "Namespace", None, self.namespace))

    def submit(self, parameters: Mapping[str, str], *, template: str | None = None,
               faults: Sequence[KillStep] = ()) -> WorkflowRun:
        if template is None:
            if len(self.templates) != 1:
                raise ValueError(f"name the template to run: installed {self.templates}")
            template = self.templates[0]
        from kubernetes import client

        created = cast(dict[str, Any], client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            ARGO_GROUP, ARGO_VERSION, self.namespace, "workflows", workflow_object(template, self.namespace, parameters)
        ))
        run = run_from_argo_workflow(created)
        if faults:
            injector = threading.Thread(target=self._inject, args=(run.name, tuple(faults)), daemon=True,
                                        name=f"faults-{run.name}")
            injector.start()
            self._injectors.append(injector)
        return run

    def _inject(self, name: str, faults: tuple[KillStep, ...], timeout: float = 900.0) -> None:
        """Play ``faults`` on the running Workflow ``name``: ``after`` seconds after its attempt started, each
        :class:`KillStep` deletes the attempt's pod: ``force`` with grace period 0 (a lost node: Argo marks the node
        Error "pod deleted"), ``graceful`` with a grace period (the kubelet SIGTERMs main, exit 143, pod Failed),
        ``evict`` through the Eviction API (graceful too). The template's retry expression retries all three."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        custom, core = client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
        pending = list(faults)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            obj = cast(dict[str, Any], custom.get_namespaced_custom_object(
                ARGO_GROUP, ARGO_VERSION, self.namespace, "workflows", name))
            run = run_from_argo_workflow(obj)
            for fault in list(pending):
                due = kill_due(run, fault, now=time.time())
                if due is None:
                    continue
                with contextlib.suppress(ApiException):
                    if fault.how == "evict":
                        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=due, namespace=self.namespace))
                        core.create_namespaced_pod_eviction(due, self.namespace, body)
                    else:
                        core.delete_namespaced_pod(
                            due, self.namespace, grace_period_seconds=0 if fault.how == "force" else 5)
                pending.remove(fault)
            if run.phase in COMPLETED_PHASES:
                return
            time.sleep(FAULT_POLL_SECONDS)  # watching a remote controller's progress: bounded by the deadline

    def wait(self, run: WorkflowRun, timeout: float) -> WorkflowRun:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            obj = cast(dict[str, Any], custom.get_namespaced_custom_object(
                ARGO_GROUP, ARGO_VERSION, self.namespace, "workflows", run.name))
            if self.echo is not None:
                for line in progress_lines(run_from_argo_workflow(obj), seen):
                    self.echo(line)
            if (obj.get("status") or {}).get("phase") in COMPLETED_PHASES:
                break
            if time.monotonic() >= deadline:
                current = run_from_argo_workflow(obj)
                raise TimeoutError(f"{run.name} did not complete within {timeout:g}s:\n{current.text()}")
            time.sleep(POLL_SECONDS)  # polling a remote controller's status: bounded by the deadline above
        done = run_from_argo_workflow(obj)
        self._save_logs(done)
        done.results_dir = done.write(self.results_dir / done.name)
        return done

    def _save_logs(self, run: WorkflowRun) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api)
        directory = self.results_dir / run.name
        directory.mkdir(parents=True, exist_ok=True)
        for node in run.nodes.values():
            if node.type != POD:
                continue
            path = directory / f"{node.name}.log"
            try:
                text = core.read_namespaced_pod_log(pod_name(run.name, node.name, node.template), self.namespace,
                                                    container="main")
            except ApiException as exc:
                text = f"# log unavailable: {exc.status} {exc.reason}\n"
            path.write_text(text)
            node.log_path = str(path)

    # -- the simulator in the cluster ---------------------------------------------------------------------

    def prepare_simulation(self, capi_line: str) -> None:
        """Make the cluster ready for a simulator of ``capi_line``. A drill cluster is never changed: its CAPI
        CRDs must already serve the line's version (:func:`serves_capi_line`), else ``RuntimeError`` says so."""
        ok, why = self.capi_line_available(capi_line)
        if not ok:
            raise RuntimeError(why)

    def capi_line_available(self, capi_line: str) -> tuple[bool, str]:
        """Can a simulator of ``capi_line`` run here, and why not."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            crd: Any = self.api.sanitize_for_serialization(client.ApiextensionsV1Api(self.api)
                                                           .read_custom_resource_definition("machines.cluster.x-k8s.io"))
        except ApiException as exc:
            return False, f"the Machine CRD cannot be read: {exc.status} {exc.reason}"
        return serves_capi_line(crd, capi_line)

    def deploy_simulator(self, scenario: Scenario | str, *, namespace: str | None = None,
                         trigger_after: float = -1.0, timeout: float = 300.0) -> SimDeployment:
        """Run the simulator in the cluster with ``scenario`` and wait until its objects exist: the pod ready
        (the simulated cluster is up), the talosconfig Secret, one Service per Machine. Its timeline is printed
        as JSON lines (``--output json``), which :class:`SimDeployment` reads back."""
        s = load(scenario) if isinstance(scenario, str) else scenario
        ns = namespace or f"sim-{uuid.uuid4().hex[:8]}"
        self.prepare_simulation(s.capi_line)
        docs = simulator_documents(s, ns, trigger_after=trigger_after, image=self.images.get(SIM_IMAGE, SIM_IMAGE),
                                   allow_real_capi=self.allow_real_capi)
        self.apply([d for d in docs if d["kind"] == "Namespace"])
        self.apply([d for d in docs if d["kind"] != "Namespace"])
        deployment = SimDeployment(self, ns, replace(s, namespace=ns))
        try:
            deployment.wait_ready(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                deployment.remove()
            raise
        return deployment

    def close(self) -> None:
        """Wait for fault injectors, remove what was installed (unless ``keep``: ``E2E_KEEP=1``), close the client."""
        for injector in self._injectors:
            injector.join(timeout=FAULT_POLL_SECONDS * 5)
        try:
            if not self.keep:
                self.cleanup()
        finally:
            if self._api is not None:
                self._api.close()
                self._api = None


class KindBackend(ClusterBackend):
    """The ``kind`` backend: create the cluster, install Argo v4, build and load the images, then as above."""

    name = "kind"
    # Environment added to the workflow-controller container (documented Argo settings only).
    argo_controller_env: Mapping[str, str] = MappingProxyType({})

    def __init__(self, results_dir: Path, *, cluster_name: str = "capi-rollout-e2e", repo_root: Path | None = None,
                 cache: Path | None = None, argo_version: str | None = None, keep: bool = False,
                 images: Mapping[str, str] | None = None, namespace: str = "argo",
                 echo: Callable[[str], None] | None = None) -> None:
        from pytest_kind import KindCluster

        from envtest import assets

        self.repo_root = repo_root or Path(__file__).resolve().parents[1]
        self.cache = cache or assets.cache_dir()
        self.argo_version = argo_version or assets.versions()["ARGO_WORKFLOWS_VERSION"]
        self.keep = keep
        self.cluster = KindCluster(cluster_name)
        self.cluster.create()
        super().__init__(self.cluster.kubeconfig_path, results_dir, namespace=namespace, images=images,
                         kubectl=(str(self.cluster.kubectl_path),), keep=keep, echo=echo)
        try:
            self.cluster.ensure_kubectl()
            self.install_argo()
        except BaseException:
            self.close()  # a half-made backend leaves no cluster behind (unless keep)
            raise

    def install_argo(self, timeout: float = 300) -> None:
        """Install Argo Workflows from the pinned module zip and wait for the controller to be available."""
        from envtest import assets

        docs = build_argo_install(module_zip(self.cache, ARGO_MODULE, self.argo_version), self.argo_version,
                                  assets.kustomize())
        docs = [with_controller_env(d, self.argo_controller_env) for d in docs]
        crd_dir = self.cache / "crds" / f"argo-workflows-{self.argo_version}"  # written by `make tools`
        crds = load_manifests(sorted(crd_dir.glob("*.yaml")))
        if len(crds) < 8:
            raise FileNotFoundError(f"{crd_dir}: the Argo CRDs are missing: run `make tools`")
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argo"}}])
        self.apply(crds)
        self.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                     *[f"crd/{c['metadata']['name']}" for c in crds], timeout=150)
        self.apply(docs)
        self.kubectl("-n", "argo", "rollout", "status", "deployment/workflow-controller", f"--timeout={int(timeout)}s",
                     timeout=timeout + 30)

    def install_argo_events(self, timeout: float = 300) -> None:
        """Install Argo Events (``ARGO_EVENTS_VERSION``) from the pinned module zip, once per backend: the
        controller (server-side, CRDs established first), the EventBus ``default`` (JetStream, the newest plain
        version the controller's ConfigMap lists), then ``overlay/management/capi-rollout`` built with the
        pinned kustomize. Waits for the controller and for the EventBus to be deployed."""
        from envtest import assets

        if getattr(self, "_argo_events_installed", False):
            return
        version = assets.versions()["ARGO_EVENTS_VERSION"]
        kustomize = assets.kustomize()
        docs = build_argo_events_install(download_module(self.cache, ARGO_EVENTS_MODULE, version), version, kustomize)
        jetstream = newest_release(jetstream_versions(docs))
        docs = self.adapt_argo_events(docs, jetstream)
        first = [d for d in docs if d.get("kind") in ("Namespace", "CustomResourceDefinition")]
        self.apply(first)
        self.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                     *[f"crd/{name}" for name in ARGO_EVENTS_CRDS], timeout=150)
        self.apply([d for d in docs if d not in first])
        self.kubectl("-n", ARGO_EVENTS_NAMESPACE, "rollout", "status", "deployment/controller-manager",
                     f"--timeout={int(timeout)}s", timeout=timeout + 30)
        self.apply([eventbus_object(jetstream)])
        self.kubectl("-n", ARGO_EVENTS_NAMESPACE, "wait", "--for=condition=Deployed", "eventbus/default",
                     f"--timeout={int(timeout)}s", timeout=timeout + 30)
        self.kubectl("-n", ARGO_EVENTS_NAMESPACE, "rollout", "status", "statefulset/eventbus-default-js",
                     f"--timeout={int(timeout)}s", timeout=timeout + 30)
        self.apply(kustomize_build(self.repo_root / EVENTS_OVERLAY, kustomize))
        self._argo_events_installed = True

    def adapt_argo_events(self, docs: list[dict[str, Any]], jetstream_version: str) -> list[dict[str, Any]]:
        """The Argo Events install as this backend runs it (kind: as built; its nodes pull images)."""
        return docs

    def build_and_load(self, tag: str, dockerfile: str = "Dockerfile", context: str = ".") -> str:
        """``docker build`` an image from the repository and ``kind load`` it; returns the tag."""
        subprocess.run(["docker", "build", "-t", tag, "-f", dockerfile, context], cwd=self.repo_root, check=True,
                       timeout=1800)
        self.cluster.load_docker_image(tag)
        return tag

    def runner_identity(self) -> str:
        """The ServiceAccount the steps run as, for scenario assertions about RBAC."""
        return f"system:serviceaccount:{self.namespace}:{RUNNER_SERVICE_ACCOUNT}"

    def localize(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The cluster is the test's own: documents are installed as shipped (images overridden)."""
        return override_images(doc, self.images)

    def install(self, manifests: Iterable[Manifest]) -> None:
        docs = [self.localize(d) for d in load_manifests(manifests)]
        self.apply([d for d in docs if d.get("kind") == "Namespace"])
        self.apply([d for d in docs if d.get("kind") != "Namespace"])
        self.templates += [n for n in (d["metadata"]["name"] for d in docs if d.get("kind") == "WorkflowTemplate")
                           if n not in self.templates]  # installing the same template again updates it

    # -- the simulator in the cluster ---------------------------------------------------------------------

    def load_images(self) -> None:
        """Build and ``kind load`` the step and simulator images (once per backend)."""
        if not getattr(self, "_images_loaded", False):
            for tag, dockerfile in images_to_build():
                self.build_and_load(tag, dockerfile=dockerfile)
            self._images_loaded = True

    def install_capi_crds(self, capi_line: str) -> None:
        """The CAPI line's CRDs and the Talos providers' ones, as ``make tools`` pinned them (server-side)."""
        from envtest import assets

        done: set[str] = getattr(self, "_crd_lines", set())
        if capi_line in done:
            return
        self.apply(load_manifests(assets.crd_paths(capi_line=capi_line, extra=("talos",))))
        self.kubectl("wait", "--for=condition=Established", "--timeout=120s", "crd", "--all", timeout=150)
        self._crd_lines = done | {capi_line}

    def prepare_simulation(self, capi_line: str) -> None:
        """The step and simulator images loaded, the CAPI line's and Talos providers' CRDs installed (a kind
        cluster holds one CAPI line: the e2e suite starts one cluster per line)."""
        self.load_images()
        self.install_capi_crds(capi_line)

    def capi_line_available(self, capi_line: str) -> tuple[bool, str]:
        lines: set[str] = getattr(self, "_crd_lines", set())
        if lines and capi_line not in lines:
            return False, f"kind cluster {self.cluster.name} holds the CAPI {sorted(lines)[0]} CRDs, not {capi_line}"
        return True, f"kind installs the CAPI {capi_line} CRDs"

    def cleanup(self) -> None:
        """The whole kind cluster goes."""
        self.cluster.delete()


class SimDeployment(RemoteSim):
    """One simulator running in a cluster (see :meth:`ClusterBackend.deploy_simulator`): an e2e
    :class:`~e2e.simhandles.SimHandle` whose timeline is its pod's log (JSON lines) and whose trigger is SIGUSR1
    sent with ``kubectl exec``."""

    def __init__(self, backend: ClusterBackend, namespace: str, scenario: Scenario) -> None:
        self.backend = backend
        self.namespace = namespace
        self.scenario = scenario
        self.api_client = backend.api
        self._removed = False

    # -- SimHandle (through RemoteSim) ------------------------------------------------------------------------

    def output(self) -> str:
        return self.logs()

    def signal_trigger(self) -> None:
        self.trigger()

    poll_interval = 0.5  # each look is an API call

    def alive(self) -> tuple[bool, str]:
        """Deployed and its container never exited (a simulator that refuses its target exits 1 and would
        otherwise crash-loop until a timeout)."""
        if self._removed:
            return False, "removed"
        pod = self._pod()
        return (True, "no pod yet") if pod is None else container_alive(pod)

    def _pod(self) -> dict[str, Any] | None:
        """The simulator's newest pod that is not being deleted, as a dict."""
        from kubernetes import client

        pods: Any = self.backend.api.sanitize_for_serialization(client.CoreV1Api(self.backend.api).list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/name={SIM_NAME}"))
        live = [p for p in pods.get("items", []) if not p["metadata"].get("deletionTimestamp")]
        return max(live, key=lambda p: p["metadata"].get("creationTimestamp", "")) if live else None

    def shutdown(self) -> None:
        self._final = self.timeline()  # the pod's log goes with the pod
        self.remove()

    def wait_settled(self, timeout: float) -> None:
        self.wait_ready(timeout)
        super().wait_settled(timeout)

    def wait_ready(self, timeout: float) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        from sim.objects import capi_version

        apps, core = client.AppsV1Api(self.backend.api), client.CoreV1Api(self.backend.api)
        custom = client.CustomObjectsApi(self.backend.api)
        deadline = time.monotonic() + timeout
        while True:
            try:
                dep: Any = self.backend.api.sanitize_for_serialization(
                    apps.read_namespaced_deployment(SIM_NAME, self.namespace))
                secrets = core.list_namespaced_secret(
                    self.namespace, field_selector=f"metadata.name={self.scenario.cluster}-talosconfig").items
                services = core.list_namespaced_service(self.namespace, label_selector=f"{SERVICE_LABEL}=true")
                machines: Any = custom.list_namespaced_custom_object(
                    "cluster.x-k8s.io", capi_version(self.scenario.capi_line), self.namespace, "machines")
                ok, why = simulator_ready(deployment=dep, talosconfig=bool(secrets), services=len(services.items),
                                          machines=len(machines["items"]))
            except ApiException as exc:
                ok, why = False, f"API: {exc.status} {exc.reason}"
            if ok:
                return
            up, died = self.alive()
            if not up:
                raise RuntimeError(f"the simulator in {self.namespace} stopped: {died}\n{self.logs(tail=40)}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"simulator in {self.namespace} not ready within {timeout:g}s: {why}\n"
                                   f"{self.logs(tail=40)}")
            time.sleep(POLL_SECONDS)  # polling remote state: bounded by the deadline above

    def trigger(self) -> None:
        """The GitOps change: SIGUSR1 to the simulator (PID 1 of its container)."""
        self.backend.kubectl("-n", self.namespace, "exec", f"deploy/{SIM_NAME}", "--", "python", "-c",
                             "import os, signal; os.kill(1, signal.SIGUSR1)", timeout=60)

    def probe_from_a_pod(self, timeout: float = 180.0) -> dict[str, str]:
        """Run :func:`talos_probe_job` in the simulator's namespace; ``{endpoint: probe state}``."""
        import json

        job = talos_probe_job(self.namespace, self.scenario.cluster, name=f"talos-probe-{uuid.uuid4().hex[:6]}")
        self.backend.apply([job])
        name = job["metadata"]["name"]
        self.backend.kubectl("-n", self.namespace, "wait", "--for=condition=Complete", f"job/{name}",
                             f"--timeout={int(timeout)}s", timeout=timeout + 30)
        out = self.backend.kubectl("-n", self.namespace, "logs", f"job/{name}", timeout=60)
        states: dict[str, str] = json.loads(out.strip().splitlines()[-1])
        return states

    def logs(self, tail: int | None = None) -> str:
        """The simulator's output (its timeline, one JSON event per line) from its pod's log."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self._pod()
            if pod is None:
                return "# logs unavailable: no simulator pod\n"
            text: str = client.CoreV1Api(self.backend.api).read_namespaced_pod_log(
                pod["metadata"]["name"], self.namespace, container=SIM_CONTAINER, tail_lines=tail)
            return text
        except ApiException as exc:
            return f"# logs unavailable: {exc.status} {exc.reason}\n"

    def remove(self, timeout: float = 120.0) -> None:
        """Stop the simulator (SIGTERM: it deletes its objects and Services), then its namespace and RBAC."""
        self._removed = True
        self.backend.kubectl("-n", self.namespace, "delete", "deployment", SIM_NAME, "--wait=true",
                             f"--timeout={int(timeout)}s", timeout=timeout + 30)
        self.backend.kubectl("-n", self.namespace, "wait", "--for=delete", "pod", "-l",
                             f"app.kubernetes.io/name={SIM_NAME}", f"--timeout={int(timeout)}s", timeout=timeout + 30)
        name = f"{SIM_NAME}-{self.namespace}"
        self.backend.kubectl("delete", "--ignore-not-found", f"clusterrolebinding/{name}", f"clusterrole/{name}",
                             f"namespace/{self.namespace}", "--wait=false", timeout=60)
