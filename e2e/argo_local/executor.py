"""The strict local executor: run a rendered Argo WorkflowTemplate on this machine the way Argo v4 runs it.

Contract: :func:`run_workflow` (or :func:`execute` on a pre-made :class:`WorkflowRun`) takes the template dict,
the submitted parameters and :class:`ExecutorOptions`, runs the entrypoint, then the exit handler, and returns
the completed :class:`WorkflowRun`; it also writes ``workflow.txt``/``workflow.json`` and one log per attempt
under ``<results_dir>/<workflow name>/``. It raises :class:`UnsupportedConstruct` before running anything if
the template uses a construct it does not implement (see :mod:`e2e.argo_local.spec`).

Semantics follow argoproj/argo-workflows v4 (workflow/controller/operator.go, steps.go, workflowpod.go,
workflow/common/util.go, workflow/executor/executor.go):

* parameters: ``spec.arguments`` merged with the submitted ones; a missing value or an enum miss ends the
  Workflow Failed with ``invalid spec: ...`` before any step, as does an unresolvable ``{{tag}}``;
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
  SIGKILL, the kubelet's pod message wins in ``inferFailedReason``) -> Failed :data:`EVICTED_MESSAGE`, 137;
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

What differs from a pod, on purpose and only here:

* pod paths under the declared prefixes (``/tmp`` by default, and ``/argo/staging``) live under a per-attempt
  root: output paths, the staged script, and command/args/env values that are such a path (whole value) are
  rewritten, and each rewrite is listed in the node's ``notes``;
* the environment is built, not inherited: PATH (the venv's bin first), HOME and TMPDIR inside the attempt
  root, LANG, ``PYTHONUNBUFFERED=1`` (live logs), ``KUBECONFIG`` (the runner ServiceAccount's token instead of
  the in-cluster mount), ``hera__outputs_directory=/tmp/hera-outputs`` (Hera's default, so the rewrite rule
  above maps it), the caller's extra variables, then the template's ``env``;
* ``image`` is recorded, not pulled: ``python``/``python3`` commands run the given interpreter (the venv), so
  steps run the project's real package; the working directory is the attempt root;
* a step without ``activeDeadlineSeconds`` is still bounded by ``safety_timeout`` (node Error);
* ACCEPTED fields (security contexts, podSpecPatch, volumes, metadata, ...) are not applied.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
    pod_name,
)
from e2e.argo_local.mutex import DEFAULT_REGISTRY, MutexRegistry, MutexTimeout, mutex_key
from e2e.argo_local.process import DEADLINE_EXCEEDED, EXITED, KILLED, run_attempt
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

SCRIPT_PATH = "/argo/staging/script"
STAGING_PREFIX = "/argo/staging"
HERA_OUTPUTS = "/tmp/hera-outputs"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
POD_DELETED_MESSAGE = "pod deleted"
# What the kubelet writes into pod.status.message for a node-pressure eviction (Argo keeps it as the node message).
EVICTED_MESSAGE = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
FORCE, GRACEFUL, EVICT = "force", "graceful", "evict"

_WORKFLOW_PHASE = {SUCCEEDED: SUCCEEDED, FAILED: FAILED, ERROR: ERROR, "Skipped": SUCCEEDED, "Omitted": SUCCEEDED}


@dataclass(frozen=True)
class KillStep:
    """Fault injection: lose attempt ``attempt`` of step ``step`` (display name) ``after`` seconds in, ``how``:
    ``force`` (SIGKILL, pod gone), ``graceful`` (SIGTERM then SIGKILL, pod Failed) or ``evict`` (see module doc)."""

    step: str
    after: float
    attempt: int = 0
    how: str = FORCE

    def __post_init__(self) -> None:
        if self.how not in (FORCE, GRACEFUL, EVICT):
            raise ValueError(f"KillStep.how: {self.how!r} is not one of {FORCE}, {GRACEFUL}, {EVICT}")


@dataclass
class ExecutorOptions:
    results_dir: Path
    kubeconfig: Path | None = None
    # The ServiceAccount whose token ``kubeconfig`` carries; every leaf must run as it (None: no token, no check).
    service_account: str | None = None
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] | None = None
    faults: Sequence[KillStep] = ()
    pod_prefixes: tuple[str, ...] = ("/tmp",)
    safety_timeout: float = 900.0
    kill_grace: float = 1.0
    mutex_timeout: float = 600.0
    # Multiplies retryStrategy.backoff waits (1.0 = Argo's real durations); a declared, logged difference.
    backoff_scale: float = 1.0
    mutexes: MutexRegistry = field(default_factory=lambda: DEFAULT_REGISTRY)


class StepError(Exception):
    """A node ends in Error with this message (Argo marks the node Error on such template errors)."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._()\[\]-]+", "_", name)


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
    def __init__(self, wft: Mapping[str, Any], run: WorkflowRun, opts: ExecutorOptions, acceptance: Acceptance):
        self.spec: Mapping[str, Any] = wft["spec"]
        self.tmpls = templates_by_name(self.spec)
        self.run = run
        self.opts = opts
        self.acceptance = acceptance
        self.dir = Path(opts.results_dir) / run.name
        self.work = self.dir / "pods"
        self.globals: dict[str, str] = {}
        self.prefixes = (*opts.pod_prefixes, STAGING_PREFIX)

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
        node.phase, node.message, node.finished = phase, message, time.time()
        return node

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

    # --- one attempt (a pod) -------------------------------------------------------------------------

    def _pod_path(self, root: Path, path: str) -> Path | None:
        for prefix in self.prefixes:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return root / path.lstrip("/")
        return None

    def _map_value(self, root: Path, value: str, what: str, notes: list[str]) -> str:
        local = self._pod_path(root, value) if value.startswith("/") else None
        if local is None:
            return value
        notes.append(f"{what}: {value} -> {local}")
        return str(local)

    def _attempt(self, tmpl: Mapping[str, Any], name: str, display: str, parent: Node | None,
                 scope: Mapping[str, str], *, retries: int, step: str) -> Node:
        tname = tmpl["name"]
        node = self._new_node(name, display, POD, tname, parent)
        root = self.work / node.id
        log_path = self.dir / f"{_safe(name)}.log"
        node.log_path = str(log_path)
        pod_scope = {**scope, "pod.name": pod_name(self.run.name, name, tname), "retries": str(retries)}
        kind = "script" if "script" in tmpl else "container"
        skip = ("name", "retryStrategy", "synchronization", "metrics")  # handled elsewhere / recorded only
        body_src = {k: v for k, v in tmpl.items() if k not in skip}
        try:
            body = substitute(body_src, pod_scope, f"templates.{tname}")
        except (UnresolvedReference, ExpressionRefused) as exc:
            return self._end(node, ERROR, str(exc))
        ctr = body[kind]
        node.notes.append(f"image {ctr.get('image', '?')} not pulled: runs on this machine")
        for d in ("home", "tmp", "argo/staging"):
            (root / d).mkdir(parents=True, exist_ok=True)
        argv = [self._map_value(root, str(a), "argv", node.notes) for a in [*ctr["command"], *(ctr.get("args") or [])]]
        if argv[0] in ("python", "python3"):
            node.notes.append(f"argv[0] {argv[0]} -> {self.opts.python}")
            argv[0] = self.opts.python
        if kind == "script" and ctr.get("source"):
            script = root / SCRIPT_PATH.lstrip("/")
            script.write_text(ctr["source"])
            script.chmod(0o755)
            argv.append(str(script))
        env = self._env(root, ctr, node, pod_scope)
        deadline = None
        if body.get("activeDeadlineSeconds") is not None:
            try:
                deadline = float(int(str(body["activeDeadlineSeconds"])))
            except ValueError:
                bad = body["activeDeadlineSeconds"]
                return self._end(node, ERROR, f"activeDeadlineSeconds: not an integer: {bad!r}")
        fault = next((f for f in self.opts.faults if f.step == step and f.attempt == retries), None)
        kill_after = fault.after if fault is not None else None
        kill_signal = signal.SIGTERM if fault is not None and fault.how == GRACEFUL else signal.SIGKILL
        if fault is not None:
            self.run.note(f"fault: {display} will be lost ({fault.how}: {signal.Signals(kill_signal).name}) "
                          f"after {fault.after:g}s")
        try:
            outcome = run_attempt(
                argv, env=env, cwd=root, log_path=log_path, prefix=f"[{self.run.name} {display}]",
                echo=self.opts.echo, deadline=deadline, kill_after=kill_after,
                safety_timeout=self.opts.safety_timeout, grace=self.opts.kill_grace, kill_signal=kill_signal,
            )
        except OSError as exc:  # the kubelet's StartError: the container never ran
            return self._end(node, ERROR, f"failed to start {argv[0]}: {exc.strerror or exc}")
        node.started, node.exit_code = outcome.started, outcome.exit_code
        if outcome.how == KILLED and fault is not None:
            node.finished = outcome.finished
            if fault.how == FORCE:  # the pod object is gone: Argo never sees main's exit code
                node.exit_code = None
                return self._end(node, ERROR, POD_DELETED_MESSAGE)
            if fault.how == EVICT:
                return self._end(node, FAILED, EVICTED_MESSAGE)
            return self._end(node, FAILED, f"main: Error (exit code {outcome.exit_code})")
        if outcome.how == DEADLINE_EXCEEDED:
            phase, message = FAILED, DEADLINE_MESSAGE
        elif outcome.how == EXITED:
            phase, message = (SUCCEEDED, "") if outcome.exit_code == 0 else (
                FAILED, f"main: Error (exit code {outcome.exit_code})")
        else:
            phase, message = ERROR, (f"local executor: step ran longer than the safety timeout of "
                                     f"{self.opts.safety_timeout:g}s (the template sets no activeDeadlineSeconds)")
        node.result = outcome.stdout[:-1] if outcome.stdout.endswith("\n") else outcome.stdout
        missing = self._read_outputs(body, root, node)
        if phase == SUCCEEDED and missing:
            phase, message = ERROR, missing
        node.finished = outcome.finished
        return self._end(node, phase, message)

    def _env(self, root: Path, ctr: Mapping[str, Any], node: Node, scope: Mapping[str, str]) -> dict[str, str]:
        python_bin = str(Path(self.opts.python).parent)
        env: dict[str, str] = {
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "hera__outputs_directory": self._map_value(root, HERA_OUTPUTS, "env hera__outputs_directory", node.notes),
        }
        if self.opts.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.opts.kubeconfig)
        env.update(self.opts.env)
        for e in ctr.get("env") or []:
            if "valueFrom" in e:
                path = e["valueFrom"]["fieldRef"]["fieldPath"]
                env[e["name"]] = self.run.namespace if path == "metadata.namespace" else scope["pod.name"]
            else:
                env[e["name"]] = self._map_value(root, str(e.get("value", "")), f"env {e['name']}", node.notes)
        return env

    def _read_outputs(self, body: Mapping[str, Any], root: Path, node: Node) -> str:
        """Read output parameters into ``node.outputs``; returns an error message for the first missing one."""
        problem = ""
        for p in (body.get("outputs") or {}).get("parameters") or []:
            vf = p["valueFrom"]
            local = self._pod_path(root, vf["path"])
            if local is None:
                problem = problem or (f"outputs.parameters.{p['name']}: path {vf['path']} is outside the pod paths the "
                                      f"local executor maps ({', '.join(self.prefixes)})")
                continue
            if local.is_file():
                value = local.read_text()
                node.outputs[p["name"]] = value[:-1] if value.endswith("\n") else value
            elif vf.get("default") is not None:
                node.outputs[p["name"]] = str(vf["default"])
            else:
                problem = problem or f"open {vf['path']}: no such file or directory"
        return problem


def new_run(name: str | None = None, namespace: str = "argo", parameters: Mapping[str, str] | None = None,
            uid: str | None = None, generate_name: str = "capi-rollout-") -> WorkflowRun:
    """A Pending :class:`WorkflowRun` with Argo-like generated name and a random UID."""
    return WorkflowRun(
        name=name or f"{generate_name}{uuid.uuid4().hex[:5]}",
        namespace=namespace,
        uid=uid or str(uuid.uuid4()),
        parameters={k: str(v) for k, v in (parameters or {}).items()},
    )


def execute(wft: Mapping[str, Any], run: WorkflowRun, options: ExecutorOptions) -> WorkflowRun:
    """Run ``wft`` into the given ``run`` (refusing unsupported constructs first); returns ``run`` completed."""
    acceptance = check_supported(wft)
    run.results_dir = Path(options.results_dir) / run.name
    _Execution(wft, run, options, acceptance).execute()
    return run


def run_workflow(
    wft: Mapping[str, Any],
    parameters: Mapping[str, str],
    options: ExecutorOptions,
    *,
    name: str | None = None,
    namespace: str = "argo",
    uid: str | None = None,
) -> WorkflowRun:
    """Submit-and-wait in one call: a new run of ``wft`` with ``parameters``, executed to completion."""
    return execute(wft, new_run(name, namespace, parameters, uid), options)


def start(wft: Mapping[str, Any], run: WorkflowRun, options: ExecutorOptions) -> threading.Thread:
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
