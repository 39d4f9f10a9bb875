"""What a running phase will do next, and when: ``plan`` mid-rollout.

Contract: pure. :func:`forecast` asks :func:`capi_rollout.domain.decide.decide` twice with the same observed state
and the run's phase record: once ``now`` and, when that is a plain wait, once at the next moment the decision can
change by itself — the stall deadline (``lastProgress + stallTimeout``) or the phase timeout, whichever comes first.
If nothing moves until then, the running workflow does exactly that (its loop evaluates the same rules), so the
answer reads: ``stalled for 7m of 10m: at 10:52 it will delete Machine demo-cp-3 and reboot 10.0.0.7``.
Talos is not asked (``nodes`` as given, usually none): a node found in maintenance mode at that moment fails the
phase instead, which the sentence cannot foresee.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from capi_rollout.domain.decide import Action, decide, phase_timeout
from capi_rollout.domain.ledger import PHASE_TITLES, PhaseRecord
from capi_rollout.domain.params import Params, format_duration
from capi_rollout.domain.state import ClusterState, NodeStatus


@dataclass(frozen=True)
class Forecast:
    phase: str
    kind: str  # complete | wait | remediate | fail: what happens at ``at``
    at: datetime
    stalled_seconds: float
    stall_timeout: float
    machine: str | None
    delete: bool
    reboot: str | None  # the address rebooted
    reason: str
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "kind": self.kind, "at": self.at.isoformat().replace("+00:00", "Z"),
                "stalledSeconds": round(self.stalled_seconds, 3), "stallTimeoutSeconds": self.stall_timeout,
                "machine": self.machine, "delete": self.delete, "reboot": self.reboot, "reason": self.reason,
                "sentence": self.sentence}


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S") if at.second else at.strftime("%H:%M")


def _deed(action: Action) -> str:
    m = action.machine
    parts = [f"delete Machine {m.name}" if action.delete and m else "",
             f"reboot {m.address}" if action.reboot and m and m.address else ""]
    return " and ".join(p for p in parts if p) or "remediate nothing (nothing to delete or reboot)"


def forecast(*, phase: str, state: ClusterState, record: PhaseRecord, now: datetime, params: Params,
             nodes: Mapping[str, NodeStatus] | None = None) -> Forecast:
    """The next thing the phase will do and when, if nothing moves meanwhile (see the module docstring)."""
    nodes = nodes or {}
    first = decide(phase=phase, state=state, record=record, nodes=nodes, now=now, params=params)
    rec = first.record
    stalled = max((now - rec.last_progress).total_seconds(), 0.0)
    stall = f"stalled for {format_duration(stalled)} of {format_duration(params.stall_timeout)}"
    action, at = first, now
    if first.kind == "wait":
        ahead = [d for d in (rec.last_progress + timedelta(seconds=params.stall_timeout),
                             rec.started + timedelta(seconds=phase_timeout(phase, params))) if d > now]
        if ahead:
            at = min(ahead)
            action = decide(phase=phase, state=state, record=rec, nodes=nodes, now=at, params=params)
    title = PHASE_TITLES[phase]
    when = "now" if at == now else f"at {_clock(at)}"
    if action.kind == "complete":
        sentence = f"{title}: complete; the phase ends {when}"
    elif action.kind == "remediate":
        sentence = f"{title}: {stall}: {when} it will {_deed(action)}"
    elif action.kind == "fail":
        sentence = f"{title}: {stall}: {when} it will fail: {action.reason}"
    else:
        sentence = f"{title}: {stall}: {when} it will still wait: {action.reason}"
    m = action.machine
    return Forecast(phase=phase, kind=action.kind, at=at, stalled_seconds=stalled, stall_timeout=params.stall_timeout,
                    machine=m.name if m else None, delete=action.delete,
                    reboot=m.address if action.reboot and m else None, reason=action.reason, sentence=sentence)
