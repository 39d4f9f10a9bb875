"""The rollout's steps in one table: each step's name, the output parameters it declares, and its handler.

Contract: pure (no I/O, no Hera, no client library: the step shell reads it before anything heavy is imported).
:data:`STEPS` is the one list of steps, read by the step shell :mod:`capi_rollout.workflow.steps` (which output
files to write), the Hera template :mod:`capi_rollout.workflow.template` (which outputs each script template
declares, in this order) and :mod:`capi_rollout.run` (which handler runs a step). :data:`ROLLOUT` is the
entrypoint's order; ``summary`` runs in the exit handler.

A handler drives a :class:`StepHost` (:class:`~capi_rollout.rollout_loop.RolloutLoop` is one) and returns the
step's message and every output it produced; it is the only place a step's outputs are made. A step fails by
raising :class:`StepFailed`, whose message is what the user reads; a failed phase still hands out its record
(:func:`phase_outputs`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from capi_rollout.domain.deadlines import phase_deadline_seconds
from capi_rollout.domain.ledger import PhaseRecord
from capi_rollout.domain.params import Params
from capi_rollout.domain.resolve import Targets


class StepFailed(Exception):
    """An expected failure of a step; the message is what the user reads."""


@dataclass(frozen=True)
class StepResult:
    ok: bool
    message: str
    outputs: dict[str, str] = field(default_factory=dict)


class StepHost(Protocol):
    """What the handlers drive: one cluster's rollout, step by step, against its ledger."""

    @property
    def params(self) -> Params: ...

    def resolve(self) -> Targets: ...

    def preflight(self) -> list[str]: ...

    def phase(self, phase: str) -> PhaseRecord: ...

    def summary(self, *, workflow_status: str | None = None, workflow_failures: str | None = None,
                failure: str | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StepCall:
    """One step to run: its name and, in the exit handler, how the Workflow ended."""

    name: str
    workflow_status: str | None = None
    workflow_failures: str | None = None


Handler = Callable[[StepHost, StepCall], tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class Step:
    name: str
    outputs: tuple[str, ...]  # the output parameters, in the order the template declares them
    handler: Handler
    is_phase: bool = False  # a phase: its record is handed out even when it failed


def phase_outputs(record: PhaseRecord) -> dict[str, str]:
    return {"phase": json.dumps(record.to_dict(), sort_keys=True), "remediations": str(len(record.remediations))}


def summary_outputs(summary: Mapping[str, Any]) -> dict[str, str]:
    return {"summary": json.dumps(summary, sort_keys=True), "result": summary["result"],
            "remediations": str(summary["remediations"])}


def failed_summary_outputs(reason: str) -> dict[str, str]:
    """The summary step's outputs when it could not even start (bad parameters, no Kubernetes API)."""
    return {"summary": json.dumps({"result": "Failed", "reasons": [reason]}), "result": "Failed"}


def _resolve(host: StepHost, call: StepCall) -> tuple[str, dict[str, str]]:
    targets = host.resolve()
    p = host.params
    return "resolved", {
        "targets": json.dumps(targets.to_dict(), sort_keys=True),
        # the phase backstops resolve hands to the phases (activeDeadlineSeconds of their pods)
        "controlPlaneDeadlineSeconds": str(phase_deadline_seconds(timeout=p.control_plane_timeout,
                                                                  poll_interval=p.poll_interval)),
        "workersDeadlineSeconds": str(phase_deadline_seconds(timeout=p.workers_timeout,
                                                             poll_interval=p.poll_interval)),
    }


def _preflight(host: StepHost, call: StepCall) -> tuple[str, dict[str, str]]:
    return "preflight passed", {"warnings": json.dumps(host.preflight())}


def _phase(host: StepHost, call: StepCall) -> tuple[str, dict[str, str]]:
    record = host.phase(call.name)
    return record.message, phase_outputs(record)


def _summary(host: StepHost, call: StepCall) -> tuple[str, dict[str, str]]:
    # The summary step itself succeeds whenever it could report; the rollout's result is in its outputs.
    summary = host.summary(workflow_status=call.workflow_status, workflow_failures=call.workflow_failures)
    return "; ".join(summary["reasons"]) or "rollout succeeded", summary_outputs(summary)


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("resolve", ("targets", "controlPlaneDeadlineSeconds", "workersDeadlineSeconds"), _resolve),
    Step("preflight", ("warnings",), _preflight),
    Step("control-plane", ("phase", "remediations"), _phase, is_phase=True),
    Step("workers", ("phase", "remediations"), _phase, is_phase=True),
    Step("summary", ("summary", "result", "remediations"), _summary),
)}

ROLLOUT: tuple[str, ...] = ("resolve", "preflight", "control-plane", "workers")  # then summary (exit handler)

__all__ = ["ROLLOUT", "STEPS", "Step", "StepCall", "StepFailed", "StepHost", "StepResult", "failed_summary_outputs",
           "phase_outputs", "summary_outputs"]
