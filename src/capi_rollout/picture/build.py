"""A :class:`~capi_rollout.picture.model.Picture` from lifecycle events and a ledger.

Contract: pure. Inputs:

* :class:`Lifecycle` events — ``(at, machine, state, role)`` with ``state`` one of
  :data:`~capi_rollout.picture.model.STATES` or ``deleted``. :func:`from_timeline` makes them from a simulator's
  timeline rows (``machine.created``, ``machine.phase``, ``machine.ready``, ``machine.deleting``, ...);
  :func:`from_cluster` from the Machines still there and the namespace's Events (a real run: what Kubernetes
  still remembers, Events expire after the API server's ``--event-ttl``, 1 h by default);
* the ledger as JSON (``Ledger.to_json`` parsed): its phases become bands, each remediation a mark on its
  Machine's row with the stall before it (``stallTimeout`` long, when known) and, when the node was rebooted,
  a reboot mark (unless the timeline already has the reboot);
* reboot rows (``at, machine, label``) the fake Talos saw.

A Machine's span lasts until its next state; the last one until it is deleted or the picture ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from capi_rollout.domain.ledger import PHASE_TITLES
from capi_rollout.picture.model import STATES, Band, Mark, Picture, Span, Track

_SIM_PHASES = {"Pending": "created", "Provisioning": "provisioning", "Provisioned": "provisioning",
               "Running": "running", "Deleting": "deleting", "Failed": "running"}


@dataclass(frozen=True)
class Lifecycle:
    at: float
    machine: str
    state: str  # one of STATES or "deleted"
    role: str = ""


def epoch(value: Any) -> float | None:
    """RFC 3339 text (``...Z``) -> seconds since the epoch; None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def from_timeline(rows: Iterable[tuple[float, str, str, Mapping[str, Any]]],
                  ) -> tuple[list[Lifecycle], list[Mark]]:
    """Lifecycle events and reboot marks from a simulator's timeline: ``(wall, kind, subject, details)`` rows."""
    events: list[Lifecycle] = []
    reboots: list[Mark] = []
    roles: dict[str, str] = {}
    for at, kind, subject, details in rows:
        if kind == "machine.created":
            roles[subject] = "control plane" if details.get("role") == "cp" else "worker"
            events.append(Lifecycle(at, subject, "created", roles[subject]))
        elif kind == "machine.phase" and str(details.get("phase")) in _SIM_PHASES:
            events.append(Lifecycle(at, subject, _SIM_PHASES[str(details["phase"])], roles.get(subject, "")))
        elif kind in ("machine.ready", "machine.not-ready"):
            events.append(Lifecycle(at, subject, "ready" if kind == "machine.ready" else "running",
                                    roles.get(subject, "")))
        elif kind == "machine.deleting":
            events.append(Lifecycle(at, subject, "deleting", roles.get(subject, "")))
        elif kind in ("machine.deleted", "machine.gone"):
            events.append(Lifecycle(at, subject, "deleted", roles.get(subject, "")))
        elif kind == "talos.reboot":
            where = f" {details['address']}" if details.get("address") else ""
            reboots.append(Mark("reboot", at, f"reboot{where} ({details.get('mode', '?')})", machine=subject))
    return events, reboots


_CREATED = re.compile(r"[Cc]reated machine \"?([a-z0-9.-]+)\"?")
_DELETED = re.compile(r"[Dd]elet(?:ed|ing) machine \"?([a-z0-9.-]+)\"?")


def from_cluster(machines: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]) -> list[Lifecycle]:
    """Lifecycle events of a real run: each Machine still there (created, Ready since, deleting since) and what
    the namespace's Events say of Machines (``Created machine X`` / ``Deleted machine X`` from their owners,
    Events on a Machine itself)."""
    out: list[Lifecycle] = []
    for m in machines:
        md = m.get("metadata") or {}
        name = str(md.get("name", ""))
        role = "control plane" if "cluster.x-k8s.io/control-plane" in (md.get("labels") or {}) else "worker"
        if (at := epoch(md.get("creationTimestamp"))) is not None:
            out.append(Lifecycle(at, name, "created", role))
        for c in (m.get("status") or {}).get("conditions") or []:
            ready = isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
            if ready and (at := epoch(c.get("lastTransitionTime"))) is not None:
                out.append(Lifecycle(at, name, "ready", role))
        if (at := epoch(md.get("deletionTimestamp"))) is not None:
            out.append(Lifecycle(at, name, "deleting", role))
    for e in events:
        at = epoch(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp"))
        if at is None:
            continue
        message = str(e.get("message") or "")
        involved = e.get("involvedObject") or {}
        if (found := _CREATED.search(message)) is not None:
            out.append(Lifecycle(at, found.group(1), "created"))
        elif (found := _DELETED.search(message)) is not None:
            out.append(Lifecycle(at, found.group(1), "deleting"))
        elif involved.get("kind") == "Machine" and "NodeRef" in str(e.get("reason") or ""):
            out.append(Lifecycle(at, str(involved.get("name", "")), "running"))
    return out


def _tracks(events: Sequence[Lifecycle], end: float) -> list[Track]:
    by_machine: dict[str, list[Lifecycle]] = {}
    for e in sorted(events, key=lambda e: e.at):
        by_machine.setdefault(e.machine, []).append(e)
    tracks = []
    for name, evs in by_machine.items():
        role = next((e.role for e in evs if e.role), "")
        spans: list[Span] = []
        deleted = None
        for i, e in enumerate(evs):
            if e.state == "deleted":
                deleted = e.at
                break
            if spans and spans[-1].state == e.state:
                continue
            stop = next((n.at for n in evs[i + 1:] if n.state != e.state), end)
            spans.append(Span(e.state, e.at, max(stop, e.at)))
        tracks.append(Track(name, role, tuple(spans), deleted))
    # control plane first, then by the time each Machine appeared
    return sorted(tracks, key=lambda t: (t.role != "control plane", t.spans[0].start if t.spans else end, t.machine))


def _clip(track: Track, start: float) -> Track:
    spans = tuple(Span(s.state, max(s.start, start), s.end) for s in track.spans if s.end >= start)
    return Track(track.machine, track.role, spans, track.deleted)


def build(*, title: str, events: Sequence[Lifecycle], ledger: Mapping[str, Any] | None = None,
          reboots: Sequence[Mark] = (), stall_timeout: float | None = None, start: float | None = None,
          end: float | None = None, subtitle: str = "") -> Picture:
    """The picture (see the module docstring). ``start`` (e.g. the rollout's trigger) cuts what came before
    (Machines older than it start at the left edge; those gone before it are left out); ``end`` defaults to the
    last thing known."""
    phases = (ledger or {}).get("phases") or {}
    times = [e.at for e in events] + [m.at for m in reboots]
    for rec in phases.values():
        times += [t for t in (epoch(rec.get("started")), epoch(rec.get("finished"))) if t is not None]
        times += [t for r in rec.get("remediations") or [] if (t := epoch(r.get("at"))) is not None]
    last = end if end is not None else (max(times) if times else 0.0)
    first = start if start is not None else (min(times) if times else last)
    marks: list[Mark] = list(reboots)
    bands: list[Band] = []
    for name, rec in phases.items():
        started = epoch(rec.get("started"))
        if started is None:
            continue
        finished = epoch(rec.get("finished"))
        bands.append(Band(PHASE_TITLES.get(name, name), started, finished if finished is not None else last,
                          str(rec.get("result") or "running")))
        for i, r in enumerate(rec.get("remediations") or [], start=1):
            at = epoch(r.get("at"))
            if at is None:
                continue
            machine = str(r.get("machine", ""))
            deeds = [f"delete {machine}" if r.get("deleted") else "",
                     f"reboot {r.get('address')}" if r.get("rebooted") and r.get("address") else ""]
            did = ", ".join(d for d in deeds if d) or "nothing done"
            marks.append(Mark("remediation", at, f"remediation {i}: {did}", machine=machine))
            if stall_timeout:
                marks.append(Mark("stall", at, f"stalled {stall_timeout:g}s", machine=machine,
                                  since=max(at - stall_timeout, first)))
            if r.get("rebooted") and not any(m.kind == "reboot" and m.machine == machine for m in reboots):
                marks.append(Mark("reboot", at, f"reboot {r.get('address') or ''} ({r.get('reboot_mode')})".strip(),
                                  machine=machine))
    known = {e.machine for e in events}
    events = [*events, *(Lifecycle(m.at, m.machine, "deleting") for m in marks  # the ledger's word for a Machine
                         if m.kind == "remediation" and m.machine and m.machine not in known)]  # nothing else shows
    tracks = [_clip(t, first) for t in _tracks(events, last)]
    return Picture(title=title, start=first, end=max(last, first), tracks=tuple(t for t in tracks if t.spans),
                   marks=tuple(sorted(marks, key=lambda m: m.at)), bands=tuple(bands), subtitle=subtitle)


__all__ = ["STATES", "Lifecycle", "build", "epoch", "from_cluster", "from_timeline"]
