"""The step pods' process: ``python -m capi_rollout.workflow.entry <step> <staged inputs>``, without Hera."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from capi_rollout.workflow import entry, steps
from tests.fakes import STEP_ENV, STEP_PARAMS, FakeResult, FakeRunStep

ENV, PARAMS = STEP_ENV, STEP_PARAMS


def argo_inputs(values: Mapping[str, str]) -> str:
    """``{{inputs.parameters}}`` as Argo substitutes it: the resolved input parameters as a JSON list."""
    return json.dumps([{"name": k, "value": v} for k, v in values.items()], separators=(",", ":"))


def staged(tmp_path: Path, text: str) -> Path:
    """Argo stages the script source at /argo/staging/script and appends that path to the args."""
    path = tmp_path / "argo" / "staging" / "script"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_outputs(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((directory / "parameters").iterdir())}


@pytest.fixture
def pod_env(tmp_path: Path) -> dict[str, str]:
    return {**ENV, steps.OUTPUTS_DIRECTORY_ENV: str(tmp_path / "hera-outputs")}


# --- reading what Argo staged ----------------------------------------------------------------------------------


def test_the_staged_inputs_become_the_step_parameters() -> None:
    assert entry.read_inputs(argo_inputs({"clusterName": "homelab", "dryRun": "true"})) == {
        "clusterName": "homelab",
        "dryRun": "true",
    }


def test_argo_fields_beside_name_and_value_are_ignored() -> None:
    # What Argo (and the local executor) really writes: default, enum, description ride along with the value.
    text = json.dumps([
        {"name": "rebootMode", "default": "default", "value": "powercycle", "enum": ["default", "powercycle"]},
        {"name": "clusterName", "value": "homelab", "description": "The Cluster's name."},
    ])
    assert entry.read_inputs(text) == {"rebootMode": "powercycle", "clusterName": "homelab"}


def test_an_empty_or_null_source_means_no_inputs_like_the_hera_runner() -> None:
    assert entry.read_inputs("") == {}
    assert entry.read_inputs("null") == {}
    assert entry.read_inputs("  \n") == {}


def test_an_input_without_a_value_is_left_out_like_the_hera_runner() -> None:
    assert entry.read_inputs('[{"name": "clusterName"}, {"name": "dryRun", "value": "true"}]') == {"dryRun": "true"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{{inputs.parameters}}", "not JSON"),
        ('{"name": "clusterName", "value": "homelab"}', "not a JSON list"),
        ('["clusterName"]', "entry 0 is not an object"),
        ('[{"value": "homelab"}]', "entry 0 has no name"),
        ('[{"name": "clusterName", "value": 3}]', "value of 'clusterName' is not a string"),
        ('[{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]', "'a' is given twice"),
    ],
)
def test_a_garbled_source_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(entry.UsageError, match=why):
        entry.read_inputs(text)


# --- main: argv, files, exit codes ------------------------------------------------------------------------------


def test_main_runs_the_step_with_the_staged_inputs_and_the_pod_environment(
    tmp_path: Path, pod_env: dict[str, str]
) -> None:
    fake = FakeRunStep(FakeResult(True, "ok", {"phase": '{"complete": true}', "remediations": "1"}))
    source = staged(tmp_path, argo_inputs({**PARAMS, "deadlineSeconds": "3000"}))
    assert entry.main(["control-plane", str(source)], env=pod_env, run_step=fake) == 0
    ((args, kwargs),) = fake.calls
    assert args == ("control-plane", PARAMS)  # deadlineSeconds is a template input, not a rollout parameter
    assert kwargs["run_id"] == "capi-rollout-abc12" and kwargs["ledger_namespace"] == "argo"
    assert read_outputs(tmp_path / "hera-outputs") == {"phase": '{"complete": true}', "remediations": "1"}


def test_without_the_outputs_variable_outputs_go_to_hera_s_default_directory() -> None:
    assert entry.outputs_directory({}) == Path("/tmp/hera-outputs")
    assert entry.outputs_directory({steps.OUTPUTS_DIRECTORY_ENV: "/x/out"}) == Path("/x/out")


def test_a_failed_step_exits_1_with_its_reason_on_stderr_and_its_outputs_written(
    tmp_path: Path, pod_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeRunStep(FakeResult(False, "node 10.0.0.5 is in Talos maintenance mode", {"remediations": "0"}))
    source = staged(tmp_path, argo_inputs(PARAMS))
    assert entry.main(["workers", str(source)], env=pod_env, run_step=fake) == 1
    assert "workers failed: node 10.0.0.5 is in Talos maintenance mode" in capsys.readouterr().err
    assert read_outputs(tmp_path / "hera-outputs") == {"phase": "", "remediations": "0"}


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        ([], "expected a step and the staged inputs file"),
        (["resolve"], "expected a step and the staged inputs file"),
        (["resolve", "a", "b"], "expected a step and the staged inputs file"),
        (["rollback", "{source}"], r"unknown step 'rollback' \(known: resolve, preflight, control-plane"),
        (["resolve", "{missing}"], "cannot read the staged inputs"),
        (["resolve", "{garbled}"], "the staged inputs .* are not JSON"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message_and_runs_nothing(
    tmp_path: Path, pod_env: dict[str, str], capsys: pytest.CaptureFixture[str], argv: list[str], why: str
) -> None:
    paths = {
        "{source}": str(staged(tmp_path, argo_inputs(PARAMS))),
        "{missing}": str(tmp_path / "nope"),
        "{garbled}": str(staged(tmp_path / "g", "{{inputs.parameters}}")),
    }
    fake = FakeRunStep(FakeResult(True, "", {}))
    assert entry.main([paths.get(a, a) for a in argv], env=pod_env, run_step=fake) == 2
    err = capsys.readouterr().err
    assert "capi_rollout.workflow.entry:" in err and "usage:" in err
    assert re.search(why, err), err
    assert fake.calls == []
    assert not (tmp_path / "hera-outputs").exists()


def test_a_pod_without_the_template_environment_exits_2_and_still_writes_empty_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeRunStep(FakeResult(True, "", {}))
    env = {steps.ENV_LEDGER_NAMESPACE: "argo", steps.OUTPUTS_DIRECTORY_ENV: str(tmp_path / "out")}
    assert entry.main(["preflight", str(staged(tmp_path, argo_inputs(PARAMS)))], env=env, run_step=fake) == 2
    assert steps.ENV_RUN_ID in capsys.readouterr().err
    assert fake.calls == []
    assert read_outputs(tmp_path / "out") == {"warnings": ""}


def test_help_prints_the_usage_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main(["--help"], env={}) == 0
    assert "usage: python -m capi_rollout.workflow.entry" in capsys.readouterr().out


# --- the point of it all: a pod starts without importing Hera --------------------------------------------------


def _python(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _imported(importtime_stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | cumulative | name``."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime_stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_importing_the_entry_module_loads_no_hera(tmp_path: Path) -> None:
    code = "import sys, capi_rollout.workflow.entry; print(sorted(m for m in sys.modules if m.split('.')[0] == 'hera'))"
    done = _python("-c", code, env={}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_real_step_process_runs_the_real_runner_without_importing_hera(
    tmp_path: Path, pod_env: dict[str, str]
) -> None:
    # Bad parameters: the real run_step is loaded (the Kubernetes and Talos adapters with it) and refuses them
    # before any API call, so the whole import chain a pod runs is exercised here without a cluster.
    source = staged(tmp_path, argo_inputs({**PARAMS, "maxRemediations": "-1"}))
    done = _python("-X", "importtime", "-m", "capi_rollout.workflow.entry", "resolve", str(source),
                   env=pod_env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "resolve failed: invalid parameters: maxRemediations: must be a whole number" in done.stderr
    modules = _imported(done.stderr)
    assert "capi_rollout.run" in modules and "kubernetes" in modules  # the step's real dependencies loaded
    assert not {m for m in modules if m.split(".")[0] == "hera"}
    assert set(read_outputs(tmp_path / "hera-outputs").values()) == {""}


def test_bad_usage_from_the_command_line_exits_2_quickly_without_hera(tmp_path: Path) -> None:
    done = _python("-X", "importtime", "-m", "capi_rollout.workflow.entry", "rollback", str(tmp_path / "nope"),
                   env={}, cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown step 'rollback'" in done.stderr
    modules = _imported(done.stderr)
    assert "capi_rollout.workflow.steps" in modules
    assert not {m for m in modules if m.split(".")[0] in ("hera", "kubernetes", "grpclib")}


def test_a_step_pod_never_loads_the_typed_core_api_of_the_kubernetes_client(tmp_path: Path) -> None:
    # kubernetes' CoreV1Api module pulls in hundreds of pydantic models: over a second of every pod's start.
    code = ("import sys, capi_rollout.run, kubernetes.client\n"
            "from capi_rollout.adapters.kube import Kube\n"
            "Kube(kubernetes.client.ApiClient())\n"
            "print(sorted(m for m in sys.modules if m.startswith('kubernetes.client.api.')))")
    done = _python("-c", code, env={}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['kubernetes.client.api.custom_objects_api']"
