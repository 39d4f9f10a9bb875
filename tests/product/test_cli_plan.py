"""``capi-rollout plan -f``: a snapshot in, the decision with its reasons out, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from capi_rollout.cli import main
from capi_rollout.domain.progress import control_plane_status
from capi_rollout.domain.state import ClusterState
from tests import builders as b


def write_snapshot(tmp_path: Path, *, as_list: bool = False) -> Path:
    docs = [b.cluster(), b.tcp(up_to_date=False, ready=2), b.md(),
            b.machine("cp-0", cp=True), b.machine("cp-1", cp=True),
            b.machine("cp-new", cp=True, ready=False, address="10.0.0.9", created="2026-01-01T00:30:00Z")]
    path = tmp_path / "snap.yaml"
    if as_list:
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    else:
        path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.mark.parametrize("as_list", [False, True])
def test_plan_on_a_snapshot_prints_the_decision_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        as_list: bool) -> None:
    path = write_snapshot(tmp_path, as_list=as_list)
    code = main(["plan", "-f", str(path), "--clusterName", "homelab", "--now", "2026-01-01T01:00:00Z"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["targets"]["control_plane"] == "homelab-cp"
    assert out["preflight"]["ok"] is True
    assert out["phase"] == "control-plane"
    assert out["decision"]["kind"] == "wait"
    assert "not Ready or without a node: cp-new" in out["decision"]["reason"]


def test_plan_with_a_ledger_shows_the_remediation_it_would_perform(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write_snapshot(tmp_path)
    docs = list(yaml.safe_load_all(path.read_text()))
    state = ClusterState.from_objects(cluster=docs[0], control_plane=docs[1], deployments=[docs[2]],
                                      machines=docs[3:])
    # Nothing has moved since 00:45 (same fingerprint): at 01:00 the phase has been stalled for 15m.
    ledger = {"cluster": "homelab", "namespace": "default", "phases": {"control-plane": {
        "name": "control-plane", "started": "2026-01-01T00:40:00Z", "lastProgress": "2026-01-01T00:45:00Z",
        "fingerprint": control_plane_status(state).fingerprint, "remediations": []}}}
    ledger_path = tmp_path / "ledger.json"
    ledger_path.write_text(json.dumps(ledger))
    code = main(["plan", "-f", str(path), "--clusterName", "homelab", "--now", "2026-01-01T01:00:00Z",
                 "--ledger", str(ledger_path)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["decision"]["kind"] == "remediate"
    assert out["decision"]["machine"] == "cp-new"
    assert (out["decision"]["delete"], out["decision"]["reboot"]) == (True, True)
    assert "no progress for 15m0s" in out["decision"]["reason"]


def test_plan_rejects_bad_parameters_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_snapshot(tmp_path)
    assert main(["plan", "-f", str(path), "--clusterName", "homelab", "--maxRemediations", "many"]) == 2
    assert "maxRemediations: must be a whole number" in capsys.readouterr().err


def test_plan_reports_an_unknown_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_snapshot(tmp_path)
    assert main(["plan", "-f", str(path), "--clusterName", "nope"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["decision"]["kind"] == "fail"
    assert "Cluster nope not found in namespace default" in out["decision"]["reason"]


def _ledger_at(tmp_path: Path, snapshot: Path, last_progress: str) -> Path:
    docs = list(yaml.safe_load_all(snapshot.read_text()))
    state = ClusterState.from_objects(cluster=docs[0], control_plane=docs[1], deployments=[docs[2]],
                                      machines=docs[3:])
    ledger = {"cluster": "homelab", "namespace": "default", "phases": {"control-plane": {
        "name": "control-plane", "started": "2026-01-01T00:40:00Z", "lastProgress": last_progress,
        "fingerprint": control_plane_status(state).fingerprint, "remediations": []}}}
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps(ledger))
    return path


def test_plan_says_what_the_run_will_do_next_and_when(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_snapshot(tmp_path)
    ledger = _ledger_at(tmp_path, path, "2026-01-01T00:53:00Z")  # stalled for 7m of 10m at 01:00
    argv = ["plan", "-f", str(path), "--clusterName", "homelab", "--now", "2026-01-01T01:00:00Z",
            "--ledger", str(ledger)]
    assert main([*argv, "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"]["kind"] == "wait"
    assert out["next"]["sentence"] == ("control plane: stalled for 7m0s of 10m0s: at 01:03 it will delete "
                                       "Machine cp-new and reboot 10.0.0.9")
    assert (out["next"]["kind"], out["next"]["at"], out["next"]["machine"]) == (
        "remediate", "2026-01-01T01:03:00Z", "cp-new")
    assert main([*argv, "-o", "table"]) == 0
    table = capsys.readouterr().out
    assert f"next: {out['next']['sentence']}" in table and f"ledger: file {ledger}" in table


def test_plan_foresees_the_phase_timeout_when_it_comes_before_the_stall(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = write_snapshot(tmp_path)
    ledger = _ledger_at(tmp_path, path, "2026-01-01T00:53:00Z")
    assert main(["plan", "-f", str(path), "--clusterName", "homelab", "--now", "2026-01-01T01:00:00Z",
                 "--ledger", str(ledger), "--controlPlaneTimeout", "21m", "-o", "json"]) == 0
    nxt = json.loads(capsys.readouterr().out)["next"]
    assert (nxt["kind"], nxt["at"]) == ("fail", "2026-01-01T01:01:00Z")
    assert "at 01:01 it will fail: control plane phase timed out after 21m0s" in nxt["sentence"]


def test_plan_observes_the_tcp_the_run_targets_not_the_first_one_listed(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # A second TalosControlPlane carrying the cluster label appeared after resolve (listed first here). The run
    # keeps observing the one it resolved, which the Cluster's controlPlaneRef names; plan must see the same.
    named = b.tcp(up_to_date=False, ready=2)
    other = b.tcp("homelab-cp-a", up_to_date=True, ready=3)
    machines = [b.machine("cp-0", cp=True), b.machine("cp-1", cp=True),
                b.machine("cp-new", cp=True, ready=False, address="10.0.0.9", created="2026-01-01T00:30:00Z")]
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump_all([b.cluster(), other, named, b.md(), *machines]))
    state = ClusterState.from_objects(cluster=b.cluster(), control_plane=named, deployments=[b.md()],
                                      machines=machines)
    targets = {"cluster": "homelab", "namespace": "default", "capi_version": "v1beta2", "control_plane": "homelab-cp",
               "deployments": ["homelab-workers"], "talosconfig_secret": "homelab-talosconfig"}
    ledger = {"cluster": "homelab", "namespace": "default", "targets": targets, "phases": {"control-plane": {
        "name": "control-plane", "started": "2026-01-01T00:40:00Z", "lastProgress": "2026-01-01T00:45:00Z",
        "fingerprint": control_plane_status(state).fingerprint, "remediations": []}}}
    ledger_path = tmp_path / "ledger.json"
    ledger_path.write_text(json.dumps(ledger))
    code = main(["plan", "-f", str(path), "--clusterName", "homelab", "--now", "2026-01-01T01:00:00Z",
                 "--ledger", str(ledger_path), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert out["targets"]["control_plane"] == "homelab-cp"
    assert (out["decision"]["kind"], out["decision"]["machine"]) == ("remediate", "cp-new"), out["decision"]
    assert code == 0
