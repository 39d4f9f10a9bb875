"""What a workflow step pod does, behind its process shell :mod:`capi_rollout.workflow.entry`.

Contract: a thin shell. :func:`run` receives one step's name and the template's input parameters as strings
(the entry reads them from the staged ``{{inputs.parameters}}``), reads the run's context from the environment
the template sets (:data:`ENV_RUN_ID` ...), calls :func:`capi_rollout.run.run_step` (imported only then: the
Kubernetes and Talos adapters are the step's own cost), writes every output parameter the step table declares
(:data:`capi_rollout.step_table.STEPS`) to ``<outputs_dir>/parameters/<name>`` (an empty file when the step
produced no value, so Argo never reports a missing file) and returns the exit code, printing the reason on stderr
when the step failed. It imports no Hera (the pods do not need it), holds no rollout logic and makes no output of
its own. The names here (the environment variables, the ``hera__outputs_directory`` convention kept from Hera's
runner) are shared with the template.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from capi_rollout.domain.params import DEFAULTS
from capi_rollout.step_table import STEPS

# Environment variables the WorkflowTemplate sets from Argo's workflow variables.
ENV_RUN_ID = "CAPI_ROLLOUT_RUN_ID"  # {{workflow.name}}: names the remediation ledger
ENV_RUN_UID = "CAPI_ROLLOUT_RUN_UID"  # {{workflow.uid}}: the ledger's ownerReference
ENV_LEDGER_NAMESPACE = "CAPI_ROLLOUT_LEDGER_NAMESPACE"  # {{workflow.namespace}}
ENV_WORKFLOW_STATUS = "CAPI_ROLLOUT_WORKFLOW_STATUS"  # {{workflow.status}} (exit handler only)
ENV_WORKFLOW_FAILURES = "CAPI_ROLLOUT_WORKFLOW_FAILURES"  # {{workflow.failures}} (exit handler only)
OUTPUTS_DIRECTORY_ENV = "hera__outputs_directory"  # kept from the Hera runner's convention
DEFAULT_OUTPUTS_DIRECTORY = "/tmp/hera-outputs"

WORKFLOW_API_VERSION = "argoproj.io/v1alpha1"

class StepResultLike(Protocol):
    """What :func:`capi_rollout.run.run_step` returns (``StepResult``)."""

    @property
    def ok(self) -> bool: ...

    @property
    def message(self) -> str: ...

    @property
    def outputs(self) -> Mapping[str, str]: ...


RunStep = Callable[..., StepResultLike]


@dataclass(frozen=True)
class RunContext:
    """Who is running: the Workflow (ledger name and owner) and, in the exit handler, how it ended."""

    run_id: str
    ledger_namespace: str
    owner: dict[str, str] | None
    workflow_status: str | None
    workflow_failures: str | None


class StepContextError(RuntimeError):
    """The pod's environment lacks what the template should have set."""


def context_from_env(env: Mapping[str, str]) -> RunContext:
    """Read the run's context from the template-provided environment; :class:`StepContextError` if incomplete."""
    run_id = env.get(ENV_RUN_ID, "").strip()
    namespace = env.get(ENV_LEDGER_NAMESPACE, "").strip()
    missing = [name for name, value in ((ENV_RUN_ID, run_id), (ENV_LEDGER_NAMESPACE, namespace)) if not value]
    if missing:
        raise StepContextError(f"environment variables not set by the template: {', '.join(missing)}")
    uid = env.get(ENV_RUN_UID, "").strip()
    owner = {"apiVersion": WORKFLOW_API_VERSION, "kind": "Workflow", "name": run_id, "uid": uid} if uid else None
    return RunContext(
        run_id=run_id,
        ledger_namespace=namespace,
        owner=owner,
        workflow_status=env.get(ENV_WORKFLOW_STATUS) or None,
        workflow_failures=env.get(ENV_WORKFLOW_FAILURES) or None,
    )


def _load_run_step() -> RunStep:
    from capi_rollout.run import run_step

    loaded: RunStep = run_step
    return loaded


def write_outputs(outputs_dir: Path, names: tuple[str, ...], values: Mapping[str, str]) -> None:
    """Write one file per declared output parameter; a value the step did not produce is written empty."""
    target = outputs_dir / "parameters"
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        (target / name).write_text(values.get(name, ""), encoding="utf-8")


def run(
    step: str,
    inputs: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    outputs_dir: Path,
    run_step: RunStep | None = None,
) -> int:
    """Run one step: returns the exit code (0 ok, 1 the step failed); outputs are written either way."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r} (known: {', '.join(STEPS)})")
    names = STEPS[step].outputs
    raw_params = {name: str(value) for name, value in inputs.items() if name in DEFAULTS}
    produced: dict[str, str] = {}
    try:
        ctx = context_from_env(env)
        call = run_step or _load_run_step()
        result = call(
            step,
            raw_params,
            run_id=ctx.run_id,
            ledger_namespace=ctx.ledger_namespace,
            owner=ctx.owner,
            kubeconfig=None,
            workflow_status=ctx.workflow_status,
            workflow_failures=ctx.workflow_failures,
        )
        produced.update(result.outputs)
    finally:
        write_outputs(outputs_dir, names, produced)
    if not result.ok:
        print(f"{step} failed: {result.message}", file=sys.stderr, flush=True)
        return 1
    return 0
