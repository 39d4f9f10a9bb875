"""A semantic check of a rendered WorkflowTemplate, offline: what a schema cannot see.

Contract: pure; :func:`check` takes the manifest as a plain dict and returns human-readable problems (an empty
list means the template is sound). It checks that

* the entrypoint, the ``onExit`` template and every template a step references exist, names are unique;
* every ``{{...}}`` reference resolves: ``inputs.parameters.X`` to an input of the same template,
  ``outputs.parameters.X`` (metrics only) to an output of the same template, ``workflow.parameters.X`` to a
  workflow argument, ``steps.S.outputs.parameters.P`` to an output of a step ``S`` in an earlier group of the
  same steps template, ``status`` / ``duration`` only inside metrics, ``workflow.status`` /
  ``workflow.failures`` only in templates reached from ``onExit``; expression tags (``{{=...}}``) are refused;
* each step passes exactly the inputs its template declares (every input without a default, nothing unknown);
* ``activeDeadlineSeconds`` sits only on leaf (script, container, resource) templates;
* every ``retryStrategy`` has a ``limit``, and its policy and ``expression`` (compiled with the expr-lang subset of
  :mod:`capi_rollout.workflow.argo_expr`, as Argo v4 compiles it) retry exactly the attempts a pod lost from
  outside leaves behind — ``pod deleted`` (Error), a graceful deletion or drain (Failed, exit 143), an eviction
  (Failed, exit 137) — and never a step's own failure (Failed, exit 1 or 2) or its deadline (Failed, 143,
  the kubelet's deadline message); see :data:`RETRY_CASES`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from capi_rollout.workflow import argo_expr

# The one pattern of an Argo ``{{...}}`` reference in this repository (the e2e emulator substitutes with it too).
ARGO_REF = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)
_LEAF_KINDS = ("script", "container", "resource", "containerSet", "data", "http", "plugin", "suspend")
_CALLER_KINDS = ("steps", "dag")
_WORKFLOW_VARS = {"name", "namespace", "uid", "serviceAccountName", "mainEntrypoint", "creationTimestamp"}
_EXIT_ONLY_WORKFLOW_VARS = {"status", "failures", "duration"}

# (what happened, lastRetry.status, lastRetry.exitCode, lastRetry.message, must it be retried?) -- the node
# phases and messages Argo v4.0.2 records (operator.go: podReconciliation "pod deleted", inferFailedReason).
RETRY_CASES: tuple[tuple[str, str, str, str, bool], ...] = (
    ("pod force-deleted (grace 0) or its node lost", "Error", "-1", "pod deleted", True),
    ("pod deleted gracefully, drained or evicted through the API", "Failed", "143", "main: Error (exit code 143)",
     True),
    ("pod evicted for node pressure", "Failed", "137",
     "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki.", True),
    ("init or wait container failed", "Error", "-1", "wait: Error (exit code 1)", True),
    ("the step failed (exit 1)", "Failed", "1", "main: Error (exit code 1)", False),
    ("the step was started wrongly (exit 2)", "Failed", "2", "main: Error (exit code 2)", False),
    ("the pod outlived its activeDeadlineSeconds", "Failed", "143",
     "Pod was active on the node longer than the specified deadline", False),
)
_POLICY_RETRIES = {"Always": ("Failed", "Error"), "OnFailure": ("Failed",), "OnError": ("Error",)}


def retry_decision(strategy: Mapping[str, Any], status: str, exit_code: str, message: str, retries: int = 0) -> bool:
    """Whether Argo v4 retries an attempt that ended so (budget aside): the policy AND the expression.

    The default policy is ``OnFailure``, or ``Always`` when an expression is set (docs/retries.md, v3.5+).
    Raises :class:`~capi_rollout.workflow.argo_expr.ExprError` for an expression Argo would not compile.
    """
    expression = str(strategy.get("expression") or "")
    policy = str(strategy.get("retryPolicy") or ("Always" if expression else "OnFailure"))
    if status not in _POLICY_RETRIES.get(policy, ()):
        return False
    if not expression:
        return True
    variables = {"retries": str(retries), "lastRetry.status": status, "lastRetry.exitCode": exit_code,
                 "lastRetry.message": message, "lastRetry.duration": "1"}
    return argo_expr.evaluate(expression, variables)


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside ``node`` with its dotted path."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


def _names(items: Any) -> set[str]:
    return {str(item["name"]) for item in items or [] if isinstance(item, Mapping) and "name" in item}


def _params(io: Any) -> list[Mapping[str, Any]]:
    if not isinstance(io, Mapping):
        return []
    return [p for p in io.get("parameters") or [] if isinstance(p, Mapping)]


def _is_leaf(tmpl: Mapping[str, Any]) -> bool:
    return any(kind in tmpl for kind in _LEAF_KINDS)


def _step_groups(tmpl: Mapping[str, Any]) -> list[list[Mapping[str, Any]]]:
    groups = tmpl.get("steps") or []
    return [[s for s in group if isinstance(s, Mapping)] for group in groups if isinstance(group, list)]


def _reachable(start: str, templates: Mapping[str, Mapping[str, Any]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in templates:
            continue
        seen.add(name)
        for group in _step_groups(templates[name]):
            todo.extend(str(s.get("template", "")) for s in group)
        for task in (templates[name].get("dag") or {}).get("tasks") or []:
            todo.append(str(task.get("template", "")))
    return seen


class _Checker:
    def __init__(self, manifest: Mapping[str, Any]) -> None:
        self.spec: Mapping[str, Any] = manifest.get("spec") or {}
        self.problems: list[str] = []
        self.templates: dict[str, Mapping[str, Any]] = {}
        for tmpl in self.spec.get("templates") or []:
            name = str(tmpl.get("name", ""))
            if name in self.templates:
                self.problems.append(f"template {name!r} is defined twice")
            self.templates[name] = tmpl
        self.arguments = _names(_params(self.spec.get("arguments")))
        on_exit = self.spec.get("onExit")
        self.exit_templates = _reachable(str(on_exit), self.templates) if on_exit else set()

    def run(self) -> list[str]:
        for field in ("entrypoint", "onExit"):
            name = self.spec.get(field)
            if field == "entrypoint" and not name:
                self.problems.append("spec.entrypoint is not set")
            elif name and name not in self.templates:
                self.problems.append(f"spec.{field} names template {name!r}, which does not exist")
        for path, text in _strings({k: v for k, v in self.spec.items() if k != "templates"}, "spec"):
            for ref in ARGO_REF.findall(text):
                self._check_ref(ref, path, tmpl=None, in_metrics=False, prior_steps={})
        for name, tmpl in self.templates.items():
            self._check_template(name, tmpl)
        return self.problems

    def _check_template(self, name: str, tmpl: Mapping[str, Any]) -> None:
        if "activeDeadlineSeconds" in tmpl and not _is_leaf(tmpl):
            self.problems.append(f"template {name!r}: activeDeadlineSeconds is only valid on leaf templates")
        if "retryStrategy" in tmpl:
            self._check_retry(name, tmpl["retryStrategy"])
        prior: dict[str, str] = {}
        if any(kind in tmpl for kind in _CALLER_KINDS):
            for group in _step_groups(tmpl):
                for step in group:
                    self._check_step(name, step, prior)
                for step in group:  # steps of a group run in parallel: visible only to later groups
                    prior[str(step.get("name"))] = str(step.get("template"))
        for key, value in tmpl.items():
            if key == "steps":
                continue
            for path, text in _strings(value, f"template {name!r}.{key}"):
                for ref in ARGO_REF.findall(text):
                    self._check_ref(ref, path, tmpl=tmpl, in_metrics=key == "metrics", prior_steps={})

    def _check_retry(self, name: str, strategy: Any) -> None:
        where = f"template {name!r}: retryStrategy"
        if not isinstance(strategy, Mapping) or strategy.get("limit") in (None, ""):
            self.problems.append(f"{where} has no limit (Argo would retry without end)")
            return
        policy = strategy.get("retryPolicy")
        if policy is not None and policy not in _POLICY_RETRIES:
            self.problems.append(f"{where}: retryPolicy {policy!r} is not one this check knows")
            return
        for what, status, code, message, wanted in RETRY_CASES:
            try:
                decided = retry_decision(strategy, status, code, message)
            except argo_expr.ExprError as exc:
                self.problems.append(f"{where}.expression does not compile: {exc}")
                return
            if decided != wanted:
                verb = "retries" if decided else "does not retry"
                self.problems.append(f"{where} {verb} when {what} ({status}, exit {code})")

    def _check_step(self, caller: str, step: Mapping[str, Any], prior: Mapping[str, str]) -> None:
        target_name = str(step.get("template", ""))
        where = f"template {caller!r} step {step.get('name')!r}"
        target = self.templates.get(target_name)
        if target is None:
            self.problems.append(f"{where}: references template {target_name!r}, which does not exist")
        passed = _params(step.get("arguments"))
        if target is not None:
            declared = {str(p["name"]): p for p in _params(target.get("inputs")) if "name" in p}
            passed_names = _names(passed)
            for extra in sorted(passed_names - set(declared)):
                self.problems.append(f"{where}: passes {extra!r}, which {target_name!r} does not declare")
            for missing in sorted(set(declared) - passed_names):
                if "default" not in declared[missing] and "value" not in declared[missing]:
                    self.problems.append(f"{where}: does not pass required input {missing!r} of {target_name!r}")
        caller_tmpl = self.templates[caller]
        for path, text in _strings(dict(step), where):
            for ref in ARGO_REF.findall(text):
                self._check_ref(ref, path, tmpl=caller_tmpl, in_metrics=False, prior_steps=prior)

    def _check_ref(
        self,
        ref: str,
        path: str,
        *,
        tmpl: Mapping[str, Any] | None,
        in_metrics: bool,
        prior_steps: Mapping[str, str],
    ) -> None:
        def bad(why: str) -> None:
            self.problems.append(f"{path}: {{{{{ref}}}}} {why}")

        if ref.startswith("="):
            bad("is an expression tag; this template uses plain references only")
            return
        parts = ref.split(".")
        tmpl_name = str(tmpl.get("name")) if tmpl is not None else None
        if parts[0] == "workflow":
            if len(parts) == 3 and parts[1] == "parameters":
                if parts[2] not in self.arguments:
                    bad("names a workflow parameter that spec.arguments does not declare")
            elif len(parts) == 2 and parts[1] in _EXIT_ONLY_WORKFLOW_VARS:
                if tmpl_name not in self.exit_templates:
                    bad("is only set in templates run by onExit")
            elif not (len(parts) == 2 and parts[1] in _WORKFLOW_VARS):
                bad("is not a workflow variable this check knows")
        elif parts[0] in ("inputs", "outputs"):
            if tmpl is None:
                bad(f"refers to {parts[0]} outside a template")
                return
            if parts[0] == "outputs" and not in_metrics:
                bad("refers to the template's own outputs outside its metrics")
                return
            declared = _names(_params(tmpl.get(parts[0])))
            if parts[1:] == ["parameters"] and parts[0] == "inputs":
                if not declared:
                    bad("is the inputs JSON of a template without inputs")
            elif len(parts) != 3 or parts[1] != "parameters" or parts[2] not in declared:
                bad(f"does not resolve to a declared {parts[0][:-1]} parameter of template {tmpl_name!r}")
        elif parts[0] == "steps":
            if len(parts) != 5 or parts[2:4] != ["outputs", "parameters"]:
                bad("is not of the form steps.<step>.outputs.parameters.<name>")
                return
            step_template = prior_steps.get(parts[1])
            if step_template is None:
                bad(f"names step {parts[1]!r}, which does not run in an earlier group of this template")
                return
            outputs = _names(_params((self.templates.get(step_template) or {}).get("outputs")))
            if parts[4] not in outputs:
                bad(f"names output {parts[4]!r}, which template {step_template!r} does not declare")
        elif ref in ("status", "duration"):
            if not in_metrics:
                bad("is only defined inside metrics")
        else:
            bad("is not a reference this check knows")


def check(manifest: Mapping[str, Any]) -> list[str]:
    """Problems found in a WorkflowTemplate manifest (empty when sound)."""
    return _Checker(manifest).run()
