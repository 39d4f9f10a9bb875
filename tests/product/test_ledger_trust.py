"""The ledger is read back from a RolloutLedger someone else could write: schema, cluster, labels and owner are
checked; a garbage ledger fails the step with a clear message, never a traceback, and the summary still reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from capi_rollout.domain.ledger import Ledger, LedgerError, PhaseRecord, Remediation
from capi_rollout.domain.params import parse_params
from capi_rollout.ledger_store import LABELS, KubeLedgerStore
from capi_rollout.recorder import LedgerUnusable
from capi_rollout.rollout_loop import RolloutLoop
from capi_rollout.run import run_on
from tests import builders as b
from tests.fakes import Clock, FakeKube, FakeTalos, FakeWatch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OWNER = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "wf-1", "uid": "uid-1"}


def good(observed: bool | None = False) -> Ledger:
    rem = Remediation(at=T0, machine="cp-1", node="n1", address="10.0.0.1", reason="stalled", reboot_mode="powercycle",
                      deleted=True, rebooted=True, outcome="rebooted", reboot_observed=observed)
    return Ledger(cluster="homelab", namespace="default", targets={
        "cluster": "homelab", "namespace": "default", "capi_version": "v1beta2", "control_plane": "homelab-cp",
        "deployments": ["homelab-workers"], "talosconfig_secret": "homelab-talosconfig"},
        warnings=("w",), phases={"control-plane": PhaseRecord(name="control-plane", started=T0, last_progress=T0,
                                                             remediations=(rem,))})


@pytest.mark.parametrize("observed", [None, False, True])
def test_a_ledger_round_trips(observed: bool | None) -> None:
    """Every field survives the store, "reboot requested but not observed" (False) included: the summary step
    runs in its own pod and reads only what was stored."""
    assert Ledger.from_json(good(observed).to_json()) == good(observed)


def mutate(change: Any) -> str:
    d = json.loads(good().to_json())
    change(d)
    return json.dumps(d)


GARBAGE = [
    ("not JSON", "{", "not JSON"),
    ("a list", "[]", "must be a JSON object"),
    ("cluster a number", mutate(lambda d: d.update(cluster=5)), "field 'cluster' must be str"),
    ("no namespace", mutate(lambda d: d.pop("namespace")), "missing field 'namespace'"),
    ("phase of another name", mutate(lambda d: d["phases"].update(workers=d["phases"]["control-plane"])),
     "its name is 'control-plane'"),
    ("unknown phase", mutate(lambda d: d["phases"].update(etcd={"name": "etcd", "started": "2026-01-01T00:00:00Z"})),
     "unknown phase name 'etcd'"),
    ("result garbage", mutate(lambda d: d["phases"]["control-plane"].update(result=True)), "field 'result'"),
    ("remediations a dict", mutate(lambda d: d["phases"]["control-plane"].update(remediations={})),
     "field 'remediations' must be list"),
    ("remediation extra field", mutate(lambda d: d["phases"]["control-plane"]["remediations"][0].update(x=1)),
     "unknown field(s) 'x'"),
    ("remediation deleted a string", mutate(
        lambda d: d["phases"]["control-plane"]["remediations"][0].update(deleted="yes")), "field 'deleted' must be"),
    ("targets of another cluster", mutate(lambda d: d["targets"].update(cluster="other")),
     "name cluster default/other"),
    ("targets missing a field", mutate(lambda d: d["targets"].pop("control_plane")), "must have exactly the fields"),
    ("warnings of numbers", mutate(lambda d: d.update(warnings=[1])), "list of strings"),
    ("nested too deep", "[" * 100000, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "problem"), [(t, p) for _, t, p in GARBAGE], ids=[n for n, _, _ in GARBAGE])
def test_a_garbage_ledger_is_refused_naming_the_field(text: str, problem: str) -> None:
    with pytest.raises(LedgerError) as err:
        Ledger.from_json(text)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_a_ledger_of_another_cluster_is_refused() -> None:
    with pytest.raises(LedgerError, match="records cluster default/homelab, not team/homelab"):
        good().check_belongs_to(cluster="homelab", namespace="team")


def kube_with(data: dict[str, str] | None, *, labels: dict[str, str] | None = None,
              owner_uid: str | None = "uid-1") -> FakeKube:
    kube = FakeKube()
    kube.tcps = [b.tcp()]
    kube.mds = [b.md()]
    if data is not None:
        kube.ledgers["capi-rollout-wf-1"] = (data, 1)
        meta: dict[str, Any] = {"labels": dict(LABELS if labels is None else labels)}
        if owner_uid:
            meta["ownerReferences"] = [{**OWNER, "uid": owner_uid}]
        kube.ledger_meta["capi-rollout-wf-1"] = meta
    return kube


def store(kube: FakeKube) -> KubeLedgerStore:
    return KubeLedgerStore(kube, namespace="argo", run_id="wf-1", owner=OWNER)


def test_the_store_reads_back_what_it_wrote() -> None:
    kube = kube_with(None)
    store(kube).save(good())
    assert store(kube).load() == good()


@pytest.mark.parametrize(("kube", "problem"), [
    (kube_with({"ledger": good().to_json()}, labels={}), "not written by capi-rollout"),
    (kube_with({"ledger": good().to_json()}, owner_uid="uid-of-someone-else"), "not owned by this Workflow"),
    (kube_with({"ledger": good().to_json()}, owner_uid=None), "not owned by this Workflow"),
    (kube_with({"other": "x"}), "has no spec.ledger"),
    (kube_with({"ledger": '{"cluster": 1}'}), "field 'cluster' must be str"),
], ids=["no labels", "another owner", "no owner", "no ledger key", "bad schema"])
def test_the_store_refuses_a_ledger_it_did_not_write(kube: FakeKube, problem: str) -> None:
    with pytest.raises(LedgerError, match=problem) as err:
        store(kube).load()
    assert str(err.value).startswith("RolloutLedger argo/capi-rollout-wf-1: ")


def runner(kube: FakeKube, *, cluster: str = "homelab") -> RolloutLoop:
    clock = Clock(T0)
    params = parse_params({"clusterName": cluster, "pollInterval": "30s", "stallTimeout": "10m"})
    return RolloutLoop(params=params, kube=kube, store=store(kube), talos_factory=lambda _: FakeTalos(), clock=clock,
                  out=kube.log.append, watch=FakeWatch(clock, []), sleep=lambda _: None)


@pytest.mark.parametrize("step", ["resolve", "preflight", "control-plane", "workers"])
def test_a_garbage_ledger_fails_each_step_clearly_and_writes_nothing(step: str) -> None:
    kube = kube_with({"ledger": '{"cluster": "homelab", "namespace": "default", "phases": [1]}'})
    before = dict(kube.ledgers)
    result = run_on(runner(kube), step)
    assert not result.ok
    assert result.message.startswith("cannot use the run's ledger: RolloutLedger argo/capi-rollout-wf-1: ")
    assert "field 'phases' must be dict" in result.message
    assert kube.ledgers == before and kube.deleted == [] and kube.events == []


def test_a_ledger_of_another_cluster_fails_the_step() -> None:
    kube = kube_with({"ledger": good().to_json()})
    result = run_on(runner(kube, cluster="other"), "control-plane")
    assert not result.ok and "records cluster default/homelab, not default/other" in result.message


def test_the_summary_still_reports_a_garbage_ledger() -> None:
    kube = kube_with({"ledger": "garbage"})
    result = run_on(runner(kube), "summary")
    assert result.ok and result.outputs["result"] == "Failed"
    summary = json.loads(result.outputs["summary"])
    assert summary["reasons"] == ["cannot use the run's ledger: RolloutLedger argo/capi-rollout-wf-1: "
                                  "not JSON: Expecting value at line 1 column 1"]
    assert any("why: cannot use the run's ledger" in line for line in kube.log)


def test_ledger_unusable_is_a_step_failure() -> None:
    assert issubclass(LedgerUnusable, Exception)
    kube = kube_with({"ledger": "garbage"})
    with pytest.raises(LedgerUnusable):
        runner(kube).load_ledger()
