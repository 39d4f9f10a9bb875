"""Which objects make up one cluster's rollout: the resolve step's rules.

Contract: pure. The caller lists objects by the label ``cluster.x-k8s.io/cluster-name=<cluster>`` in the
cluster namespace and passes them in; :func:`resolve_targets` returns :class:`Targets` or raises
:class:`ResolveError` listing every problem found (never a partial result).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

TALOSCONFIG_SUFFIX = "-talosconfig"
TALOSCONFIG_KEY = "talosconfig"


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
    secrets: Sequence[Mapping[str, Any]],
) -> Targets:
    """Check that exactly one TalosControlPlane and one talosconfig Secret belong to the cluster."""
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

    configs = [s for s in secrets if str((s.get("metadata") or {}).get("name", "")).endswith(TALOSCONFIG_SUFFIX)]
    secret = ""
    if len(configs) == 1:
        secret = _names(configs)[0]
        if TALOSCONFIG_KEY not in (configs[0].get("data") or {}) and TALOSCONFIG_KEY not in (
            configs[0].get("stringData") or {}
        ):
            problems.append(f"Secret {secret} has no data key '{TALOSCONFIG_KEY}'")
    elif not configs:
        problems.append(
            f"no Secret named *{TALOSCONFIG_SUFFIX} with label {label} {where} "
            "(the Talos bootstrap provider writes <cluster>-talosconfig)"
        )
    else:
        problems.append(
            f"{len(configs)} Secrets named *{TALOSCONFIG_SUFFIX} carry {label} {where} "
            f"({', '.join(_names(configs))}); exactly one is expected"
        )
    if problems:
        raise ResolveError(problems)
    return Targets(
        cluster=cluster_name,
        namespace=namespace,
        capi_version=capi_version,
        control_plane=control_plane,
        deployments=tuple(_names(deployments)),
        talosconfig_secret=secret,
    )
