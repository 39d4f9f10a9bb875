"""Talos API client (async): the reads of :class:`~capi_rollout.adapters.talos.reader.TalosReader`, plus reboot
and its confirmation.

Contract: like the reads, every call dials the node itself, is bounded by ``timeout`` seconds and returns values,
not exceptions.

* :meth:`TalosClient.reboot` first confirms the node answering is the node meant when a node name is given
  (the Version reply's hostname and the verified certificate's SAN names must name it), reads the boot ID
  (like ``talosctl reboot --wait``), then sends ``machine.MachineService/Reboot`` with the mode. Talos answers
  at once and reboots in the background, so OK — or the connection dropping / UNAVAILABLE right after the
  request was sent — counts as accepted. A maintenance node is never sent a Reboot (it would answer
  Unimplemented up to Talos 1.12 and PermissionDenied from 1.13): the result is ``accepted=False,
  state=MAINTENANCE``. ``force`` exists only since Talos v1.12; older Talos would silently do a default reboot
  (proto3 keeps the unknown enum value and its sequencer only tests for POWERCYCLE), so the client reads the
  version first and refuses ``force`` on older nodes itself.
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
import logging
import ssl
from collections.abc import Callable
from dataclasses import replace

from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from capi_rollout.adapters.talos import messages
from capi_rollout.adapters.talos.outcomes import (
    CALL_ERRORS,
    ProbeState,
    RebootObservation,
    RebootResult,
    TalosCallError,
    describe,
    names_match,
    parse_version,
    split_address,
)
from capi_rollout.adapters.talos.reader import TalosReader

log = logging.getLogger(__name__)

FORCE_MIN_VERSION = (1, 12)


class TalosClient(TalosReader):
    """Async Talos API client for one talosconfig identity: reads and reboots. See the module docstring."""

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
        if who.hostname and names_match(node_name, [who.hostname]):
            return None, who.tag
        if not who.hostname and names_match(node_name, who.names):
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
        except CALL_ERRORS as exc:
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
        state, detail = describe(exc, self._timeout)
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
