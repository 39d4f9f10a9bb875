"""The in-cluster exposure of fake Talos endpoints: one Kubernetes Service per simulated node.

Contract: :class:`ServiceExposer` implements :class:`sim.talos.exposure.Exposer` with the Kubernetes API (the
only I/O here). ``expose(machine)`` picks a free port on the pod address (the next one after the port handed
out last, so a released port is not reused at once: see :func:`sim.talos.exposure.pick_port`), creates the
node's ClusterIP Service (selector = the simulator pod's labels, port 50000 → that port; labels and owner like
the simulator's other objects) and returns the Service's ClusterIP as the node address; ``release(machine)``
deletes it; ``delete_all()`` removes every per-node Service of the namespace (cleanup). A Service left over
from an earlier run of the same machine name is replaced. Every call is a single bounded API request.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sim.objects import SIMULATED_LABEL
from sim.talos.exposure import (
    FIRST_POD_PORT,
    SERVICE_LABEL,
    Exposure,
    exposure_from_service,
    pick_port,
    service_name,
    service_object,
)

OwnerFn = Callable[[], Mapping[str, Any] | None]


def bindable(host: str, port: int) -> bool:
    """Can a listener bind ``host:port`` now (SO_REUSEADDR, like the fleet's endpoints)?"""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class ServiceExposer:
    """Per-node Services in ``namespace`` selecting the simulator pod (see the module docstring)."""

    def __init__(self, api_client: client.ApiClient, *, namespace: str, cluster: str, pod_ip: str,
                 selector: Mapping[str, str], owner: OwnerFn = lambda: None, first_port: int = FIRST_POD_PORT,
                 request_timeout: float = 30.0) -> None:
        ipaddress.ip_address(pod_ip)  # ValueError for anything but an IP literal
        if not selector:
            raise ValueError("the service mode needs the simulator pod's labels (selector)")
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.cluster = cluster
        self.pod_ip = pod_ip
        self.selector = dict(selector)
        self.owner = owner
        self.first_port = first_port
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._ports: dict[str, int] = {}
        self._last_port: int | None = None

    def expose(self, name: str) -> Exposure:
        with self._lock:
            port = pick_port(set(self._ports.values()), lambda p: bindable(self.pod_ip, p), first=self.first_port,
                             after=self._last_port)
            self._ports[name] = port
            self._last_port = port
        try:
            body = service_object(machine=name, namespace=self.namespace, cluster=self.cluster,
                                  selector=self.selector, target_port=port, owner=self.owner())
            created = self._create(body)
            return exposure_from_service(created, bind_host=self.pod_ip, bind_port=port)
        except BaseException:
            with self._lock:
                self._ports.pop(name, None)
            raise

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            created = self.core.create_namespaced_service(self.namespace, body,  # type: ignore[arg-type]
                                                          _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # a Service of an earlier run of this machine name: replace it (the port and owner may differ)
            self._delete(body["metadata"]["name"])
            created = self.core.create_namespaced_service(self.namespace, body,  # type: ignore[arg-type]
                                                          _request_timeout=self.request_timeout)
        out: dict[str, Any] = self.core.api_client.sanitize_for_serialization(created)
        return out

    def release(self, name: str) -> None:
        with self._lock:
            self._ports.pop(name, None)
        self._delete(service_name(name))

    def _delete(self, service: str) -> None:
        try:
            self.core.delete_namespaced_service(service, self.namespace, _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def services(self) -> list[dict[str, Any]]:
        """The per-node Services the simulator owns in its namespace."""
        listed = self.core.list_namespaced_service(
            self.namespace, label_selector=f"{SIMULATED_LABEL}=true,{SERVICE_LABEL}=true",
            _request_timeout=self.request_timeout,
        )
        items: list[dict[str, Any]] = self.core.api_client.sanitize_for_serialization(listed).get("items", [])
        return items

    def delete_all(self) -> None:
        for svc in self.services():
            self._delete(svc["metadata"]["name"])
        with self._lock:
            self._ports.clear()
