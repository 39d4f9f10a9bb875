"""The rollout loop: resolve → preflight → control plane → workers → summary, one step at a time.

Contract: :func:`run_step` is what each workflow step (and ``capi-rollout run``) calls. It validates the
parameters, connects the adapters, loads the ledger, runs one step and returns a :class:`StepResult`
(``ok``, a message, and the step's output parameters). It never raises for an expected failure: bad
parameters, an unresolvable cluster, a preflight violation, a phase timeout or an exhausted budget all come
back as ``ok=False`` with a message saying what to do.

A phase loop observes the cluster, asks Talos about unhealthy Machines, lets
:func:`capi_rollout.domain.decide.decide` choose, hands remediations to the remediator and waits for the next
change (at most ``pollInterval``). Every state change goes to the ledger first, so a step that is killed and
retried resumes with the same clocks and remediation count. A phase already finished in the ledger is not run
again.

One rollout per cluster: in a Workflow (an owner is known), resolve first takes the cluster's claim
(:mod:`capi_rollout.claim_store`). When another live Workflow holds it, resolve fails at once without having
acted. Argo's mutex normally queues a second run before any pod starts; the claim holds when that mutex did not
(and a second run that got the lost mutex must end quickly: the holder cannot finish while it holds it).

Reads: resolve, preflight and the Talos Secret are one-off direct reads (the Secret by name, never a list;
its cluster-name label is checked on every read). During a phase the ``watch`` seam
(default :func:`capi_rollout.adapters.informer.cluster_cache`) keeps the cluster's Cluster, TalosControlPlane,
MachineDeployments and Machines by LIST + WATCH; the first evaluation waits for it to sync (at most
min(1s, ``pollInterval``/4)), and each evaluation reads that cache's snapshot while it is synced, falling back to
four direct reads (get Cluster, list TCPs, MDs, Machines) while it is not (not yet synced, or a watch down).

Read-after-write: after the remediator deletes a Machine, the loop waits (at most min(5s, ``pollInterval``))
until the cache shows that Machine (by UID) deleting or gone; if it does not, the next evaluation is a direct
LIST-based one, so no decision is ever made on a stale copy of our own delete. And the runner acts only on a
direct read: a remediation or a failure decided from the cache is re-decided at once from a LIST-based
observation (a watch that died silently, without a reset, cannot make it delete a Machine that has meanwhile
recovered; remediations are rare, so this costs four requests now and then). A ``watch`` that yields a bare
waker (``wait(timeout) -> bool``, no snapshot) makes every evaluation read lists.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from capi_rollout.adapters.informer import ObjectCache, Waker, cluster_cache
from capi_rollout.adapters.kube import Kube, KubeError, connect
from capi_rollout.claim_store import ClaimUnusable, ClusterClaim
from capi_rollout.domain.claim import Holder, decide_claim
from capi_rollout.domain.decide import addresses_to_probe, decide
from capi_rollout.domain.ledger import PHASE_TITLES, Ledger, LedgerError, PhaseRecord
from capi_rollout.domain.model import CLUSTER_NAME_LABEL
from capi_rollout.domain.params import ParamError, Params, format_duration, parse_params
from capi_rollout.domain.preflight import preflight
from capi_rollout.domain.replacement import replacement_progress
from capi_rollout.domain.resolve import (
    TALOSCONFIG_KEY,
    ResolveError,
    Targets,
    resolve_targets,
    talosconfig_problems,
    talosconfig_secret_name,
)
from capi_rollout.domain.state import ClusterState, MachineViews, NodeStatus
from capi_rollout.ledger_store import KubeLedgerStore, LedgerStore, MemoryLedgerStore
from capi_rollout.ports import ClusterWatch, KubePort, TalosPort
from capi_rollout.progress_file import ProgressFile
from capi_rollout.remediator import RemediationAborted, Remediator
from capi_rollout.summary import build_summary, render_table

log = logging.getLogger("capi_rollout")

STEPS = ("resolve", "preflight", "control-plane", "workers", "summary")


@dataclass(frozen=True)
class StepResult:
    ok: bool
    message: str
    outputs: dict[str, str] = field(default_factory=dict)


class StepFailed(Exception):
    """An expected failure of a step; the message is what the user reads."""


class LedgerUnusable(StepFailed):
    """The stored ledger breaks its schema, names another cluster or was not written by this run."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def default_talos_factory(talosconfig: str) -> TalosPort:
    from capi_rollout.adapters.talos.client import SyncTalosClient
    from capi_rollout.adapters.talos.config import parse_talosconfig

    return SyncTalosClient(parse_talosconfig(talosconfig))


def default_watch(kube: KubePort, namespace: str, cluster: str) -> AbstractContextManager[Waker]:
    """The loop's default ``watch``: the informers' :func:`~capi_rollout.adapters.informer.cluster_cache`, which
    needs the real Kubernetes adapter (a fake Kubernetes comes with its own ``watch``)."""
    if not isinstance(kube, Kube):
        raise TypeError(f"the informer cache needs capi_rollout.adapters.kube.Kube, not {type(kube).__name__}: "
                        "pass a watch")
    return cluster_cache(kube, namespace, cluster)


class RolloutLoop:
    """One cluster's rollout, step by step, against a ledger."""

    def __init__(self, *, params: Params, kube: KubePort, store: LedgerStore,
                 talos_factory: Callable[[str], TalosPort] = default_talos_factory,
                 clock: Callable[[], datetime] = _utcnow, out: Callable[[str], None] | None = None,
                 watch: ClusterWatch = default_watch,
                 sleep: Callable[[float], None] = time.sleep, claim: ClusterClaim | None = None) -> None:
        self.params = params
        self.claim = claim
        self.kube = kube
        self.store = store
        self.talos_factory = talos_factory
        self.clock = clock
        self.out = out or (lambda line: print(line, flush=True))
        self.watch = watch
        self.sleep = sleep
        self._talos: TalosPort | None = None
        self._ledger: Ledger | None = None
        self._views = MachineViews()
        self.last_read = ""  # "cache" or "lists": where the last observation came from

    # --- ledger ----------------------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = self.load_ledger() or Ledger(cluster=self.params.cluster_name,
                                                        namespace=self.params.cluster_namespace)
        return self._ledger

    def load_ledger(self) -> Ledger | None:
        """The stored ledger (None when none yet); :class:`LedgerUnusable` when it is garbage or another cluster's."""
        try:
            ledger = self.store.load()
            if ledger is not None:
                ledger.check_belongs_to(cluster=self.params.cluster_name, namespace=self.params.cluster_namespace)
        except LedgerError as exc:
            raise LedgerUnusable(f"cannot use the run's ledger: {exc}") from exc
        return ledger

    def _save(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.store.save(ledger)

    def _save_phase(self, record: PhaseRecord) -> None:
        self._save(self.ledger.with_phase(record))

    def close(self) -> None:
        """Release the Talos client (its connections and event loop thread)."""
        close = getattr(self._talos, "close", None)
        self._talos = None
        if callable(close):
            close()

    def say(self, line: str) -> None:
        self.out(f"[{self.clock().strftime('%H:%M:%S')}] {line}")

    @property
    def selector(self) -> str:
        return f"{CLUSTER_NAME_LABEL}={self.params.cluster_name}"

    # --- steps -----------------------------------------------------------------------------------------
    def hold_claim(self) -> None:
        """Take this cluster's claim; :class:`StepFailed` at once when another live Workflow holds it (waiting
        would not help: while this run holds Argo's mutex, the holder cannot finish). No claim (``capi-rollout
        run``): nothing to do."""
        claim = self.claim
        if claim is None:
            return
        cluster = f"{self.params.cluster_namespace}/{self.params.cluster_name}"
        for _ in range(10):  # a lost write race reads again; ten in a row means something keeps rewriting it
            try:
                current, version = claim.read()
            except ClaimUnusable as exc:
                raise StepFailed(str(exc)) from exc
            phase = claim.holder_phase(current) if current is not None and not current.same_run(claim.me) else None
            decision = decide_claim(cluster=cluster, current=current, me=claim.me, holder_phase=phase)
            if decision.action == "mine":
                return
            if decision.action == "held":
                raise StepFailed(
                    f"another rollout of {cluster} is running: {decision.reason}; this run did not act on the "
                    "cluster. Argo's per-cluster mutex should have queued it (a workflow-controller restart can "
                    "lose it): resubmit once that Workflow has ended, if its rollout did not cover your change")
            if claim.write(None if decision.action == "create" else version):
                self.say(f"claim: {decision.reason}")
                return
        raise StepFailed(f"could not take the claim of {cluster}: another run kept writing it")

    def resolve(self) -> Targets:
        ns, name = self.params.cluster_namespace, self.params.cluster_name
        self.hold_claim()
        version = self.kube.capi_version()
        try:
            targets = resolve_targets(
                cluster_name=name, namespace=ns, capi_version=version,
                cluster=self.kube.get_cluster(ns, name),
                control_planes=self.kube.list_control_planes(ns, self.selector),
                deployments=self.kube.list_machine_deployments(ns, self.selector),
                talosconfig=self.kube.get_secret(ns, talosconfig_secret_name(name)),
            )
        except ResolveError as exc:
            raise StepFailed("cannot resolve the cluster: " + "; ".join(exc.problems)) from exc
        self._save(replace(self.ledger, targets=targets.to_dict()))
        self.say(f"resolved {ns}/{name} (CAPI {version}): TalosControlPlane {targets.control_plane}, "
                 f"MachineDeployments {', '.join(targets.deployments) or 'none'}, Secret {targets.talosconfig_secret}")
        return targets

    def targets(self) -> Targets:
        if not self.ledger.targets:
            return self.resolve()
        return Targets.from_dict(self.ledger.targets)

    def talos(self) -> TalosPort:
        if self._talos is None:
            t = self.targets()
            secret = self.kube.get_secret(t.namespace, t.talosconfig_secret)
            problems = talosconfig_problems(secret, cluster_name=t.cluster, namespace=t.namespace)
            if secret is None or problems:  # read again by name: it may have changed since resolve
                raise StepFailed("; ".join(problems) or f"Secret {t.namespace}/{t.talosconfig_secret} disappeared")
            raw = (secret.get("data") or {}).get(TALOSCONFIG_KEY, "")
            try:
                text = base64.b64decode(raw).decode()
                self._talos = self.talos_factory(text)
            except ValueError as exc:
                raise StepFailed(f"Secret {t.talosconfig_secret}: key {TALOSCONFIG_KEY} is not a usable "
                                 f"talosconfig: {exc}") from exc
        return self._talos

    def observe(self, *, with_health_checks: bool = False, cache: ObjectCache | None = None,
                ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], ClusterState]:
        """One observation: from ``cache`` when it is synced, else with four direct reads (get + 3 lists)."""
        t = self.targets()
        if cache is not None and cache.synced:
            snap = cache.snapshot()
            cluster, tcps, mds = snap.cluster, snap.control_planes, snap.deployments
            machines: Sequence[Mapping[str, Any]] = snap.machines
            self.last_read = "cache"
        else:
            if cache is not None and self.last_read == "cache":
                log.info("cache not in sync (%s): reading with lists", cache.failure or "watch reconnecting")
            cluster = self.kube.get_cluster(t.namespace, t.cluster)
            tcps = self.kube.list_control_planes(t.namespace, self.selector) if cluster is not None else []
            mds = self.kube.list_machine_deployments(t.namespace, self.selector) if cluster is not None else []
            machines = self.kube.list_machines(t.namespace, self.selector) if cluster is not None else []
            self.last_read = "lists"
        if cluster is None:
            raise StepFailed(f"Cluster {t.namespace}/{t.cluster} disappeared during the rollout")
        tcp = next((o for o in tcps if o["metadata"]["name"] == t.control_plane), None)
        if tcp is None:
            raise StepFailed(f"TalosControlPlane {t.namespace}/{t.control_plane} disappeared during the rollout")
        mds = [o for o in mds if o["metadata"]["name"] in t.deployments]
        mhcs = self.kube.list_health_checks(t.namespace) if with_health_checks else []
        state = ClusterState.from_objects(cluster=cluster, control_plane=tcp, deployments=mds,
                                          machines=machines, health_checks=mhcs, views=self._views)
        return dict(cluster), dict(tcp), [dict(o) for o in mds], state

    def await_deletion(self, cache: ObjectCache | None, uid: str) -> bool:
        """Read-after-write barrier: True once ``cache`` shows the Machine ``uid`` deleting or gone (bounded by
        min(5s, pollInterval)); False when it did not (or there is no cache), so the next read must be a LIST."""
        if cache is None:
            return False
        return cache.wait_until(lambda snap: snap.shows_deleting(uid), min(5.0, self.params.poll_interval))

    def probe(self, addresses: list[str]) -> dict[str, NodeStatus]:
        if not addresses:
            return {}
        found = self.talos().probe_many(addresses)
        return {a: NodeStatus(a, str(getattr(p.state, "value", p.state)), p.detail) for a, p in found.items()}

    def preflight(self) -> list[str]:
        cluster, tcp, mds, state = self.observe(with_health_checks=True)
        addresses = sorted({m.address for m in state.machines if m.address})
        self.say(f"preflight: checking strategies, pause flags and the Talos stage of {len(addresses)} nodes")
        talos = self.talos()
        validity = talos.client_validity
        versions = dict(talos.versions(addresses)) if self.params.reboot_mode == "force" and addresses else None
        report = preflight(cluster=cluster, control_plane=tcp, deployments=mds, state=state,
                           nodes=self.probe(addresses), now=self.clock(), versions=versions,
                           client_certificate=None if validity is None else (validity.not_before, validity.not_after))
        ledger = replace(self.ledger, warnings=report.warnings,
                         preflight=None if report.ok else "preflight failed: " + "; ".join(report.violations))
        self._save(ledger)
        for w in report.warnings:
            self.say(f"warning: {w}")
        if not report.ok:
            for v in report.violations:
                self.say(f"preflight violation: {v}")
            raise StepFailed(ledger.preflight or "preflight failed")
        self.say("preflight passed")
        return list(report.warnings)

    def phase(self, phase: str) -> PhaseRecord:
        title = PHASE_TITLES[phase]
        if phase == "workers":
            cp = self.ledger.phase("control-plane")
            if cp is None or cp.result != "succeeded":
                raise StepFailed("the workers phase starts only after the control plane phase has succeeded")
        record = self.ledger.phase(phase)
        if record is not None and record.result == "succeeded":
            self.say(f"{title}: already succeeded in this run")
            return record
        if record is not None and record.result == "failed":
            raise StepFailed(record.message)
        now = self.clock()
        if record is None:
            record = PhaseRecord(name=phase, started=now, last_progress=now)
            self._save_phase(record)
            self.say(f"{title}: phase started")
        else:
            self.say(f"{title}: resuming (started {record.started.isoformat()}, "
                     f"{len(record.remediations)} remediations so far)")
        remediator = Remediator(kube=self.kube, talos=None, dry_run=self.params.dry_run, save=self._save_phase,
                            confirm_within=self.params.stall_timeout, say=self.say,
                            confirm_interval=max(0.05, min(5.0, self.params.poll_interval,
                                                           self.params.stall_timeout / 20)))
        t = self.targets()
        min_gap = min(1.0, self.params.poll_interval / 4)
        last_counters, last_said = "", now
        progress_file = ProgressFile.from_env()  # Argo's progress bar: Machines replaced / to replace
        with self.watch(self.kube, t.namespace, t.cluster) as watcher:
            cache = watcher if isinstance(watcher, ObjectCache) else None
            if cache is not None:  # a fresh cache syncs in one round trip: worth a short wait, not four lists
                cache.wait_until(lambda _: True, min_gap)
            fresh = False  # the next observation must be a LIST (confirm an act; our own write not in the cache)
            while True:
                _, tcp, mds, state = self.observe(cache=None if fresh else cache)
                fresh = False
                now = self.clock()
                nodes = self.probe(addresses_to_probe(phase=phase, state=state, now=now, params=self.params))
                action = decide(phase=phase, state=state, record=record, nodes=nodes, now=now, params=self.params)
                moved = replacement_progress(phase, state, since=record.started, complete=action.kind == "complete")
                progress_file.update(moved.argo)
                if (moved.argo or "") != action.record.replaced:
                    action = replace(action, record=replace(action.record, replaced=moved.argo or ""))
                if action.kind in ("remediate", "fail") and self.last_read == "cache":
                    fresh = True  # act only on a direct read: a silently stale watch must never cause a delete
                    continue
                if action.record != record:
                    record = action.record
                    self._save_phase(record)
                new = [w for w in action.warnings if not any(x.startswith(w) for x in self.ledger.warnings)]
                if new:  # kept for the summary, said once
                    self._save(replace(self.ledger, warnings=(*self.ledger.warnings, *new)))
                    for w in new:
                        self.say(f"warning: {w}")
                if action.counters != last_counters or (now - last_said).total_seconds() >= self.params.poll_interval:
                    self.say(action.progress)  # on every change, and at least once per pollInterval
                    last_counters, last_said = action.counters, now
                if action.kind == "complete":
                    record = replace(record, finished=now, result="succeeded", message=action.reason)
                    self._save_phase(record)
                    self.say(action.reason)
                    return record
                if action.kind == "fail":
                    record = replace(record, finished=now, result="failed", message=action.reason)
                    self._save_phase(record)
                    raise StepFailed(action.reason)
                if action.kind == "remediate":
                    self.say(("DRY RUN — " if self.params.dry_run else "") + action.reason)
                    remediator.talos = None if self.params.dry_run else self.talos()
                    owner = tcp if phase == "control-plane" else next(
                        (md for md in mds if action.machine and md["metadata"]["name"] == action.machine.deployment),
                        None)
                    try:
                        record = remediator.remediate(action, owner=owner, reboot_mode=self.params.reboot_mode,
                                                    now=now)
                    except RemediationAborted as exc:  # another attempt acted first: decide again on its ledger
                        self.say(f"{title}: {exc}")
                        self._ledger = None
                        record = self.ledger.phase(phase) or record
                        fresh = True
                        continue
                    self.say(f"{title}: remediation recorded: {record.remediations[-1].outcome}")
                    if cache is not None and action.delete and not self.params.dry_run and action.machine:
                        fresh = not self.await_deletion(cache, action.machine.meta.uid)
                    continue
                waited = (self.clock() - now).total_seconds()
                watcher.wait(max(self.params.poll_interval - waited, 0.0))
                rest = min_gap - (self.clock() - now).total_seconds()
                if rest > 0:
                    self.sleep(rest)  # coalesce bursts of watch events into one evaluation

    def summary(self, *, workflow_status: str | None = None, workflow_failures: str | None = None,
                failure: str | None = None) -> dict[str, Any]:
        try:
            ledger = self.load_ledger()
        except LedgerUnusable as exc:  # the summary still reports, with the reason
            ledger = None
            failure = failure if failure and str(exc) in failure else "; ".join(f for f in (failure, str(exc)) if f)
        summary = build_summary(ledger, workflow_status=workflow_status,
                                workflow_failures=workflow_failures, failure=failure)
        self.out(render_table(summary))
        return summary


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
            summary = {"result": "Failed", "reasons": [str(exc)]}
            print(f"capi-rollout summary: Failed\nwhy: {exc}", flush=True)
            return StepResult(True, str(exc), {"summary": json.dumps(summary), "result": "Failed"})
        return StepResult(False, str(exc))
    try:
        api = connect(kubeconfig)
    except Exception as exc:  # kubeconfig missing or malformed, no in-cluster service account
        return StepResult(False, f"{step}: cannot connect to the Kubernetes API: {exc}",
                          {"result": "Failed", "summary": json.dumps({"result": "Failed", "reasons": [str(exc)]})}
                          if step == "summary" else {})
    try:
        kube: KubePort = Kube(api)
        store: LedgerStore = KubeLedgerStore(kube, namespace=ledger_namespace, run_id=run_id, owner=owner)
        claim = None
        if owner and owner.get("uid"):  # in a Workflow: one rollout per cluster
            me = Holder(run_id, owner["uid"], _utcnow().isoformat().replace("+00:00", "Z"))
            claim = ClusterClaim(kube, namespace=ledger_namespace, cluster_namespace=params.cluster_namespace,
                                 cluster=params.cluster_name, me=me, owner=owner)
        runner = RolloutLoop(params=params, kube=kube, store=store, talos_factory=talos_factory, claim=claim)
        try:
            return _run(runner, step, workflow_status=workflow_status, workflow_failures=workflow_failures)
        finally:
            runner.close()
    except KubeError as exc:
        return StepResult(False, f"{step}: Kubernetes API error: {exc}")


def _run(runner: RolloutLoop, step: str, *, workflow_status: str | None = None,
         workflow_failures: str | None = None) -> StepResult:
    try:
        if step == "resolve":
            t = runner.resolve()
            return StepResult(True, "resolved", {"targets": json.dumps(t.to_dict(), sort_keys=True)})
        if step == "preflight":
            warnings = runner.preflight()
            return StepResult(True, "preflight passed", {"warnings": json.dumps(warnings)})
        if step in ("control-plane", "workers"):
            rec = runner.phase(step)
            return StepResult(True, rec.message, {"phase": json.dumps(rec.to_dict(), sort_keys=True),
                                                  "remediations": str(len(rec.remediations))})
        # The summary step itself succeeds whenever it could report; the rollout's result is in its outputs.
        summary = runner.summary(workflow_status=workflow_status, workflow_failures=workflow_failures)
        return StepResult(True, "; ".join(summary["reasons"]) or "rollout succeeded",
                          {"summary": json.dumps(summary, sort_keys=True), "result": summary["result"],
                           "remediations": str(summary["remediations"])})
    except LedgerUnusable as exc:  # never write over (or read more from) a ledger we cannot trust
        return StepResult(False, str(exc))
    except StepFailed as exc:
        if step == "resolve":  # keep the reason for the summary (the exit hook reads only the ledger)
            with contextlib.suppress(KubeError):
                runner._save(replace(runner.ledger, failure=str(exc)))
        outputs: dict[str, str] = {}
        failed = runner.ledger.phase(step) if step in ("control-plane", "workers") else None
        if failed is not None:
            outputs = {"phase": json.dumps(failed.to_dict(), sort_keys=True),
                       "remediations": str(len(failed.remediations))}
        return StepResult(False, str(exc), outputs)


def run_all(params: Params, *, kube: KubePort, store: LedgerStore | None = None, runner: RolloutLoop | None = None,
            talos_factory: Callable[[str], TalosPort] = default_talos_factory,
            out: Callable[[str], None] | None = None) -> StepResult:
    """The whole rollout in one process (``capi-rollout run``): every step, then the summary."""
    runner = runner or RolloutLoop(params=params, kube=kube, store=store or MemoryLedgerStore(),
                              talos_factory=talos_factory, out=out)
    failure: str | None = None
    try:
        for step in STEPS[:-1]:
            result = _run(runner, step)
            if not result.ok:
                failure = result.message
                break
    finally:
        runner.close()
    summary = runner.summary(workflow_status="Failed" if failure else "Succeeded", failure=failure)
    return StepResult(failure is None, failure or "rollout succeeded",
                      {"summary": json.dumps(summary, sort_keys=True), "result": summary["result"],
                       "remediations": str(summary["remediations"])})


__all__ = ["STEPS", "RolloutLoop", "StepFailed", "StepResult", "format_duration", "run_all", "run_step"]
