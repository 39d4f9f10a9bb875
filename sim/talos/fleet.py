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
never happens, as Talos drops it (recorded ``dropped=True``; timeline ``talos.reboot-dropped``).
Timeline events: ``talos.reboot`` (mode, role,
address), ``talos.down``, ``talos.up``, ``talos.maintenance``.

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
from typing import Any, TypeVar

from grpclib.protocol import H2Protocol
from grpclib.server import Handler, Server

from capi_rollout.adapters.talos.tls import load_key_pair
from sim.pki import CertKey, ClusterPKI, self_signed
from sim.talos.exposure import Exposer
from sim.talos.node import FakeTalosNode, RebootOutcome, RebootRecord
from sim.talos.service import DROPPING_STAGES, TalosService
from sim.timeline import Timeline

T = TypeVar("T")
RebootCallback = Callable[[FakeTalosNode, str, str], "RebootOutcome | None"]
_CALL_TIMEOUT = 10.0


# Loopback addresses claimed by this process's fleets (a rebooting node's address is unbound, not free).
_CLAIMED: set[str] = set()
_CLAIM_LOCK = threading.Lock()


def loopback_block(pid: int | None = None) -> tuple[int, int]:
    """The (second, third) octet start of this process's loopback block: 127.<a>.<b>.x with a from the pid."""
    pid = os.getpid() if pid is None else pid
    return 1 + pid % 254, (pid // 254) % 200


def _server_context(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    load_key_pair(ctx, cert_pem, key_pem)
    if ca_pem is None:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _TrackedProtocol(H2Protocol):
    """grpclib's protocol, remembering its transport so a reboot can cut open connections."""

    def __init__(self, *args: Any, transports: set[asyncio.Transport]) -> None:
        super().__init__(*args)
        self._transports: set[asyncio.Transport] = transports
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._transports.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._transport is not None:
            self._transports.discard(self._transport)
        super().connection_lost(exc)


class _Endpoint(Server):
    """A grpclib Server that can also close its open connections (grpclib 0.4.9 internals, pinned)."""

    def __init__(self, handlers: list[Any]) -> None:
        super().__init__(handlers)
        self.transports: set[asyncio.Transport] = set()

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = Handler(self._mapping, self._codec, self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)
        return _TrackedProtocol(handler, self._config, self._h2_config, transports=self.transports)

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
                 port: int = 50000, clock: Callable[[], float] = time.monotonic,
                 exposer: Exposer | None = None) -> None:
        self.pki = pki
        self.exposer = exposer
        self.timeline = timeline
        self.reboot_downtime = reboot_downtime
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
        node = FakeTalosNode(self, name, address or self._allocate_address(name), self.port, talos_version, stage,
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
        node = FakeTalosNode(self, name, exposure.address, self.port, talos_version, stage, ready,
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
    def _context_for(self, node: FakeTalosNode) -> ssl.SSLContext:
        if node._certificate is not None:
            ca = None if node.maintenance else self.pki.ca.cert_pem
            return _server_context(node._certificate.cert_pem, node._certificate.key_pem, ca)
        if node.maintenance:
            cert = self_signed(node.address)
            return _server_context(cert.cert_pem, cert.key_pem, None)
        cert = self.pki.server_cert(node.address, node.name, extra_sans=node.sans)
        return _server_context(cert.cert_pem, cert.key_pem, self.pki.ca.cert_pem)

    async def _up(self, name: str) -> None:
        node = self.node(name)
        if name in self._endpoints or node.unreachable:
            return
        endpoint = _Endpoint([TalosService(node, self._accept_reboot)])
        await endpoint.start(node.bind_host, node.bind_port, ssl=self._context_for(node), reuse_address=True)
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

    def _accept_reboot(self, node: FakeTalosNode, mode: str, effective: str, role: str) -> Callable[[], None]:
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
            return lambda: None

        def start() -> None:
            task = asyncio.get_running_loop().create_task(self._reboot(node.name, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return start

    async def _reboot(self, name: str, outcome: RebootOutcome) -> None:
        await asyncio.sleep(0)  # let grpclib finish writing the reply before connections are cut
        node = self.node(name)
        node._set(stage="rebooting", ready=False)
        await self._down(name)
        await asyncio.sleep(self.reboot_downtime)  # the simulated reboot duration, not a wait for a condition
        if name not in self._nodes or self._nodes[name] is not node:
            return  # the Machine (and its node) was removed while it rebooted: nothing comes back
        node._set(new_boot=True)
        if outcome is RebootOutcome.NEVER:
            node._set(stage="booting", ready=False)
            return
        if outcome is RebootOutcome.MAINTENANCE:
            node._set(stage="maintenance", ready=False, maintenance=True)
            self._record("talos.maintenance", name, address=node.address)
        else:
            node._set(stage="running", ready=True, maintenance=False)
        await self._up(name)


def endpoint_address(fleet: FakeTalosFleet, name: str) -> str:
    try:
        return fleet.node(name).address
    except KeyError:
        return "?"
