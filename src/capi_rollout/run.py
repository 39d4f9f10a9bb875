"""Running the rollout's steps: one per workflow pod (:func:`run_step`), or all in this process (:func:`run_all`).

Contract: :func:`run_step` is what each workflow step calls (through the step shell
:mod:`capi_rollout.workflow.steps`), :func:`run_all` what ``capi-rollout run`` calls. They validate the parameters,
connect the Kubernetes adapter, wire a :class:`~capi_rollout.rollout_loop.RolloutLoop` (its ledger store and, in a
Workflow, the cluster's claim) and run each step's handler from :data:`capi_rollout.step_table.STEPS`, returning a
:class:`~capi_rollout.step_table.StepResult` (``ok``, a message, and the step's output parameters). They never
raise for an expected failure: bad parameters, an unresolvable cluster, a preflight violation, a phase timeout or
an exhausted budget all come back as ``ok=False`` with a message saying what to do. The summary step reports even
when it cannot start (bad parameters, no Kubernetes API): its outputs then say Failed and why.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from capi_rollout.adapters.kube import Kube, KubeError, connect
from capi_rollout.claim_store import ClusterClaim
from capi_rollout.domain.claim import Holder
from capi_rollout.domain.params import ParamError, Params, parse_params
from capi_rollout.ledger_store import KubeLedgerStore, LedgerStore, MemoryLedgerStore
from capi_rollout.ports import KubePort, TalosPort
from capi_rollout.recorder import LedgerUnusable
from capi_rollout.rollout_loop import RolloutLoop, default_talos_factory
from capi_rollout.step_table import (
    ROLLOUT,
    STEPS,
    StepCall,
    StepFailed,
    StepResult,
    failed_summary_outputs,
    phase_outputs,
    summary_outputs,
)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("capi_rollout")
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def run_step(step: str, raw_params: Mapping[str, str], *, run_id: str, ledger_namespace: str,
             owner: Mapping[str, str] | None = None, kubeconfig: str | None = None,
             workflow_status: str | None = None, workflow_failures: str | None = None,
             talos_factory: Callable[[str], TalosPort] = default_talos_factory) -> StepResult:
    """Run one workflow step; expected failures come back as ``ok=False`` with the reason."""
    configure_logging()
    if step not in STEPS:
        return StepResult(False, f"unknown step {step!r} (one of {', '.join(STEPS)})")
    try:
        params = parse_params(raw_params)
    except ParamError as exc:
        if step == "summary":  # the exit hook still reports why the run failed
            print(f"capi-rollout summary: Failed\nwhy: {exc}", flush=True)
            return StepResult(True, str(exc), failed_summary_outputs(str(exc)))
        return StepResult(False, str(exc))
    try:
        api = connect(kubeconfig)
    except Exception as exc:  # kubeconfig missing or malformed, no in-cluster service account
        return StepResult(False, f"{step}: cannot connect to the Kubernetes API: {exc}",
                          failed_summary_outputs(str(exc)) if step == "summary" else {})
    try:
        kube: KubePort = Kube(api)
        store: LedgerStore = KubeLedgerStore(kube, namespace=ledger_namespace, run_id=run_id, owner=owner)
        claim = None
        if owner and owner.get("uid"):  # in a Workflow: one rollout per cluster
            me = Holder(run_id, owner["uid"], datetime.now(UTC).isoformat().replace("+00:00", "Z"))
            claim = ClusterClaim(kube, namespace=ledger_namespace, cluster_namespace=params.cluster_namespace,
                                 cluster=params.cluster_name, me=me, owner=owner)
        loop = RolloutLoop(params=params, kube=kube, store=store, talos_factory=talos_factory, claim=claim)
        try:
            return run_on(loop, step, workflow_status=workflow_status, workflow_failures=workflow_failures)
        finally:
            loop.close()
    except KubeError as exc:
        return StepResult(False, f"{step}: Kubernetes API error: {exc}")


def run_on(loop: RolloutLoop, step: str, *, workflow_status: str | None = None,
           workflow_failures: str | None = None) -> StepResult:
    """Run the handler of ``step`` on ``loop``; a :class:`StepFailed` becomes ``ok=False`` with its reason."""
    spec = STEPS[step]
    try:
        message, outputs = spec.handler(loop, StepCall(step, workflow_status, workflow_failures))
        return StepResult(True, message, outputs)
    except LedgerUnusable as exc:  # never write over (or read more from) a ledger we cannot trust
        return StepResult(False, str(exc))
    except StepFailed as exc:
        if step == "resolve":  # keep the reason for the summary (the exit hook reads only the ledger)
            with contextlib.suppress(KubeError):
                loop.recorder.record_failure(str(exc))
        failed = loop.ledger.phase(step) if spec.is_phase else None
        return StepResult(False, str(exc), phase_outputs(failed) if failed is not None else {})


def run_all(params: Params, *, kube: KubePort, store: LedgerStore | None = None, loop: RolloutLoop | None = None,
            talos_factory: Callable[[str], TalosPort] = default_talos_factory,
            out: Callable[[str], None] | None = None) -> StepResult:
    """The whole rollout in one process (``capi-rollout run``): every step, then the summary."""
    loop = loop or RolloutLoop(params=params, kube=kube, store=store or MemoryLedgerStore(),
                               talos_factory=talos_factory, out=out)
    failure: str | None = None
    try:
        for step in ROLLOUT:
            result = run_on(loop, step)
            if not result.ok:
                failure = result.message
                break
    finally:
        loop.close()
    summary = loop.summary(workflow_status="Failed" if failure else "Succeeded", failure=failure)
    return StepResult(failure is None, failure or "rollout succeeded", summary_outputs(summary))


__all__ = ["configure_logging", "run_all", "run_on", "run_step"]
