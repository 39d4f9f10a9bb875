"""Talos API client: probe a node's stage, reboot it, read its version — over grpclib with Ed25519 mTLS.

Contract: every call dials the node itself (``address[:port]``, default port 50000, no ``node`` metadata so
no apid proxying), on a fresh connection closed afterwards, and is bounded by ``timeout`` seconds.
Results are values, not exceptions (except :meth:`TalosClient.version`, which raises
:class:`TalosCallError`):

* :meth:`TalosClient.probe` reads ``MachineStatus`` (``cosi.resource.State/Get``, namespace ``runtime``, type
  ``MachineStatuses.runtime.talos.dev``, id ``machine``) with the talosconfig's mTLS identity. When the
  node's certificate is not signed by the talosconfig CA — what a node in Talos maintenance mode presents — it
  reconnects with verification off and *no* client certificate (Talos grants ``os:reader``) only to read the
  stage, and reports MAINTENANCE when the stage says so. PermissionDenied/Unauthenticated or a refused TLS
  handshake → DENIED; refused connections, resets and timeouts → UNREACHABLE.
* :meth:`TalosClient.reboot` sends ``machine.MachineService/Reboot`` with the mode. Talos answers at once and
  reboots in the background, so OK — or the connection dropping / UNAVAILABLE right after the request was
  sent — counts as accepted. A maintenance node is never sent a Reboot (it would answer Unimplemented up to
  Talos 1.12 and PermissionDenied from 1.13): the result is ``accepted=False, state=MAINTENANCE``.
  ``force`` exists only since Talos v1.12; older Talos would silently do a default reboot (proto3 keeps the
  unknown enum value and its sequencer only tests for POWERCYCLE), so the client reads the version first and
  refuses ``force`` on older nodes itself.

Logs name addresses and outcomes only, never certificates or keys.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import ssl
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from capi_rollout.adapters.talos import messages
from capi_rollout.adapters.talos.config import TalosConfig
from capi_rollout.adapters.talos.status import MachineStatus, machine_status
from capi_rollout.adapters.talos.tls import insecure_client_context, mtls_client_context

log = logging.getLogger(__name__)

DEFAULT_PORT = 50000
FORCE_MIN_VERSION = (1, 12)

T = TypeVar("T")

# Everything a call over the network can raise that means "no usable answer" (ssl.SSLError is an OSError).
_CALL_ERRORS: tuple[type[BaseException], ...] = (
    GRPCError, OSError, TimeoutError, StreamTerminatedError, ProtocolError, ConnectionError,
)


class ProbeState(StrEnum):
    RUNNING = "running"  # stage running and ready
    MAINTENANCE = "maintenance"  # Talos maintenance mode (no machine config)
    BOOTING = "booting"  # any other non-maintenance stage, or running but not ready
    UNREACHABLE = "unreachable"  # refused, reset, timed out, or no answer we could read
    DENIED = "denied"  # the node refused our identity (role, certificate)


@dataclass(frozen=True)
class NodeProbe:
    address: str
    state: ProbeState
    stage: str | None
    ready: bool | None
    detail: str


@dataclass(frozen=True)
class RebootResult:
    address: str
    accepted: bool
    state: ProbeState
    detail: str


class TalosCallError(RuntimeError):
    """A call that must return a value (``version``) got no usable answer."""

    def __init__(self, address: str, state: ProbeState, detail: str) -> None:
        super().__init__(f"{address}: {detail}")
        self.address = address
        self.state = state
        self.detail = detail


def split_address(address: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``"10.0.0.5"`` → (host, default), ``"10.0.0.5:50001"``, ``"[fd00::5]:50001"``, ``"fd00::5"``."""
    text = address.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        if rest:
            raise ValueError(f"not an address[:port]: {address!r}")
        return host, default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            raise ValueError(f"not an address[:port]: {address!r}")
        return host, int(port)
    if text.count(":") > 1:
        ipaddress.IPv6Address(text)  # a bare IPv6 literal, or ValueError
    if not text:
        raise ValueError("empty address")
    return text, default_port


def parse_version(tag: str) -> tuple[int, int] | None:
    """``"v1.12.0"`` / ``"v1.13.0-alpha.1"`` → (1, 12); None when unreadable."""
    parts = tag.lstrip("v").split("-", 1)[0].split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def _describe(exc: BaseException, timeout: float) -> tuple[ProbeState, str]:
    """Classify a transport/gRPC failure as a state and a human sentence (never includes key material)."""
    if isinstance(exc, GRPCError):
        name = exc.status.name
        message = f"{name}: {exc.message}" if exc.message else name
        if exc.status in (Status.PERMISSION_DENIED, Status.UNAUTHENTICATED):
            return ProbeState.DENIED, f"the node refused the request ({message})"
        if exc.status is Status.NOT_FOUND:
            return ProbeState.BOOTING, f"MachineStatus not there yet ({message})"
        return ProbeState.UNREACHABLE, f"the node answered {message}"
    if isinstance(exc, TimeoutError):
        return ProbeState.UNREACHABLE, f"no answer within {timeout:g}s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProbeState.UNREACHABLE, f"x509: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return ProbeState.DENIED, f"TLS handshake refused ({exc.reason or exc.strerror or 'no reason'})"
    if isinstance(exc, ConnectionRefusedError):
        return ProbeState.UNREACHABLE, "connection refused"
    if isinstance(exc, StreamTerminatedError | ConnectionError | ProtocolError):
        return ProbeState.UNREACHABLE, f"connection lost ({exc})" if str(exc) else "connection lost"
    if isinstance(exc, OSError):
        return ProbeState.UNREACHABLE, exc.strerror or str(exc) or type(exc).__name__
    return ProbeState.UNREACHABLE, str(exc) or type(exc).__name__


def _cert_unknown(exc: ssl.SSLCertVerificationError) -> str:
    if exc.verify_code in (18, 19, 20, 21):  # self-signed / unable to get issuer: not our CA
        return f"x509: certificate signed by unknown authority ({exc.verify_message})"
    return f"x509: {exc.verify_message or exc.reason}"


def _from_status(address: str, status: MachineStatus | None, prefix: str = "") -> NodeProbe:
    if status is None:
        return NodeProbe(address, ProbeState.BOOTING, None, None, prefix + "MachineStatus has no readable stage")
    unmet = f" (unmet: {'; '.join(status.unmet)})" if status.unmet else ""
    ready_text = "ready" if status.ready else "not ready"
    detail = f"{prefix}stage {status.stage}, {ready_text}{unmet}"
    if status.stage == "maintenance":
        state = ProbeState.MAINTENANCE
    elif status.stage == "running" and status.ready:
        state = ProbeState.RUNNING
    else:
        state = ProbeState.BOOTING
    return NodeProbe(address, state, status.stage, status.ready, detail)


class TalosClient:
    """Async Talos API client for one talosconfig identity. See the module docstring for the semantics."""

    def __init__(self, config: TalosConfig, *, port: int = DEFAULT_PORT, timeout: float = 10.0) -> None:
        self._mtls = mtls_client_context(config.ca_pem, config.crt_pem, config.key_pem)
        self._insecure = insecure_client_context()
        self._port = port
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"TalosClient(port={self._port}, timeout={self._timeout:g})"

    async def __aenter__(self) -> TalosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(self, address: str, ctx: ssl.SSLContext, path: str, request: Any, reply_type: Any) -> Any:
        host, port = split_address(address, self._port)
        channel = Channel(host, port, ssl=ctx)
        try:
            async with asyncio.timeout(self._timeout):
                async with channel.request(
                    path, Cardinality.UNARY_UNARY, type(request), reply_type, timeout=self._timeout
                ) as stream:
                    await stream.send_message(request, end=True)
                    return await stream.recv_message()
        finally:
            channel.close()

    async def _read_status(self, address: str, ctx: ssl.SSLContext) -> MachineStatus | None:
        request = messages.GetRequest(
            namespace=messages.MACHINE_STATUS_NAMESPACE,
            type=messages.MACHINE_STATUS_TYPE,
            id=messages.MACHINE_STATUS_ID,
        )
        reply = await self._unary(address, ctx, messages.STATE_GET_PATH, request, messages.GetResponse)
        return None if reply is None else machine_status(reply.resource)

    async def _probe_insecure(self, address: str, cert_error: ssl.SSLCertVerificationError) -> NodeProbe:
        why = _cert_unknown(cert_error)
        try:
            status = await self._read_status(address, self._insecure)
        except _CALL_ERRORS as exc:
            state, detail = _describe(exc, self._timeout)
            state = ProbeState.UNREACHABLE if state is ProbeState.BOOTING else state
            return NodeProbe(address, state, None, None, f"{why}, and the insecure read failed: {detail}")
        probe = _from_status(address, status, prefix=f"{why}, insecure read says ")
        if probe.state is ProbeState.MAINTENANCE:
            return probe
        # Not maintenance, yet the certificate is not ours: never call that RUNNING.
        return NodeProbe(address, ProbeState.BOOTING, probe.stage, probe.ready, probe.detail)

    async def probe(self, address: str) -> NodeProbe:
        """Stage and readiness of the node at ``address``; never raises for network trouble."""
        try:
            status = await self._read_status(address, self._mtls)
        except ssl.SSLCertVerificationError as exc:
            result = await self._probe_insecure(address, exc)
        except _CALL_ERRORS as exc:
            state, detail = _describe(exc, self._timeout)
            result = NodeProbe(address, state, None, None, detail)
        else:
            result = _from_status(address, status)
        log.debug("talos probe %s: %s (%s)", address, result.state.value, result.detail)
        return result

    async def probe_many(self, addresses: Iterable[str], *, concurrency: int = 32) -> dict[str, NodeProbe]:
        """Probe many nodes, at most ``concurrency`` at a time; keyed by address, in the order given."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(address: str) -> NodeProbe:
            async with gate:
                return await self.probe(address)

        unique = list(dict.fromkeys(addresses))
        results = await asyncio.gather(*(one(a) for a in unique))
        return dict(zip(unique, results, strict=True))

    async def version(self, address: str) -> str:
        """The Talos version tag (``"v1.12.0"``); falls back to an insecure read if the cert is unknown."""
        for ctx in (self._mtls, self._insecure):
            try:
                reply = await self._unary(
                    address, ctx, messages.VERSION_PATH, messages.Empty(), messages.VersionResponse
                )
            except ssl.SSLCertVerificationError:
                continue
            except _CALL_ERRORS as exc:
                state, detail = _describe(exc, self._timeout)
                raise TalosCallError(address, state, detail) from None
            if reply is None or not reply.messages:
                raise TalosCallError(address, ProbeState.UNREACHABLE, "Version returned no message")
            tag: str = reply.messages[0].version.tag
            return tag
        raise AssertionError("unreachable")  # pragma: no cover - the insecure context never verifies

    async def _force_refusal(self, address: str) -> RebootResult | None:
        try:
            tag = await self.version(address)
        except TalosCallError:
            return None  # the reboot attempt itself will say what is wrong
        parsed = parse_version(tag)
        if parsed is not None and parsed < FORCE_MIN_VERSION:
            return RebootResult(
                address, False, ProbeState.RUNNING,
                f"not sent: reboot mode force needs Talos v1.12 or later and the node runs {tag} "
                "(older Talos would silently do a default reboot)",
            )
        return None

    async def reboot(self, address: str, mode: str) -> RebootResult:
        """Ask the node to reboot with ``mode`` (powercycle, default or force). Never raises for network trouble."""
        key = mode.strip().lower()
        if key not in messages.REBOOT_MODES:
            raise ValueError(f"reboot mode must be one of {', '.join(messages.REBOOT_MODES)}, got {mode!r}")
        if key == "force":
            refused = await self._force_refusal(address)
            if refused is not None:
                log.info("talos reboot %s (%s): %s", address, key, refused.detail)
                return refused
        result = await self._send_reboot(address, key)
        log.info("talos reboot %s (%s): %s, %s", address, key, "accepted" if result.accepted else "not accepted",
                 result.detail)
        return result

    async def _send_reboot(self, address: str, mode: str) -> RebootResult:
        host, port = split_address(address, self._port)
        channel = Channel(host, port, ssl=self._mtls)
        sent = False
        try:
            async with asyncio.timeout(self._timeout):
                async with channel.request(
                    messages.REBOOT_PATH, Cardinality.UNARY_UNARY, messages.RebootRequest, messages.RebootResponse,
                    timeout=self._timeout,
                ) as stream:
                    await stream.send_message(messages.RebootRequest(mode=messages.REBOOT_MODES[mode]), end=True)
                    sent = True
                    reply = await stream.recv_message()
        except ssl.SSLCertVerificationError as exc:
            probe = await self._probe_insecure(address, exc)
            if probe.state is ProbeState.MAINTENANCE:
                return RebootResult(address, False, ProbeState.MAINTENANCE, f"not sent: node in maintenance mode; "
                                    f"{probe.detail}")
            return RebootResult(address, False, probe.state, f"not sent: {probe.detail}")
        except GRPCError as exc:
            return await self._reboot_refused(address, exc, sent)
        except TimeoutError:
            what = "sent, but" if sent else "not sent:"
            return RebootResult(address, False, ProbeState.UNREACHABLE,
                                f"{what} no answer within {self._timeout:g}s; the node may or may not be rebooting")
        except _CALL_ERRORS as exc:
            state, detail = _describe(exc, self._timeout)
            if sent and state is ProbeState.UNREACHABLE:
                return RebootResult(address, True, ProbeState.BOOTING, f"{detail} right after the request was sent; "
                                    "Talos reboots in the background, so the reboot is taken as accepted")
            return RebootResult(address, False, state, f"not accepted: {detail}")
        finally:
            channel.close()
        actor = reply.messages[0].actor_id if reply is not None and reply.messages else ""
        actor_text = f" (actor id {actor})" if actor else ""
        return RebootResult(address, True, ProbeState.BOOTING,
                            f"reboot ({mode}) accepted{actor_text}; Talos reboots in the background")

    async def _reboot_refused(self, address: str, exc: GRPCError, sent: bool) -> RebootResult:
        if exc.status is Status.UNAVAILABLE and sent:
            return RebootResult(address, True, ProbeState.BOOTING, f"UNAVAILABLE right after the request was sent "
                                f"({exc.message}); Talos reboots in the background, so the reboot is taken as accepted")
        state, detail = _describe(exc, self._timeout)
        if exc.status in (Status.UNIMPLEMENTED, Status.PERMISSION_DENIED):
            # How maintenance mode answers Reboot: Unimplemented (Talos ≤ 1.12), PermissionDenied (≥ 1.13).
            probe = await self.probe(address)
            if probe.state is ProbeState.MAINTENANCE:
                return RebootResult(address, False, ProbeState.MAINTENANCE,
                                    f"not accepted: {detail}; node in maintenance mode ({probe.detail})")
        return RebootResult(address, False, state, f"not accepted: {detail}")

    async def close(self) -> None:
        """Nothing stays open between calls; present for symmetry with :class:`SyncTalosClient`."""


class SyncTalosClient:
    """The same API, synchronous: one private event loop in a background thread runs a :class:`TalosClient`."""

    def __init__(self, config: TalosConfig, *, port: int = DEFAULT_PORT, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._client = TalosClient(config, port=port, timeout=timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="talos-client", daemon=True)
        self._thread.start()
        self._closed = False

    def __repr__(self) -> str:
        return f"Sync{self._client!r}"

    def __enter__(self) -> SyncTalosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T], calls: int = 1) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("SyncTalosClient is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # Each call inside is bounded by the timeout; this outer bound only guards against a wedged loop.
        return future.result(timeout=self._timeout * (3 * calls) + 5.0)

    def probe(self, address: str) -> NodeProbe:
        return self._run(self._client.probe(address))

    def probe_many(self, addresses: Iterable[str], *, concurrency: int = 32) -> dict[str, NodeProbe]:
        unique = list(dict.fromkeys(addresses))
        waves = max(1, math.ceil(len(unique) / max(1, concurrency)))
        return self._run(self._client.probe_many(unique, concurrency=concurrency), calls=waves)

    def reboot(self, address: str, mode: str) -> RebootResult:
        return self._run(self._client.reboot(address, mode), calls=2)

    def version(self, address: str) -> str:
        return self._run(self._client.version(address))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        self._loop.close()
