"""The strict local Argo executor, on toy WorkflowTemplates: every construct it implements, every refusal.

Each step is a real subprocess of the venv's python; durations are one-second Argo deadlines at most.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.argo_local import (
    InterpreterOptions,
    UnsupportedConstruct,
    WorkflowRun,
    check_supported,
)
from e2e.argo_local.model import node_id
from tests.e2e.argo_toys import py, run, steps, wft

# --- parameters -----------------------------------------------------------------------------------------


def test_a_required_parameter_without_value_fails_the_workflow_like_argo_before_any_step(
        opts: InterpreterOptions) -> None:
    t = wft([py("main", "print('ran')")], params=[{"name": "who"}, {"name": "greeting", "value": "hi"}])
    r = run(t, opts)
    assert r.phase == "Failed"
    assert r.message == "invalid spec: spec.arguments.who.value or spec.arguments.who.valueFrom is required"
    assert r.nodes == {}


def test_defaults_apply_and_submitted_values_win(opts: InterpreterOptions) -> None:
    t = wft(
        [py("main", "print('{{workflow.parameters.greeting}}, {{workflow.parameters.who}}')")],
        params=[{"name": "who"}, {"name": "greeting", "value": "hi"}],
    )
    r = run(t, opts, {"who": "bob"})
    assert r.phase == "Succeeded", r.text()
    assert r.node("toy-1").result == "hi, bob"
    assert r.parameters == {"who": "bob", "greeting": "hi"}


def test_a_submitted_value_outside_the_template_enum_is_accepted_as_argo_does(opts: InterpreterOptions) -> None:
    """A Workflow with a workflowTemplateRef carries its own parameter list (name and value): Argo merges it over the
    template's and never checks the template's ``enum`` against it (the product's own check has to refuse it)."""
    t = wft([py("main", "print('{{workflow.parameters.mode}}')")],
            params=[{"name": "mode", "value": "a", "enum": ["a", "b"]}])
    r = run(t, opts, {"mode": "c"})
    assert r.phase == "Succeeded", r.text()
    assert r.node("toy-1").result == "c" and r.parameters == {"mode": "c"}


def test_a_template_value_outside_its_own_enum_is_an_invalid_spec(opts: InterpreterOptions) -> None:
    t = wft([py("main", "pass")], params=[{"name": "mode", "value": "z", "enum": ["a", "b"]}])
    r = run(t, opts, {})
    assert (r.phase, r.message) == ("Failed", "invalid spec: spec.arguments.mode.value should be present in "
                                              "spec.arguments.mode.enum list")


# --- substitution, scripts, outputs ----------------------------------------------------------------------


def test_script_runs_as_command_plus_args_plus_the_staged_source_path(opts: InterpreterOptions) -> None:
    source = "import json, sys; print(json.dumps(sys.argv))"
    t = wft([{"name": "main", "script": {"image": "x", "command": ["python"], "args": ["-u"], "source": source}}])
    r = run(t, opts)
    assert r.phase == "Succeeded", r.text()
    argv = json.loads(r.node("toy-1").result or "")
    staged = Path(argv[0])  # python -u <script>: sys.argv[0] is the staged script
    assert staged.as_posix().endswith("/argo/staging/script") and len(argv) == 1
    assert staged.read_text() == source
    assert staged.stat().st_mode & 0o777 == 0o755
    assert str(staged).startswith(str(opts.results_dir / "toy-1" / "pods"))


def test_globals_inputs_and_env_are_substituted(opts: InterpreterOptions) -> None:
    child = {
        "name": "show",
        "inputs": {"parameters": [{"name": "x"}, {"name": "y", "default": "dflt"}]},
        "script": {
            "image": "x",
            "command": ["python"],
            "env": [{"name": "WF", "value": "{{workflow.name}}/{{workflow.namespace}}/{{workflow.uid}}"},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
            "source": "import os; print(os.environ['WF'], os.environ['NS'], '{{inputs.parameters.x}}', "
                      "'{{inputs.parameters.y}}', os.environ['KUBECONFIG'])",
        },
    }
    t = wft([steps("main", ("s", "show", {"x": "{{workflow.parameters.p}}-x"})), child],
            params=[{"name": "p", "value": "P"}])
    opts.kubeconfig = Path("/k/config")
    r = run(t, opts)
    assert r.phase == "Succeeded", r.text()
    assert r.node("s").result == "toy-1/argo/uid-1 argo P-x dflt /k/config"


def test_outputs_pass_between_steps_and_pod_tmp_is_a_private_per_attempt_directory(opts: InterpreterOptions) -> None:
    marker = f"/tmp/argo-local-test-{time.time_ns()}"
    produce = {
        "name": "produce",
        "script": {"image": "x", "command": ["python"], "env": [{"name": "OUT", "value": marker}],
                   "source": "import os\nd = os.environ['OUT']\nos.makedirs(d, exist_ok=True)\n"
                             "open(d + '/v', 'w').write('42\\n')\nprint('hello')"},
        "outputs": {"parameters": [{"name": "v", "valueFrom": {"path": f"{marker}/v"}},
                                   {"name": "d", "valueFrom": {"path": "/tmp/none", "default": "fallback"}}]},
    }
    consume = {"name": "consume", "inputs": {"parameters": [{"name": "v"}, {"name": "r"}, {"name": "d"}]},
               "script": {"image": "x", "command": ["python"],
                          "source": "print('{{inputs.parameters.v}}|{{inputs.parameters.r}}|{{inputs.parameters.d}}')"}}
    t = wft([steps("main", ("a", "produce", {}), ("b", "consume", {
        "v": "{{steps.a.outputs.parameters.v}}", "r": "{{steps.a.outputs.result}}",
        "d": "{{steps.a.outputs.parameters.d}}"})), produce, consume])
    r = run(t, opts)
    assert r.phase == "Succeeded", r.text()
    assert r.node("a").outputs == {"v": "42", "d": "fallback"}
    assert r.node("b").result == "42|hello|fallback"
    assert not Path(marker).exists(), "the pod's /tmp must not be this machine's /tmp"
    assert any(n.startswith(f"env OUT: {marker} -> ") for n in r.node("a").notes)


def test_runner_source_is_the_inputs_json_and_outputs_land_in_the_mapped_hera_directory(
        opts: InterpreterOptions) -> None:
    # Hera's runner: `python -m hera.workflows.runner -e mod:fn <staged source>`, source "{{inputs.parameters}}".
    reader = ("import json, os, sys\nins = json.load(open(sys.argv[-1]))\n"
              "d = os.environ['hera__outputs_directory'] + '/parameters'\nos.makedirs(d, exist_ok=True)\n"
              "open(d + '/echo', 'w').write(json.dumps(ins))\n")
    tmpl = {"name": "main", "inputs": {"parameters": [{"name": "a", "default": "1"}, {"name": "b", "value": "x"}]},
            "script": {"image": "x", "command": ["python", "-c", reader], "source": "{{inputs.parameters}}"},
            "outputs": {"parameters": [{"name": "echo", "valueFrom": {"path": "/tmp/hera-outputs/parameters/echo"}}]}}
    r = run(wft([tmpl]), opts)
    assert r.phase == "Succeeded", r.text()
    assert json.loads(r.node("toy-1").outputs["echo"]) == [
        {"name": "a", "default": "1", "value": "1"}, {"name": "b", "value": "x"}]


def test_a_missing_output_file_without_default_is_an_error(opts: InterpreterOptions) -> None:
    tmpl = py("main", "pass", outputs={"parameters": [{"name": "v", "valueFrom": {"path": "/tmp/nope"}}]})
    r = run(wft([tmpl]), opts)
    assert (r.phase, r.message) == ("Error", "open /tmp/nope: no such file or directory")


def test_container_templates_run_command_plus_args_and_nonzero_exit_fails_like_argo(opts: InterpreterOptions) -> None:
    tmpl = {"name": "main", "container": {"image": "x", "command": ["python", "-c"],
                                          "args": ["import sys; print('out'); sys.exit(3)"]}}
    r = run(wft([tmpl]), opts)
    n = r.node("toy-1")
    assert (r.phase, r.message) == ("Failed", "main: Error (exit code 3)")
    assert (n.exit_code, n.result) == (3, "out")
    assert "\nout\n# end: Exited, exit code 3" in Path(n.log_path or "").read_text()


def test_output_is_streamed_live_with_the_step_name_and_saved_per_step(opts: InterpreterOptions) -> None:
    lines: list[str] = []
    opts.echo = lines.append
    r = run(wft([steps("main", ("hello", "say", {})), py("say", "print('one'); print('two')")]), opts)
    assert "[toy-1 hello] one" in lines and "[toy-1 hello] two" in lines
    log = Path(r.node("hello").log_path or "")
    assert log.parent == opts.results_dir / "toy-1" and "two" in log.read_text()
    assert (opts.results_dir / "toy-1" / "workflow.txt").read_text() == r.text()


# --- failures, exit handler -----------------------------------------------------------------------------


def _exit_probe() -> dict[str, Any]:
    return {
        "name": "report",
        "script": {"image": "x", "command": ["python"],
                   "env": [{"name": "FAILURES", "value": "{{workflow.failures}}"}],
                   "source": "import json, os\nf = json.loads(json.loads(os.environ['FAILURES']))\n"
                             "print('{{workflow.status}}', json.dumps(f))"},
        "outputs": {"parameters": [{"name": "status", "valueFrom": {"path": "/tmp/s", "default": "n/a"}}]},
    }


def test_exit_handler_runs_after_a_failure_and_sees_status_and_failures(opts: InterpreterOptions) -> None:
    t = wft([steps("main", ("ok", "good", {}), ("boom", "bad", {}), ("never", "good", {})),
             py("good", "pass"), py("bad", "raise SystemExit(2)"), _exit_probe()], onExit="report")
    r = run(t, opts)
    boom = r.node("boom")
    assert r.phase == "Failed"
    assert r.message == f"child '{boom.id}' failed"
    assert boom.id == node_id("toy-1", "toy-1[1].boom")
    assert "never" not in {n.display_name for n in r.nodes.values()}
    exit_node = r.node("toy-1.onExit")
    assert exit_node.phase == "Succeeded", r.text()
    status, failures_json = (exit_node.result or "").split(" ", 1)
    assert status == "Failed"
    listed = json.loads(failures_json)  # Argo's value is strconv.Quote-d JSON: decoded twice by the probe
    assert [(f["displayName"], f["phase"], f["templateName"]) for f in listed] == [
        ("toy-1", "Failed", "main"), ("[1]", "Failed", "main"), ("boom", "Failed", "bad")]
    assert listed[2]["message"] == "main: Error (exit code 2)"
    assert listed[2]["podName"].startswith("toy-1-bad-")
    assert r.exit_outputs == {"status": "n/a"}


def test_exit_handler_after_success_sees_succeeded_and_the_quoted_null(opts: InterpreterOptions) -> None:
    probe = py("report", "print(repr('''{{workflow.failures}}'''), '{{workflow.status}}')")
    r = run(wft([py("main", "pass"), probe], hooks={"exit": {"template": "report"}}), opts)
    assert r.phase == "Succeeded"
    assert r.node("toy-1.onExit").result == "'\"null\"' Succeeded"


def test_a_failing_exit_handler_fails_a_succeeded_workflow(opts: InterpreterOptions) -> None:
    r = run(wft([py("main", "pass"), py("bye", "raise SystemExit(1)")], onExit="bye"), opts)
    assert (r.phase, r.message) == ("Failed", "main: Error (exit code 1)")


def test_a_missing_input_is_a_node_error(opts: InterpreterOptions) -> None:
    t = wft([steps("main", ("s", "needs", {})), py("needs", "pass", inputs={"parameters": [{"name": "x"}]})])
    r = run(t, opts)
    assert r.node("s").phase == "Error"
    assert r.node("s").message == "inputs.parameters.x was not supplied"
    assert r.phase == "Failed"


# --- mutexes -----------------------------------------------------------------------------------------------


def test_a_workflow_mutex_serialises_runs_of_the_same_key_only(opts: InterpreterOptions) -> None:
    t = wft([py("main", "import time; time.sleep(0.6)")], params=[{"name": "cluster"}],
            synchronization={"mutexes": [{"name": "{{workflow.parameters.cluster}}"}]})
    runs: dict[str, WorkflowRun] = {}

    def go(name: str, cluster: str) -> None:
        runs[name] = run(t, opts, {"cluster": cluster}, name=name)

    threads = [threading.Thread(target=go, args=(n, c)) for n, c in (("a", "c1"), ("b", "c1"), ("c", "c2"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=20)
    pods = {k: v.node(k) for k, v in runs.items()}
    first, second = sorted((pods["a"], pods["b"]), key=lambda n: n.started or 0)
    assert second.started is not None and first.finished is not None
    assert second.started >= first.finished, "same mutex key: must not overlap"
    waiting = [r for r in (runs["a"], runs["b"]) if any("waiting for argo/Mutex/c1" in e for e in r.events)]
    assert len(waiting) == 1
    other = pods["c"]
    assert other.started is not None and pods["a"].finished is not None and pods["b"].finished is not None
    assert other.started < max(pods["a"].finished, pods["b"].finished), "another key runs concurrently"


# --- refusals and invalid references -----------------------------------------------------------------------


def test_every_unimplemented_construct_is_refused_with_its_field_path() -> None:
    t = wft([
        {"name": "main", "steps": [[{"name": "a", "template": "leaf", "when": "1 == 1", "withItems": [1]}],
                                   [{"name": "b", "template": "leaf"}, {"name": "c", "template": "leaf"}]]},
        {"name": "d", "dag": {"tasks": []}},
        {"name": "r", "resource": {"action": "create"}},
        {"name": "leaf", "script": {"image": "x", "command": ["python"], "source": "", "workingDir": "/w",
                                    "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
         "retryStrategy": {"limit": 1, "retryPolicy": "OnTransientError",
                           "expression": "asInt(lastRetry.exitCode) > 1"}, "timeout": "1m"},
        {"name": "noretrylimit", "container": {"image": "x", "command": ["true"]}, "retryStrategy": {}},
    ], activeDeadlineSeconds=5, volumeClaimTemplates=[], securityContext={})
    with pytest.raises(UnsupportedConstruct) as info:
        check_supported(t)
    text = str(info.value)
    for expected in (
        ".spec.activeDeadlineSeconds", ".spec.volumeClaimTemplates",
        ".spec.templates[0].steps[0][0].when", ".spec.templates[0].steps[0][0].withItems",
        ".spec.templates[0].steps[1]: 2 parallel steps", ".spec.templates[1].dag", ".spec.templates[2].resource",
        ".spec.templates[3].script.workingDir", ".spec.templates[3].script.env[0].valueFrom.secretKeyRef",
        ".spec.templates[3].retryStrategy.expression", "'OnTransientError' not implemented",
        ".spec.templates[3].timeout", ".spec.templates[4].retryStrategy.limit: required",
    ):
        assert expected in text, expected
    assert ".spec.securityContext" not in text  # accepted: a Kubernetes-level concern


def test_accepted_fields_are_listed_in_the_run_events(opts: InterpreterOptions) -> None:
    t = wft([py("main", "pass", podSpecPatch="{}", metrics={"prometheus": []})], securityContext={"runAsUser": 1})
    r = run(t, opts)
    assert r.phase == "Succeeded"
    assert "accepted, not enforced locally: .spec.securityContext" in r.events
    assert "accepted, not enforced locally: .spec.templates[0].podSpecPatch" in r.events
    assert "recorded, ignored locally: .spec.templates[0].metrics" in r.events


def test_an_expression_tag_is_refused() -> None:
    with pytest.raises(UnsupportedConstruct, match=r"templates\[0\].script.source: expression tag"):
        check_supported(wft([py("main", "print('{{=sprig.upper(\"x\")}}')")]))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("print('{{workflow.parameters.nope}}')", "templates.main.script.source: failed to resolve "
                                                   "{{workflow.parameters.nope}}"),
        ("print('{{workflow.failures}}')", "failed to resolve {{workflow.failures}}"),
        ("print('{{inputs.parameters.x}}')", "failed to resolve {{inputs.parameters.x}}"),
    ],
)
def test_an_unresolved_reference_is_an_invalid_spec_before_any_step_runs(opts: InterpreterOptions, source: str,
                                                                         message: str) -> None:
    r = run(wft([py("main", source)]), opts)
    assert r.phase == "Failed" and r.message.startswith("invalid spec: ") and message in r.message
    assert r.nodes == {}


def test_a_step_cannot_reference_a_later_step(opts: InterpreterOptions) -> None:
    t = wft([steps("main", ("a", "echo", {"x": "{{steps.b.outputs.result}}"}), ("b", "echo", {"x": "1"})),
             py("echo", "print('{{inputs.parameters.x}}')", inputs={"parameters": [{"name": "x"}]})])
    r = run(t, opts)
    assert r.phase == "Failed" and "failed to resolve {{steps.b.outputs.result}}" in r.message


def test_a_service_account_other_than_the_token_holder_is_refused(opts: InterpreterOptions) -> None:
    opts.service_account = "capi-rollout-runner"
    with pytest.raises(ValueError, match="'someone-else' but the local executor was given the token of"):
        run(wft([py("main", "pass")], serviceAccountName="someone-else"), opts)
    with pytest.raises(ValueError, match="runs as ServiceAccount 'default'"):
        run(wft([py("main", "pass")]), opts)
    ok = run(wft([py("main", "pass", serviceAccountName="capi-rollout-runner")]), opts)
    assert ok.phase == "Succeeded"


def test_a_command_that_cannot_start_is_a_node_error(opts: InterpreterOptions) -> None:
    r = run(wft([{"name": "main", "container": {"image": "x", "command": ["/nonexistent/tool"]}}]), opts)
    assert r.phase == "Error" and r.message.startswith("failed to start /nonexistent/tool")


def test_text_is_an_argo_like_tree(opts: InterpreterOptions) -> None:
    r = run(wft([steps("main", ("one", "ok", {})), py("ok", "pass")]), opts)
    text = r.text()
    assert "Status:      Succeeded" in text
    assert "✔ toy-1" in text and "  ✔ [0]" in text and "    ✔ one" in text


# --- a real Hera-rendered template with runner scripts ------------------------------------------------------

HERA_MODULE = '''
from typing import Annotated

from hera.workflows import Parameter, RetryStrategy, Steps, WorkflowTemplate, script
from hera.workflows.models import Mutex, Synchronization


@script(constructor="runner", image="capi-rollout:dev")
def produce(who: str) -> Annotated[str, Parameter(name="greeting")]:
    print("producing for", who)
    return f"hello {who}"


@script(constructor="runner", image="capi-rollout:dev", retry_strategy=RetryStrategy(limit=1),
        active_deadline_seconds=5)
def consume(greeting: str) -> None:
    print("got", greeting)
    if greeting != "hello ann":
        raise SystemExit(4)


def build() -> WorkflowTemplate:
    with WorkflowTemplate(name="toy", namespace="argo", entrypoint="main", arguments=[Parameter(name="who")],
                          synchronization=Synchronization(mutexes=[Mutex(name="{{workflow.parameters.who}}")])) as w:
        with Steps(name="main"):
            p = produce(arguments={"who": "{{workflow.parameters.who}}"})
            consume(arguments={"greeting": p.get_parameter("greeting")})
    return w
'''


def test_a_hera_rendered_template_runs_its_runner_scripts_for_real(opts: InterpreterOptions, tmp_path: Path) -> None:
    import importlib
    import sys

    (tmp_path / "heratoy.py").write_text(HERA_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        rendered = importlib.import_module("heratoy").build().to_dict()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("heratoy", None)
    opts.env = {"PYTHONPATH": str(tmp_path)}
    r = run(rendered, opts, {"who": "ann"})
    assert r.phase == "Succeeded", r.text()
    assert r.node("produce").outputs == {"greeting": "hello ann"}
    assert [n.phase for n in r.attempts("consume")] == ["Succeeded"]
    assert any(n.startswith("env hera__outputs_directory: /tmp/hera-outputs -> ") for n in r.node("produce").notes)
    failing = run(rendered, opts, {"who": "bob"}, name="toy-2")
    assert [n.message for n in failing.attempts("consume")] == ["main: Error (exit code 4)"] * 2
    assert failing.node("consume").message == "No more retries left"


def test_a_step_without_deadline_is_still_bounded_by_the_executors_safety_timeout(opts: InterpreterOptions) -> None:
    opts.safety_timeout = 0.5
    started = time.monotonic()
    r = run(wft([py("main", "import time; time.sleep(30)")]), opts)
    assert time.monotonic() - started < 5
    assert r.phase == "Error"
    assert r.message.startswith("local executor: step ran longer than the safety timeout of 0.5s")


def test_a_template_mutex_serialises_that_template_across_runs(opts: InterpreterOptions) -> None:
    t = wft([steps("main", ("crit", "critical", {})),
             py("critical", "import time; time.sleep(0.5)", synchronization={"mutexes": [{"name": "remediate"}]})])
    runs: list[WorkflowRun] = []
    threads = [threading.Thread(target=lambda n=n: runs.append(run(t, opts, name=n))) for n in ("m1", "m2")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=20)
    first, second = sorted((r.node("crit") for r in runs), key=lambda n: n.started or 0)
    assert first.finished is not None and second.started is not None and second.started >= first.finished


def test_each_attempt_has_its_own_log_and_pod_root(opts: InterpreterOptions) -> None:
    r = run(wft([py("main", "print('try {{retries}}'); raise SystemExit(1)", retryStrategy={"limit": 1})]), opts)
    logs = [Path(n.log_path or "") for n in r.attempts("toy-1")]
    assert [p.name for p in logs] == ["toy-1(0).log", "toy-1(1).log"]
    assert ["try 0" in logs[0].read_text(), "try 1" in logs[1].read_text()] == [True, True]
    roots = {p.name for p in (opts.results_dir / "toy-1" / "pods").iterdir()}
    assert roots == {n.id for n in r.attempts("toy-1")}


def test_backoff_can_be_scaled_and_the_scaling_is_recorded(opts: InterpreterOptions) -> None:
    opts.backoff_scale = 0.1
    t = wft([py("main", "raise SystemExit(1)", retryStrategy={"limit": 1, "backoff": {"duration": "3s"}})])
    r = run(t, opts)
    a0, a1 = r.attempts("toy-1")
    assert a1.started is not None and a0.finished is not None and 0.3 <= a1.started - a0.finished < 2.5
    assert "toy-1: backoff 3s after attempt 0 (scaled to 0.3s)" in r.events


def test_the_rendered_product_template_is_fully_supported_by_the_local_executor() -> None:
    import yaml

    from e2e.argo_local.spec import check_references, merge_arguments

    path = Path(__file__).parents[2] / "overlay/management/argo-workflows/capi-rollout-workflowtemplate.yaml"
    template = yaml.safe_load(path.read_text())
    acceptance = check_supported(template)
    assert not any(a.endswith((".command", ".args", ".env", ".source")) for a in acceptance.accepted)
    check_references(template["spec"], merge_arguments(template["spec"], {"clusterName": "c1"}))
