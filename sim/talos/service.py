"""The gRPC handlers of one fake Talos endpoint and the TLS/identity rules Talos applies.

Contract: request in, reply or ``GRPCError`` out; node state comes from :class:`FakeTalosNode`, side effects
(reboots) go through the ``on_reboot`` hook the fleet passes in. Identity:

* normal mode: the client certificate is required (handshake) and must carry ExtKeyUsage exactly ClientAuth,
  roles are its Subject Organization values; Reboot needs ``os:admin`` or ``os:operator``
  (PermissionDenied "not authorized" otherwise).
* maintenance mode: no client certificate, everyone is ``os:reader``; Reboot is answered Unimplemented
  (Talos ≤ 1.12, whose separate maintenance server embeds ``UnimplementedMachineServiceServer``) or
  PermissionDenied (≥ 1.13).
* Reboot while the node installs, upgrades or shuts down (stage ``installing``, ``upgrading``, ``shutting down``):
  answered OK with an actor id like any other, then dropped — Talos's sequencer cannot take its priority lock
  (siderolabs/talos ``v1alpha1_server.go`` Reboot, ``sequencer.go``); recorded with ``dropped=True``.
* ``MachineService/Read`` serves only ``/proc/sys/kernel/random/boot_id`` (os:admin, like Talos; others
  PermissionDenied; any other path NotFound); ``State/Get`` also serves the ``BootIDs.runtime.talos.dev``
  resource (id ``boot-id``) on Talos v1.14 and later (NotFound before, as the type does not exist there).
* ``RebootRequest.Mode.FORCE`` on Talos < 1.12: proto3 keeps the unknown enum value and that Talos's reboot
  sequence only tests for POWERCYCLE, so it is accepted and performed as a default reboot (recorded as
  ``effective_mode=default``). siderolabs/talos v1.11 ``v1alpha1_sequencer_tasks.go``.

Method descriptors are written by hand exactly as grpclib's generated ``*_grpc.py`` files do
(``grpclib.const.Handler(func, Cardinality.UNARY_UNARY, Request, Reply)`` keyed by the ``:path``).
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Callable
from typing import Any

import grpclib.const
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from capi_rollout.adapters.talos import messages
from capi_rollout.adapters.talos.status import MachineStatus, to_proto, to_yaml
from sim.talos.node import FakeTalosNode

REBOOT_ROLES = frozenset({"os:admin", "os:operator"})
READ_FILE_ROLES = frozenset({"os:admin"})
BOOT_ID_MIN_VERSION = (1, 14)
DROPPING_STAGES = frozenset({"installing", "upgrading", "shutting down"})
READ_ROLES = frozenset({"os:admin", "os:operator", "os:reader", "os:etcd:backup"})

# (node, requested mode, effective mode, role) -> start: records the reboot before the reply is sent and
# returns the function that starts it (endpoint down, ...), called once the reply is written.
RebootHook = Callable[[FakeTalosNode, str, str, str], Callable[[], None]]


def peer_certificate(stream: Stream[Any, Any]) -> bytes | None:
    """The DER client certificate of the connection behind ``stream`` (grpclib keeps the transport private)."""
    transport: Any = getattr(stream.peer, "_transport", None)
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


def roles_of(der: bytes) -> list[str]:
    """Roles from a client certificate; raises ``GRPCError`` when its ExtKeyUsage is not exactly ClientAuth."""
    cert = x509.load_der_x509_certificate(der)
    try:
        ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = []
    if ekus != [ExtendedKeyUsageOID.CLIENT_AUTH]:
        raise GRPCError(Status.UNAUTHENTICATED, "client certificate ExtKeyUsage must be exactly ClientAuth")
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


class TalosService:
    """``machine.MachineService`` (Reboot, Version) and ``cosi.resource.State`` (Get) for one node."""

    def __init__(self, node: FakeTalosNode, on_reboot: RebootHook) -> None:
        self.node = node
        self._on_reboot = on_reboot

    def _identity(self, stream: Stream[Any, Any]) -> list[str]:
        if self.node.maintenance:
            return ["os:reader"]
        der = peer_certificate(stream)
        if der is None:  # cannot happen with CERT_REQUIRED; refuse rather than guess
            raise GRPCError(Status.UNAUTHENTICATED, "client certificate required")
        return roles_of(der)

    def _require(self, roles: list[str], allowed: frozenset[str]) -> str:
        granted = [r for r in roles if r in allowed]
        if not granted:
            raise GRPCError(Status.PERMISSION_DENIED, "not authorized")
        return granted[0]

    async def reboot(self, stream: Stream[Any, Any]) -> None:
        request: Any = await stream.recv_message()
        roles = self._identity(stream)
        if self.node.maintenance:
            if self.node.maintenance_reboot_behaviour == "unimplemented":
                raise GRPCError(Status.UNIMPLEMENTED, "method Reboot not implemented")
            raise GRPCError(Status.PERMISSION_DENIED, "not authorized")
        role = self._require(roles, REBOOT_ROLES)
        number = int(request.mode) if request is not None else 0
        mode = messages.REBOOT_MODE_NAMES.get(number, f"mode-{number}")
        effective = mode if mode in ("default", "powercycle") or (mode == "force" and self.node.supports_force) \
            else "default"
        start = self._on_reboot(self.node, mode, effective, role)
        actor_id = str(uuid.uuid4())
        reply = messages.RebootResponse(messages=[messages.Reboot(
            metadata=messages.Metadata(hostname=self.node.name), actor_id=actor_id)])
        await stream.send_message(reply)
        await stream.send_trailing_metadata()
        start()

    async def read(self, stream: Stream[Any, Any]) -> None:
        request: Any = await stream.recv_message()
        roles = self._identity(stream)
        if self.node.maintenance:
            raise GRPCError(Status.UNIMPLEMENTED, "API is not implemented in maintenance mode")
        self._require(roles, READ_FILE_ROLES)
        if request is None or request.path != messages.BOOT_ID_PATH:
            path = request.path if request is not None else ""
            raise GRPCError(Status.NOT_FOUND, f"open {path}: no such file or directory")
        await stream.send_message(messages.Data(metadata=messages.Metadata(hostname=self.node.name),
                                                bytes=(self.node.boot_id + "\n").encode()))

    async def version(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        self._require(self._identity(stream), READ_ROLES)
        info = messages.VersionInfo(tag=self.node.talos_version, os="linux", arch="amd64")
        await stream.send_message(messages.VersionResponse(
            messages=[messages.Version(metadata=messages.Metadata(hostname=self.node.name), version=info)]))

    async def state_get(self, stream: Stream[Any, Any]) -> None:
        request: Any = await stream.recv_message()
        self._require(self._identity(stream), READ_ROLES)
        pointer = (request.namespace, request.type, request.id)
        boot_id = (messages.MACHINE_STATUS_NAMESPACE, messages.BOOT_ID_TYPE, messages.BOOT_ID_ID)
        if pointer == boot_id and self.node.version_tuple >= BOOT_ID_MIN_VERSION:
            spec = messages.ResourceSpec(proto_spec=messages.BootIDSpec(boot_id=self.node.boot_id).SerializeToString(),
                                         yaml_spec=f"bootID: {self.node.boot_id}\n")
            owner = "runtime.BootIDController"
        elif pointer == (messages.MACHINE_STATUS_NAMESPACE, messages.MACHINE_STATUS_TYPE, messages.MACHINE_STATUS_ID):
            status = MachineStatus(stage=self.node.stage, ready=self.node.ready)
            spec = messages.ResourceSpec(proto_spec=to_proto(status), yaml_spec=to_yaml(status))
            owner = "runtime.MachineStatusController"
        else:
            raise GRPCError(Status.NOT_FOUND, f"resource {request.type}({request.namespace}/{request.id}@undefined) "
                            "doesn't exist")
        resource = messages.Resource(
            metadata=messages.ResourceMetadata(namespace=request.namespace, type=request.type, id=request.id,
                                               version="1", owner=owner, phase="running"),
            spec=spec,
        )
        await stream.send_message(messages.GetResponse(resource=resource))

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        unary = grpclib.const.Cardinality.UNARY_UNARY
        return {
            messages.REBOOT_PATH: grpclib.const.Handler(
                self.reboot, unary, messages.RebootRequest, messages.RebootResponse),
            messages.VERSION_PATH: grpclib.const.Handler(
                self.version, unary, messages.Empty, messages.VersionResponse),
            messages.STATE_GET_PATH: grpclib.const.Handler(
                self.state_get, unary, messages.GetRequest, messages.GetResponse),
            messages.READ_PATH: grpclib.const.Handler(
                self.read, grpclib.const.Cardinality.UNARY_STREAM, messages.ReadRequest, messages.Data),
        }
