"""The run's ledger: what was resolved, each phase's clocks and every remediation — the memory of a run.

Contract: pure data with JSON round-tripping (``to_json`` / ``from_json``). The executor persists it (a
ConfigMap owned by the Workflow) after every change, so a crashed or retried step resumes with the same phase
start, the same stall clock and the same remediation count: a retry never exceeds ``maxRemediations`` and never
gets a fresh timeout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from capi_rollout.domain.model import parse_time

PHASES = ("control-plane", "workers")
PHASE_TITLES = {"control-plane": "control plane", "workers": "workers"}


def _ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@dataclass(frozen=True)
class Remediation:
    at: datetime
    machine: str
    node: str | None
    address: str | None
    reason: str
    reboot_mode: str
    deleted: bool
    rebooted: bool
    outcome: str
    dry_run: bool = False
    reboot_observed: bool | None = None  # None: no reboot accepted (or dry run); False: "requested but not observed"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = _ts(self.at)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Remediation:
        at = parse_time(d.get("at"))
        if at is None:
            raise ValueError("remediation without a valid 'at' time")
        return cls(**{**d, "at": at})


@dataclass(frozen=True)
class PhaseRecord:
    """One phase's state. ``result`` is None while it runs, then ``succeeded`` or ``failed``."""

    name: str
    started: datetime
    last_progress: datetime
    fingerprint: str = ""
    finished: datetime | None = None
    result: str | None = None
    message: str = ""
    remediations: tuple[Remediation, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started": _ts(self.started),
            "lastProgress": _ts(self.last_progress),
            "fingerprint": self.fingerprint,
            "finished": _ts(self.finished),
            "result": self.result,
            "message": self.message,
            "remediations": [r.to_dict() for r in self.remediations],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhaseRecord:
        started = parse_time(d.get("started"))
        if started is None:
            raise ValueError(f"phase {d.get('name')!r} has no valid start time")
        return cls(
            name=str(d["name"]),
            started=started,
            last_progress=parse_time(d.get("lastProgress")) or started,
            fingerprint=str(d.get("fingerprint") or ""),
            finished=parse_time(d.get("finished")),
            result=d.get("result"),
            message=str(d.get("message") or ""),
            remediations=tuple(Remediation.from_dict(r) for r in d.get("remediations") or []),
        )

    @property
    def counted_remediations(self) -> int:
        return len(self.remediations)


@dataclass(frozen=True)
class Ledger:
    """Everything a run has learnt and done, keyed by phase name."""

    cluster: str
    namespace: str
    targets: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    preflight: str | None = None
    phases: dict[str, PhaseRecord] = field(default_factory=dict)
    failure: str | None = None  # why resolve failed, for the summary (preflight and phases have their own)

    def phase(self, name: str) -> PhaseRecord | None:
        return self.phases.get(name)

    def with_phase(self, record: PhaseRecord) -> Ledger:
        return replace(self, phases={**self.phases, record.name: record})

    def to_json(self) -> str:
        return json.dumps(
            {
                "cluster": self.cluster,
                "namespace": self.namespace,
                "targets": self.targets,
                "warnings": list(self.warnings),
                "preflight": self.preflight,
                "phases": {k: v.to_dict() for k, v in self.phases.items()},
                "failure": self.failure,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Ledger:
        d = json.loads(text)
        return cls(
            cluster=str(d["cluster"]),
            namespace=str(d["namespace"]),
            targets=dict(d.get("targets") or {}),
            warnings=tuple(d.get("warnings") or ()),
            preflight=d.get("preflight"),
            phases={k: PhaseRecord.from_dict(v) for k, v in (d.get("phases") or {}).items()},
            failure=d.get("failure"),
        )
