"""Which objects make up one cluster's rollout: the resolve step's rules.

Contract: pure. The caller lists the CAPI objects by the label ``cluster.x-k8s.io/cluster-name=<cluster>`` in the
cluster namespace, reads the talosconfig Secret by its name (:func:`talosconfig_secret_name`: the runner may
``get`` Secrets by name but never list them) and passes them in; :func:`resolve_targets` returns :class:`Targets`
or raises :class:`ResolveError` listing every problem found (never a partial result). The Secret is trusted only
when its ``cluster.x-k8s.io/cluster-name`` label names the cluster (:func:`talosconfig_problems`, also checked
each time a phase reads the Secret again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from capi_rollout.domain.model import CLUSTER_NAME_LABEL

TALOSCONFIG_SUFFIX = "-talosconfig"
TALOSCONFIG_KEY = "talosconfig"


def talosconfig_secret_name(cluster_name: str) -> str:
    """The Secret the Talos bootstrap provider writes for a cluster: ``<cluster>-talosconfig``."""
    return f"{cluster_name}{TALOSCONFIG_SUFFIX}"


def talosconfig_problems(secret: Mapping[str, Any] | None, *, cluster_name: str, namespace: str) -> list[str]:
    """Why ``secret`` (read by name, None when absent) must not be used as the cluster's talosconfig; [] if fine."""
    where = f"Secret {namespace}/{talosconfig_secret_name(cluster_name)}"
    if secret is None:
        return [f"{where} not found (the Talos bootstrap provider writes it when the cluster is created): check "
                "clusterName and clusterNamespace"]
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if CLUSTER_NAME_LABEL not in labels:
        return [f"{where} has no label {CLUSTER_NAME_LABEL}: refusing to use it, nothing says it belongs to "
                f"cluster {cluster_name} (the bootstrap provider sets {CLUSTER_NAME_LABEL}={cluster_name})"]
    if labels[CLUSTER_NAME_LABEL] != cluster_name:
        return [f"{where} carries {CLUSTER_NAME_LABEL}={labels[CLUSTER_NAME_LABEL]}, not {cluster_name}: "
                "refusing to use it (another cluster's Talos credentials)"]
    if TALOSCONFIG_KEY not in (secret.get("data") or {}) and TALOSCONFIG_KEY not in (secret.get("stringData") or {}):
        return [f"{where} has no data key '{TALOSCONFIG_KEY}'"]
    return []


class ResolveError(RuntimeError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Targets:
    cluster: str
    namespace: str
    capi_version: str
    control_plane: str
    deployments: tuple[str, ...]
    talosconfig_secret: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["deployments"] = list(self.deployments)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Targets:
        return cls(**{**d, "deployments": tuple(d.get("deployments") or ())})


def _names(objs: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted(str((o.get("metadata") or {}).get("name")) for o in objs)


def resolve_targets(
    *,
    cluster_name: str,
    namespace: str,
    capi_version: str,
    cluster: Mapping[str, Any] | None,
    control_planes: Sequence[Mapping[str, Any]],
    deployments: Sequence[Mapping[str, Any]],
    talosconfig: Mapping[str, Any] | None,
) -> Targets:
    """Check that exactly one TalosControlPlane belongs to the cluster and that ``talosconfig`` (the Secret
    ``<cluster>-talosconfig`` read by name, None when absent) is labelled for it."""
    problems: list[str] = []
    where = f"in namespace {namespace}"
    if cluster is None:
        problems.append(
            f"Cluster {cluster_name} not found {where}: check clusterName and clusterNamespace"
        )
    label = f"cluster.x-k8s.io/cluster-name={cluster_name}"
    control_plane = ""
    if len(control_planes) == 1:
        control_plane = _names(control_planes)[0]
        ref = ((cluster or {}).get("spec") or {}).get("controlPlaneRef") or {}
        if cluster is not None and ref.get("name") and ref.get("name") != control_plane:
            problems.append(
                f"TalosControlPlane {control_plane} carries {label} but Cluster {cluster_name} "
                f"spec.controlPlaneRef names {ref.get('kind', '?')} {ref.get('name')}"
            )
        if cluster is not None and ref.get("kind") and ref.get("kind") != "TalosControlPlane":
            problems.append(
                f"Cluster {cluster_name} spec.controlPlaneRef is a {ref.get('kind')}, not a TalosControlPlane: "
                "this tool only drives Talos control planes"
            )
    elif not control_planes:
        problems.append(f"no TalosControlPlane with label {label} {where}")
    else:
        problems.append(
            f"{len(control_planes)} TalosControlPlanes carry {label} {where} "
            f"({', '.join(_names(control_planes))}); exactly one is expected"
        )

    problems += talosconfig_problems(talosconfig, cluster_name=cluster_name, namespace=namespace)
    if problems:
        raise ResolveError(problems)
    return Targets(
        cluster=cluster_name,
        namespace=namespace,
        capi_version=capi_version,
        control_plane=control_plane,
        deployments=tuple(_names(deployments)),
        talosconfig_secret=talosconfig_secret_name(cluster_name),
    )
