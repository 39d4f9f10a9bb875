"""Talos API client: probe a node's stage, reboot it, read its version — over grpclib with Ed25519 mTLS.

Contract: every call dials the node itself (``address[:port]``, default port 50000, no ``node`` metadata so
no apid proxying), on a fresh connection closed afterwards, and is bounded by ``timeout`` seconds.
Results are values, not exceptions (except :meth:`TalosClient.version`, which raises
:class:`TalosCallError`):

* :meth:`TalosClient.probe` reads ``MachineStatus`` (``cosi.resource.State/Get``, namespace ``runtime``, type
  ``MachineStatuses.runtime.talos.dev``, id ``machine``) with the talosconfig's mTLS identity. When the
  node's certificate fails verification, the client reads that certificate without verifying it and lets
  :func:`.trust.judge` decide: only a *self-signed* certificate that is not the talosconfig CA — what a node in
  Talos maintenance mode presents — allows a reconnect with verification off and *no* client certificate
  (Talos grants ``os:reader``) to read the stage, and MAINTENANCE is reported only when the stage says so. A
  certificate of the talosconfig CA that is expired, not yet valid or issued for another address, or one of
  any other CA, is UNTRUSTED: never read without credentials, never rebooted. Every such detail carries the
  x509 reason and the certificate's SHA-256 fingerprint. PermissionDenied/Unauthenticated or a refused TLS
  handshake → DENIED; refused connections, resets and timeouts → UNREACHABLE — except that a connection ended
  after the handshake is DENIED when our client certificate's ExtKeyUsage is not exactly ClientAuth (Talos's apid
  refuses such a certificate in the handshake, which a TLS 1.3 client only sees as the connection ending).
* :meth:`TalosClient.reboot` first confirms the node answering is the node meant when a node name is given
  (the Version reply's hostname and the verified certificate's SAN names must name it), reads the boot ID
  (like ``talosctl reboot --wait``), then sends ``machine.MachineService/Reboot`` with the mode. Talos answers
  at once and reboots in the background, so OK — or the connection dropping / UNAVAILABLE right after the
  request was sent — counts as accepted. A maintenance node is never sent a Reboot (it would answer
  Unimplemented up to Talos 1.12 and PermissionDenied from 1.13): the result is ``accepted=False,
  state=MAINTENANCE``. ``force`` exists only since Talos v1.12; older Talos would silently do a default reboot
  (proto3 keeps the unknown enum value and its sequencer only tests for POWERCYCLE), so the client reads the
  version first and refuses ``force`` on older nodes itself. A maintenance node of Talos ≤ 1.12 answers Version
  without credentials Unimplemented (its maintenance server serves os:admin only): a MAINTENANCE error.
* :meth:`TalosClient.boot_id` reads ``/proc/sys/kernel/random/boot_id`` with ``MachineService/Read`` (what
  ``talosctl reboot --wait`` does; os:admin), else the ``BootIDs.runtime.talos.dev`` resource (Talos ≥ v1.14,
  any role); None when the node lets us read neither.
* :meth:`TalosClient.confirm_reboot` waits (bounded) until an accepted reboot is seen to happen: the boot ID
  changed, or — when the boot ID cannot be read — the API went away and came back (or came back in
  maintenance mode); when the node's Machine was just deleted (``removing``), the API going away is enough, as
  its infrastructure may never bring it back. Talos accepts a Reboot before its reboot sequence takes the lock
  and drops it while the node installs, upgrades or shuts down, so an actor id alone proves nothing.

Logs name addresses and outcomes only, never certificates or keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import math
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

import yaml
from google.protobuf.message import DecodeError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from capi_rollout.adapters.talos import messages
from capi_rollout.adapters.talos.config import TalosConfig
from capi_rollout.adapters.talos.status import MachineStatus, machine_status
from capi_rollout.adapters.talos.tls import insecure_client_context, mtls_client_context
from capi_rollout.adapters.talos.trust import Judgement, Validity, client_ext_key_usage, client_validity, judge

log = logging.getLogger(__name__)

DEFAULT_PORT = 50000
FORCE_MIN_VERSION = (1, 12)

T = TypeVar("T")

# Everything a call over the network can raise that means "no usable answer" (ssl.SSLError is an OSError).
_CALL_ERRORS: tuple[type[BaseException], ...] = (
    GRPCError, OSError, TimeoutError, StreamTerminatedError, ProtocolError, ConnectionError,
)


_HANDSHAKE_ERRORS: tuple[type[BaseException], ...] = (*_CALL_ERRORS, ValueError)


class ProbeState(StrEnum):
    RUNNING = "running"  # stage running and ready
    MAINTENANCE = "maintenance"  # Talos maintenance mode (no machine config)
    BOOTING = "booting"  # any other non-maintenance stage, or running but not ready
    UNREACHABLE = "unreachable"  # refused, reset, timed out, or no answer we could read
    DENIED = "denied"  # the node refused our identity (role, certificate)
    UNTRUSTED = "untrusted"  # the node's certificate is not one we may trust, and it is not maintenance mode


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
    boot_id: str | None = None  # the boot ID read right before the request (None: not readable)


@dataclass(frozen=True)
class RebootObservation:
    """Whether an accepted reboot was seen to happen within the bound, and how (or why not)."""

    address: str
    observed: bool
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




def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _names_match(node_name: str, names: Iterable[str]) -> bool:
    """Does one of ``names`` name ``node_name`` (case-insensitively; a short name matches its FQDN)?"""
    wanted = node_name.strip().lower().rstrip(".")
    for name in names:
        have = name.strip().lower().rstrip(".")
        if have and (have == wanted or have.split(".", 1)[0] == wanted or wanted.split(".", 1)[0] == have):
            return True
    return False


@dataclass(frozen=True)
class NodeIdentity:
    """Who answered at an address: the Version reply's hostname, its Talos version and the verified SAN names."""

    hostname: str
    tag: str
    names: tuple[str, ...]


class TalosClient:
    """Async Talos API client for one talosconfig identity. See the module docstring for the semantics."""

    def __init__(self, config: TalosConfig, *, port: int = DEFAULT_PORT, timeout: float = 10.0,
                 now: Callable[[], dt.datetime] = _utcnow) -> None:
        self._mtls = mtls_client_context(config.ca_pem, config.crt_pem, config.key_pem)
        self._insecure = insecure_client_context()
        self._ca_pem = config.ca_pem
        try:
            self._validity: Validity | None = client_validity(config.crt_pem)
            self._usage: tuple[str, ...] | None = client_ext_key_usage(config.crt_pem)
        except ValueError:
            self._validity = self._usage = None
        self._port = port
        self._timeout = timeout
        self._now = now

    def __repr__(self) -> str:
        return f"TalosClient(port={self._port}, timeout={self._timeout:g})"

    async def __aenter__(self) -> TalosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def client_validity(self) -> Validity | None:
        """The validity window of the talosconfig's client certificate (None when it does not parse)."""
        return self._validity

    @property
    def _usage_refused(self) -> bool:
        """Talos (apid) refuses our client certificate in the TLS handshake: its ExtKeyUsage is not [ClientAuth]."""
        return self._usage is not None and self._usage != ("ClientAuth",)

    def _client_note(self) -> str:
        """Why the node may have refused us: our own certificate outside its validity window or with an
        ExtKeyUsage Talos refuses ('' when fine)."""
        v, now = self._validity, self._now()
        note = ""
        if v is not None and v.not_after < now:
            note = f"; the talosconfig client certificate expired at {_ts(v.not_after)}"
        elif v is not None and v.not_before > now:
            note = f"; the talosconfig client certificate is not valid before {_ts(v.not_before)}"
        if self._usage_refused:
            note += (f"; the talosconfig client certificate's ExtKeyUsage is {', '.join(self._usage or ()) or 'absent'}"
                     ", not exactly ClientAuth: Talos refuses it in the TLS handshake")
        return note

    def _describe_mtls(self, exc: BaseException) -> tuple[ProbeState, str]:
        """:func:`_describe` for a call with our client certificate. Talos refuses a certificate it does not accept
        during the handshake; with TLS 1.3 the client's side has completed by then, so the refusal arrives as the
        connection ending. With a certificate Talos is known to refuse, that is DENIED, not an unreachable node."""
        state, detail = _describe(exc, self._timeout)
        dropped = not isinstance(exc, TimeoutError | ConnectionRefusedError | GRPCError)
        if state is ProbeState.UNREACHABLE and dropped and self._usage_refused:
            return ProbeState.DENIED, f"the node ended the connection after the TLS handshake ({detail})"
        return state, detail

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

    async def _peer_certificate(self, address: str, ctx: ssl.SSLContext) -> ssl.SSLObject | None:
        """Handshake only, to see the node's certificate; None when no handshake completes."""
        host, port = split_address(address, self._port)
        try:
            async with asyncio.timeout(self._timeout):
                _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
        except _HANDSHAKE_ERRORS:
            return None
        ssl_object: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
        writer.close()
        return ssl_object

    async def _judge(self, address: str, exc: ssl.SSLCertVerificationError) -> Judgement | None:
        """The verdict on the certificate that failed verification (read again, unverified); None if unreadable."""
        ssl_object = await self._peer_certificate(address, self._insecure)
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None
        host, _ = split_address(address, self._port)
        return judge(der, ca_pem=self._ca_pem, host=host, now=self._now(),
                     openssl_reason=str(exc.verify_message or exc.reason or ""))

    async def _read_status(self, address: str, ctx: ssl.SSLContext) -> MachineStatus | None:
        request = messages.GetRequest(
            namespace=messages.MACHINE_STATUS_NAMESPACE,
            type=messages.MACHINE_STATUS_TYPE,
            id=messages.MACHINE_STATUS_ID,
        )
        reply = await self._unary(address, ctx, messages.STATE_GET_PATH, request, messages.GetResponse)
        return None if reply is None else machine_status(reply.resource)

    async def _probe_insecure(self, address: str, cert_error: ssl.SSLCertVerificationError) -> NodeProbe:
        verdict = await self._judge(address, cert_error)
        if verdict is None:
            reason = f"x509: {cert_error.verify_message or cert_error.reason}"
            return NodeProbe(address, ProbeState.UNTRUSTED, None, None,
                             f"{reason}, and the certificate could not be read again to tell why; not trusted")
        if not verdict.may_be_maintenance:
            return NodeProbe(address, ProbeState.UNTRUSTED, None, None,
                             f"{verdict.detail}; not trusted: not read without credentials, never rebooted")
        try:
            status = await self._read_status(address, self._insecure)
        except _CALL_ERRORS as exc:
            state, detail = _describe(exc, self._timeout)
            state = ProbeState.UNREACHABLE if state is ProbeState.BOOTING else state
            return NodeProbe(address, state, None, None,
                             f"{verdict.detail}, and the insecure read failed: {detail}")
        probe = _from_status(address, status, prefix=f"{verdict.detail}; insecure read says ")
        if probe.state is ProbeState.MAINTENANCE:
            return probe
        # A self-signed certificate on a node that is not in maintenance mode: never trusted, never RUNNING.
        return NodeProbe(address, ProbeState.UNTRUSTED, probe.stage, probe.ready,
                         probe.detail + "; a self-signed certificate outside maintenance mode is not trusted")

    async def probe(self, address: str) -> NodeProbe:
        """Stage and readiness of the node at ``address``; never raises for network trouble."""
        try:
            status = await self._read_status(address, self._mtls)
        except ssl.SSLCertVerificationError as exc:
            result = await self._probe_insecure(address, exc)
        except _CALL_ERRORS as exc:
            state, detail = self._describe_mtls(exc)
            if state in (ProbeState.DENIED, ProbeState.UNREACHABLE):
                detail += self._client_note()
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

    async def _version_reply(self, address: str) -> Any:
        """The Version reply over mTLS, or — only for a maintenance-mode certificate — without credentials."""
        try:
            reply = await self._unary(address, self._mtls, messages.VERSION_PATH, messages.Empty(),
                                      messages.VersionResponse)
        except ssl.SSLCertVerificationError as exc:
            probe = await self._probe_insecure(address, exc)
            if probe.state is not ProbeState.MAINTENANCE:
                raise TalosCallError(address, probe.state, probe.detail) from None
            try:
                reply = await self._unary(address, self._insecure, messages.VERSION_PATH, messages.Empty(),
                                          messages.VersionResponse)
            except _CALL_ERRORS as exc2:
                # Talos ≤ 1.12's maintenance server serves Version to os:admin only (Unimplemented otherwise)
                _, detail = _describe(exc2, self._timeout)
                raise TalosCallError(address, ProbeState.MAINTENANCE, f"node in maintenance mode; Version without "
                                     f"credentials: {detail}; {probe.detail}") from None
        except _CALL_ERRORS as exc:
            state, detail = self._describe_mtls(exc)
            raise TalosCallError(address, state, detail + self._client_note()) from None
        if reply is None or not reply.messages:
            raise TalosCallError(address, ProbeState.UNREACHABLE, "Version returned no message")
        return reply.messages[0]

    async def version(self, address: str) -> str:
        """The Talos version tag (``"v1.12.0"``); read without credentials only from a maintenance-mode node."""
        tag: str = (await self._version_reply(address)).version.tag
        return tag

    async def versions(self, addresses: Iterable[str], *, concurrency: int = 32) -> dict[str, str]:
        """Version tags by address; a node that gives none maps to ``"unknown (<why>)"``."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(address: str) -> str:
            async with gate:
                try:
                    return await self.version(address)
                except TalosCallError as exc:
                    return f"unknown ({exc.detail})"

        unique = list(dict.fromkeys(addresses))
        return dict(zip(unique, await asyncio.gather(*(one(a) for a in unique)), strict=True))

    async def identify(self, address: str) -> NodeIdentity:
        """Who answers at ``address`` over verified mTLS: hostname (Version), version tag and the SAN names."""
        reply = await self._version_reply(address)
        ssl_object = await self._peer_certificate(address, self._mtls)
        names: tuple[str, ...] = ()
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        if peer:
            names = tuple(str(entry[1]) for entry in peer.get("subjectAltName", ()) if len(entry) == 2)
        return NodeIdentity(str(reply.metadata.hostname), str(reply.version.tag), names)

    async def _read_file(self, address: str, path: str) -> bytes:
        host, port = split_address(address, self._port)
        channel = Channel(host, port, ssl=self._mtls)
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self._timeout):
                async with channel.request(messages.READ_PATH, Cardinality.UNARY_STREAM, messages.ReadRequest,
                                           messages.Data, timeout=self._timeout) as stream:
                    await stream.send_message(messages.ReadRequest(path=path), end=True)
                    async for chunk in stream:
                        chunks.append(bytes(chunk.bytes))
        finally:
            channel.close()
        return b"".join(chunks)

    async def boot_id(self, address: str) -> str | None:
        """The node's boot ID (``talosctl reboot --wait``'s way, then the v1.14 resource); None when the node lets
        us read neither. Raises :class:`TalosCallError` when the node gives no usable answer at all."""
        try:
            text = (await self._read_file(address, messages.BOOT_ID_PATH)).decode("ascii", "replace").strip()
            if text:
                return text
        except GRPCError as exc:
            if exc.status not in (Status.PERMISSION_DENIED, Status.UNIMPLEMENTED, Status.NOT_FOUND):
                state, detail = _describe(exc, self._timeout)
                raise TalosCallError(address, state, detail) from None
        except _CALL_ERRORS as exc:
            state, detail = _describe(exc, self._timeout)
            raise TalosCallError(address, state, detail) from None
        request = messages.GetRequest(namespace=messages.MACHINE_STATUS_NAMESPACE, type=messages.BOOT_ID_TYPE,
                                      id=messages.BOOT_ID_ID)
        try:
            reply = await self._unary(address, self._mtls, messages.STATE_GET_PATH, request, messages.GetResponse)
        except GRPCError as exc:
            if exc.status in (Status.PERMISSION_DENIED, Status.UNIMPLEMENTED, Status.NOT_FOUND):
                return None
            state, detail = _describe(exc, self._timeout)
            raise TalosCallError(address, state, detail) from None
        except _CALL_ERRORS as exc:
            state, detail = _describe(exc, self._timeout)
            raise TalosCallError(address, state, detail) from None
        spec = reply.resource.spec if reply is not None else None
        return _boot_id_from_spec(spec) if spec is not None else None

    async def _identity_refusal(self, address: str, node_name: str) -> tuple[RebootResult | None, str | None]:
        """(a refusal, the version tag): refuse unless the node answering at ``address`` is ``node_name``."""
        try:
            who = await self.identify(address)
        except TalosCallError as exc:
            if exc.state is ProbeState.MAINTENANCE:
                return RebootResult(address, False, ProbeState.MAINTENANCE,
                                    f"not sent: node in maintenance mode; {exc.detail}"), None
            return RebootResult(address, False, exc.state, f"not sent: could not confirm that {address} is node "
                                f"{node_name}: {exc.detail}"), None
        if who.hostname and _names_match(node_name, [who.hostname]):
            return None, who.tag
        if not who.hostname and _names_match(node_name, who.names):
            return None, who.tag
        said = f"hostname {who.hostname!r}" if who.hostname else "no hostname"
        names = ", ".join(who.names) or "none"
        return RebootResult(address, False, ProbeState.UNTRUSTED,
                            f"not sent: the node answering at {address} is not node {node_name} (its Version reply "
                            f"says {said}; its certificate names {names}); the Machine's address may have been "
                            "reused by another node"), who.tag

    def _force_refusal(self, address: str, tag: str) -> RebootResult | None:
        parsed = parse_version(tag)
        if parsed is not None and parsed < FORCE_MIN_VERSION:
            return RebootResult(
                address, False, ProbeState.RUNNING,
                f"not sent: reboot mode force needs Talos v1.12 or later and the node runs {tag} "
                "(older Talos would silently do a default reboot)",
            )
        return None

    async def reboot(self, address: str, mode: str, *, node_name: str | None = None) -> RebootResult:
        """Ask the node to reboot with ``mode`` (powercycle, default or force); with ``node_name``, only when the
        node answering at ``address`` is that node. Never raises for network trouble."""
        key = mode.strip().lower()
        if key not in messages.REBOOT_MODES:
            raise ValueError(f"reboot mode must be one of {', '.join(messages.REBOOT_MODES)}, got {mode!r}")
        tag: str | None = None
        refused: RebootResult | None = None
        if node_name:
            refused, tag = await self._identity_refusal(address, node_name)
        if refused is None and key == "force":
            if tag is None:
                with contextlib.suppress(TalosCallError):  # the reboot attempt itself will say what is wrong
                    tag = await self.version(address)
            refused = self._force_refusal(address, tag) if tag is not None else None
        if refused is not None:
            log.info("talos reboot %s (%s): %s", address, key, refused.detail)
            return refused
        before: str | None = None
        with contextlib.suppress(TalosCallError):
            before = await self.boot_id(address)
        result = await self._send_reboot(address, key)
        result = replace(result, boot_id=before)
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
            state, detail = self._describe_mtls(exc)
            if sent and state is ProbeState.UNREACHABLE:
                return RebootResult(address, True, ProbeState.BOOTING, f"{detail} right after the request was sent; "
                                    "Talos reboots in the background, so the reboot is taken as accepted")
            return RebootResult(address, False, state, f"not accepted: {detail}{self._client_note()}")
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

    async def confirm_reboot(self, address: str, boot_id_before: str | None, *, within: float, interval: float,
                             on_wait: Callable[[float], None] | None = None,
                             removing: bool = False) -> RebootObservation:
        """Wait at most ``within`` seconds for an accepted reboot to be seen (module docstring); poll every
        ``interval`` seconds and call ``on_wait(elapsed)`` after each look that saw nothing yet. ``removing``:
        the node's Machine was just deleted, so its infrastructure may never bring it back: the API going away
        is then enough (a dropped reboot never takes the API away)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        went_away = False
        last = boot_id_before
        while True:
            try:
                current = await self.boot_id(address)
            except TalosCallError:
                probe = await self.probe(address)
                if probe.state is ProbeState.UNREACHABLE:
                    went_away = True
                    if removing:
                        return RebootObservation(address, True, "the Talos API went away after its Machine was "
                                                 "deleted (rebooting, or the node is being removed)")
                elif probe.state is ProbeState.MAINTENANCE:
                    return RebootObservation(address, True, "the node came back in Talos maintenance mode")
            else:
                last = current if current is not None else last
                if boot_id_before is not None and current is not None and current != boot_id_before:
                    return RebootObservation(address, True, f"boot id changed ({boot_id_before[:8]}… → "
                                             f"{current[:8]}…)")
                if (boot_id_before is None or current is None) and went_away:
                    return RebootObservation(address, True, "the Talos API went away and came back "
                                             "(boot id not readable with this talosconfig)")
            elapsed = loop.time() - started
            if elapsed >= within:
                break
            if on_wait is not None:
                on_wait(elapsed)
            await asyncio.sleep(max(0.0, min(interval, within - elapsed)))
        bound = f"{within:g}s"
        if went_away:
            why = "the Talos API went away and did not come back"
        elif boot_id_before is not None:
            why = f"the boot id is still {(last or boot_id_before)[:8]}… and the API never went away"
        else:
            why = "the Talos API never went away (boot id not readable with this talosconfig)"
        return RebootObservation(address, False, f"reboot requested but not observed within {bound}: {why}; "
                                 "Talos drops a reboot while the node installs, upgrades or shuts down")

    async def close(self) -> None:
        """Nothing stays open between calls; present for symmetry with :class:`SyncTalosClient`."""


def _boot_id_from_spec(spec: Any) -> str | None:
    """The boot ID of a ``BootIDs.runtime.talos.dev`` resource spec (YAML ``bootID`` first, then protobuf)."""
    if spec.yaml_spec:
        try:
            doc = yaml.safe_load(spec.yaml_spec)
        except yaml.YAMLError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("bootID"), str) and doc["bootID"]:
            return str(doc["bootID"])
    if spec.proto_spec:
        with contextlib.suppress(DecodeError):
            value = str(messages.BootIDSpec.FromString(spec.proto_spec).boot_id)
            return value or None
    return None


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

    def _run(self, coro: Coroutine[Any, Any, T], calls: int = 1, extra: float = 0.0) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("SyncTalosClient is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # Each call inside is bounded by the timeout; this outer bound only guards against a wedged loop.
        return future.result(timeout=self._timeout * (3 * calls) + 5.0 + extra)

    @property
    def client_validity(self) -> Validity | None:
        return self._client.client_validity

    def probe(self, address: str) -> NodeProbe:
        return self._run(self._client.probe(address))

    def probe_many(self, addresses: Iterable[str], *, concurrency: int = 32) -> dict[str, NodeProbe]:
        unique = list(dict.fromkeys(addresses))
        waves = max(1, math.ceil(len(unique) / max(1, concurrency)))
        return self._run(self._client.probe_many(unique, concurrency=concurrency), calls=waves)

    def reboot(self, address: str, mode: str, *, node_name: str | None = None) -> RebootResult:
        return self._run(self._client.reboot(address, mode, node_name=node_name), calls=5)

    def confirm_reboot(self, address: str, boot_id_before: str | None, *, within: float, interval: float,
                       on_wait: Callable[[float], None] | None = None, removing: bool = False) -> RebootObservation:
        calls = 4 * (math.ceil(within / max(interval, 0.01)) + 2)
        return self._run(self._client.confirm_reboot(address, boot_id_before, within=within, interval=interval,
                                                     on_wait=on_wait, removing=removing), calls=calls, extra=within)

    def version(self, address: str) -> str:
        return self._run(self._client.version(address), calls=3)

    def versions(self, addresses: Iterable[str], *, concurrency: int = 32) -> dict[str, str]:
        unique = list(dict.fromkeys(addresses))
        waves = max(1, math.ceil(len(unique) / max(1, concurrency)))
        return self._run(self._client.versions(unique, concurrency=concurrency), calls=3 * waves)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        self._loop.close()
