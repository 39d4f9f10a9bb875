"""What a Talos call comes to: the result values, and the rules that turn a failure or a reply into one.

Contract: pure values and pure functions, no I/O. :class:`ProbeState` names what a node's answer means
(running, booting, maintenance, unreachable, denied, untrusted); :class:`NodeProbe`, :class:`RebootResult` and
:class:`RebootObservation` are what :class:`~capi_rollout.adapters.talos.client.TalosClient` returns instead of
raising; :class:`TalosCallError` is the one exception, for a call that must return a value. :func:`describe`
classifies a transport or gRPC failure as a state and a human sentence (never key material);
:func:`probe_from_status` reads a MachineStatus into a probe; :func:`split_address`, :func:`parse_version` and
:func:`names_match` read addresses, version tags and node names.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from capi_rollout.adapters.talos.status import MachineStatus

DEFAULT_PORT = 50000

# Everything a call over the network can raise that means "no usable answer" (ssl.SSLError is an OSError).
CALL_ERRORS: tuple[type[BaseException], ...] = (
    GRPCError, OSError, TimeoutError, StreamTerminatedError, ProtocolError, ConnectionError,
)


HANDSHAKE_ERRORS: tuple[type[BaseException], ...] = (*CALL_ERRORS, ValueError)


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


def describe(exc: BaseException, timeout: float) -> tuple[ProbeState, str]:
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


def probe_from_status(address: str, status: MachineStatus | None, prefix: str = "") -> NodeProbe:
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


def names_match(node_name: str, names: Iterable[str]) -> bool:
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
