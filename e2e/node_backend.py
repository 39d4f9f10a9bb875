"""The ``node`` e2e backend: the rendered WorkflowTemplate on the real Argo Workflows engine, on a real kubelet.

Contract: runs inside the node that ``python -m e2e.node run -- ...`` started (``E2E_CLUSTER=node``,
``KUBECONFIG``, ``E2E_NODE_KUBECTL`` and ``E2E_NODE_ENGINE`` set by it; see :mod:`e2e.node`). It is the kind
backend without kind: Argo Workflows is installed from the pinned module's manifests as an Argo user would
(:meth:`KindBackend.install_argo`: its own ServiceAccount and RBAC, images pinned to the same version, which the
node imported from binaries built from the same module), the simulator runs as a pod behind its per-node
Services, steps run as pods under the runner ServiceAccount's projected token, and faults are played on pods
through the API server. The node holds one CAPI line's CRDs (``E2E_NODE_CAPI_LINE``, default v1.14); ``make e2e``
runs a second node for the other line. Closing removes nothing: the launcher tears the whole node down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from e2e.kind_backend import ClusterBackend, KindBackend

CAPI_LINE_ENV = "E2E_NODE_CAPI_LINE"


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
        from sim.envtest import assets

        env = os.environ
        if not env.get("E2E_NODE_ENGINE") or not env.get("KUBECONFIG"):
            raise RuntimeError("E2E_CLUSTER=node runs inside a node: use `python -m e2e.node run -- pytest e2e` "
                               "(or `make e2e`)")
        self.repo_root = repo_root or Path(__file__).resolve().parents[1]
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

    def load_images(self) -> None:
        """Nothing to load: the node imported every image into containerd when it started."""

    def capi_line_available(self, capi_line: str) -> tuple[bool, str]:
        if capi_line != self.capi_line:
            return False, (f"this node holds the CAPI {self.capi_line} CRDs; `make e2e` plays the {capi_line} "
                           f"scenarios on a second node ({CAPI_LINE_ENV}={capi_line})")
        return True, f"the node installs the CAPI {capi_line} CRDs"

    def cleanup(self) -> None:
        """Nothing: the launcher removes the whole node (processes, cgroups, network namespace, state)."""
