"""Sequence tests: the real runner and decision code alternate with a small fake CAPI controller.

Each wait advances a fake clock and lets the controller act once; seeded jitter mimics production without
flakiness; invariants are checked on every remediation; an iteration cap stops runaway loops; the whole run is
written as a readable golden log (regenerate on purpose with ``UPDATE_GOLDEN=1``, never in CI).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from capi_rollout.domain.ledger import Ledger, PhaseRecord
from capi_rollout.domain.params import parse_params
from capi_rollout.ledger_store import KubeLedgerStore, MemoryLedgerStore
from capi_rollout.rollout_loop import RolloutLoop
from capi_rollout.step_table import StepFailed
from tests.fakes import Clock, FakeControlPlaneController, FakeKube, FakeTalos, FakeWatch

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make(faulty: dict[int, str] | None = None, *, seed: int = 7, max_remediations: str = "2",
         store: Any = None, kube: FakeKube | None = None, controller: Any = None, clock: Clock | None = None,
         crash_after_waits: int | None = None,
         dry_run: str = "false") -> tuple[RolloutLoop, FakeKube, FakeTalos, FakeWatch]:
    clock = clock or Clock(T0)
    kube = kube or FakeKube()
    controller = controller or FakeControlPlaneController(kube, clock, faulty=faulty, seed=seed)
    talos = FakeTalos()
    watch = FakeWatch(clock, [controller], crash_after_waits=crash_after_waits)
    lines: list[str] = kube.log
    params = parse_params({"clusterName": "homelab", "pollInterval": "30s", "stallTimeout": "10m",
                           "controlPlaneTimeout": "45m", "maxRemediations": max_remediations, "dryRun": dry_run})
    runner = RolloutLoop(params=params, kube=kube, store=store or MemoryLedgerStore(), talos_factory=lambda _: talos,
                    clock=clock, out=lines.append, watch=watch, sleep=lambda _: None)
    return runner, kube, talos, watch


def check_golden(name: str, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with UPDATE_GOLDEN=1 once, on purpose, and review it"
    assert text == path.read_text()


def test_a_control_plane_rollout_without_faults_completes_without_remediation() -> None:
    runner, kube, talos, _ = make()
    runner.resolve()
    record = runner.phase("control-plane")
    assert record.result == "succeeded" and record.remediations == ()
    assert kube.deleted == [] and talos.reboots == []
    assert sorted(kube.machines) == ["cp-new-0", "cp-new-1", "cp-new-2"]
    check_golden("cp-rollout-no-faults", kube.log)


def test_a_control_plane_stall_is_recovered_by_one_remediation() -> None:
    runner, kube, talos, _ = make({1: "not-ready"})
    runner.resolve()
    record = runner.phase("control-plane")
    assert record.result == "succeeded"
    assert [r.machine for r in record.remediations] == ["cp-new-1"]
    assert kube.deleted == ["cp-new-1"]
    assert talos.reboots == [("10.0.1.1", "powercycle")]
    assert talos.reboot_identities == ["node-cp-new-1"]  # the nodeRef: the answering node must say it is this one
    assert kube.events == [("homelab-cp", "CapiRolloutRemediation")]
    stalled_since = [line for line in kube.log if "remediation 1 of 2" in line]
    assert len(stalled_since) == 1
    check_golden("cp-stall-one-remediation", kube.log)


def test_a_persistent_stall_spends_exactly_the_budget_then_fails() -> None:
    runner, kube, talos, _ = make({1: "provisioning", 2: "provisioning", 3: "provisioning"})
    runner.resolve()
    with pytest.raises(StepFailed, match=r"remediation budget exhausted \(2 of 2 used\)"):
        runner.phase("control-plane")
    assert kube.deleted == ["cp-new-1", "cp-new-2"]
    assert talos.reboots == []  # provisioning Machines have no address to reboot
    record = runner.ledger.phase("control-plane")
    assert record is not None and record.result == "failed" and len(record.remediations) == 2


def test_max_remediations_zero_fails_at_the_first_stall_and_touches_nothing() -> None:
    runner, kube, talos, _ = make({0: "not-ready"}, max_remediations="0")
    runner.resolve()
    with pytest.raises(StepFailed, match=r"remediation budget exhausted \(0 of 0 used\)"):
        runner.phase("control-plane")
    assert kube.deleted == [] and talos.reboots == [] and kube.events == []


def test_dry_run_reports_the_stall_and_writes_nothing_to_the_cluster() -> None:
    runner, kube, talos, _ = make({0: "not-ready"}, dry_run="true", max_remediations="1")
    runner.resolve()
    with pytest.raises(StepFailed, match="remediation budget exhausted"):
        runner.phase("control-plane")
    assert kube.deleted == [] and talos.reboots == [] and kube.events == []
    record = runner.ledger.phase("control-plane")
    assert record is not None
    (rem,) = record.remediations
    assert rem.dry_run
    assert rem.outcome == "dry run: would delete Machine cp-new-0 and would reboot 10.0.1.0 (powercycle)"


def test_a_step_killed_mid_phase_resumes_with_the_same_clock_and_remediation_count() -> None:
    kube = FakeKube()
    clock = Clock(T0)
    controller = FakeControlPlaneController(kube, clock, faulty={0: "not-ready", 1: "not-ready", 2: "not-ready"})
    store = KubeLedgerStore(kube, namespace="argo", run_id="wf-1")
    first, *_ = make(store=store, kube=kube, controller=controller, clock=clock, crash_after_waits=40)
    first.resolve()
    with pytest.raises(KeyboardInterrupt):
        first.phase("control-plane")
    saved = Ledger.from_json(kube.ledgers["capi-rollout-wf-1"][0]["ledger"])
    before = saved.phase("control-plane")
    assert before is not None and len(before.remediations) == 1 and before.result is None

    retried, *_ = make(store=KubeLedgerStore(kube, namespace="argo", run_id="wf-1"),
                       kube=kube, controller=controller, clock=clock)
    with pytest.raises(StepFailed, match=r"remediation budget exhausted \(2 of 2 used\)"):
        retried.phase("control-plane")
    after = retried.ledger.phase("control-plane")
    assert after is not None and after.started == before.started
    assert [r.machine for r in after.remediations] == ["cp-new-0", "cp-new-1"]
    assert kube.deleted == ["cp-new-0", "cp-new-1"]


def test_a_failed_phase_is_never_run_again_by_a_retry() -> None:
    runner, kube, _, _ = make({0: "provisioning", 1: "provisioning", 2: "provisioning"}, max_remediations="1")
    runner.resolve()
    with pytest.raises(StepFailed):
        runner.phase("control-plane")
    deleted = list(kube.deleted)
    with pytest.raises(StepFailed, match="remediation budget exhausted"):
        runner.phase("control-plane")
    assert kube.deleted == deleted


def test_workers_never_start_before_the_control_plane_succeeded() -> None:
    runner, *_ = make()
    runner.resolve()
    with pytest.raises(StepFailed, match="only after the control plane phase has succeeded"):
        runner.phase("workers")


@pytest.mark.parametrize("seed", range(8))
def test_invariants_hold_for_any_boot_jitter(seed: int) -> None:
    runner, _, _, watch = make({1: "not-ready"}, seed=seed)
    runner.resolve()
    record = runner.phase("control-plane")
    assert record.result == "succeeded"
    assert len(record.remediations) == 1, "one faulty machine needs exactly one remediation"
    stamps = [r.at for r in record.remediations]
    assert stamps == sorted(stamps)
    assert watch.waits < 200


def test_preflight_fails_fast_on_a_node_in_maintenance_and_touches_nothing() -> None:
    runner, kube, talos, _ = make()
    talos.stages["10.0.0.11"] = "maintenance"
    runner.resolve()
    with pytest.raises(StepFailed) as err:
        runner.preflight()
    assert "node node-cp-old-1 (10.0.0.11) is in Talos maintenance mode: manual intervention required" in str(err.value)
    assert kube.deleted == [] and talos.reboots == []
    assert runner.ledger.preflight is not None


@pytest.mark.parametrize("deleted", [True, False])
def test_an_untrusted_answer_for_a_machine_deleted_while_preflight_asked_blocks_nothing(deleted: bool) -> None:
    """CAPI deletes an old Machine while preflight asks Talos about it, and its address already answers with another
    node's certificate: that answer speaks for nobody. Had the Machine stayed, the same answer stops the run."""
    runner, kube, talos, _ = make()
    runner.resolve()
    gone = next(name for name, m in kube.machines.items()
                if any(a["address"] == "10.0.0.11" for a in m["status"].get("addresses", [])))
    probe_many = talos.probe_many

    def asked(addresses: Any) -> Any:
        if deleted:
            kube.machines.pop(gone)
        return {**probe_many(addresses), "10.0.0.11": FakeTalos.Probe("10.0.0.11", "untrusted", "valid for node-w-9")}

    talos.probe_many = asked  # type: ignore[method-assign]
    if not deleted:
        with pytest.raises(StepFailed, match=r"the Talos API at 10\.0\.0\.11 for node node-cp-old-1 presents"):
            runner.preflight()
        return
    warnings = runner.preflight()
    assert warnings[0].startswith(f"Machine {gone} was deleted while preflight asked Talos about it")
    assert "valid for node-w-9" in warnings[0] and runner.ledger.preflight is None
    assert kube.deleted == [] and talos.reboots == []


def test_preflight_lists_every_violation_at_once() -> None:
    runner, kube, _, _ = make()
    kube.tcps[0]["spec"]["rolloutStrategy"] = {"type": "RollingUpdate"}
    kube.cluster["spec"]["paused"] = True  # type: ignore[index]
    runner.resolve()
    with pytest.raises(StepFailed) as err:
        runner.preflight()
    assert "maxSurge is not set" in str(err.value) and "spec.paused: true" in str(err.value)


def test_maintenance_appearing_mid_rollout_fails_within_one_evaluation() -> None:
    runner, kube, talos, _ = make({0: "not-ready"})
    runner.resolve()
    talos.stages["10.0.1.0"] = "maintenance"
    with pytest.raises(StepFailed, match=r"node node-cp-new-0 \(10.0.1.0\) is in Talos maintenance mode"):
        runner.phase("control-plane")
    assert kube.deleted == [] and talos.reboots == []
    booted = next(line for line in kube.log if "cp-new-0 booted, NotReady" in line)
    assert booted.startswith("2026-03-01T12:03:30Z")
    record = runner.ledger.phase("control-plane")
    assert record is not None and record.finished is not None and record.finished.strftime("%H:%M:%S") == "12:03:30"


def test_resolve_names_every_missing_piece() -> None:
    runner, kube, _, _ = make()
    kube.secrets = []
    kube.tcps = kube.tcps * 2
    with pytest.raises(StepFailed) as err:
        runner.resolve()
    assert "2 TalosControlPlanes carry" in str(err.value)
    assert "Secret default/homelab-talosconfig not found" in str(err.value)


def test_a_resolve_failure_is_written_to_the_ledger_for_the_summary() -> None:
    from capi_rollout.run import run_on

    runner, kube, _, _ = make()
    kube.secrets = []
    result = run_on(runner, "resolve")
    assert not result.ok
    assert runner.ledger.failure is not None and "homelab-talosconfig not found" in runner.ledger.failure
    summary = run_on(runner, "summary", workflow_status="Failed")
    assert "homelab-talosconfig not found" in json.loads(summary.outputs["summary"])["reasons"][0]


def test_resolve_reads_the_talosconfig_secret_by_name_and_lists_no_secrets() -> None:
    runner, kube, _, _ = make()
    kube.secrets.append({"metadata": {"name": "homelab-kubeconfig", "namespace": "default",
                                      "labels": {"cluster.x-k8s.io/cluster-name": "homelab"}}, "data": {"value": "x"}})
    assert runner.resolve().talosconfig_secret == "homelab-talosconfig"
    assert kube.secret_gets == ["homelab-talosconfig"]  # FakeKube has no list_secrets: calling it would fail


@pytest.mark.parametrize(("labels", "why"), [
    ({}, "has no label cluster.x-k8s.io/cluster-name"),
    ({"cluster.x-k8s.io/cluster-name": "prod"}, "carries cluster.x-k8s.io/cluster-name=prod, not homelab"),
])
def test_a_talosconfig_secret_not_labelled_for_the_cluster_fails_resolve(labels: dict[str, str], why: str) -> None:
    runner, kube, _, _ = make()
    kube.secrets[0]["metadata"]["labels"] = labels
    with pytest.raises(StepFailed) as err:
        runner.resolve()
    assert why in str(err.value) and "refusing to use it" in str(err.value)


def test_a_phase_rereads_the_secret_and_refuses_it_once_relabelled_for_another_cluster() -> None:
    runner, kube, _, _ = make()
    runner.resolve()
    kube.secrets[0]["metadata"]["labels"] = {"cluster.x-k8s.io/cluster-name": "prod"}
    with pytest.raises(StepFailed) as err:
        runner.talos()
    assert "carries cluster.x-k8s.io/cluster-name=prod, not homelab" in str(err.value)


def test_run_all_rolls_control_plane_then_workers_and_ends_with_the_summary() -> None:
    from capi_rollout.run import run_all

    runner, kube, talos, _ = make({0: "not-ready"})
    kube.mds = []  # no workers: the workers phase completes at once, after the control plane
    result = run_all(runner.params, kube=kube, loop=runner)
    assert result.ok and result.outputs["result"] == "Succeeded"
    summary = json.loads(result.outputs["summary"])
    assert [summary["phases"][p]["result"] for p in ("control-plane", "workers")] == ["succeeded", "succeeded"]
    assert summary["remediations"] == 1 and talos.reboots == [("10.0.1.0", "powercycle")]
    assert result.outputs["remediations"] == "1", "the run's total, counted once by the summary's metric"
    order = [line for line in kube.log if "phase started" in line]
    assert [line.split("] ")[1] for line in order] == ["control plane: phase started", "workers: phase started"]


def test_run_all_stops_at_the_first_failed_step_and_still_summarises() -> None:
    from capi_rollout.run import run_all

    runner, kube, talos, _ = make()
    talos.stages["10.0.0.10"] = "maintenance"
    result = run_all(runner.params, kube=kube, loop=runner)
    assert not result.ok and "is in Talos maintenance mode" in result.message
    assert json.loads(result.outputs["summary"])["result"] == "Failed"
    assert runner.ledger.phase("control-plane") is None and kube.deleted == []


class RivalFirst(KubeLedgerStore):
    """The ledger of a step whose previous attempt still runs (a partitioned node): just before this attempt's
    first remediation intent lands, the rival records the same remediation and acts (delete + reboot)."""

    def __init__(self, kube: FakeKube, talos: FakeTalos) -> None:
        super().__init__(kube, namespace="argo", run_id="wf-race")
        self.rival = KubeLedgerStore(kube, namespace="argo", run_id="wf-race")
        self.fake_kube, self.talos, self.raced = kube, talos, False

    def save(self, ledger: Ledger) -> None:
        record = ledger.phase("control-plane")
        if not self.raced and record is not None and record.remediations:
            self.raced = True
            self.rival.load()
            self.rival.save(ledger)  # the rival's intent, with the current resourceVersion: it wins
            rem = record.remediations[-1]
            machine = self.fake_kube.machines[rem.machine]
            self.fake_kube.delete_machine("default", rem.machine, machine["metadata"]["uid"])
            self.talos.reboot(str(rem.address), rem.reboot_mode)
        super().save(ledger)


def test_of_two_attempts_racing_on_one_ledger_only_the_one_whose_intent_lands_remediates() -> None:
    kube = FakeKube()
    talos = FakeTalos()
    store = RivalFirst(kube, talos)
    runner, kube, _, _ = make({1: "not-ready"}, kube=kube, store=store)
    runner.talos_factory = lambda _: talos
    runner.resolve()
    record = runner.phase("control-plane")
    assert store.raced and record.result == "succeeded"
    assert kube.deleted == ["cp-new-1"], "the Machine is deleted once: by the rival only"
    assert talos.reboots == [("10.0.1.1", "powercycle")], "the node is rebooted once: by the rival only"
    assert [r.machine for r in record.remediations] == ["cp-new-1"], "one remediation in the ledger"
    assert any("aborted before acting: another attempt of this step wrote the ledger first" in line
               for line in kube.log)
    assert kube.events == [], "the aborted attempt records no Event for a remediation it did not perform"


class SkipAnnotating(FakeControlPlaneController):
    """The fake control plane, with cp-new-1 annotated skip-remediation by a human as soon as it exists."""

    def tick(self) -> None:
        super().tick()
        m = self.kube.machines.get("cp-new-1")
        if m is not None:
            m["metadata"].setdefault("annotations", {})["cluster.x-k8s.io/skip-remediation"] = ""


def test_a_stall_on_a_skip_remediation_machine_says_why_in_the_progress_line_and_the_summary() -> None:
    clock = Clock(T0)
    kube = FakeKube()
    runner, kube, talos, _ = make(kube=kube, clock=clock,
                                  controller=SkipAnnotating(kube, clock, faulty={1: "not-ready"}, seed=7))
    runner.resolve()
    with pytest.raises(StepFailed, match="control plane phase timed out") as failed:
        runner.phase("control-plane")
    why = ("waiting: Machine cp-new-1 (node node-cp-new-1 not Ready: NodeNotReady) carries the annotation "
           "cluster.x-k8s.io/skip-remediation: it is never remediated")
    assert why in str(failed.value)
    assert kube.deleted == [] and talos.reboots == []
    progress = [line for line in kube.log if line.startswith("[") and "no progress for" in line]
    first = next(i for i, line in enumerate(progress) if why in line)
    assert all(why in line for line in progress[first:])  # said from the moment it holds, on every line after
    summary = runner.summary()
    table = kube.log[-1]  # the summary's table, as printed
    assert summary["phases"]["control-plane"]["waiting"].startswith(why.removeprefix("waiting: "))
    assert f"\n  {why}" in table and "why: control plane phase timed out" in table


class RivalProgress(KubeLedgerStore):
    """An older attempt of the step still runs and writes its progress first, once, mid-phase: this attempt's
    next progress write then conflicts (HTTP 409)."""

    def __init__(self, kube: FakeKube, *, after: int) -> None:
        super().__init__(kube, namespace="argo", run_id="wf-race")
        self.rival = KubeLedgerStore(kube, namespace="argo", run_id="wf-race")
        self.saves, self.after, self.raced = 0, after, False

    def save(self, ledger: Ledger) -> None:
        record = ledger.phase("control-plane")
        if record is not None:
            self.saves += 1
        if not self.raced and self.saves == self.after:
            self.raced = True
            stored = self.rival.load()
            assert stored is not None and record is not None
            self.rival.save(self.rival_write(stored, record))
        super().save(ledger)

    def rival_write(self, stored: Ledger, record: PhaseRecord) -> Ledger:
        """What the rival writes: its progress, unchanged (the resourceVersion moves on)."""
        return stored


def test_a_progress_write_that_loses_to_an_older_attempt_rereads_the_ledger_and_goes_on() -> None:
    """A conflict on a plain progress write is not an API error (which exits 1 and is never retried): the
    attempt re-reads the ledger and decides again."""
    kube = FakeKube()
    store = RivalProgress(kube, after=3)
    runner, kube, _, _ = make(kube=kube, store=store)
    runner.resolve()
    record = runner.phase("control-plane")
    assert store.raced and record.result == "succeeded"
    assert any("the ledger changed under this attempt" in line for line in kube.log)
    stored = KubeLedgerStore(kube, namespace="argo", run_id="wf-race").load()
    assert stored is not None and stored.phase("control-plane") == record


class RivalAfterActing(KubeLedgerStore):
    """An older attempt writes the ledger between this attempt's remediation intent and its outcome note."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(kube, namespace="argo", run_id="wf-race")
        self.rival = KubeLedgerStore(kube, namespace="argo", run_id="wf-race")
        self.raced = False

    def save(self, ledger: Ledger) -> None:
        record = ledger.phase("control-plane")
        if not self.raced and record is not None and record.remediations \
                and record.remediations[-1].outcome != "started":
            self.raced = True
            stored = self.rival.load()
            assert stored is not None
            self.rival.save(stored)
        super().save(ledger)


def test_an_outcome_note_that_loses_the_race_keeps_the_intent_and_the_phase_goes_on() -> None:
    kube = FakeKube()
    talos = FakeTalos()
    store = RivalAfterActing(kube)
    runner, kube, _, _ = make({1: "not-ready"}, kube=kube, store=store)
    runner.talos_factory = lambda _: talos
    runner.resolve()
    record = runner.phase("control-plane")
    assert store.raced and record.result == "succeeded"
    assert kube.deleted == ["cp-new-1"] and talos.reboots == [("10.0.1.1", "powercycle")]  # acted once
    assert [r.machine for r in record.remediations] == ["cp-new-1"]  # the intent stayed; counted once


class RivalFinishes(RivalProgress):
    """The older attempt's write that wins is the phase's end: it already finished the rollout."""

    def rival_write(self, stored: Ledger, record: PhaseRecord) -> Ledger:
        return stored.with_phase(replace(record, result="succeeded", message="rival: complete"))


def test_an_attempt_that_loses_to_one_that_finished_the_phase_ends_with_its_result() -> None:
    kube = FakeKube()
    store = RivalFinishes(kube, after=2)
    runner, kube, _, _ = make(kube=kube, store=store)
    runner.resolve()
    record = runner.phase("control-plane")
    assert store.raced and record.result == "succeeded" and record.message == "rival: complete"
