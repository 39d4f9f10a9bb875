"""Refuse to simulate where the simulator could touch something real.

Contract: :func:`refusal_reasons` is pure (facts in, readable reasons out); :func:`prepare_namespace`
gathers the facts from the API server, refuses (:class:`UnsafeTargetError`) or creates/accepts the
namespace. The rules (see ``sim/README.md`` for the reasoning and its limits):

1. The namespace is new (the simulator creates it with the label ``capi-rollout.dev/simulator=true``) or
   already carries that label. Any other namespace is refused.
2. The namespace holds no CAPI object the simulator did not create (label ``capi-rollout.dev/simulated``).
3. No real CAPI core or CACPPT controller runs in the cluster — they would reconcile the fake objects
   (pausing them is not an option: the rollout engine refuses paused objects). With ``allow_real_capi``
   a real controller is tolerated only if it runs with ``--watch-filter`` (then it ignores objects
   without the matching ``cluster.x-k8s.io/watch-filter`` label, which the simulator never sets) or
   ``--namespace`` restricted to other namespaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sim.objects import SIMULATED_LABEL, TCP_GROUP, TCP_VERSION, capi_version

MARKER_LABEL = "capi-rollout.dev/simulator"
# Deployments of controllers that would reconcile the simulator's objects (name or provider label).
REAL_CONTROLLERS = {
    "capi-controller-manager": "cluster-api",
    "cacppt-controller-manager": "control-plane-talos",
}
PROVIDER_LABEL = "cluster.x-k8s.io/provider"
WATCHED_PROVIDERS = {"cluster-api", "control-plane-talos"}


class UnsafeTargetError(RuntimeError):
    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("refusing to simulate here: " + "; ".join(reasons))


@dataclass(frozen=True)
class ControllerInfo:
    namespace: str
    name: str
    args: tuple[str, ...]

    def confined_away_from(self, namespace: str) -> bool:
        """Does the controller's own configuration keep it off the simulator's objects?"""
        for a in self.args:
            if a.startswith("--watch-filter=") and a.split("=", 1)[1]:
                return True
            if a.startswith("--namespace=") and a.split("=", 1)[1] not in ("", namespace):
                return True
        return False


def refusal_reasons(
    *, namespace: str, labels: dict[str, str] | None, exists: bool, foreign_objects: Sequence[str],
    controllers: Sequence[ControllerInfo] | None, allow_real_capi: bool,
) -> list[str]:
    """Why simulating in ``namespace`` is unsafe (empty list: safe). ``controllers`` None = unknown."""
    reasons: list[str] = []
    if exists and (labels or {}).get(MARKER_LABEL) != "true":
        reasons.append(
            f"namespace {namespace} exists and lacks the label {MARKER_LABEL}=true (use a new namespace)"
        )
    if foreign_objects:
        reasons.append(f"namespace {namespace} holds objects the simulator did not create: "
                       + ", ".join(sorted(foreign_objects)[:10]))
    if controllers is None:
        if not allow_real_capi:
            reasons.append("cannot list Deployments to rule out real CAPI controllers (RBAC); "
                           "pass --allow-real-capi only if you know none reconciles this namespace")
        return reasons
    for c in controllers:
        if allow_real_capi and c.confined_away_from(namespace):
            continue
        hint = (" (--allow-real-capi accepts it only with --watch-filter or --namespace confining it elsewhere)"
                if allow_real_capi else " (it would reconcile the fake objects)")
        reasons.append(f"a real CAPI controller runs: {c.namespace}/{c.name}{hint}")
    return reasons


def _controllers(api_client: client.ApiClient) -> list[ControllerInfo] | None:
    try:
        deployments = client.AppsV1Api(api_client).list_deployment_for_all_namespaces().items
    except ApiException as exc:
        if exc.status in (401, 403):
            return None
        raise
    found = []
    for d in deployments:
        meta = d.metadata
        if meta is None:
            continue
        labels = meta.labels or {}
        if str(meta.name) in REAL_CONTROLLERS or labels.get(PROVIDER_LABEL) in WATCHED_PROVIDERS:
            pod = d.spec.template.spec if d.spec and d.spec.template else None
            containers = pod.containers if pod else []
            args = tuple(a for c in containers for a in [*(c.command or []), *(c.args or [])])
            found.append(ControllerInfo(str(meta.namespace), str(meta.name), args))
    return found


def _foreign(api_client: client.ApiClient, namespace: str, line: str) -> list[str]:
    custom = client.CustomObjectsApi(api_client)
    kinds = [("cluster.x-k8s.io", capi_version(line), p) for p in (
        "clusters", "machines", "machinesets", "machinedeployments", "machinehealthchecks")]
    kinds.append((TCP_GROUP, TCP_VERSION, "taloscontrolplanes"))
    out: list[str] = []
    for g, v, plural in kinds:
        try:
            listed: Any = custom.list_namespaced_custom_object(g, v, namespace, plural)
            items: list[dict[str, Any]] = listed["items"]
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        out += [f"{plural}/{i['metadata']['name']}" for i in items
                if (i["metadata"].get("labels") or {}).get(SIMULATED_LABEL) != "true"]
    return out


def prepare_namespace(
    api_client: client.ApiClient, namespace: str, *, line: str, allow_real_capi: bool = False
) -> bool:
    """Check the target and create the namespace if needed; returns True if it was created here."""
    core = client.CoreV1Api(api_client)
    try:
        ns = core.read_namespace(namespace)
        exists, labels = True, dict((ns.metadata.labels if ns.metadata else None) or {})
    except ApiException as exc:
        if exc.status != 404:
            raise
        exists, labels = False, {}
    reasons = refusal_reasons(
        namespace=namespace, labels=labels, exists=exists,
        foreign_objects=_foreign(api_client, namespace, line) if exists else [],
        controllers=_controllers(api_client), allow_real_capi=allow_real_capi,
    )
    if reasons:
        raise UnsafeTargetError(reasons)
    if not exists:
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels={MARKER_LABEL: "true"}))
        )
    return not exists
