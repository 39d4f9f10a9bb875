"""The gRPC handlers of one fake Talos endpoint and the identity rules Talos applies.

Contract: request in, reply or ``GRPCError`` out; node state comes from :class:`FakeTalosNode`, side effects
(reboots) go through the ``on_reboot`` hook the fleet passes in. Messages and method paths are the upstream
protos (:mod:`sim.talos.api`). Served: ``machine.MachineService`` Reboot, Version, Read (the boot ID only) and
Events (a stream), ``cosi.resource.State`` Get and List (:mod:`sim.talos.resources`). Every other path answers
``Unimplemented`` like grpc-go does (a method the protos declare: ``method X not implemented``; anything else:
``unknown service S`` / ``unknown method M for service S``), with a proper gRPC content type.

Identity (the TLS side — client certificate required, ExtKeyUsage exactly ClientAuth — is the fleet's):

* normal mode: roles are the client certificate's Subject Organization values; Reboot needs ``os:admin`` or
  ``os:operator``, Read ``os:admin``, everything else any Talos role (PermissionDenied "not authorized").
* maintenance mode: no client certificate, everyone is ``os:reader``. Talos ≤ 1.12 runs a separate maintenance
  server (siderolabs/talos ``internal/app/maintenance``): Version answers Unimplemented "API is not implemented in
  maintenance mode" to non-admins, the MachineService methods it does not implement answer
  ``method X not implemented``, COSI reads are served. Talos ≥ 1.13 serves maintenance through apid with the
  reader role: Version is served (no features: there is no config), Reboot and Read are PermissionDenied.
* Version replies carry the tag, a sha, the Go version, linux/amd64, the platform and — with a machine config —
  the RBAC feature flag; ``common.Metadata.hostname`` is set only when the request asks apid to aggregate
  (``nodes`` metadata): to each target named, as apid's one-to-many proxy does.
* Reboot: answered with an actor id (what happens next, and the events it logs, is the fleet's: see
  :mod:`sim.talos.fleet`). ``FORCE`` on Talos < 1.12 is performed as a default reboot (proto3 keeps the unknown
  enum value and that Talos's reboot sequence only tests for POWERCYCLE; recorded as ``effective_mode=default``).
* Events: the empty first event, the requested tail of this boot's log, then live events until the connection
  ends (the endpoint goes down on reboot).
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Callable
from typing import Any

import grpclib.const
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from sim.talos import api, resources
from sim.talos.api import common_pb2, machine_pb2, state_pb2
from sim.talos.events import empty_event, matches
from sim.talos.node import FakeTalosNode

REBOOT_ROLES = frozenset({"os:admin", "os:operator"})
READ_FILE_ROLES = frozenset({"os:admin"})
READ_ROLES = frozenset({"os:admin", "os:operator", "os:reader", "os:etcd:backup"})
NOT_IN_MAINTENANCE = "API is not implemented in maintenance mode"
EVENT_POLL = 0.05  # seconds between looks at the event log of an open Events stream

# (node, requested mode, effective mode, role, actor id) -> start: records the reboot (and its events) before the
# reply is sent and returns the function that starts it (endpoint down, ...), called once the reply is written.
RebootHook = Callable[[FakeTalosNode, str, str, str, str], Callable[[], None]]


def peer_certificate(stream: Stream[Any, Any]) -> bytes | None:
    """The DER client certificate of the connection behind ``stream`` (grpclib keeps the transport private)."""
    transport: Any = getattr(stream.peer, "_transport", None)
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


def roles_of(der: bytes) -> list[str]:
    """Talos roles: the client certificate's Subject Organization values."""
    cert = x509.load_der_x509_certificate(der)
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def unimplemented(path: str) -> GRPCError:
    """What grpc-go answers for ``path`` when nothing serves it."""
    service, _, method = path.lstrip("/").partition("/")
    if path in api.declared_methods():
        return GRPCError(Status.UNIMPLEMENTED, f"method {method} not implemented")
    known = {p.lstrip("/").partition("/")[0] for p in api.declared_methods()}
    if service in known:
        return GRPCError(Status.UNIMPLEMENTED, f"unknown method {method} for service {service}")
    return GRPCError(Status.UNIMPLEMENTED, f"unknown service {service}")


class TalosService:
    """The served methods of one node (see the module docstring)."""

    def __init__(self, node: FakeTalosNode, on_reboot: RebootHook) -> None:
        self.node = node
        self._on_reboot = on_reboot

    # --- identity --------------------------------------------------------------------------------------------
    @property
    def _separate_maintenance_server(self) -> bool:
        """Talos ≤ 1.12 serves maintenance mode from its own server (``UnimplementedMachineServiceServer``)."""
        return self.node.maintenance and self.node.version_tuple <= (1, 12)

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

    def _not_in_maintenance_server(self, path: str) -> None:
        if self._separate_maintenance_server:
            raise unimplemented(path)

    @staticmethod
    def _targets(stream: Stream[Any, Any]) -> list[str]:
        """The ``nodes`` metadata values (apid's one-to-many proxy), empty for a direct call."""
        metadata: Any = stream.metadata
        return [str(v) for v in metadata.getall("nodes", [])] if metadata is not None else []

    # --- machine.MachineService --------------------------------------------------------------------------------
    async def reboot(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        self._not_in_maintenance_server(api.REBOOT_PATH)
        role = self._require(self._identity(stream), REBOOT_ROLES)
        number = int(request.mode) if request is not None else 0
        mode = api.REBOOT_MODES.get(number, f"mode-{number}")
        effective = mode if mode in ("default", "powercycle") or (mode == "force" and self.node.supports_force) \
            else "default"
        actor_id = str(uuid.uuid4())
        start = self._on_reboot(self.node, mode, effective, role, actor_id)
        await stream.send_message(machine_pb2.RebootResponse(messages=[
            machine_pb2.Reboot(metadata=self._metadata(stream), actor_id=actor_id)]))
        await stream.send_trailing_metadata()
        start()

    def _metadata(self, stream: Stream[Any, Any]) -> common_pb2.Metadata | None:
        targets = self._targets(stream)
        return common_pb2.Metadata(hostname=targets[0]) if targets else None

    async def read(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        self._not_in_maintenance_server(api.READ_PATH)
        self._require(self._identity(stream), READ_FILE_ROLES)
        if request is None or request.path != api.BOOT_ID_PATH:
            path = request.path if request is not None else ""
            raise GRPCError(Status.NOT_FOUND, f"open {path}: no such file or directory")
        await stream.send_message(common_pb2.Data(bytes=(self.node.boot_id + "\n").encode()))

    async def version(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        roles = self._identity(stream)
        if self._separate_maintenance_server and "os:admin" not in roles:
            raise GRPCError(Status.UNIMPLEMENTED, NOT_IN_MAINTENANCE)
        self._require(roles, READ_ROLES)
        features = None if self.node.maintenance else machine_pb2.FeaturesInfo(rbac=True)
        reply = machine_pb2.Version(version=api.version_info(self.node.talos_version), platform=api.PLATFORM,
                                    features=features)
        targets = self._targets(stream) or [""]
        messages = []
        for target in targets:
            message = machine_pb2.Version()
            message.CopyFrom(reply)
            if target:
                message.metadata.hostname = target
            messages.append(message)
        await stream.send_message(machine_pb2.VersionResponse(messages=messages))

    async def events(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message() or machine_pb2.EventsRequest()
        self._not_in_maintenance_server(api.EVENTS_PATH)
        self._require(self._identity(stream), READ_ROLES)
        log = self.node.events  # this boot's log: a reboot ends the stream with the connection
        await stream.send_message(empty_event(request.with_actor_id))
        past, position = log.tail(request)
        for event in past:
            await stream.send_message(event.to_proto())
        while True:
            await asyncio.sleep(EVENT_POLL)
            new, position = log.since(position)
            for event in new:
                if matches(event, request):
                    await stream.send_message(event.to_proto())

    # --- cosi.resource.State ------------------------------------------------------------------------------------
    async def state_get(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        self._require(self._identity(stream), READ_ROLES)
        assert request is not None
        try:
            found = resources.get_resource(self.node, request.namespace, request.type, request.id)
        except resources.ResourceNotFound as exc:
            raise GRPCError(Status.NOT_FOUND, str(exc)) from None
        await stream.send_message(state_pb2.GetResponse(resource=found))

    async def state_list(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        self._require(self._identity(stream), READ_ROLES)
        assert request is not None
        for item in resources.list_resources(self.node, request.namespace, request.type):
            await stream.send_message(state_pb2.ListResponse(resource=item))

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        unary = grpclib.const.Cardinality.UNARY_UNARY
        stream = grpclib.const.Cardinality.UNARY_STREAM
        return {
            api.REBOOT_PATH: grpclib.const.Handler(self.reboot, unary, machine_pb2.RebootRequest,
                                                   machine_pb2.RebootResponse),
            api.VERSION_PATH: grpclib.const.Handler(self.version, unary, empty_pb2.Empty,
                                                    machine_pb2.VersionResponse),
            api.READ_PATH: grpclib.const.Handler(self.read, stream, machine_pb2.ReadRequest, common_pb2.Data),
            api.EVENTS_PATH: grpclib.const.Handler(self.events, stream, machine_pb2.EventsRequest,
                                                   machine_pb2.Event),
            api.STATE_GET_PATH: grpclib.const.Handler(self.state_get, unary, state_pb2.GetRequest,
                                                      state_pb2.GetResponse),
            api.STATE_LIST_PATH: grpclib.const.Handler(self.state_list, stream, state_pb2.ListRequest,
                                                       state_pb2.ListResponse),
        }


class Unimplemented(dict[str, grpclib.const.Handler]):
    """A method mapping that answers every path it does not hold with grpc-go's Unimplemented (grpclib's own
    answer carries no content type, so gRPC clients read it as Unknown)."""

    def get(self, path: str, default: Any = None) -> grpclib.const.Handler:
        found = super().get(path)
        if found is not None:
            return found

        async def refuse(stream: Stream[Any, Any]) -> None:
            raise unimplemented(path)

        return grpclib.const.Handler(refuse, grpclib.const.Cardinality.UNARY_UNARY, empty_pb2.Empty,
                                     empty_pb2.Empty)
