"""The run's ledger: what was resolved, each phase's clocks and every remediation — the memory of a run.

Contract: pure data with JSON round-tripping (``to_json`` / ``from_json``). The executor persists it (a
ConfigMap owned by the Workflow) after every change, so a crashed or retried step resumes with the same phase
start, the same stall clock and the same remediation count: a retry never exceeds ``maxRemediations`` and never
gets a fresh timeout.

``from_json`` trusts nothing: the ledger is read back from a ConfigMap (or a ``plan --ledger`` file) that
someone else could have written. Any deviation from the schema ``to_json`` writes raises :class:`LedgerError`
naming the field; :meth:`Ledger.check_belongs_to` refuses a ledger of another cluster.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from capi_rollout.domain.model import parse_time

PHASES = ("control-plane", "workers")
RESULTS = (None, "succeeded", "failed")
MAX_LEDGER_CHARS = 1024 * 1024  # a ConfigMap holds at most 1 MiB


class LedgerError(ValueError):
    """The ledger text does not follow the schema ``Ledger.to_json`` writes; the message names the field."""


def _field(d: dict[str, Any], key: str, kinds: type | tuple[type, ...], where: str, *, optional: bool = False) -> Any:
    if key not in d or (optional and d[key] is None):
        if optional:
            return None
        raise LedgerError(f"{where}: missing field {key!r}")
    value = d[key]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join(k.__name__ for k in allowed)
        raise LedgerError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _time(d: dict[str, Any], key: str, where: str, *, optional: bool = False) -> datetime | None:
    text = _field(d, key, str, where, optional=optional)
    if text is None:
        return None
    parsed = parse_time(text)
    if parsed is None:
        raise LedgerError(f"{where}: field {key!r} is not an RFC 3339 time: {text[:40]!r}")
    return parsed


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LedgerError(f"{where}: must be a JSON object, got {type(value).__name__}")
    return value


_TARGET_FIELDS = ("cluster", "namespace", "capi_version", "control_plane", "deployments", "talosconfig_secret")
PHASE_TITLES = {"control-plane": "control plane", "workers": "workers"}


def _ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


INTENT_OUTCOME = "started"  # a remediation's outcome while only its intent is written (it may be acting now)


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
    def from_dict(cls, d: Any, where: str = "remediation") -> Remediation:
        d = _object(d, where)
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise LedgerError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
        at = _time(d, "at", where)
        assert at is not None
        return cls(
            at=at,
            machine=_field(d, "machine", str, where),
            node=_field(d, "node", str, where, optional=True),
            address=_field(d, "address", str, where, optional=True),
            reason=_field(d, "reason", str, where),
            reboot_mode=_field(d, "reboot_mode", str, where),
            deleted=_field(d, "deleted", bool, where),
            rebooted=_field(d, "rebooted", bool, where),
            outcome=_field(d, "outcome", str, where),
            dry_run=bool(_field(d, "dry_run", bool, where, optional=True)),
            reboot_observed=_field(d, "reboot_observed", bool, where, optional=True),
        )


MAX_SEEN = 256  # states a phase remembers: a flap between them is not progress


def _strings(values: list[Any], where: str) -> tuple[str, ...]:
    if len(values) > MAX_SEEN or not all(isinstance(v, str) and len(v) <= 64 for v in values):
        raise LedgerError(f"{where}: must be at most {MAX_SEEN} strings of at most 64 characters")
    return tuple(values)


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
    waiting: str = ""  # why the phase waits when that is not plain progress (skip annotation, guard, budget, …)
    replaced: str = ""  # "N/M": Machines replaced / to replace at the last evaluation (domain.replacement)
    seen: tuple[str, ...] = ()  # fingerprints of the states this phase has been in (most recent last, bounded)

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
            "waiting": self.waiting,
            "replaced": self.replaced,
            "seen": list(self.seen),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "phase") -> PhaseRecord:
        d = _object(d, where)
        name = _field(d, "name", str, where)
        if name not in PHASES:
            raise LedgerError(f"{where}: unknown phase name {name[:40]!r} (known: {', '.join(PHASES)})")
        started = _time(d, "started", where)
        assert started is not None
        result = _field(d, "result", str, where, optional=True)
        if result not in RESULTS:
            raise LedgerError(f"{where}: field 'result' must be succeeded, failed or null, got {result[:40]!r}")
        remediations = _field(d, "remediations", list, where, optional=True) or []
        return cls(
            name=name,
            started=started,
            last_progress=_time(d, "lastProgress", where, optional=True) or started,
            fingerprint=_field(d, "fingerprint", str, where, optional=True) or "",
            finished=_time(d, "finished", where, optional=True),
            result=result,
            message=_field(d, "message", str, where, optional=True) or "",
            remediations=tuple(Remediation.from_dict(r, f"{where}.remediations[{i}]")
                               for i, r in enumerate(remediations)),
            waiting=_field(d, "waiting", str, where, optional=True) or "",
            replaced=_field(d, "replaced", str, where, optional=True) or "",
            seen=_strings(_field(d, "seen", list, where, optional=True) or [], f"{where}.seen"),
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
        """The ledger ``to_json`` wrote; :class:`LedgerError` naming the first field that deviates."""
        if len(text) > MAX_LEDGER_CHARS:
            raise LedgerError(f"larger than {MAX_LEDGER_CHARS} characters")
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LedgerError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except (RecursionError, ValueError):
            raise LedgerError("not usable JSON (nested too deeply or a number too long)") from None
        d = _object(loaded, "ledger")
        cluster = _field(d, "cluster", str, "ledger")
        namespace = _field(d, "namespace", str, "ledger")
        targets = _field(d, "targets", dict, "ledger", optional=True) or {}
        if targets:
            _check_targets(targets, cluster, namespace)
        warnings = _field(d, "warnings", list, "ledger", optional=True) or []
        if not all(isinstance(w, str) for w in warnings):
            raise LedgerError("ledger: field 'warnings' must be a list of strings")
        phases: dict[str, PhaseRecord] = {}
        for key, raw in (_field(d, "phases", dict, "ledger", optional=True) or {}).items():
            record = PhaseRecord.from_dict(raw, f"ledger phase {key[:40]!r}")
            if record.name != key:
                raise LedgerError(f"ledger phase {key[:40]!r}: its name is {record.name!r}")
            phases[key] = record
        return cls(
            cluster=cluster,
            namespace=namespace,
            targets=dict(targets),
            warnings=tuple(warnings),
            preflight=_field(d, "preflight", str, "ledger", optional=True),
            phases=phases,
            failure=_field(d, "failure", str, "ledger", optional=True),
        )

    def check_belongs_to(self, *, cluster: str, namespace: str) -> None:
        """:class:`LedgerError` unless this ledger records the rollout of ``namespace/cluster``."""
        if (self.namespace, self.cluster) != (namespace, cluster):
            raise LedgerError(f"it records cluster {self.namespace[:63]}/{self.cluster[:63]}, "
                              f"not {namespace}/{cluster}")


def _check_targets(targets: dict[str, Any], cluster: str, namespace: str) -> None:
    where = "ledger targets"
    if sorted(targets) != sorted(_TARGET_FIELDS):
        raise LedgerError(f"{where}: must have exactly the fields {', '.join(_TARGET_FIELDS)}")
    for key in _TARGET_FIELDS:
        if key == "deployments":
            value = targets[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise LedgerError(f"{where}: field 'deployments' must be a list of strings")
        else:
            _field(targets, key, str, where)
    if (targets["namespace"], targets["cluster"]) != (namespace, cluster):
        raise LedgerError(f"{where}: name cluster {str(targets['namespace'])[:63]}/{str(targets['cluster'])[:63]}, "
                          f"not the ledger's {namespace[:63]}/{cluster[:63]}")
