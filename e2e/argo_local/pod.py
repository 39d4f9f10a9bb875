"""One attempt of a leaf template, run as a process on this machine in place of a pod.

Contract: :meth:`Pods.attempt` takes a running Pod node, the template (a ``script`` or a ``container``) and the
substitution scope, runs the attempt with :func:`e2e.argo_local.process.run_attempt` and returns the node
completed: its phase and message as Argo v4 sets them, its exit code, ``outputs.result`` (stdout minus one
trailing newline), its output parameters (``valueFrom.path`` read after the step, one trailing newline trimmed,
``valueFrom.default`` when the file is missing) and its log under ``<results_dir>/<workflow>/``. Fault injection
(:class:`~e2e.argo_local.options.KillStep`) plays the three ways a pod is lost from outside: ``force`` -> Error
:data:`POD_DELETED_MESSAGE` with no exit code; ``graceful`` -> Failed ``main: Error (exit code 143)``; ``evict``
-> Failed :data:`EVICTED_MESSAGE`.

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

import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from e2e.argo_local.model import ERROR, FAILED, SUCCEEDED, Node, WorkflowRun, pod_name
from e2e.argo_local.options import EVICT, FORCE, GRACEFUL, InterpreterOptions
from e2e.argo_local.process import DEADLINE_EXCEEDED, EXITED, KILLED, run_attempt
from e2e.argo_local.substitute import ExpressionRefused, UnresolvedReference, substitute

SCRIPT_PATH = "/argo/staging/script"
STAGING_PREFIX = "/argo/staging"
HERA_OUTPUTS = "/tmp/hera-outputs"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
POD_DELETED_MESSAGE = "pod deleted"
# What the kubelet writes into pod.status.message for a node-pressure eviction (Argo keeps it as the node message).
EVICTED_MESSAGE = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._()\[\]-]+", "_", name)


class Pods:
    """The pods of one run: attempts run under ``<results_dir>/<workflow>/pods/<node id>/``."""

    def __init__(self, run: WorkflowRun, opts: InterpreterOptions, directory: Path) -> None:
        self.run = run
        self.opts = opts
        self.dir = directory
        self.work = directory / "pods"
        self.prefixes = (*opts.pod_prefixes, STAGING_PREFIX)

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

    def attempt(self, node: Node, tmpl: Mapping[str, Any], scope: Mapping[str, str], *, retries: int,
                step: str) -> Node:
        """Run one attempt of the leaf template ``tmpl`` into the running Pod ``node``; returns it completed."""
        tname, name, display = tmpl["name"], node.name, node.display_name
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
            return node.end(ERROR, str(exc))
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
                return node.end(ERROR, f"activeDeadlineSeconds: not an integer: {bad!r}")
        fault = next((f for f in self.opts.faults if f.step == step and f.attempt == retries), None)
        if fault is not None and fault.after_remediations:
            return node.end(ERROR, f"local executor: KillStep.after_remediations ({fault.after_remediations}) needs "
                            "a cluster backend, which polls the ledger; this interpreter plays time-only faults")
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
            return node.end(ERROR, f"failed to start {argv[0]}: {exc.strerror or exc}")
        node.started, node.exit_code = outcome.started, outcome.exit_code
        if outcome.how == KILLED and fault is not None:
            node.finished = outcome.finished
            if fault.how == FORCE:  # the pod object is gone: Argo never sees main's exit code
                node.exit_code = None
                return node.end(ERROR, POD_DELETED_MESSAGE)
            if fault.how == EVICT:
                return node.end(FAILED, EVICTED_MESSAGE)
            return node.end(FAILED, f"main: Error (exit code {outcome.exit_code})")
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
        return node.end(phase, message)

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
