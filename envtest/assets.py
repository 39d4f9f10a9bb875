"""Locate the envtest assets: the kube-apiserver, etcd and kustomize binaries and the pinned upstream CRDs.

Contract:
- Pins come from ``tools/versions.env`` (the one pins file); the cache root is ``$CAPI_ROLLOUT_CACHE`` or
  ``~/.cache/capi-rollout``, laid out by ``tools/build.sh`` (``bin/<versions>/``, ``crds/<set>-<version>/``).
- The envtest convention wins: ``TEST_ASSET_KUBE_APISERVER`` / ``TEST_ASSET_ETCD`` name single binaries,
  ``KUBEBUILDER_ASSETS`` names a directory holding them; otherwise the binaries built by ``make tools`` are used.
- Nothing is built or downloaded here: a missing asset raises :class:`AssetsMissingError` telling to run
  ``make tools``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VERSIONS_FILE = REPO_ROOT / "tools" / "versions.env"

CAPI_LINES = ("v1.10", "v1.14")
DEFAULT_EXTRA_CRDS = ("talos", "argo-workflows", "argo-events")


class AssetsMissingError(RuntimeError):
    """An envtest binary or CRD set is not where it should be."""


@dataclass(frozen=True)
class Assets:
    """Paths of the binaries a local API server needs (kustomize is optional)."""

    kube_apiserver: Path
    etcd: Path
    kustomize: Path | None


def parse_versions(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines (``#`` comments and blank lines ignored; no quoting, no expansion)."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ValueError(f"malformed pin line {raw!r}")
        pins[key] = value
    return pins


def versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The pinned versions from ``tools/versions.env``."""
    return parse_versions(path.read_text(encoding="utf-8"))


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The cache root shared with ``tools/build.sh``."""
    env = os.environ if env is None else env
    configured = env.get("CAPI_ROLLOUT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "capi-rollout"


def bin_dir(pins: Mapping[str, str], cache: Path) -> Path:
    """Where ``tools/build.sh`` puts the binaries for these pins."""
    name = f"kubernetes-{pins['KUBERNETES_VERSION']}-etcd-{pins['ETCD_VERSION']}-kustomize-{pins['KUSTOMIZE_VERSION']}"
    return cache / "bin" / name


def _missing(what: str) -> AssetsMissingError:
    return AssetsMissingError(f"{what}; run `make tools` (bash tools/build.sh) to build and fetch the test assets")


def _executable(path: Path, what: str) -> Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise _missing(f"{what} not found or not executable at {path}")
    return path


def binaries(env: Mapping[str, str] | None = None, pins: Mapping[str, str] | None = None) -> Assets:
    """The kube-apiserver, etcd and kustomize binaries, honouring the envtest environment variables."""
    env = os.environ if env is None else env
    pins = versions() if pins is None else pins
    built = bin_dir(pins, cache_dir(env))
    kustomize_path = built / "kustomize"
    kustomize = kustomize_path if kustomize_path.is_file() and os.access(kustomize_path, os.X_OK) else None
    if env.get("TEST_ASSET_KUBE_APISERVER") and env.get("TEST_ASSET_ETCD"):
        return Assets(
            kube_apiserver=_executable(Path(env["TEST_ASSET_KUBE_APISERVER"]), "TEST_ASSET_KUBE_APISERVER"),
            etcd=_executable(Path(env["TEST_ASSET_ETCD"]), "TEST_ASSET_ETCD"),
            kustomize=kustomize,
        )
    if env.get("KUBEBUILDER_ASSETS"):
        directory = Path(env["KUBEBUILDER_ASSETS"])
        return Assets(
            kube_apiserver=_executable(directory / "kube-apiserver", "KUBEBUILDER_ASSETS kube-apiserver"),
            etcd=_executable(directory / "etcd", "KUBEBUILDER_ASSETS etcd"),
            kustomize=kustomize,
        )
    return Assets(
        kube_apiserver=_executable(built / "kube-apiserver", "kube-apiserver"),
        etcd=_executable(built / "etcd", "etcd"),
        kustomize=kustomize,
    )


def kustomize(env: Mapping[str, str] | None = None) -> Path:
    """The kustomize binary built by ``make tools`` (raises if it was not built)."""
    env = os.environ if env is None else env
    return _executable(bin_dir(versions(), cache_dir(env)) / "kustomize", "kustomize")


def _crd_set_dirs(pins: Mapping[str, str]) -> dict[str, list[str]]:
    """CRD set name -> directory names under ``crds/`` (as written by ``tools/crds.sh``)."""
    return {
        "v1.10": [f"capi-{pins['CAPI_V110_VERSION']}"],
        "v1.14": [f"capi-{pins['CAPI_V114_VERSION']}"],
        "talos": [
            f"talos-controlplane-{pins['TALOS_CONTROLPLANE_VERSION']}",
            f"talos-bootstrap-{pins['TALOS_BOOTSTRAP_VERSION']}",
        ],
        "argo-workflows": [f"argo-workflows-{pins['ARGO_WORKFLOWS_VERSION']}"],
        "argo-events": [f"argo-events-{pins['ARGO_EVENTS_VERSION']}"],
        "argo-cd": [f"argo-cd-{pins['ARGO_CD_VERSION']}"],
    }


EXTRA_CRD_SETS = ("talos", "argo-workflows", "argo-events", "argo-cd")


def crd_paths(
    capi_line: str = "v1.14",
    extra: Iterable[str] = DEFAULT_EXTRA_CRDS,
    *,
    env: Mapping[str, str] | None = None,
    pins: Mapping[str, str] | None = None,
) -> list[Path]:
    """The CRD YAML files of one CAPI line plus the named extra sets, in a stable order.

    ``capi_line`` is ``"v1.10"`` (v1beta1 stored) or ``"v1.14"`` (v1beta2 stored); ``extra`` names sets among
    ``talos``, ``argo-workflows``, ``argo-events``, ``argo-cd``.
    """
    if capi_line not in CAPI_LINES:
        raise ValueError(f"unknown CAPI line {capi_line!r}; expected one of {CAPI_LINES}")
    extras = list(extra)
    unknown = [name for name in extras if name not in EXTRA_CRD_SETS]
    if unknown:
        raise ValueError(f"unknown CRD sets {unknown}; expected some of {EXTRA_CRD_SETS}")
    pins = versions() if pins is None else pins
    root = cache_dir(env) / "crds"
    sets = _crd_set_dirs(pins)
    paths: list[Path] = []
    for name in [capi_line, *extras]:
        for directory in sets[name]:
            folder = root / directory
            if not (folder / ".stamp").is_file():
                raise _missing(f"CRD set {name!r} not fetched into {folder}")
            paths.extend(sorted(folder.glob("*.yaml")))
    return paths
