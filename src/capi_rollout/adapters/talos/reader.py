"""Talos API reads (async): probe a node's stage, read its version, its identity and its boot ID — over grpclib
with Ed25519 mTLS.

Contract: every call dials the node itself (``address[:port]``, default port 50000, no ``node`` metadata so
no apid proxying), on a fresh connection closed afterwards, and is bounded by ``timeout`` seconds.
Results are values, not exceptions (except :meth:`TalosReader.version`, which raises
:class:`~capi_rollout.adapters.talos.outcomes.TalosCallError`; the values and the failure rules are in
:mod:`.outcomes`, the reboot on top of these reads in :mod:`.client`, the blocking form in :mod:`.sync`):

* :meth:`TalosReader.probe` reads ``MachineStatus`` (``cosi.resource.State/Get``, namespace ``runtime``, type
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
* :meth:`TalosReader.version` / :meth:`TalosReader.identify`: the Version reply (tag, hostname) over mTLS, and the
  verified certificate's SAN names. A maintenance node of Talos ≤ 1.12 answers Version without credentials
  Unimplemented (its maintenance server serves os:admin only): a MAINTENANCE error.
* :meth:`TalosReader.boot_id` reads ``/proc/sys/kernel/random/boot_id`` with ``MachineService/Read`` (what
  ``talosctl reboot --wait`` does; os:admin), else the ``BootIDs.runtime.talos.dev`` resource (Talos ≥ v1.14,
  any role); None when the node lets us read neither.

Logs name addresses and outcomes only, never certificates or keys.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Self

from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from capi_rollout.adapters.talos import messages
from capi_rollout.adapters.talos.config import TalosConfig
from capi_rollout.adapters.talos.outcomes import (
    CALL_ERRORS,
    DEFAULT_PORT,
    HANDSHAKE_ERRORS,
    NodeIdentity,
    NodeProbe,
    ProbeState,
    TalosCallError,
    describe,
    probe_from_status,
    split_address,
)
from capi_rollout.adapters.talos.status import MachineStatus, boot_id_from_spec, machine_status
from capi_rollout.adapters.talos.tls import insecure_client_context, mtls_client_context
from capi_rollout.adapters.talos.trust import Judgement, Validity, client_ext_key_usage, client_validity, judge

log = logging.getLogger(__name__)



def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TalosReader:
    """Async Talos API reads for one talosconfig identity. See the module docstring for the semantics."""

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
        return f"{type(self).__name__}(port={self._port}, timeout={self._timeout:g})"

    async def __aenter__(self) -> Self:
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
        """:func:`.outcomes.describe` for a call with our client certificate. Talos refuses a certificate it does not
        accept during the handshake; with TLS 1.3 the client's side has completed by then, so the refusal arrives as
        the connection ending. With a certificate Talos is known to refuse, that is DENIED, not an unreachable node."""
        state, detail = describe(exc, self._timeout)
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
        except HANDSHAKE_ERRORS:
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
        except CALL_ERRORS as exc:
            state, detail = describe(exc, self._timeout)
            state = ProbeState.UNREACHABLE if state is ProbeState.BOOTING else state
            return NodeProbe(address, state, None, None,
                             f"{verdict.detail}, and the insecure read failed: {detail}")
        probe = probe_from_status(address, status, prefix=f"{verdict.detail}; insecure read says ")
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
        except CALL_ERRORS as exc:
            state, detail = self._describe_mtls(exc)
            if state in (ProbeState.DENIED, ProbeState.UNREACHABLE):
                detail += self._client_note()
            result = NodeProbe(address, state, None, None, detail)
        else:
            result = probe_from_status(address, status)
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
            except CALL_ERRORS as exc2:
                # Talos ≤ 1.12's maintenance server serves Version to os:admin only (Unimplemented otherwise)
                _, detail = describe(exc2, self._timeout)
                raise TalosCallError(address, ProbeState.MAINTENANCE, f"node in maintenance mode; Version without "
                                     f"credentials: {detail}; {probe.detail}") from None
        except CALL_ERRORS as exc:
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
                state, detail = describe(exc, self._timeout)
                raise TalosCallError(address, state, detail) from None
        except CALL_ERRORS as exc:
            state, detail = describe(exc, self._timeout)
            raise TalosCallError(address, state, detail) from None
        request = messages.GetRequest(namespace=messages.MACHINE_STATUS_NAMESPACE, type=messages.BOOT_ID_TYPE,
                                      id=messages.BOOT_ID_ID)
        try:
            reply = await self._unary(address, self._mtls, messages.STATE_GET_PATH, request, messages.GetResponse)
        except GRPCError as exc:
            if exc.status in (Status.PERMISSION_DENIED, Status.UNIMPLEMENTED, Status.NOT_FOUND):
                return None
            state, detail = describe(exc, self._timeout)
            raise TalosCallError(address, state, detail) from None
        except CALL_ERRORS as exc:
            state, detail = describe(exc, self._timeout)
            raise TalosCallError(address, state, detail) from None
        spec = reply.resource.spec if reply is not None else None
        return boot_id_from_spec(spec) if spec is not None else None

    async def close(self) -> None:
        """Nothing stays open between calls; present for symmetry with :class:`SyncTalosClient`."""
