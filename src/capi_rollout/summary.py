"""The run's summary: a JSON document and a readable table, built from the ledger.

Contract: pure. :func:`build_summary` turns a :class:`Ledger` (plus Argo's ``workflow.status`` and
``workflow.failures`` when the exit hook passes them) into a JSON-ready dict; :func:`render_table` prints
it for people, starting with ``headline``: one sentence per phase (``control plane: 3/3 replaced, 1 remediation;
workers: 2/2 replaced, 0 remediations``). A phase that did not succeed shows why it was waiting (``waiting``: a
skip-remediation annotation, a remediation in flight, the quorum guard, a spent budget) when that was not plain
progress.
"""

from __future__ import annotations

import json
from typing import Any

from capi_rollout.domain.ledger import PHASE_TITLES, PHASES, Ledger
from capi_rollout.domain.params import format_duration
from capi_rollout.domain.replacement import plural


def _failures(text: str | None) -> list[dict[str, Any]]:
    if not text or text in ("null", "{{workflow.failures}}"):
        return []
    try:
        parsed = json.loads(text)
        if isinstance(parsed, str):  # Argo passes workflow.failures JSON-encoded inside a string
            parsed = json.loads(parsed) if parsed not in ("", "null") else []
    except ValueError:
        return [{"message": text}]
    return [f for f in parsed if isinstance(f, dict)] if isinstance(parsed, list) else []


def build_summary(ledger: Ledger | None, *, workflow_status: str | None = None,
                  workflow_failures: str | None = None, failure: str | None = None) -> dict[str, Any]:
    phases: dict[str, Any] = {}
    result = "Succeeded"
    failures = _failures(workflow_failures)
    if ledger is not None:
        for name in PHASES:
            rec = ledger.phase(name)
            if rec is None:
                phases[name] = {"result": "not started"}
                continue
            duration = (rec.finished - rec.started).total_seconds() if rec.finished else None
            phases[name] = {
                "started": rec.to_dict()["started"],
                "finished": rec.to_dict()["finished"],
                "durationSeconds": duration,
                "result": rec.result or "running",
                "message": rec.message,
                "remediations": [r.to_dict() for r in rec.remediations],
                "waiting": rec.waiting,
                "replaced": rec.replaced,
            }
            if rec.result == "failed":
                result = "Failed"
    unfinished = any(p.get("result") != "succeeded" for p in phases.values())
    if ledger is None or ledger.failure or ledger.preflight or unfinished:
        result = "Failed"
    if workflow_status and workflow_status not in ("Succeeded", "{{workflow.status}}"):
        result = "Failed"
    reasons = [failure] if failure else []
    if ledger is not None and ledger.failure and ledger.failure not in reasons:
        reasons.append(ledger.failure)
    if ledger is not None and ledger.preflight:
        reasons.append(ledger.preflight)
    reasons += [p["message"] for p in phases.values() if p.get("result") == "failed" and p.get("message")]
    if not reasons:  # Argo's own words (a deadline, a lost pod) only when the ledger does not say why
        reasons = [f"{f.get('displayName') or f.get('templateName', 'step')}: {f.get('message', '')}"
                   for f in failures if f.get("message")]
    reasons += [f"{PHASE_TITLES[name]} was still waiting: {p['waiting']}" for name, p in phases.items()
                if p.get("result") == "running" and p.get("waiting")]  # cut short (a deadline, argo stop)
    return {
        "headline": headline(phases),
        "cluster": ledger.cluster if ledger else None,
        "namespace": ledger.namespace if ledger else None,
        "result": result,
        "workflowStatus": workflow_status,
        "reasons": reasons,
        "targets": ledger.targets if ledger else {},
        "warnings": list(ledger.warnings) if ledger else [],
        "phases": phases,
        "remediations": sum(len(p.get("remediations", [])) for p in phases.values()),
    }


def phase_sentence(name: str, phase: dict[str, Any]) -> str:
    """``control plane: 3/3 replaced, 1 remediation`` (``, failed`` / ``, still running`` when it did not end well)."""
    title = PHASE_TITLES[name]
    result = phase.get("result")
    if result == "not started":
        return f"{title}: not started"
    done = f"{phase['replaced']} replaced, " if phase.get("replaced") else ""
    words = f"{title}: {done}{plural(len(phase.get('remediations') or []), 'remediation')}"
    return words + {"failed": ", failed", "running": ", still running"}.get(str(result), "")


def headline(phases: dict[str, Any]) -> str:
    """The run in one sentence: each phase's :func:`phase_sentence`, joined by ``; ``."""
    return "; ".join(phase_sentence(name, p) for name, p in phases.items()) or "nothing was rolled"


def render_table(summary: dict[str, Any]) -> str:
    lines = [f"capi-rollout summary for {summary.get('namespace')}/{summary.get('cluster')}: {summary['result']}"]
    if summary.get("headline"):
        lines.append(summary["headline"])
    lines.append(f"{'PHASE':<15}{'RESULT':<13}{'DURATION':<11}REMEDIATIONS")
    for name, p in summary["phases"].items():
        dur = p.get("durationSeconds")
        lines.append(f"{PHASE_TITLES[name]:<15}{p['result']:<13}{format_duration(dur) if dur is not None else '-':<11}"
                     f"{len(p.get('remediations', []))}")
        for r in p.get("remediations", []):
            where = f"{r['node'] or '-'} ({r['address'] or 'no address'})"
            lines.append(f"  - {r['at']} Machine {r['machine']} node {where}, reboot {r['reboot_mode']}: "
                         f"{r['outcome']}")
        if p.get("waiting") and p["result"] != "succeeded":
            lines.append(f"  waiting: {p['waiting']}")
    for w in summary.get("warnings", []):
        lines.append(f"warning: {w}")
    for reason in summary.get("reasons", []):
        lines.append(f"why: {reason}")
    return "\n".join(lines)
