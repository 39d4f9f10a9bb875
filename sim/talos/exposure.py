"""How a fake Talos endpoint is reached from outside the simulator: the pure decisions of the in-cluster mode.

Contract: pure functions and plain data, no I/O. An :class:`Exposure` says where a node's endpoint listens
(``bind_host:bind_port``, inside the simulator's pod) and which ``address`` the world dials on the Talos port
(the Machine's ``InternalIP``, the talosconfig endpoints, the server certificate's SANs). In the default
loopback mode the fleet needs none of this (address = bind host, port 50000). In the ``service`` mode each
node gets one Kubernetes Service (:func:`service_object`): port 50000 → the node's own port on the pod,
selector = the simulator pod's labels, and ``address`` = the Service's ClusterIP, read back after creation.

:class:`Exposer` is what :class:`sim.talos.FakeTalosFleet` asks for an exposure; the Kubernetes one is
:class:`sim.talos.services.ServiceExposer`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sim.objects import CAPI_CLUSTER_LABEL, SIMULATED_LABEL

TALOS_PORT = 50000
FIRST_POD_PORT = 50100
LAST_POD_PORT = 59999
SERVICE_LABEL = "capi-rollout.dev/sim-talos"  # value "true" on every per-node Service
MACHINE_LABEL = "capi-rollout.dev/sim-machine"  # the Machine (and fake node) the Service exposes
_MAX_NAME = 63


@dataclass(frozen=True)
class Exposure:
    """Where one node's endpoint listens and how the world addresses it."""

    address: str  # the Machine's InternalIP and talosconfig endpoint (dialled on ``TALOS_PORT``)
    bind_host: str  # where the endpoint listens (the pod's address)
    bind_port: int
    sans: tuple[str, ...] = ()  # more names for the server certificate (IPs or DNS names)


class Exposer(Protocol):
    """Allocates and releases exposures; the fleet calls it outside its event loop."""

    def expose(self, name: str) -> Exposure: ...

    def release(self, name: str) -> None: ...


def service_name(machine: str) -> str:
    """A DNS-1035 Service name for ``machine``: ``talos-<machine>``, shortened with a digest past 63 chars."""
    base = "talos-" + re.sub(r"[^a-z0-9-]+", "-", machine.lower()).strip("-")
    if len(base) <= _MAX_NAME:
        return base
    digest = hashlib.sha256(machine.encode()).hexdigest()[:8]
    return f"{base[:_MAX_NAME - 9].rstrip('-')}-{digest}"


def service_dns_names(name: str, namespace: str) -> tuple[str, str]:
    """The names a pod can resolve the Service by (the default cluster domain ``cluster.local``)."""
    return f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"


def service_object(*, machine: str, namespace: str, cluster: str, selector: Mapping[str, str], target_port: int,
                   owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ClusterIP Service exposing one fake node: port ``TALOS_PORT`` → ``target_port`` on the sim pod."""
    if not selector:
        raise ValueError("a per-node Service needs the simulator pod's labels as its selector")
    metadata: dict[str, Any] = {
        "name": service_name(machine),
        "namespace": namespace,
        "labels": {SIMULATED_LABEL: "true", SERVICE_LABEL: "true", MACHINE_LABEL: machine,
                   CAPI_CLUSTER_LABEL: cluster},
    }
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "talos-api", "protocol": "TCP", "port": TALOS_PORT, "targetPort": target_port}],
        },
    }


def exposure_from_service(service: Mapping[str, Any], *, bind_host: str, bind_port: int) -> Exposure:
    """The exposure a created Service gives: its ClusterIP as the address, its DNS names and the pod address as
    further SANs (a client inside the pod, or a test, dials the pod address directly)."""
    spec, meta = service.get("spec") or {}, service["metadata"]
    cluster_ip = str(spec.get("clusterIP") or "")
    try:
        ipaddress.ip_address(cluster_ip)
    except ValueError:
        raise ValueError(f"Service {meta['name']} has no ClusterIP ({cluster_ip!r}); a headless Service "
                         "cannot stand in for a node address") from None
    sans = (*service_dns_names(meta["name"], meta["namespace"]), bind_host)
    return Exposure(address=cluster_ip, bind_host=bind_host, bind_port=bind_port, sans=sans)


def pick_port(in_use: Collection[int], bindable: Callable[[int], bool], *, first: int = FIRST_POD_PORT,
              last: int = LAST_POD_PORT, after: int | None = None) -> int:
    """The first port in ``[first, last]`` not in use and bindable, searching from just past ``after`` (the
    port handed out last) and wrapping round; ``RuntimeError`` when none is left.

    Searching on from the last port, rather than from the lowest, keeps a released node's port unused for as
    long as the range allows: the released node's Service may still be routed to it for a moment (kube-proxy
    applies a deleted Service late), and a new node listening there would answer in the old node's name — an
    address reuse the scenario did not ask for, which the product rightly refuses to trust.
    """
    size = last - first + 1
    start = 0 if after is None or not first <= after <= last else after - first + 1
    for i in range(size):
        port = first + (start + i) % size
        if port not in in_use and bindable(port):
            return port
    raise RuntimeError(f"no free port for a fake Talos endpoint in {first}-{last}")


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` → a dict (the CLI's ``--pod-labels``); every item needs a key and a value."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"not a label key=value: {item!r}")
        out[key.strip()] = value.strip()
    return out
