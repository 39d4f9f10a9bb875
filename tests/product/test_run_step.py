"""``run_step``: expected failures come back as ``ok=False`` with a message, never as a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from capi_rollout.run import run_step


def test_bad_parameters_fail_the_step_naming_each_one(tmp_path: Path) -> None:
    result = run_step("resolve", {"clusterName": "", "rebootMode": "hard"}, run_id="wf", ledger_namespace="argo",
                      kubeconfig=str(tmp_path / "none"))
    assert not result.ok
    assert "clusterName: must not be empty" in result.message and "rebootMode: must be one of" in result.message


def test_the_summary_still_reports_when_the_parameters_are_bad() -> None:
    result = run_step("summary", {"clusterName": "Bad Name"}, run_id="wf", ledger_namespace="argo")
    assert result.ok and result.outputs["result"] == "Failed"
    assert "clusterName" in json.loads(result.outputs["summary"])["reasons"][0]


def test_an_unreadable_kubeconfig_is_a_clear_failure(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("not: [a kubeconfig")
    result = run_step("preflight", {"clusterName": "homelab"}, run_id="wf", ledger_namespace="argo",
                      kubeconfig=str(broken))
    assert not result.ok and result.message.startswith("preflight: cannot connect to the Kubernetes API")


def test_an_unknown_step_is_refused() -> None:
    result = run_step("rollback", {"clusterName": "homelab"}, run_id="wf", ledger_namespace="argo")
    assert not result.ok and "unknown step 'rollback'" in result.message

