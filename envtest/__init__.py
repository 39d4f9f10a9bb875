"""A real Kubernetes API server for tests: etcd + kube-apiserver built from pinned Go modules (``make tools``),
the pinned upstream CRDs, and helpers to act as a ServiceAccount.

Contract: test infrastructure only: neither the product nor the simulator imports it, and the wheel does not ship
it (tests, e2e and tools import it from the repository). ``assets`` locates binaries and CRDs,
``server.LocalAPIServer`` runs one server, ``pytest_plugin`` exposes it as fixtures.
"""

from envtest.assets import Assets, AssetsMissingError, binaries, crd_paths, kustomize
from envtest.server import LocalAPIServer, client_from_kubeconfig

__all__ = [
    "Assets",
    "AssetsMissingError",
    "LocalAPIServer",
    "binaries",
    "client_from_kubeconfig",
    "crd_paths",
    "kustomize",
]
