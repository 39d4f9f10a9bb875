"""The step shell (steps.run): a thin layer around run_step (inputs and env in, output files and exit code out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capi_rollout.domain.deadlines import phase_deadline_seconds
from capi_rollout.domain.params import parse_params
from capi_rollout.domain.resolve import Targets
from capi_rollout.step_table import STEPS, StepCall
from capi_rollout.workflow import steps
from tests.fakes import STEP_ENV, STEP_PARAMS, FakeResult, FakeRunStep

ENV, PARAMS = STEP_ENV, STEP_PARAMS


def read_outputs(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((directory / "parameters").iterdir())}


def test_run_step_receives_the_workflow_parameters_and_the_run_context(tmp_path: Path) -> None:
    fake = FakeRunStep(FakeResult(True, "ok", {"warnings": "[]"}))
    code = steps.run("preflight", {**PARAMS, "deadlineSeconds": "900"}, env=ENV, outputs_dir=tmp_path, run_step=fake)
    assert code == 0
    ((args, kwargs),) = fake.calls
    assert args == ("preflight", PARAMS)  # template-only inputs (deadlineSeconds) are not parameters
    assert kwargs == {
        "run_id": "capi-rollout-abc12",
        "ledger_namespace": "argo",
        "owner": {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "name": "capi-rollout-abc12",
            "uid": "0d6c2f5e-1111-2222-3333-444455556666",
        },
        "kubeconfig": None,
        "workflow_status": None,
        "workflow_failures": None,
    }
    assert read_outputs(tmp_path) == {"warnings": "[]"}


def test_the_exit_handler_passes_the_workflow_status_and_failures(tmp_path: Path) -> None:
    failures = json.dumps([{"displayName": "control-plane", "message": "stalled", "phase": "Failed"}])
    env = {**ENV, steps.ENV_WORKFLOW_STATUS: "Failed", steps.ENV_WORKFLOW_FAILURES: failures}
    fake = FakeRunStep(FakeResult(True, "summarised", {"summary": '{"result": "Failed"}', "result": "Failed"}))
    assert steps.run("summary", PARAMS, env=env, outputs_dir=tmp_path, run_step=fake) == 0
    _, kwargs = fake.calls[0]
    assert kwargs["workflow_status"] == "Failed"
    assert kwargs["workflow_failures"] == failures
    assert read_outputs(tmp_path) == {"result": "Failed", "summary": '{"result": "Failed"}', "remediations": ""}


def test_a_failed_step_writes_what_it_has_prints_why_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeRunStep(FakeResult(False, "control plane stalled for 10m0s", {"remediations": "2"}))
    code = steps.run("control-plane", PARAMS, env=ENV, outputs_dir=tmp_path, run_step=fake)
    assert code == 1
    assert "control plane stalled for 10m0s" in capsys.readouterr().err
    # every declared output exists so Argo reports no missing file; the one not produced is empty
    assert read_outputs(tmp_path) == {"phase": "", "remediations": "2"}


def test_outputs_are_written_even_when_run_step_raises(tmp_path: Path) -> None:
    def boom(*_: Any, **__: Any) -> FakeResult:
        raise RuntimeError("API server unreachable")

    with pytest.raises(RuntimeError, match="unreachable"):
        steps.run("workers", PARAMS, env=ENV, outputs_dir=tmp_path, run_step=boom)
    assert read_outputs(tmp_path) == {"phase": "", "remediations": ""}


def test_resolve_hands_the_phase_deadlines_to_the_phases(tmp_path: Path) -> None:
    # The resolve step's handler makes every output (the shell adds none), from the parameters already parsed.
    params = parse_params({**PARAMS, "controlPlaneTimeout": "20m", "workersTimeout": "1h", "pollInterval": "3m"})
    targets = Targets(cluster="homelab", namespace="default", capi_version="v1beta2", control_plane="homelab-cp",
                      deployments=(), talosconfig_secret="homelab-talosconfig")

    class Host:
        def __init__(self) -> None:
            self.params = params

        def resolve(self) -> Targets:
            return targets

    message, outputs = STEPS["resolve"].handler(Host(), StepCall("resolve"))  # type: ignore[arg-type]
    fake = FakeRunStep(FakeResult(True, message, outputs))
    assert steps.run("resolve", PARAMS, env=ENV, outputs_dir=tmp_path, run_step=fake) == 0
    assert read_outputs(tmp_path) == {
        "controlPlaneDeadlineSeconds": str(phase_deadline_seconds(timeout=1200, poll_interval=180)),
        "targets": json.dumps(targets.to_dict(), sort_keys=True),
        "workersDeadlineSeconds": str(phase_deadline_seconds(timeout=3600, poll_interval=180)),
    }
    assert read_outputs(tmp_path)["controlPlaneDeadlineSeconds"] == "1560"  # 20m + 2 × 3m


def test_a_failed_resolve_hands_out_no_deadlines(tmp_path: Path) -> None:
    fake = FakeRunStep(FakeResult(False, "no TalosControlPlane labelled homelab", {}))
    assert steps.run("resolve", PARAMS, env=ENV, outputs_dir=tmp_path, run_step=fake) == 1
    assert set(read_outputs(tmp_path).values()) == {""}


def test_a_pod_without_the_template_environment_fails_before_anything_runs(tmp_path: Path) -> None:
    fake = FakeRunStep(FakeResult(True, "", {}))
    with pytest.raises(steps.StepContextError, match=steps.ENV_RUN_ID):
        steps.run("resolve", PARAMS, env={steps.ENV_LEDGER_NAMESPACE: "argo"}, outputs_dir=tmp_path, run_step=fake)
    assert fake.calls == []


def test_without_a_workflow_uid_the_ledger_gets_no_owner() -> None:
    ctx = steps.context_from_env({steps.ENV_RUN_ID: "wf", steps.ENV_LEDGER_NAMESPACE: "argo"})
    assert ctx.owner is None


def test_unknown_steps_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown step"):
        steps.run("rollback", PARAMS, env=ENV, outputs_dir=tmp_path, run_step=FakeRunStep(FakeResult(True, "", {})))


def test_phase_deadlines_sit_a_little_above_the_timeout() -> None:
    assert phase_deadline_seconds(timeout=2700, poll_interval=30) == 3000
    assert phase_deadline_seconds(timeout=2700, poll_interval=600) == 3900
    assert phase_deadline_seconds(timeout=0.5, poll_interval=0.1) == 301
    with pytest.raises(ValueError):
        phase_deadline_seconds(timeout=0, poll_interval=30)


def test_the_real_run_step_accepts_exactly_what_the_steps_pass() -> None:
    import inspect

    from capi_rollout import run

    assert steps._load_run_step() is run.run_step
    inspect.signature(run.run_step).bind(
        "resolve",
        PARAMS,
        run_id="wf",
        ledger_namespace="argo",
        owner=None,
        kubeconfig=None,
        workflow_status=None,
        workflow_failures=None,
    )


def test_with_the_real_runner_bad_parameters_fail_the_step_before_any_api_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = steps.run("resolve", {**PARAMS, "maxRemediations": "-1"}, env=ENV, outputs_dir=tmp_path)
    assert code == 1
    assert "maxRemediations: must be a whole number" in capsys.readouterr().err
    assert set(read_outputs(tmp_path).values()) == {""}


def test_the_rendered_script_runs_as_a_pod_would_and_fails_cleanly_on_bad_parameters(tmp_path: Path) -> None:
    """The resolve template's own command, args and source, run as Argo runs a script template."""
    import os
    import subprocess
    import sys

    from capi_rollout.workflow import template

    (resolve,) = [t for t in template.manifest()["spec"]["templates"] if t["name"] == "resolve"]
    script = resolve["script"]
    inputs = [{"name": p["name"], "value": PARAMS[p["name"]]} for p in resolve["inputs"]["parameters"]]
    inputs[0]["value"] = "Not_A_DNS_Label"  # clusterName
    source = tmp_path / "script"
    source.write_text(script["source"].replace("{{inputs.parameters}}", json.dumps(inputs)))
    env = {e["name"]: e["value"] for e in script["env"]} | ENV
    env[steps.OUTPUTS_DIRECTORY_ENV] = str(tmp_path / "out")
    command = [sys.executable if script["command"] == ["python"] else script["command"][0], *script["args"]]
    proc = subprocess.run(
        [*command, str(source)],
        env={**env, "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "clusterName: must be a DNS-1123 label" in proc.stderr
    assert read_outputs(tmp_path / "out") == {
        "controlPlaneDeadlineSeconds": "",
        "targets": "",
        "workersDeadlineSeconds": "",
    }
