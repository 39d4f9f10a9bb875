"""The ``node`` e2e backend: the rendered WorkflowTemplate on the real Argo Workflows engine, on a real kubelet.

Contract: runs inside the node that ``python -m e2e.node run -- ...`` started (``E2E_CLUSTER=node``,
``KUBECONFIG``, ``E2E_NODE_KUBECTL`` and ``E2E_NODE_ENGINE`` set by it; see :mod:`e2e.node`). It is the kind
backend without kind: Argo Workflows is installed from the pinned module's manifests as an Argo user would
(:func:`e2e.backends.argo_install.install_argo`: its own ServiceAccount and RBAC, images pinned to the same
version, which the node imported from binaries built from the same module), the simulator runs as a pod behind
its per-node Services, steps run as pods under the runner ServiceAccount's projected token, and faults are played
on pods through the API server. Argo Events (the trigger tests) is the kind install too, adapted to a node without a
registry by :func:`node_argo_events` (pull policy, the JetStream side containers), after the cluster DNS its pods
need to find the EventBus by name: CoreDNS from the Kubernetes module's own addon manifest (:func:`cluster_dns`).
The node holds one CAPI
line's CRDs (``E2E_NODE_CAPI_LINE``, default v1.14); ``make e2e`` runs a second node for the other line.
Closing removes nothing: the launcher tears the whole node down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from capi_rollout.userfiles import manifest_objects
from e2e.backends.argo_install import module_zip
from e2e.backends.existing import ClusterBackend
from e2e.backends.kind import KindBackend

CAPI_LINE_ENV = "E2E_NODE_CAPI_LINE"
# The JetStream StatefulSet's config reloader (github.com/nats-io/nack) and metrics exporter
# (github.com/nats-io/prometheus-nats-exporter) cannot be built here: the Go module proxy refuses both modules.
# Neither is on the event path (the reloader re-reads a changed server config, the exporter serves Prometheus
# metrics), so the node runs the sandbox image in their place: it takes any arguments and idles.
IDLE_SIDE_IMAGE = "registry.k8s.io/pause:3.10.2"


DNS_ADDON = "cluster/addons/dns/coredns/coredns.yaml.base"
DNS_MEMORY_LIMIT = "170Mi"  # the addon's default (cluster/gce/config-default.sh DNS_MEMORY_LIMIT)


def cluster_dns(base: str, *, dns_ip: str, domain: str) -> list[dict[str, Any]]:
    """The Kubernetes module's CoreDNS addon (``coredns.yaml.base``) filled in as ``kube-up`` does (server IP,
    domain, memory limit), with one change: its Corefile's ``forward . /etc/resolv.conf`` goes, since the node has
    no DNS server outside (the pod would forward to itself and ``loop`` would stop CoreDNS). Names outside the
    cluster domain get no answer from the node."""
    text = (base.replace("__DNS__SERVER__", dns_ip).replace("__DNS__DOMAIN__", domain)
            .replace("__DNS__MEMORY__LIMIT__", DNS_MEMORY_LIMIT))
    docs = [obj for _, obj in manifest_objects(text, DNS_ADDON)]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "coredns"]
    corefile = config["data"]["Corefile"]
    start = corefile.index("forward . /etc/resolv.conf")
    end = corefile.index("}", start) + 1
    config["data"]["Corefile"] = corefile[:start].rstrip(" ") + corefile[end:].lstrip("\n")
    if "__" in yaml.safe_dump_all(docs):
        raise ValueError(f"{DNS_ADDON}: a placeholder is left")
    return docs


def node_argo_events(docs: Iterable[Mapping[str, Any]], *, jetstream_version: str, nats_version: str,
                     side_image: str = IDLE_SIDE_IMAGE) -> list[dict[str, Any]]:
    """The upstream Argo Events install for the node: images are never pulled (the controller-manager's
    ``imagePullPolicy`` and its documented ``IMAGE_PULL_POLICY``, which the EventSource and Sensor pods get, are
    ``IfNotPresent``: the node imported the images it built), and the controller configuration's entry for
    ``jetstream_version`` names :data:`IDLE_SIDE_IMAGE` for the reloader and the metrics exporter. The EventBus
    version must be the pinned nats-server's (``NATS_SERVER_VERSION``): the node has no other NATS image."""
    if jetstream_version != nats_version.removeprefix("v"):
        raise ValueError(f"the EventBus would run JetStream {jetstream_version} but the node builds nats-server "
                         f"{nats_version}: set NATS_SERVER_VERSION in tools/versions.env to v{jetstream_version}")
    out: list[dict[str, Any]] = []
    found = 0
    for original in docs:
        doc = yaml.safe_load(yaml.safe_dump(dict(original)))  # a deep copy
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if kind == "Deployment" and name == "controller-manager":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["imagePullPolicy"] = "IfNotPresent"
                container.setdefault("env", []).append({"name": "IMAGE_PULL_POLICY", "value": "IfNotPresent"})
            found += 1
        elif kind == "ConfigMap" and name == "argo-events-controller-config":
            config = yaml.safe_load(doc["data"]["controller-config.yaml"])
            for entry in config["eventBus"]["jetstream"]["versions"]:
                if str(entry["version"]) == jetstream_version:
                    entry["configReloaderImage"] = entry["metricsExporterImage"] = side_image
                    found += 1
            doc["data"]["controller-config.yaml"] = yaml.safe_dump(config, sort_keys=False)
        out.append(doc)
    if found != 2:
        raise ValueError("the Argo Events install has no controller-manager Deployment or no JetStream "
                         f"{jetstream_version} entry in argo-events-controller-config")
    return out


def node_capi_line(env: Mapping[str, str]) -> str:
    return env.get(CAPI_LINE_ENV, "").strip() or "v1.14"


class NodeBackend(KindBackend):
    """Argo on the real node this process runs inside."""

    name = "node"
    # Argo re-queues a workflow 10 s after a pod changes by default; scaled scenarios (a 4 s stall timeout) would
    # measure that instead of the product. DEFAULT_REQUEUE_TIME is Argo's documented knob for it.
    argo_controller_env: Mapping[str, str] = MappingProxyType({"DEFAULT_REQUEUE_TIME": "1s"})

    def __init__(self, results_dir: Path, *, repo_root: Path | None = None, cache: Path | None = None,
                 argo_version: str | None = None, keep: bool = False, images: Mapping[str, str] | None = None,
                 namespace: str = "argo", echo: Callable[[str], None] | None = None) -> None:
        from envtest import assets

        env = os.environ
        if not env.get("E2E_NODE_ENGINE") or not env.get("KUBECONFIG"):
            raise RuntimeError("E2E_CLUSTER=node runs inside a node: use `python -m e2e.node run -- pytest e2e` "
                               "(or `make e2e`)")
        self.repo_root = repo_root or Path(__file__).resolve().parents[2]
        self.cache = cache or assets.cache_dir()
        self.argo_version = argo_version or assets.versions()["ARGO_WORKFLOWS_VERSION"]
        self.keep = keep
        self.capi_line = node_capi_line(env)
        self.engine = env["E2E_NODE_ENGINE"]
        ClusterBackend.__init__(self, Path(env["KUBECONFIG"]), results_dir, namespace=namespace, images=images,
                                kubectl=(env.get("E2E_NODE_KUBECTL", "kubectl"),), keep=keep, echo=echo)
        if echo is not None:
            echo(self.engine)
        self.install_argo()

    def install_argo_events(self, timeout: float = 300) -> None:
        """The cluster DNS first (see the module docstring), then Argo Events as on kind."""
        if not getattr(self, "_cluster_dns", False):
            self.install_cluster_dns(timeout)
        super().install_argo_events(timeout)

    def install_cluster_dns(self, timeout: float = 300) -> None:
        import zipfile

        from e2e.node.setup import default_layout
        from envtest import assets

        version = assets.versions()["KUBERNETES_VERSION"]
        with zipfile.ZipFile(module_zip(self.cache, "k8s.io/kubernetes", version)) as z:
            base = z.read(f"k8s.io/kubernetes@{version}/{DNS_ADDON}").decode()
        layout = default_layout()
        self.apply(cluster_dns(base, dns_ip=layout.dns_ip, domain=layout.cluster_domain))
        self.client.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns",
                            f"--timeout={int(timeout)}s", timeout=timeout + 30)
        self._cluster_dns = True

    def adapt_argo_events(self, docs: list[dict[str, Any]], jetstream_version: str) -> list[dict[str, Any]]:
        from envtest import assets

        return node_argo_events(docs, jetstream_version=jetstream_version,
                                nats_version=assets.versions()["NATS_SERVER_VERSION"])

    def load_images(self) -> None:
        """Nothing to load: the node imported every image into containerd when it started."""

    def capi_line_available(self, capi_line: str) -> tuple[bool, str]:
        if capi_line != self.capi_line:
            return False, (f"this node holds the CAPI {self.capi_line} CRDs; `make e2e` plays the {capi_line} "
                           f"scenarios on a second node ({CAPI_LINE_ENV}={capi_line})")
        return True, f"the node installs the CAPI {capi_line} CRDs"

    def cleanup(self) -> None:
        """Nothing: the launcher removes the whole node (processes, cgroups, network namespace, state)."""
