"""The local Argo interpreter: run a rendered Argo WorkflowTemplate on this machine the way Argo v4 runs it.

Contract: :func:`run_workflow` (or :func:`execute` on a pre-made :class:`WorkflowRun`) takes the template dict,
the submitted parameters and :class:`~e2e.argo_local.options.InterpreterOptions`, runs the entrypoint, then the
exit handler, and returns the completed :class:`WorkflowRun`; it also writes ``workflow.txt``/``workflow.json``
and one log per attempt under ``<results_dir>/<workflow name>/``. It raises :class:`UnsupportedConstruct` before
running anything if the template uses a construct it does not implement (see :mod:`e2e.argo_local.spec`).

Semantics follow argoproj/argo-workflows v4 (workflow/controller/operator.go, steps.go, workflowpod.go,
workflow/common/util.go, workflow/executor/executor.go):

* parameters: the submitted ones merged over ``spec.arguments`` as Argo does for a workflowTemplateRef (a
  submitted value wins whole, so the template's ``enum`` only binds a value left at the template's); a missing
  value or such an enum miss ends the Workflow Failed with ``invalid spec: ...`` before any step, as does an
  unresolvable ``{{tag}}``;
* ``steps``: groups in order, one step per group (parallel groups are refused); a failed/errored step fails its
  group (``child '<id>' failed``) and the steps node with the same message;
* ``script``: the substituted source is staged at ``/argo/staging/script`` (mode 0755) and the argv is
  ``command + args + [that path]``; ``container``: ``command + args``; ``outputs.result`` is stdout minus one
  trailing newline; ``outputs.parameters[].valueFrom.path`` is read after the step, one trailing newline
  trimmed, ``valueFrom.default`` when the file is missing;
* exit status: 0 -> Succeeded; non-zero -> Failed ``main: Error (exit code N)``; ``activeDeadlineSeconds``
  -> the group is terminated and the node Failed ``Pod was active on the node longer than the specified
  deadline``; fault injection (:class:`KillStep`) plays the three ways a pod is lost from outside:
  ``force`` (grace 0 / lost node: SIGKILL, the pod object is gone) -> Error ``pod deleted`` with no exit code;
  ``graceful`` (``kubectl delete pod``, a drain, an API eviction: SIGTERM, SIGKILL after ``kill_grace``; the
  kubelet marks the pod Failed) -> Failed ``main: Error (exit code 143)``; ``evict`` (node-pressure eviction:
  SIGKILL, the kubelet's pod message wins in ``inferFailedReason``) -> Failed
  :data:`e2e.argo_local.pod.EVICTED_MESSAGE`, 137;
* ``retryStrategy`` (operator.go ``processNodeRetries``): ``limit`` counts retries after the first attempt;
  after a failed attempt the ``backoff`` (``duration * factor^(n-1)`` capped by ``cap``) is waited while
  ``n <= limit`` *before* anything is decided; then ``retryPolicy`` (OnFailure retries Failed only, OnError
  Error only, Always both; default Always when an ``expression`` is set, else OnFailure), then exhaustion
  (``No more retries left``), then ``expression`` (expr-lang over ``retries`` and ``lastRetry.exitCode`` (``-1``
  when none) / ``status`` / ``duration`` / ``message``, evaluated by :mod:`capi_rollout.workflow.argo_expr`;
  false -> ``retryStrategy.expression evaluated to false``);
* exit handler (``onExit`` / ``hooks.exit``) always runs, with ``workflow.status`` and ``workflow.failures``
  (``strconv.Quote``-d JSON, ``"null"`` when nothing failed); a failing exit handler fails a Succeeded
  workflow, never masks an earlier failure;
* ``synchronization.mutexes`` (workflow and template level): real in-process locks keyed by
  ``<namespace>/Mutex/<substituted name>``; a waiting run stays Pending.

What differs from a pod, on purpose and only here, is :mod:`e2e.argo_local.pod`'s contract.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from capi_rollout.domain.params import parse_duration
from capi_rollout.workflow import argo_expr
from e2e.argo_local.model import (
    ERROR,
    FAILED,
    PENDING,
    POD,
    RETRY,
    RUNNING,
    STEP_GROUP,
    STEPS,
    SUCCEEDED,
    Node,
    WorkflowRun,
    node_id,
)
from e2e.argo_local.mutex import MutexTimeout, mutex_key
from e2e.argo_local.options import InterpreterOptions
from e2e.argo_local.pod import Pods
from e2e.argo_local.spec import (
    Acceptance,
    InvalidSpec,
    check_references,
    check_supported,
    exit_template,
    merge_arguments,
    templates_by_name,
)
from e2e.argo_local.substitute import ExpressionRefused, UnresolvedReference, go_quote, substitute, substitute_text

_WORKFLOW_PHASE = {SUCCEEDED: SUCCEEDED, FAILED: FAILED, ERROR: ERROR, "Skipped": SUCCEEDED, "Omitted": SUCCEEDED}


class StepError(Exception):
    """A node ends in Error with this message (Argo marks the node Error on such template errors)."""


def _go_duration(value: Any) -> float:
    """Argo's ``ParseStringToDuration``: a bare number is seconds, else a Go duration."""
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    return parse_duration(text)


def _param_json(params: Sequence[Mapping[str, Any]]) -> str:
    order = ("name", "default", "value", "valueFrom", "globalName", "enum", "description")
    out = [{k: p[k] for k in order if p.get(k) not in (None, "", [])} for p in params]
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


class _Execution:
    def __init__(self, wft: Mapping[str, Any], run: WorkflowRun, opts: InterpreterOptions, acceptance: Acceptance):
        self.spec: Mapping[str, Any] = wft["spec"]
        self.tmpls = templates_by_name(self.spec)
        self.run = run
        self.opts = opts
        self.acceptance = acceptance
        self.dir = Path(opts.results_dir) / run.name
        self.pods = Pods(run, opts, self.dir)
        self.globals: dict[str, str] = {}

    # --- workflow ------------------------------------------------------------------------------------

    def execute(self) -> None:
        run = self.run
        run.started = time.time()
        for tname, tmpl in self.tmpls.items():
            self._check_service_account(tmpl, tname)
        try:
            params = merge_arguments(self.spec, run.parameters)
            run.parameters = params
            check_references(self.spec, params)
        except InvalidSpec as exc:
            self._finish(FAILED, f"invalid spec: {exc}")
            return
        declared = list((self.spec.get("arguments") or {}).get("parameters") or [])
        merged = [{**p, "value": params[p["name"]]} for p in declared]
        merged += [{"name": k, "value": v} for k, v in params.items() if k not in {p["name"] for p in declared}]
        self.globals = {
            "workflow.name": run.name,
            "workflow.namespace": run.namespace,
            "workflow.uid": run.uid,
            "workflow.serviceAccountName": str(self.spec.get("serviceAccountName", "")),
            "workflow.mainEntrypoint": str(self.spec["entrypoint"]),
            "workflow.parameters": _param_json(merged),
            "workflow.status": RUNNING,
            **{f"workflow.parameters.{k}": v for k, v in params.items()},
        }
        for field_path in self.acceptance.accepted:
            run.note(f"accepted, not enforced locally: {field_path}")
        for field_path in self.acceptance.recorded:
            run.note(f"recorded, ignored locally: {field_path}")
        keys = self._mutex_keys(self.spec.get("synchronization"), self.globals, "spec.synchronization")
        try:
            with self.opts.mutexes.hold(keys, run.name, timeout=self.opts.mutex_timeout, on_wait=self._waiting):
                run.phase = RUNNING
                self._main()
        except MutexTimeout as exc:
            self._finish(ERROR, f"local executor: {exc}")

    def _waiting(self, key: str, holder: str) -> None:
        self.run.phase = PENDING
        self.run.message = f"Waiting for {key} lock. Lock status: 0/1"
        self.run.note(f"waiting for {key} (held by {holder})")

    def _main(self) -> None:
        run = self.run
        run.message = ""
        entry = self._template(str(self.spec["entrypoint"]), run.name, run.name, {}, None, self.globals)
        status = _WORKFLOW_PHASE.get(entry.phase, ERROR)
        failures = run.failures()
        exit_globals = {
            **self.globals,
            "workflow.status": status,
            "workflow.failures": go_quote(json.dumps(failures or None, separators=(",", ":"))),
        }
        exit_node: Node | None = None
        exit_name = exit_template(self.spec)
        if exit_name is not None:
            name = f"{run.name}.onExit"
            exit_node = self._template(exit_name, name, name, {}, None, exit_globals)
            run.exit_outputs = self._collected_outputs(exit_node)
        if status == SUCCEEDED and exit_node is not None and exit_node.failed_or_error:
            self._finish(exit_node.phase, exit_node.message)
        else:
            self._finish(status, entry.message if status != SUCCEEDED else "")

    def _finish(self, phase: str, message: str) -> None:
        self.run.phase = phase
        self.run.message = message
        self.run.finished = time.time()
        self.run.write(self.dir)

    def _mutex_keys(self, sync: Any, scope: Mapping[str, str], where: str) -> list[str]:
        if not sync:
            return []
        out = []
        for i, m in enumerate(sync.get("mutexes") or []):
            name = substitute_text(str(m["name"]), scope, f"{where}.mutexes[{i}].name")
            ns = substitute_text(str(m.get("namespace") or self.run.namespace), scope, f"{where}.mutexes[{i}]")
            out.append(mutex_key(ns, name))
        return out

    def _collected_outputs(self, node: Node) -> dict[str, str]:
        if node.outputs:
            return dict(node.outputs)
        by_id = {n.id: n for n in self.run.nodes.values()}
        merged: dict[str, str] = {}
        for cid in node.children:
            if cid in by_id:
                merged.update(self._collected_outputs(by_id[cid]))
        return merged

    # --- templates -----------------------------------------------------------------------------------

    def _new_node(self, name: str, display: str, type_: str, template: str, parent: Node | None) -> Node:
        node = Node(id=node_id(self.run.name, name), name=name, display_name=display, type=type_,
                    template=template, phase=RUNNING, started=time.time())
        return self.run.add_node(node, parent)

    def _end(self, node: Node, phase: str, message: str = "") -> Node:
        return node.end(phase, message)

    def _template(
        self, tname: str, name: str, display: str, arguments: Mapping[str, str], parent: Node | None,
        globals_: Mapping[str, str],
    ) -> Node:
        tmpl = self.tmpls[tname]
        type_ = STEPS if "steps" in tmpl else (RETRY if "retryStrategy" in tmpl else POD)
        try:
            inputs = self._inputs(tmpl, arguments, globals_)
            scope = {
                **globals_,
                **{f"inputs.parameters.{p['name']}": p["value"] for p in inputs},
                "inputs.parameters": _param_json(inputs),
            }
            keys = self._mutex_keys(tmpl.get("synchronization"), scope, f"templates.{tname}.synchronization")
        except (StepError, UnresolvedReference, ExpressionRefused) as exc:
            node = self._new_node(name, display, type_, tname, parent)
            return self._end(node, ERROR, str(exc))
        with self.opts.mutexes.hold(keys, f"{self.run.name}/{name}", timeout=self.opts.mutex_timeout):
            if type_ == STEPS:
                return self._steps(tmpl, name, display, parent, scope)
            if type_ == RETRY:
                return self._retry(tmpl, name, display, parent, scope)
            return self._attempt(tmpl, name, display, parent, scope, retries=0, step=display)

    def _check_service_account(self, tmpl: Mapping[str, Any], tname: str) -> None:
        """A pod runs as the template's, else the workflow's, else the namespace's ``default`` ServiceAccount."""
        if self.opts.service_account is None:  # no token given: the steps do not talk to an API server
            return
        sa = tmpl.get("serviceAccountName") or self.spec.get("serviceAccountName") or "default"
        if sa != self.opts.service_account:
            raise ValueError(f"templates.{tname}: runs as ServiceAccount {sa!r} but the local executor was given "
                             f"the token of {self.opts.service_account!r}")

    def _inputs(self, tmpl: Mapping[str, Any], arguments: Mapping[str, str],
                globals_: Mapping[str, str]) -> list[dict[str, Any]]:
        out = []
        for p in (tmpl.get("inputs") or {}).get("parameters") or []:
            q = dict(p)
            if q.get("value") is None and q.get("default") is not None:
                q["value"] = q["default"]
            if p["name"] in arguments:
                q["value"] = arguments[p["name"]]
            if q.get("value") is None:
                raise StepError(f"inputs.parameters.{p['name']} was not supplied")
            q["value"] = substitute_text(str(q["value"]), globals_, f"inputs.parameters.{p['name']}")
            if q.get("default") is not None:
                q["default"] = str(q["default"])
            out.append(q)
        return out

    def _steps(self, tmpl: Mapping[str, Any], name: str, display: str, parent: Node | None,
               scope: Mapping[str, str]) -> Node:
        node = self._new_node(name, display, STEPS, tmpl["name"], parent)
        local = dict(scope)
        for i, group in enumerate(tmpl["steps"]):
            gname = f"{name}[{i}]"
            gnode = self._new_node(gname, f"[{i}]", STEP_GROUP, tmpl["name"], node)
            step = group[0]
            where = f"templates.{tmpl['name']}.steps[{i}].{step['name']}"
            try:
                args = {
                    p["name"]: substitute_text(str(p.get("value", "")), local, f"{where}.arguments.{p['name']}")
                    for p in (step.get("arguments") or {}).get("parameters") or []
                }
            except (UnresolvedReference, ExpressionRefused) as exc:
                self._end(gnode, ERROR, str(exc))
                return self._end(node, FAILED, str(exc))
            child = self._template(step["template"], f"{gname}.{step['name']}", step["name"], args, gnode,
                                   self.globals_for(scope))
            if child.failed_or_error:
                message = f"child '{child.id}' failed"
                self._end(gnode, FAILED, message)
                return self._end(node, FAILED, message)
            self._end(gnode, SUCCEEDED)
            for k, v in child.outputs.items():
                local[f"steps.{step['name']}.outputs.parameters.{k}"] = v
            if child.result is not None:
                local[f"steps.{step['name']}.outputs.result"] = child.result
        return self._end(node, SUCCEEDED)

    def globals_for(self, scope: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in scope.items() if k.startswith("workflow.")}

    def _retry(self, tmpl: Mapping[str, Any], name: str, display: str, parent: Node | None,
               scope: Mapping[str, str]) -> Node:
        node = self._new_node(name, display, RETRY, tmpl["name"], parent)
        where = f"templates.{tmpl['name']}.retryStrategy"
        try:
            strategy = substitute(tmpl["retryStrategy"], scope, where)
            limit = int(strategy["limit"])
            backoff = strategy.get("backoff") or {}
            base = _go_duration(backoff["duration"]) if backoff.get("duration") else None
            factor = int(backoff.get("factor", 0) or 0)
            cap = _go_duration(backoff["cap"]) if backoff.get("cap") else None
        except (UnresolvedReference, ExpressionRefused, ValueError, KeyError) as exc:
            return self._end(node, ERROR, f"{where}: {exc}")
        expression = str(strategy.get("expression") or "")
        policy = strategy.get("retryPolicy") or ("Always" if expression else "OnFailure")
        retry_failed = policy in ("Always", "OnFailure")
        retry_error = policy in ("Always", "OnError")
        attempts = 0
        while True:
            child = self._attempt(tmpl, f"{name}({attempts})", f"{display}({attempts})", node, scope,
                                  retries=attempts, step=display)
            attempts += 1
            node.outputs, node.result = dict(child.outputs), child.result
            if child.phase == SUCCEEDED:
                return self._end(node, SUCCEEDED)
            if base is not None and attempts <= limit:  # Argo waits the backoff before it decides anything
                wait = base * (factor ** (attempts - 1) if factor > 0 else 1)
                if cap is not None:
                    wait = min(wait, cap)
                node.message = f"Backoff for {wait:g}s"
                scaled = wait * self.opts.backoff_scale
                self.run.note(f"{display}: backoff {wait:g}s after attempt {attempts - 1}"
                              + (f" (scaled to {scaled:g}s)" if self.opts.backoff_scale != 1.0 else ""))
                time.sleep(scaled)  # Argo's backoff is itself a wait: the semantics being reproduced
                node.message = ""
            if (child.phase == FAILED and not retry_failed) or (child.phase == ERROR and not retry_error):
                return self._end(node, child.phase, child.message)
            if attempts > limit:
                return self._end(node, child.phase, "No more retries left")
            if expression:
                variables = {
                    "retries": str(attempts - 1),
                    "lastRetry.exitCode": str(child.exit_code) if child.exit_code is not None else "-1",
                    "lastRetry.status": child.phase,
                    "lastRetry.duration": str((child.finished or 0.0) - (child.started or 0.0)),
                    "lastRetry.message": child.message,
                }
                try:
                    again = argo_expr.evaluate(expression, variables)
                except argo_expr.ExprError as exc:
                    return self._end(node, ERROR, f"{where}.expression: {exc}")
                self.run.note(f"{display}: retryStrategy.expression is {str(again).lower()} for "
                              f"{child.phase} exit {variables['lastRetry.exitCode']} {child.message!r}")
                if not again:
                    return self._end(node, child.phase, "retryStrategy.expression evaluated to false")

    def _attempt(self, tmpl: Mapping[str, Any], name: str, display: str, parent: Node | None,
                 scope: Mapping[str, str], *, retries: int, step: str) -> Node:
        node = self._new_node(name, display, POD, tmpl["name"], parent)
        return self.pods.attempt(node, tmpl, scope, retries=retries, step=step)


def new_run(name: str | None = None, namespace: str = "argo", parameters: Mapping[str, str] | None = None,
            uid: str | None = None, generate_name: str = "capi-rollout-") -> WorkflowRun:
    """A Pending :class:`WorkflowRun` with Argo-like generated name and a random UID."""
    return WorkflowRun(
        name=name or f"{generate_name}{uuid.uuid4().hex[:5]}",
        namespace=namespace,
        uid=uid or str(uuid.uuid4()),
        parameters={k: str(v) for k, v in (parameters or {}).items()},
    )


def execute(wft: Mapping[str, Any], run: WorkflowRun, options: InterpreterOptions) -> WorkflowRun:
    """Run ``wft`` into the given ``run`` (refusing unsupported constructs first); returns ``run`` completed."""
    acceptance = check_supported(wft)
    run.results_dir = Path(options.results_dir) / run.name
    _Execution(wft, run, options, acceptance).execute()
    return run


def run_workflow(
    wft: Mapping[str, Any],
    parameters: Mapping[str, str],
    options: InterpreterOptions,
    *,
    name: str | None = None,
    namespace: str = "argo",
    uid: str | None = None,
) -> WorkflowRun:
    """Submit-and-wait in one call: a new run of ``wft`` with ``parameters``, executed to completion."""
    return execute(wft, new_run(name, namespace, parameters, uid), options)


def start(wft: Mapping[str, Any], run: WorkflowRun, options: InterpreterOptions) -> threading.Thread:
    """Run in a background thread (the backends' ``submit``); refusal is raised here, before the thread starts."""
    check_supported(wft)

    def target() -> None:
        try:
            execute(wft, run, options)
        except Exception as exc:  # the thread must not die silently: the run records why it stopped
            run.phase, run.message, run.finished = ERROR, f"local executor crashed: {exc!r}", time.time()
            run.write(Path(options.results_dir) / run.name)

    thread = threading.Thread(target=target, name=f"argo-local-{run.name}", daemon=True)
    thread.start()
    return thread
