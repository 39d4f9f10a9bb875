"""The ``kind`` e2e backend: a kind cluster of the test's own, with Argo Workflows v4 installed, then as ``existing``.

Contract: :class:`KindBackend` adds to :class:`~e2e.backends.existing.ClusterBackend` the cluster's life cycle
(pytest-kind-ng; one cluster per CAPI line), the Argo install (:func:`e2e.backends.argo_install.install_argo`,
from the pinned module zip), the step/simulator images (``docker build`` + ``kind load``,
:func:`images_to_build`) and the CAPI line's and Talos CRDs before a simulator runs; documents are installed as
shipped (the cluster is the test's own) and ``close`` deletes the cluster. On request
(:meth:`KindBackend.install_argo_events`, the Sensor tests) it installs Argo Events
(:func:`e2e.backends.argo_install.install_argo_events`). Needs a Docker engine.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from capi_rollout.workflow.image import IMAGE as STEP_IMAGE
from e2e.backends import argo_install
from e2e.backends.base import RUNNER_SERVICE_ACCOUNT, Manifest, load_manifests
from e2e.backends.existing import ClusterBackend, override_images
from sim.deploy import SIM_IMAGE


def images_to_build() -> list[tuple[str, str]]:
    """(tag, Dockerfile) of every image the kind cluster needs from this repository: the step image the
    WorkflowTemplate runs and the simulator image ``sim/deploy`` runs."""
    return [(STEP_IMAGE, "Dockerfile"), (SIM_IMAGE, "sim/Dockerfile")]


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

        self.repo_root = repo_root or Path(__file__).resolve().parents[2]
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

        argo_install.install_argo(self.client, cache=self.cache, version=self.argo_version,
                                  kustomize=assets.kustomize(), namespace=self.namespace,
                                  controller_env=self.argo_controller_env, timeout=timeout)

    def install_argo_events(self, timeout: float = 300) -> None:
        """Install Argo Events (``ARGO_EVENTS_VERSION``) once per backend, adapted by :meth:`adapt_argo_events`
        (see :func:`e2e.backends.argo_install.install_argo_events`)."""
        from envtest import assets

        if getattr(self, "_argo_events_installed", False):
            return
        version = assets.versions()["ARGO_EVENTS_VERSION"]
        argo_install.install_argo_events(self.client, cache=self.cache, version=version,
                                         kustomize=assets.kustomize(), repo_root=self.repo_root,
                                         namespace=self.namespace, adapt=self.adapt_argo_events, timeout=timeout)
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
        self.client.kubectl("wait", "--for=condition=Established", "--timeout=120s", "crd", "--all", timeout=150)
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
