"""The rollout loop: resolve → preflight → control plane → workers → summary, one step at a time.

Contract: :class:`RolloutLoop` is one cluster's rollout against its ledger; :mod:`capi_rollout.run` wires it
(adapters, ledger store, claim) and runs its steps through :data:`capi_rollout.step_table.STEPS`. Each step
method raises :class:`~capi_rollout.step_table.StepFailed` for an expected failure (an unresolvable cluster, a
preflight violation, a phase timeout or an exhausted budget), with a message saying what to do.

A phase loop observes the cluster (:mod:`capi_rollout.observation`), asks Talos about unhealthy Machines, lets
:func:`capi_rollout.domain.decide.decide` choose, hands remediations to the remediator and waits for the next
change (at most ``pollInterval``). Every state change goes to the ledger first (:mod:`capi_rollout.recorder`), so
a step that is killed and retried resumes with the same clocks and remediation count. A phase already finished
in the ledger is not run again.

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
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from capi_rollout.claim_store import ClaimUnusable, ClusterClaim
from capi_rollout.domain.claim import decide_claim
from capi_rollout.domain.decide import addresses_to_probe, decide
from capi_rollout.domain.ledger import PHASE_TITLES, Ledger, PhaseRecord
from capi_rollout.domain.model import CLUSTER_NAME_LABEL
from capi_rollout.domain.params import Params
from capi_rollout.domain.preflight import preflight, still_meant
from capi_rollout.domain.replacement import replacement_progress
from capi_rollout.domain.resolve import (
    TALOSCONFIG_KEY,
    ResolveError,
    Targets,
    resolve_targets,
    talosconfig_problems,
    talosconfig_secret_name,
)
from capi_rollout.domain.state import ClusterState, NodeStatus
from capi_rollout.ledger_store import LedgerConflict, LedgerStore
from capi_rollout.observation import Observer, default_watch
from capi_rollout.ports import ClusterWatch, KubePort, ObjectCache, TalosPort
from capi_rollout.progress_file import ProgressFile
from capi_rollout.recorder import LedgerRecorder, LedgerUnusable
from capi_rollout.remediator import RemediationAborted, Remediator
from capi_rollout.step_table import StepFailed
from capi_rollout.summary import build_summary, render_table

log = logging.getLogger("capi_rollout")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def default_talos_factory(talosconfig: str) -> TalosPort:
    from capi_rollout.adapters.talos.config import parse_talosconfig
    from capi_rollout.adapters.talos.sync import SyncTalosClient

    return SyncTalosClient(parse_talosconfig(talosconfig))


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
        self.talos_factory = talos_factory
        self.clock = clock
        self.out = out or (lambda line: print(line, flush=True))
        self.watch = watch
        self.sleep = sleep
        self._talos: TalosPort | None = None
        self.recorder = LedgerRecorder(store, cluster=params.cluster_name, namespace=params.cluster_namespace)
        self.observer = Observer(kube)

    # --- ledger (every write through the recorder) -----------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        return self.recorder.ledger

    def load_ledger(self) -> Ledger | None:
        """The stored ledger (None when none yet); :class:`LedgerUnusable` when it is garbage or another cluster's."""
        return self.recorder.load()

    @property
    def last_read(self) -> str:
        """Where the last observation came from: "cache" or "lists" ("" before the first)."""
        return self.observer.last_read

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
        self.recorder.record_targets(targets)
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
        """One observation of the targets (:meth:`capi_rollout.observation.Observer.observe`)."""
        seen = self.observer.observe(self.targets(), with_health_checks=with_health_checks, cache=cache)
        return seen.cluster, seen.control_plane, seen.deployments, seen.state

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
        certificate = None if validity is None else (validity.not_before, validity.not_after)
        nodes = self.probe(addresses)
        report = preflight(cluster=cluster, control_plane=tcp, deployments=mds, state=state, nodes=nodes,
                           now=self.clock(), versions=versions, client_certificate=certificate)
        if not report.ok and nodes:
            # Before stopping the run, observe again: an answer for a Machine deleted while Talos was asked (its
            # address possibly reused already) speaks for nobody (capi_rollout.domain.preflight.still_meant).
            cluster, tcp, mds, again = self.observe(with_health_checks=True)
            nodes, departed = still_meant(state, again, nodes)
            report = preflight(cluster=cluster, control_plane=tcp, deployments=mds, state=again, nodes=nodes,
                               now=self.clock(), versions=versions, client_certificate=certificate)
            report = replace(report, warnings=(*departed, *report.warnings))
        ledger = self.recorder.record_preflight(
            warnings=report.warnings,
            failure=None if report.ok else "preflight failed: " + "; ".join(report.violations))
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
            self.recorder.save_phase(record)
            self.say(f"{title}: phase started")
        else:
            self.say(f"{title}: resuming (started {record.started.isoformat()}, "
                     f"{len(record.remediations)} remediations so far)")
        remediator = Remediator(kube=self.kube, talos=None, dry_run=self.params.dry_run, save=self.recorder.save_phase,
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
                if record.result == "succeeded":  # another attempt of this step finished the phase (re-read)
                    return record
                if record.result == "failed":
                    raise StepFailed(record.message)
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
                try:
                    if action.record != record:
                        self.recorder.save_phase(action.record)
                    record = action.record
                    new = [w for w in action.warnings if not any(x.startswith(w) for x in self.ledger.warnings)]
                    if new:  # kept for the summary, said once
                        self.recorder.add_warnings(new)
                        for w in new:
                            self.say(f"warning: {w}")
                    if action.kind in ("complete", "fail"):
                        done = "succeeded" if action.kind == "complete" else "failed"
                        self.recorder.save_phase(replace(record, finished=now, result=done, message=action.reason))
                except LedgerConflict as exc:  # an older attempt still runs and wrote first: go on from its ledger
                    self.say(f"{title}: the ledger changed under this attempt ({exc}): another attempt of this step "
                             "still runs; re-reading it and deciding again")
                    record = self._reread(phase, record)
                    fresh = True
                    continue
                if action.counters != last_counters or (now - last_said).total_seconds() >= self.params.poll_interval:
                    self.say(action.progress)  # on every change, and at least once per pollInterval
                    last_counters, last_said = action.counters, now
                if action.kind == "complete":
                    self.say(action.reason)
                    return replace(record, finished=now, result="succeeded", message=action.reason)
                if action.kind == "fail":
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
                    except (RemediationAborted, LedgerConflict) as exc:  # another attempt wrote first (before
                        # acting: this one did nothing; after: its outcome note is lost, the intent stays): re-read
                        self.say(f"{title}: {exc}")
                        record = self._reread(phase, record)
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

    def _reread(self, phase: str, record: PhaseRecord) -> PhaseRecord:
        """After losing a race on the ledger to another attempt of this step: its record of the phase."""
        self.recorder.forget()
        return self.ledger.phase(phase) or record

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


__all__ = ["RolloutLoop", "default_talos_factory"]
