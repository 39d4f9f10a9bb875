"""Run the fake Talos endpoints of a simulated cluster on one private asyncio loop in a background thread.

Contract: a synchronous facade (usable from the synchronous simulator and from tests); by default every endpoint
binds to its own loopback address (127.x.y.z) on ``port`` (50000, like Talos). Addresses are allocated from a block
derived from the process id (``loopback_block``), skipping any address whose bind fails, so parallel test
processes do not collide; within one process every fleet claims its addresses in one registry (held until the
node is removed or the fleet stops), so fleets started at the same time, or a node whose address is free while
it reboots, never share an address. A reboot answers the RPC first (as Talos does), then takes the endpoint down
(listener and open connections closed) for ``reboot_downtime`` seconds, changes the boot ID and comes back
as the ``on_reboot`` callback says (:class:`RebootOutcome`). A reboot accepted while the node's stage is
installing, upgrading or shutting down — or one the callback answers ``DROPPED`` — is answered OK and then
never happens, as Talos drops it (recorded ``dropped=True``; timeline ``talos.reboot-dropped``; the node's event
log gets Talos's ``SequenceEvent`` NOOP "sequence not started: locked").

A reboot goes through Talos's stages (:class:`RebootStages`, wall seconds): ``SequenceEvent`` reboot START with
the caller's actor id, stage ``rebooting`` with the API still up for ``rebooting`` seconds, the endpoint down
(listener and open connections closed, so Events streams end) for ``reboot_downtime`` seconds, a new boot ID and
an empty event log, the endpoint back in stage ``booting`` for ``booting`` seconds, then ``running`` not ready
for ``not_ready`` seconds, then ready — or, as the ``on_reboot`` callback says, back in maintenance mode or never.
A later reboot, a removal or maintenance mode cuts a sequence short.

TLS: outside maintenance mode a client certificate of the cluster CA with ExtKeyUsage exactly ClientAuth is
required in the handshake (:mod:`sim.talos.tls`); every path the service does not serve answers Unimplemented.
Timeline events: ``talos.reboot`` (mode, role, address), ``talos.down``, ``talos.up``, ``talos.maintenance``.

Opt-in in-cluster mode: given an ``exposer`` (:class:`sim.talos.exposure.Exposer`, e.g. one Kubernetes Service
per node), ``add_node`` asks it where the node listens (the pod address, its own port) and what address the
world dials (the Service's ClusterIP); the server certificate names both and the Service's DNS names, and
``remove_node`` releases the exposure. ``talos.up`` then also says where it listens (``listen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from grpclib.protocol import H2Protocol
from grpclib.server import Handler, Server

from sim.pki import CertKey, ClusterPKI, self_signed
from sim.talos.api import common_pb2, machine_pb2
from sim.talos.exposure import Exposer
from sim.talos.node import FakeTalosNode, RebootOutcome, RebootRecord
from sim.talos.service import TalosService, Unimplemented
from sim.talos.tls import exact_client_auth, server_context
from sim.timeline import Timeline

T = TypeVar("T")
RebootCallback = Callable[[FakeTalosNode, str, str], "RebootOutcome | None"]
_CALL_TIMEOUT = 10.0
DROPPING_STAGES = frozenset({"installing", "upgrading", "shutting down"})


@dataclass(frozen=True)
class RebootStages:
    """Wall seconds a rebooting node spends in each stage around its downtime (``reboot_downtime``)."""

    rebooting: float = 0.0  # API up, stage rebooting, before it goes away
    booting: float = 0.0  # API back, stage booting
    not_ready: float = 0.0  # stage running, not ready yet

    def __post_init__(self) -> None:
        for name in ("rebooting", "booting", "not_ready"):
            if getattr(self, name) < 0:
                raise ValueError(f"reboot stage {name} must be ≥ 0 seconds, got {getattr(self, name)}")


# Loopback addresses claimed by this process's fleets (a rebooting node's address is unbound, not free).
_CLAIMED: set[str] = set()
_CLAIM_LOCK = threading.Lock()


def loopback_block(pid: int | None = None) -> tuple[int, int]:
    """The (second, third) octet start of this process's loopback block: 127.<a>.<b>.x with a from the pid."""
    pid = os.getpid() if pid is None else pid
    return 1 + pid % 254, (pid // 254) % 200


class _TrackedProtocol(H2Protocol):
    """grpclib's protocol, remembering its transport so a reboot can cut open connections; where the handshake
    could not enforce apid's ExtKeyUsage rule, it drops such a connection before any request is read."""

    def __init__(self, *args: Any, transports: set[asyncio.Transport], check_eku: bool) -> None:
        super().__init__(*args)
        self._transports: set[asyncio.Transport] = transports
        self._transport: asyncio.Transport | None = None
        self._check_eku = check_eku

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._check_eku:
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if der is not None and not exact_client_auth(der):
                transport.abort()
                return
        self._transport = transport
        self._transports.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._transport is not None:
            self._transports.discard(self._transport)
        super().connection_lost(exc)


class _Endpoint(Server):
    """A grpclib Server that can also close its open connections (grpclib 0.4.9 internals, pinned)."""

    def __init__(self, handlers: list[Any], *, check_eku: bool = False) -> None:
        super().__init__(handlers)
        self.transports: set[asyncio.Transport] = set()
        self.check_eku = check_eku

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = Handler(Unimplemented(self._mapping), self._codec, self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)
        return _TrackedProtocol(handler, self._config, self._h2_config, transports=self.transports,
                                check_eku=self.check_eku)

    async def shutdown(self) -> None:
        self.close()
        for transport in list(self.transports):
            transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.wait_closed()
        for transport in list(self.transports):
            transport.abort()


class FakeTalosFleet:
    """Fake Talos API endpoints for the nodes of one simulated cluster. See the module docstring."""

    def __init__(self, pki: ClusterPKI, *, timeline: Timeline | None = None, reboot_downtime: float = 0.2,
                 reboot_stages: RebootStages | None = None, port: int = 50000,
                 clock: Callable[[], float] = time.monotonic, exposer: Exposer | None = None) -> None:
        self.pki = pki
        self.exposer = exposer
        self.timeline = timeline
        self.reboot_downtime = reboot_downtime
        self.reboot_stages = reboot_stages or RebootStages()
        self.port = port
        self.clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, FakeTalosNode] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._reboots: list[RebootRecord] = []
        self._callback: RebootCallback | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._next_host = 0
        self._claimed: dict[str, str] = {}  # node name -> the address this fleet claimed for it
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> FakeTalosFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-talos", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            self._run(self._stop_all())
        finally:
            for name in list(self._claimed):
                self._release_address(name)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        loop.close()
        self._loop = None
        self._thread = None

    async def _stop_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for name in list(self._endpoints):
            await self._down(name, record=False)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the fleet loop and wait for it (from any other thread)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("FakeTalosFleet is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=_CALL_TIMEOUT)

    def _submit(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the loop; wait unless we already are on the loop thread (e.g. inside a callback)."""
        if threading.current_thread() is self._thread:
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._run(coro)

    def _record(self, kind: str, subject: str, **details: Any) -> None:
        if self.timeline is not None:
            self.timeline.record(kind, subject, **details)

    # --- nodes -------------------------------------------------------------------------------------------
    def _allocate_address(self, name: str) -> str:
        """A loopback address no fleet of this process holds and nothing else has bound; claimed for ``name``."""
        a, b0 = loopback_block()
        with _CLAIM_LOCK:
            for _ in range(254 * 50):
                n = self._next_host
                self._next_host += 1
                b, c = b0 + n // 254, 1 + n % 254
                address = f"127.{a}.{b % 256}.{c}"
                if address not in _CLAIMED and self._bindable(address):
                    _CLAIMED.add(address)
                    self._claimed[name] = address
                    return address
        raise RuntimeError("no free loopback address in this process's block")

    def _release_address(self, name: str) -> None:
        with _CLAIM_LOCK:
            address = self._claimed.pop(name, None)
            if address is not None:
                _CLAIMED.discard(address)

    def _bindable(self, address: str) -> bool:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, self.port))
            except OSError:
                return False
        return True

    def add_node(self, name: str, address: str | None = None, *, talos_version: str = "v1.12.0",
                 stage: str = "running", ready: bool = True) -> FakeTalosNode:
        if self.exposer is not None:
            return self._add_exposed_node(name, address, talos_version=talos_version, stage=stage, ready=ready)
        if not ipaddress.ip_address(address or "127.0.0.1").is_loopback:
            raise ValueError(f"fake Talos endpoints bind only to loopback addresses, got {address!r}")
        with self._lock:
            if name in self._nodes:
                raise ValueError(f"node {name!r} already exists")
        node = FakeTalosNode(name, address or self._allocate_address(name), self.port, talos_version, stage,
                             ready)
        return self._start_node(node, release=self._release_address)

    def _add_exposed_node(self, name: str, address: str | None, *, talos_version: str, stage: str,
                          ready: bool) -> FakeTalosNode:
        assert self.exposer is not None
        if address is not None:
            raise ValueError("with an exposer the node address comes from the exposure; do not pass one")
        with self._lock:
            if name in self._nodes:
                raise ValueError(f"node {name!r} already exists")
        exposure = self.exposer.expose(name)
        node = FakeTalosNode(name, exposure.address, self.port, talos_version, stage, ready,
                             bind_host=exposure.bind_host, bind_port=exposure.bind_port, sans=exposure.sans)
        return self._start_node(node, release=self.exposer.release)

    def _start_node(self, node: FakeTalosNode, *, release: Callable[[str], None]) -> FakeTalosNode:
        """Register ``node`` and bring its endpoint up; if that fails, forget it and ``release`` where it was to
        listen (its claimed address or its exposure)."""
        with self._lock:
            self._nodes[node.name] = node
        try:
            self._run(self._up(node.name))
        except BaseException:
            with self._lock:
                self._nodes.pop(node.name, None)
            release(node.name)
            raise
        if node.maintenance:
            self._record("talos.maintenance", node.name, address=node.address)
        return node

    def remove_node(self, name: str) -> None:
        self._run(self._down(name, record=False))
        with self._lock:
            known = self._nodes.pop(name, None) is not None
        self._release_address(name)
        if known and self.exposer is not None:
            self.exposer.release(name)

    def node(self, name: str) -> FakeTalosNode:
        with self._lock:
            return self._nodes[name]

    def nodes(self) -> list[FakeTalosNode]:
        with self._lock:
            return list(self._nodes.values())

    def on_reboot(self, callback: RebootCallback) -> None:
        """``callback(node, mode, role)`` runs on the fleet loop right after a reboot is accepted; it returns
        what the node does once back (None = RUNNING). It must not block; node methods may be called."""
        self._callback = callback

    def reboots(self, name: str | None = None) -> list[RebootRecord]:
        with self._lock:
            return [r for r in self._reboots if name is None or r.node == name]

    def set_maintenance(self, name: str) -> None:
        """Put a node into maintenance mode now (restarts its endpoint with the self-signed certificate)."""
        self._submit(self._enter_maintenance(name))

    def set_certificate(self, name: str, cert: CertKey | None) -> None:
        """Serve ``cert`` instead of the node's own certificate (None: back to its own), e.g. an impostor's: another
        CA's, the cluster CA's for another address, an expired one. Restarts the endpoint."""
        self.node(name)._certificate = cert
        self._submit(self._restart(name))

    async def _restart(self, name: str) -> None:
        if name in self._endpoints:
            await self._down(name, record=False)
            await self._up(name)

    def set_unreachable(self, name: str, unreachable: bool) -> None:
        node = self.node(name)
        node._set(unreachable=unreachable)
        self._submit(self._down(name) if unreachable else self._up(name))

    # --- on the loop -------------------------------------------------------------------------------------
    def _context_for(self, node: FakeTalosNode) -> tuple[ssl.SSLContext, bool]:
        if node._certificate is not None:
            ca = None if node.maintenance else self.pki.ca.cert_pem
            return server_context(node._certificate.cert_pem, node._certificate.key_pem, ca)
        if node.maintenance:
            cert = self_signed(node.address)
            return server_context(cert.cert_pem, cert.key_pem, None)
        cert = self.pki.server_cert(node.address, node.name, extra_sans=node.sans)
        return server_context(cert.cert_pem, cert.key_pem, self.pki.ca.cert_pem)

    async def _up(self, name: str) -> None:
        node = self.node(name)
        if name in self._endpoints or node.unreachable:
            return
        context, enforced = self._context_for(node)
        endpoint = _Endpoint([TalosService(node, self._accept_reboot)], check_eku=not enforced)
        await endpoint.start(node.bind_host, node.bind_port, ssl=context, reuse_address=True)
        self._endpoints[name] = endpoint
        node._set(up=True)
        listen = {"listen": node.listen} if node.listen != node.endpoint else {}
        self._record("talos.up", name, address=node.address, boot_id=node.boot_id[:8],
                     mode="maintenance" if node.maintenance else "normal", **listen)

    async def _down(self, name: str, *, record: bool = True) -> None:
        endpoint = self._endpoints.pop(name, None)
        if endpoint is None:
            return
        with contextlib.suppress(KeyError):
            self.node(name)._set(up=False)
        await endpoint.shutdown()
        if record:
            self._record("talos.down", name, address=endpoint_address(self, name))

    async def _enter_maintenance(self, name: str) -> None:
        node = self.node(name)
        node._set(stage="maintenance", ready=False, maintenance=True)
        self._record("talos.maintenance", name, address=node.address)
        if name in self._endpoints:
            await self._down(name, record=False)
            await self._up(name)

    def _accept_reboot(self, node: FakeTalosNode, mode: str, effective: str, role: str,
                       actor_id: str = "") -> Callable[[], None]:
        busy = node.stage in DROPPING_STAGES
        outcome = RebootOutcome.DROPPED if busy else RebootOutcome.RUNNING
        if self._callback is not None and not busy:
            outcome = RebootOutcome(self._callback(node, mode, role) or RebootOutcome.RUNNING)
        dropped = outcome is RebootOutcome.DROPPED
        record = RebootRecord(node.name, node.address, mode, effective, role, node.boot_id, self.clock(), dropped)
        with self._lock:
            self._reboots.append(record)
        self._record("talos.reboot", node.name, mode=mode, role=role, address=node.address,
                     **({"effective_mode": effective} if effective != mode else {}))
        if dropped:
            self._record("talos.reboot-dropped", node.name, address=node.address, stage=node.stage)
            node.record_event(machine_pb2.SequenceEvent(
                sequence="reboot", action=machine_pb2.SequenceEvent.NOOP,
                error=common_pb2.Error(code=common_pb2.LOCKED, message="sequence not started: locked")))
            return lambda: None
        node.record_event(machine_pb2.SequenceEvent(sequence="reboot", action=machine_pb2.SequenceEvent.START),
                          actor_id)

        def start() -> None:
            task = asyncio.get_running_loop().create_task(self._reboot(node.name, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return start

    async def _reboot(self, name: str, outcome: RebootOutcome) -> None:
        await asyncio.sleep(0)  # let grpclib finish writing the reply before connections are cut
        with self._lock:
            node = self._nodes.get(name)
        if node is None:
            return  # removed before its reboot began: nothing to take down, nothing comes back
        stages = self.reboot_stages
        boot = node.boot_id
        node._set(stage="rebooting", ready=False)
        # each sleep is a simulated stage duration, not a wait for a condition
        if stages.rebooting > 0:
            await asyncio.sleep(stages.rebooting)
            if not self._same_boot(name, node, boot) or node.maintenance:
                return  # removed, in maintenance or rebooted again meanwhile: that change wins
        await self._down(name)
        await asyncio.sleep(self.reboot_downtime)
        if not self._same_boot(name, node, boot):
            return  # the Machine (and its node) was removed while it rebooted: nothing comes back
        if outcome is RebootOutcome.NEVER:
            node._set(new_boot=True, stage="booting", ready=False)
            return
        if outcome is RebootOutcome.MAINTENANCE:
            node._set(new_boot=True, stage="maintenance", ready=False, maintenance=True)
            self._record("talos.maintenance", name, address=node.address)
            await self._up(name)
            return
        node._set(new_boot=True, stage="booting", ready=False, maintenance=False)
        boot = node.boot_id
        await self._up(name)
        for stage, ready, hold in (("running", False, stages.booting), ("running", True, stages.not_ready)):
            await asyncio.sleep(hold)
            if not self._same_boot(name, node, boot) or node.maintenance or node.stage not in ("booting", "running"):
                return
            node._set(stage=stage, ready=ready)

    def _same_boot(self, name: str, node: FakeTalosNode, boot_id: str) -> bool:
        with self._lock:
            current = self._nodes.get(name)
        return current is node and node.boot_id == boot_id


def endpoint_address(fleet: FakeTalosFleet, name: str) -> str:
    try:
        return fleet.node(name).address
    except KeyError:
        return "?"
