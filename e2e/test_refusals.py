"""Issue 6 scenarios 7, 8, 9 and 11: the workflow refuses, says why, and writes nothing to the cluster.

"Nothing written" is checked on the simulated cluster itself: no Machine deleted by anyone but the fake CAPI
controllers, no reboot seen by the fake Talos API, no remediation in the ledger (and, where the run stops before
resolving, no ledger at all). The refusals that need no rollout (7 before the run, 8, 11) are played once, all at
the same time (``run_concurrently``, fixture ``refusals``); each test asserts on its own cases.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from e2e.harness import Stage, parameters, scaled
from e2e.outcome import Outcome
from e2e.simhandles import SimHandle
from sim.objects import TCP_GROUP, TCP_VERSION
from sim.scenario import DeploymentSpec, Scenario

pytestmark = pytest.mark.e2e

MAINTENANCE = "is in Talos maintenance mode: manual intervention required"
TALOS_VERSIONS = {"talos-1.12": "v1.12.0", "talos-1.13": "v1.13.0"}


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _refused(out: Outcome, phrase: str, *, failed_step: str, in_summary: bool = True) -> dict[str, Any]:
    """The run failed at ``failed_step`` saying ``phrase`` (in its log, and in the summary's reasons)."""
    assert out.run.phase == "Failed", out.run.text()
    summary = out.summary
    assert summary is not None and summary["result"] == "Failed", summary
    if in_summary:
        assert any(phrase in r for r in summary["reasons"]), summary["reasons"]
    assert phrase in out.step_log(failed_step), out.step_log(failed_step)
    assert out.run.attempts(failed_step)[-1].phase == "Failed"
    assert out.engine_deletions() == [] and out.reboots() == [] and out.remediations() == []
    return summary


def _not_started_after(out: Outcome, step: str) -> None:
    order = ["resolve", "preflight", "control-plane", "workers"]
    for later in order[order.index(step) + 1:]:
        assert not out.step_ran(later), f"{later} ran after {step} failed"


def test_7_maintenance_before_the_run_fails_preflight_on_both_talos_behaviours(
        refusals: dict[str, Outcome]) -> None:
    for label in TALOS_VERSIONS:
        out = refusals[f"maintenance-before-{label}"]
        _refused(out, MAINTENANCE, failed_step="preflight")
        assert "node demo-cp-1 (" in out.step_log("preflight")
        assert out.timeline.first("talos.maintenance", "demo-cp-1") is not None
        _not_started_after(out, "preflight")


def test_7_maintenance_appearing_mid_rollout_fails_within_one_evaluation(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    version = TALOS_VERSIONS["talos-1.13"]  # detection is the same on 1.12 (the before-the-run test runs both)
    # The remediation's reboot lands the new node in maintenance mode (omni #877). The deletion is made long
    # (4 s) so the deleting Machine, whose node the engine keeps probing, is still there when Talos comes back.
    s = scaled("maintenance-after-reboot", talos_version=version, target_talos_version=version,
               timings={"deletion": 240})
    out = stage.run(request.node.name, s, parameters(s))

    summary = _refused_after_one_remediation(out)
    appeared = out.timeline.first("talos.maintenance", "demo-cp-3")
    assert appeared is not None
    cp = out.phase("control-plane")
    assert cp is not None and cp["result"] == "failed" and MAINTENANCE in cp["message"]
    assert _wall(cp["finished"]) >= appeared.wall
    # "Within one evaluation", counted rather than timed (a loaded machine stretches seconds, not evaluations):
    # an evaluation already under way when maintenance appeared may still print its wait line; the next fails.
    late = _progress_lines_after(out.step_log("control-plane"), appeared.wall, "control plane")
    assert len(late) <= 1, f"{len(late)} evaluations waited after maintenance appeared: {late}"
    assert "demo-cp-3" in summary["reasons"][0]
    _not_started_after(out, "control-plane")


def _progress_lines_after(log: str, wall: float, phase: str) -> list[str]:
    """The phase's wait lines (``[HH:MM:SS] <phase>: n/m machines, ...``) stamped after ``wall``.

    Stamps have whole seconds and the day of ``wall`` (UTC): a line stamped in the second of ``wall`` itself may
    precede it, so it is not counted.
    """
    day = datetime.fromtimestamp(wall, UTC)
    pattern = re.compile(rf"^\[(\d\d):(\d\d):(\d\d)\] {re.escape(phase)}: \d+/\d+ machines", re.MULTILINE)
    late = []
    for m in pattern.finditer(log):
        stamp = day.replace(hour=int(m[1]), minute=int(m[2]), second=int(m[3]), microsecond=0).timestamp()
        if stamp < wall - 43200:  # the log crossed midnight UTC after ``wall``
            stamp += 86400
        if stamp > wall:
            late.append(log[m.start():log.find("\n", m.start())])
    return late


def _refused_after_one_remediation(out: Outcome) -> dict[str, Any]:
    assert out.run.phase == "Failed", out.run.text()
    summary = out.summary
    assert summary is not None and summary["result"] == "Failed"
    assert any(MAINTENANCE in r for r in summary["reasons"]), summary["reasons"]
    # Only the remediation that caused the reboot; nothing after maintenance appeared.
    assert out.engine_deletions() == ["demo-cp-3"]
    assert [e.subject for e in out.reboots()] == ["demo-cp-3"]
    return summary


def _drop_tcp_max_surge(sim: SimHandle) -> None:
    client.CustomObjectsApi(sim.api_client).patch_namespaced_custom_object(
        TCP_GROUP, TCP_VERSION, sim.scenario.namespace, "taloscontrolplanes", "demo-cp",
        {"spec": {"rolloutStrategy": {"rollingUpdate": {"maxSurge": None}}}},
    )


def test_8_unsafe_strategies_fail_preflight_and_nothing_is_done(refusals: dict[str, Outcome]) -> None:
    out_missing = refusals["tcp-maxsurge-missing-md-maxunavailable-2"]
    summary = _refused(out_missing, "preflight failed", failed_step="preflight")
    (reason,) = summary["reasons"]
    assert "maxSurge is not set" in reason
    assert "maxUnavailable 2 resolves to 2 for 3 replicas; it must be 1" in reason
    _not_started_after(out_missing, "preflight")

    out_surge = refusals["tcp-maxsurge-1"]
    (reason,) = _refused(out_surge, "preflight failed", failed_step="preflight")["reasons"]
    assert "maxSurge 1" in reason and "must be 0" in reason
    _not_started_after(out_surge, "preflight")


def test_9_two_unhealthy_control_plane_machines_of_three_fail_without_deleting(
        request: pytest.FixtureRequest, stage: Stage) -> None:
    s = scaled("etcd-quorum-loss")
    out = stage.run(request.node.name, s, parameters(s))

    assert out.run.phase == "Failed", out.run.text()
    summary = out.summary
    assert summary is not None and summary["result"] == "Failed"
    assert any("would leave" in r and "below the quorum" in r for r in summary["reasons"]), summary["reasons"]
    assert out.engine_deletions() == [] and out.reboots() == [] and out.remediations() == []
    _not_started_after(out, "control-plane")


def _delete_talosconfig(sim: SimHandle) -> None:
    client.CoreV1Api(sim.api_client).delete_namespaced_secret("demo-talosconfig", sim.scenario.namespace)


def _relabel_talosconfig(sim: SimHandle) -> None:
    """The Secret named demo-talosconfig now says it belongs to another cluster (its cluster-name label)."""
    client.CoreV1Api(sim.api_client).patch_namespaced_secret(
        "demo-talosconfig", sim.scenario.namespace,
        {"metadata": {"labels": {"cluster.x-k8s.io/cluster-name": "other"}}})


def test_11_missing_or_foreign_secret_unknown_cluster_and_bad_parameters_fail_clearly_without_writes(
        refusals: dict[str, Outcome]) -> None:
    missing, foreign = refusals["missing-secret"], refusals["foreign-secret"]
    unknown, bad = refusals["unknown-cluster"], refusals["bad-parameters"]
    # A resolve failure is told in the resolve step's log (what `argo logs` shows) and in the summary: the only
    # write of such a run is its own ledger in the workflow's namespace, holding just the reason.
    _refused(missing, "/demo-talosconfig not found", failed_step="resolve")
    _refused(foreign, "demo-talosconfig carries cluster.x-k8s.io/cluster-name=other, not demo: refusing to use it",
             failed_step="resolve")
    _refused(unknown, "cannot resolve the cluster: Cluster nope not found", failed_step="resolve")
    (reason,) = _refused(bad, "invalid parameters", failed_step="resolve")["reasons"]
    assert "maxRemediations: must be a whole number ≥ 0, got '-1'" in reason and "pollInterval:" in reason
    assert "rebootMode: must be one of powercycle, default, force, got 'bogus'" in reason
    assert bad.ledger is None, "bad parameters are refused before anything is read or written"
    for out in (missing, foreign, unknown):
        assert out.ledger is not None and out.ledger["phases"] == {} and not out.ledger.get("targets")
        assert out.ledger["failure"].startswith("cannot resolve the cluster: ")
    for out in (missing, foreign, unknown, bad):
        _not_started_after(out, "resolve")


# ------------------------------------------------------------------------------------------ the refusal batch


@pytest.fixture(scope="module")
def refusals(stage: Stage) -> dict[str, Outcome]:
    """Every refusal that needs no rollout, played at once (each in its own namespace); outcomes by case."""
    cases: dict[str, dict[str, Any]] = {}

    def case(key: str, scenario: Scenario, prepare: Any = None, **params: str) -> None:
        cases[key] = {"name": f"refusals-{key}", "scenario": scenario, "params": parameters(scenario, **params),
                      "trigger": False, "prepare": prepare}

    for label, version in TALOS_VERSIONS.items():
        case(f"maintenance-before-{label}",
             scaled("maintenance-before", talos_version=version, target_talos_version=version))
    case("tcp-maxsurge-missing-md-maxunavailable-2",
         scaled("happy", safe_workers=False,
                deployments=(DeploymentSpec(name="workers", replicas=3, max_surge=0, max_unavailable=2),)),
         _drop_tcp_max_surge)
    case("tcp-maxsurge-1", scaled("happy", cp_max_surge=1))
    case("missing-secret", scaled("happy"), _delete_talosconfig)
    case("foreign-secret", scaled("happy"), _relabel_talosconfig)
    case("unknown-cluster", scaled("happy"), clusterName="nope")
    # rebootMode is outside the template's enum: Argo does not enforce it (the Workflow carries its own parameter
    # list), so the product's own check must refuse it.
    case("bad-parameters", scaled("happy"), maxRemediations="-1", pollInterval="soon", rebootMode="bogus")
    return dict(zip(cases, stage.run_concurrently(list(cases.values())), strict=True))
