"""The capi-rollout WorkflowTemplate: shape, safety backstops, one source of truth, and the golden file."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import capi_rollout
from capi_rollout.domain.params import DEFAULTS, DESCRIPTIONS
from capi_rollout.step_table import STEPS
from capi_rollout.workflow import entry, render, semantic, steps, template
from capi_rollout.workflow.image import IMAGE, IMAGE_REPOSITORY

ROOT = Path(__file__).resolve().parents[2]
LEAVES = ("resolve", "preflight", "control-plane", "workers", "summary")


@pytest.fixture(scope="module")
def wt() -> dict[str, Any]:
    return template.manifest()


def templates(wt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in wt["spec"]["templates"]}


def test_arguments_are_generated_from_the_parameter_defaults(wt: dict[str, Any]) -> None:
    args = wt["spec"]["arguments"]["parameters"]
    assert [a["name"] for a in args] == list(DEFAULTS)
    for a in args:
        assert a.get("value") == DEFAULTS[a["name"]]
        assert a["description"] == DESCRIPTIONS[a["name"]]
    cluster_name = next(a for a in args if a["name"] == "clusterName")
    assert "value" not in cluster_name, "clusterName is required: no default, not even an empty one"


def test_the_rollout_runs_its_steps_strictly_in_order(wt: dict[str, Any]) -> None:
    spec = wt["spec"]
    rollout = templates(wt)[spec["entrypoint"]]
    groups = rollout["steps"]
    assert [[s["template"] for s in g] for g in groups] == [["resolve"], ["preflight"], ["control-plane"], ["workers"]]


def test_the_summary_is_an_exit_handler_that_sees_the_workflow_status(wt: dict[str, Any]) -> None:
    ts = templates(wt)
    handler = ts[wt["spec"]["onExit"]]
    assert [[s["template"] for s in g] for g in handler["steps"]] == [["summary"]]
    env = {e["name"]: e["value"] for e in ts["summary"]["script"]["env"]}
    assert env[steps.ENV_WORKFLOW_STATUS] == "{{workflow.status}}"
    assert env[steps.ENV_WORKFLOW_FAILURES] == "{{workflow.failures}}"
    assert [p["name"] for p in ts["summary"]["outputs"]["parameters"]] == ["summary", "result", "remediations"]


def test_two_runs_for_one_cluster_share_a_workflow_level_mutex(wt: dict[str, Any]) -> None:
    sync = wt["spec"]["synchronization"]
    assert "mutex" not in sync, "Argo v4 has only the plural field"
    (mutex,) = sync["mutexes"]
    assert "{{workflow.parameters.clusterNamespace}}" in mutex["name"]
    assert "{{workflow.parameters.clusterName}}" in mutex["name"]
    assert wt["spec"]["serviceAccountName"] == "capi-rollout-runner"
    assert wt["metadata"] == {**wt["metadata"], "name": "capi-rollout", "namespace": "argo"}


@pytest.mark.parametrize("name", LEAVES)
def test_every_pod_is_locked_down_and_modest(wt: dict[str, Any], name: str) -> None:
    script = templates(wt)[name]["script"]
    sc = script["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert script["resources"]["requests"] and script["resources"]["limits"]["memory"] == "256Mi"
    # the root filesystem is read-only: /tmp (the Hera outputs directory) is the emptyDir
    assert {"name": "tmp", "mountPath": "/tmp"} in script["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in wt["spec"]["volumes"]
    assert script["image"] == IMAGE


def test_the_pod_security_context_applies_to_the_whole_pod(wt: dict[str, Any]) -> None:
    pod = wt["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_image_tag_is_the_package_version_and_pyproject_agrees() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"{IMAGE_REPOSITORY}:{capi_rollout.__version__}" == IMAGE
    assert pyproject["project"]["version"] == capi_rollout.__version__


@pytest.mark.parametrize("name", LEAVES)
def test_each_leaf_runs_its_step_through_our_entry_module_not_the_hera_runner(wt: dict[str, Any], name: str) -> None:
    script = templates(wt)[name]["script"]
    assert script["command"] == ["python"]
    assert script["args"] == ["-m", "capi_rollout.workflow.entry", name]  # Argo appends the staged source's path
    assert script["source"] == "{{inputs.parameters}}"  # verbatim: no Hera preamble, no sys.path line
    assert importlib.util.find_spec(script["args"][1]) is not None
    # what the pod's argv becomes once Argo appends the staged source is what the entry module accepts
    assert entry.parse_argv([*script["args"][2:], "/argo/staging/script"]) == (name, Path("/argo/staging/script"))
    declared = [p["name"] for p in templates(wt)[name]["outputs"]["parameters"]]
    assert declared == list(STEPS[name].outputs)
    for p in templates(wt)[name]["outputs"]["parameters"]:
        assert p["valueFrom"]["path"] == f"/tmp/hera-outputs/parameters/{p['name']}"
    assert {"name": "hera__outputs_directory", "value": "/tmp/hera-outputs"} in script["env"]


def test_no_step_pod_runs_hera(wt: dict[str, Any]) -> None:
    for tmpl in templates(wt).values():
        script = tmpl.get("script")
        if script is not None:
            assert not any("hera" in part for part in [*script["command"], *script["args"], script["source"]])


@pytest.mark.parametrize("name", LEAVES)
def test_retries_survive_a_pod_lost_from_outside_and_never_repeat_a_failed_step(wt: dict[str, Any], name: str) -> None:
    retry = templates(wt)[name]["retryStrategy"]
    assert retry["retryPolicy"] == "Always" and retry["expression"] == template.RETRY_EXPRESSION
    assert 1 <= retry["limit"] <= 3
    assert retry["backoff"] == {"duration": "15s", "factor": 2}
    decide = semantic.retry_decision
    # Argo v4 records a force-deleted pod as Error "pod deleted" with no exit code ("-1").
    assert decide(retry, "Error", "-1", "pod deleted")
    # A graceful delete / drain / API eviction: the kubelet marks the pod Failed, main dies of SIGTERM.
    assert decide(retry, "Failed", "143", "main: Error (exit code 143)")
    assert decide(retry, "Failed", "137", "The node was low on resource: memory. ")
    # The step's own decisions and its deadline backstop are final.
    assert not decide(retry, "Failed", "1", "main: Error (exit code 1)")
    assert not decide(retry, "Failed", "2", "main: Error (exit code 2)")
    assert not decide(retry, "Failed", "143", "Pod was active on the node longer than the specified deadline")
    assert not decide(retry, "Failed", "137", "Step exceeded its deadline")


def test_deadlines_sit_on_leaves_and_the_phases_take_theirs_from_resolve(wt: dict[str, Any]) -> None:
    ts = templates(wt)
    assert {n for n, t in ts.items() if "activeDeadlineSeconds" in t} == set(LEAVES)
    for phase, output in (("control-plane", "controlPlaneDeadlineSeconds"), ("workers", "workersDeadlineSeconds")):
        assert ts[phase]["activeDeadlineSeconds"] == "{{inputs.parameters.deadlineSeconds}}"
        step = next(s for g in ts["rollout"]["steps"] for s in g if s["template"] == phase)
        args = {a["name"]: a["value"] for a in step["arguments"]["parameters"]}
        assert args["deadlineSeconds"] == f"{{{{steps.resolve.outputs.parameters.{output}}}}}"
    assert isinstance(ts["resolve"]["activeDeadlineSeconds"], int)


def test_prometheus_metrics_cover_remediations_duration_and_result_and_count_each_run_once(wt: dict[str, Any]) -> None:
    ts = templates(wt)
    for phase in ("control-plane", "workers"):
        # A phase's metrics are emitted per attempt: a counter there would count a retried phase's remediations
        # again (its output is the phase's total so far). Only the duration histogram stays on the phases.
        metrics = {m["name"]: m for m in ts[phase]["metrics"]["prometheus"]}
        assert set(metrics) == {"capi_rollout_phase_duration_seconds"}
        assert metrics["capi_rollout_phase_duration_seconds"]["histogram"]["value"] == "{{duration}}"
    summary = {m["name"]: m for m in ts["summary"]["metrics"]["prometheus"]}
    assert set(summary) == {"capi_rollout_remediations_total", "capi_rollout_result_total"}
    assert summary["capi_rollout_remediations_total"]["counter"]["value"] == "{{outputs.parameters.remediations}}"
    assert {"key": "result", "value": "{{outputs.parameters.result}}"} in summary["capi_rollout_result_total"]["labels"]
    assert "remediations" in {p["name"] for p in ts["summary"]["outputs"]["parameters"]}


def test_the_rendered_template_is_semantically_sound(wt: dict[str, Any]) -> None:
    assert semantic.check(wt) == []


def test_the_committed_yaml_is_what_the_python_renders() -> None:
    committed = (ROOT / render.TEMPLATE_PATH).read_text()
    assert committed == render.render_text(), "run `make render` and commit the result"
    assert yaml.safe_load(committed) == template.manifest()


def test_render_check_passes_on_the_repository() -> None:
    assert render.main(check=True, root=str(ROOT)) == 0


def test_render_check_fails_on_drift_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "capi-rollout"\n')  # --root must be the repo
    path = tmp_path / render.TEMPLATE_PATH
    path.parent.mkdir(parents=True)
    drifted = render.render_text().replace("retryPolicy: Always", "retryPolicy: OnError")
    path.write_text(drifted)
    assert render.main(check=True, root=str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "-      retryPolicy: OnError" in err and "+      retryPolicy: Always" in err
    assert path.read_text() == drifted


def test_render_writes_the_file_then_check_accepts_it(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "capi-rollout"\n')  # --root must be the repo
    assert render.main(check=True, root=str(tmp_path)) == 1  # nothing committed yet
    assert render.main(check=False, root=str(tmp_path)) == 0
    assert render.main(check=True, root=str(tmp_path)) == 0


def test_the_repository_root_is_found_from_a_subdirectory() -> None:
    assert render.find_root(ROOT / "src" / "capi_rollout") == ROOT


def test_the_dockerfile_runs_as_the_user_the_pods_require_and_ships_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(maxsplit=1) for line in dockerfile.splitlines() if line[:1].isupper() and " " in line]
    users = [rest for word, rest in instructions if word == "USER"]
    assert users == [f"{template.RUN_AS_USER}:{template.RUN_AS_USER}"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    copied = [src.rstrip("/") for word, rest in instructions if word == "COPY" for src in rest.split()[:-1]]
    assert copied and all((ROOT / src).exists() for src in copied), copied
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert package.split("/")[0] in copied, f"the wheel build needs {package}"
    allowed = {line.removeprefix("!").rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert set(copied) <= allowed, "the build context (.dockerignore) must let every COPY source through"


def test_the_docs_parameter_table_matches_the_single_source() -> None:
    doc = (ROOT / "docs" / "workflow.md").read_text()
    section = doc.split("| Parameter | Default | Meaning |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:4] for line in section.splitlines() if line.startswith("| `")]
    table = {name.strip().strip("`"): (default.strip(), meaning.strip()) for name, default, meaning in rows}
    assert list(table) == list(DEFAULTS)
    for name, default in DEFAULTS.items():
        assert table[name] == ("(required)" if default is None else f"`{default}`", DESCRIPTIONS[name])
