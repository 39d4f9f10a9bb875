"""The semantic template check finds what a schema cannot: dangling references, wiring and misplaced deadlines."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from capi_rollout.workflow import semantic, template

Manifest = dict[str, Any]


def tmpl(m: Manifest, name: str) -> dict[str, Any]:
    return next(t for t in m["spec"]["templates"] if t["name"] == name)


def step(m: Manifest, caller: str, name: str) -> dict[str, Any]:
    return next(s for g in tmpl(m, caller)["steps"] for s in g if s["name"] == name)


def arg(s: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in s["arguments"]["parameters"] if a["name"] == name)


def _env(m: Manifest, name: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = tmpl(m, name)["script"]["env"]
    return env


MUTATIONS: dict[str, tuple[Callable[[Manifest], None], str]] = {
    "a step reads an output of a step that runs later": (
        lambda m: arg(step(m, "rollout", "preflight"), "clusterName").update(
            value="{{steps.workers.outputs.parameters.phase}}"
        ),
        "names step 'workers', which does not run in an earlier group",
    ),
    "a step reads an output its source never declares": (
        lambda m: arg(step(m, "rollout", "control-plane"), "deadlineSeconds").update(
            value="{{steps.resolve.outputs.parameters.deadline}}"
        ),
        "names output 'deadline', which template 'resolve' does not declare",
    ),
    "a template reads an input it does not declare": (
        lambda m: _env(m, "resolve").append({"name": "X", "value": "{{inputs.parameters.clustername}}"}),
        "does not resolve to a declared input parameter of template 'resolve'",
    ),
    "a workflow parameter that is not an argument": (
        lambda m: arg(step(m, "rollout", "resolve"), "dryRun").update(value="{{workflow.parameters.dry-run}}"),
        "names a workflow parameter that spec.arguments does not declare",
    ),
    "the workflow status outside the exit handler": (
        lambda m: _env(m, "workers").append({"name": "S", "value": "{{workflow.status}}"}),
        "is only set in templates run by onExit",
    ),
    "an expression tag": (
        lambda m: _env(m, "workers").append({"name": "S", "value": "{{=sprig.upper('x')}}"}),
        "is an expression tag",
    ),
    "the step duration outside metrics": (
        lambda m: _env(m, "workers").append({"name": "S", "value": "{{duration}}"}),
        "is only defined inside metrics",
    ),
    "a step calling a template that does not exist": (
        lambda m: step(m, "rollout", "workers").update(template="worker"),
        "references template 'worker', which does not exist",
    ),
    "an onExit template that does not exist": (
        lambda m: m["spec"].update(onExit="exit"),
        "spec.onExit names template 'exit', which does not exist",
    ),
    "a deadline on a steps template": (
        lambda m: tmpl(m, "rollout").update(activeDeadlineSeconds=7200),
        "activeDeadlineSeconds is only valid on leaf templates",
    ),
    "a step that omits a required input": (
        lambda m: step(m, "rollout", "workers")["arguments"]["parameters"].pop(),
        "does not pass required input 'deadlineSeconds' of 'workers'",
    ),
    "a step that passes an undeclared input": (
        lambda m: step(m, "rollout", "resolve")["arguments"]["parameters"].append({"name": "targets", "value": "x"}),
        "passes 'targets', which 'resolve' does not declare",
    ),
    "a mutex keyed by an unknown parameter": (
        lambda m: m["spec"]["synchronization"]["mutexes"][0].update(name="{{workflow.parameters.cluster}}"),
        "names a workflow parameter that spec.arguments does not declare",
    ),
    "retries that miss a graceful pod deletion (OnError alone)": (
        lambda m: tmpl(m, "workers")["retryStrategy"].update(retryPolicy="OnError", expression=""),
        "does not retry when pod deleted gracefully, drained or evicted through the API (Failed, exit 143)",
    ),
    "retries that repeat a failed phase (Always without an expression)": (
        lambda m: tmpl(m, "control-plane")["retryStrategy"].pop("expression"),
        "retries when the step failed (exit 1) (Failed, exit 1)",
    ),
    "retries that repeat a phase killed by its own deadline": (
        lambda m: tmpl(m, "workers")["retryStrategy"].update(
            expression='lastRetry.status == "Error" || lastRetry.exitCode in ["137", "143"]'),
        "retries when the pod outlived its activeDeadlineSeconds (Failed, exit 143)",
    ),
    "a retry expression Argo cannot compile (unknown variable)": (
        lambda m: tmpl(m, "resolve")["retryStrategy"].update(expression='lastRetry.exitcode == "143"'),
        "expression does not compile: unknown name lastRetry.exitcode",
    ),
    "a retry expression Argo cannot compile (string against number)": (
        lambda m: tmpl(m, "resolve")["retryStrategy"].update(expression="lastRetry.exitCode == 143"),
        "expression does not compile",
    ),
    "retries without a limit": (
        lambda m: tmpl(m, "summary")["retryStrategy"].pop("limit"),
        "retryStrategy has no limit",
    ),
    "a duplicated template name": (
        lambda m: m["spec"]["templates"].append(copy.deepcopy(tmpl(m, "summary"))),
        "template 'summary' is defined twice",
    ),
}


def test_the_real_template_has_no_problems() -> None:
    assert semantic.check(template.manifest()) == []


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_a_broken_template_is_reported(case: str) -> None:
    mutate, expected = MUTATIONS[case]
    m = template.manifest()
    mutate(m)
    problems = semantic.check(m)
    assert any(expected in p for p in problems), problems


def test_steps_in_the_same_group_cannot_read_each_other() -> None:
    m = template.manifest()
    groups = tmpl(m, "rollout")["steps"]
    groups[0].append(groups.pop(1)[0])  # preflight now runs in parallel with resolve
    arg(step(m, "rollout", "preflight"), "clusterName")["value"] = "{{steps.resolve.outputs.parameters.targets}}"
    assert any("does not run in an earlier group" in p for p in semantic.check(m))
