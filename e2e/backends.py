"""Where the e2e suite runs the rendered WorkflowTemplate: one interface, three backends, chosen by ``E2E_CLUSTER``.

Contract: every backend implements :class:`Backend` --

* ``install(manifests)``: apply RBAC, namespaces and the WorkflowTemplate (paths, YAML text or dicts);
* ``submit(parameters, *, template=None, faults=())`` -> a :class:`WorkflowRun` (Pending/Running);
* ``wait(run, timeout)`` -> the same run completed (phase, message, nodes, outputs) with ``workflow.txt``,
  ``workflow.json`` and per-step logs under ``<results_dir>/<run name>/``; ``TimeoutError`` if it does not end;
* ``close()``.

Backends:

* ``local`` (:class:`LocalBackend`): the real local API server (``envtest.LocalAPIServer``) and the strict
  local executor (:mod:`e2e.argo_local`); each step runs as a subprocess under a TokenRequest token of the
  runner ServiceAccount. Fault injection (``faults``) SIGKILLs the step's process group; the cluster backends
  force-delete its pod instead (both are a lost pod to Argo).
* ``kind`` (:class:`e2e.kind_backend.KindBackend`): a kind cluster with Argo Workflows v4 installed from the
  pinned module zip; needs a Docker engine.
* ``existing`` (:class:`e2e.kind_backend.ClusterBackend`): the cluster of ``KUBECONFIG`` (Argo installed), in a
  throwaway namespace.

:func:`select_backend` picks ``E2E_CLUSTER`` when set, else ``kind`` where a Docker engine answers, else
``local``; it never reads anything but the environment and :func:`docker_available`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from e2e.argo_local import ExecutorOptions, KillStep, WorkflowRun, check_supported, new_run, start

BACKENDS = ("local", "kind", "existing", "node")
RUNNER_SERVICE_ACCOUNT = "capi-rollout-runner"
Manifest = str | Path | Mapping[str, Any]


class Backend(Protocol):
    name: str

    def install(self, manifests: Iterable[Manifest]) -> None: ...

    def submit(
        self, parameters: Mapping[str, str], *, template: str | None = None, faults: Sequence[KillStep] = ()
    ) -> WorkflowRun: ...

    def wait(self, run: WorkflowRun, timeout: float) -> WorkflowRun: ...

    def close(self) -> None: ...


def docker_available(
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> tuple[bool, str]:
    """Whether a Docker engine answers here, with the reason when it does not."""
    docker = which("docker")
    if docker is None:
        return False, "no docker CLI on PATH"
    try:
        answer = run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"docker info failed: {exc}"
    if answer.returncode != 0:
        return False, "no Docker engine answers: " + answer.stderr.decode(errors="replace").strip()[:200]
    return True, "Docker engine " + answer.stdout.decode().strip()


def select_backend(
    env: Mapping[str, str], docker: Callable[[], tuple[bool, str]] = docker_available
) -> tuple[str, str]:
    """``(backend, why)``: ``E2E_CLUSTER`` if set, else kind when Docker answers, else local."""
    chosen = env.get("E2E_CLUSTER", "").strip()
    if chosen:
        if chosen not in BACKENDS:
            raise ValueError(f"E2E_CLUSTER={chosen!r}: expected one of {', '.join(BACKENDS)}")
        return chosen, f"E2E_CLUSTER={chosen}"
    ok, reason = docker()
    return ("kind", reason) if ok else ("local", f"local: {reason}")


def load_manifests(manifests: Iterable[Manifest]) -> list[dict[str, Any]]:
    """Documents from file paths (multi-document YAML), YAML text, or dicts; empty documents dropped."""
    docs: list[dict[str, Any]] = []
    for item in manifests:
        if isinstance(item, Mapping):
            docs.append(dict(item))
            continue
        text = Path(item).read_text() if isinstance(item, Path) or "\n" not in item else item
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def workflow_templates(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: dict(d) for d in docs if d.get("kind") == "WorkflowTemplate"}


class LocalAPIServerLike(Protocol):
    """What :class:`LocalBackend` needs of ``envtest.LocalAPIServer``."""

    def apply_manifests(self, paths_or_docs: Iterable[Any], *, namespace: str | None = None,
                        dry_run: bool = False) -> list[dict[str, Any]]: ...

    def create_namespace(self, name: str) -> None: ...

    def install_crds(self, paths: Iterable[Any]) -> list[dict[str, Any]]: ...

    def serviceaccount_kubeconfig(self, namespace: str, name: str, *, expiration_seconds: int = 3600) -> Path: ...


class LocalBackend:
    """The ``local`` backend: real API server + strict local executor; one thread per submitted run."""

    name = "local"

    def __init__(
        self,
        apiserver: LocalAPIServerLike,
        results_dir: Path,
        *,
        namespace: str = "argo",
        service_account: str = RUNNER_SERVICE_ACCOUNT,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        echo: Callable[[str], None] | None = None,
        safety_timeout: float = 900.0,
        backoff_scale: float = 1.0,
    ) -> None:
        self.apiserver = apiserver
        self.results_dir = Path(results_dir)
        self.namespace = namespace
        self.service_account = service_account
        self.python = python
        self.env = dict(env or {})
        self.echo = echo
        self.safety_timeout = safety_timeout
        self.backoff_scale = backoff_scale  # the executor's retry backoffs, scaled (declared in every run it scales)
        self.templates: dict[str, dict[str, Any]] = {}
        self._threads: dict[str, threading.Thread] = {}

    def install(self, manifests: Iterable[Manifest]) -> None:
        """Apply every document to the API server (namespaces first) and keep the WorkflowTemplates to run.

        WorkflowTemplates are checked against the executor's allow-lists here, so a refused construct fails the
        install rather than a scenario. They are applied too: the Argo CRD's schema validates them.
        """
        docs = load_manifests(manifests)
        for wft in workflow_templates(docs).values():
            check_supported(wft)
        namespaces = {d["metadata"].get("namespace") for d in docs} | {self.namespace}
        for ns in sorted(n for n in namespaces if n):
            self.apiserver.create_namespace(ns)
        crds = [d for d in docs if d.get("kind") == "CustomResourceDefinition"]
        if crds:  # established and served before anything (a step) creates one of their objects
            self.apiserver.install_crds(crds)
        ordered = sorted((d for d in docs if d.get("kind") != "CustomResourceDefinition"),
                         key=lambda d: 0 if d.get("kind") == "Namespace" else 1)
        self.apiserver.apply_manifests(ordered)
        self.templates.update(workflow_templates(docs))

    def _template(self, name: str | None) -> dict[str, Any]:
        if name is not None:
            return self.templates[name]
        if len(self.templates) != 1:
            raise ValueError(f"name the template to run: installed {sorted(self.templates)}")
        return next(iter(self.templates.values()))

    def submit(
        self, parameters: Mapping[str, str], *, template: str | None = None, faults: Sequence[KillStep] = ()
    ) -> WorkflowRun:
        wft = self._template(template)
        run = new_run(namespace=self.namespace, parameters=parameters,
                      generate_name=f"{wft['metadata']['name']}-")
        kubeconfig = self.apiserver.serviceaccount_kubeconfig(self.namespace, self.service_account)
        options = ExecutorOptions(
            results_dir=self.results_dir,
            kubeconfig=kubeconfig,
            service_account=self.service_account,
            python=self.python,
            env=self.env,
            echo=self.echo,
            faults=tuple(faults),
            safety_timeout=self.safety_timeout,
            backoff_scale=self.backoff_scale,
        )
        self._threads[run.name] = start(wft, run, options)
        return run

    def wait(self, run: WorkflowRun, timeout: float) -> WorkflowRun:
        thread = self._threads[run.name]
        thread.join(timeout=timeout)
        if thread.is_alive():
            raise TimeoutError(f"{run.name} did not complete within {timeout:g}s:\n{run.text()}")
        return run

    def close(self) -> None:
        """Nothing to stop: runs end by themselves (every step is bounded); the API server is the caller's."""


def make_backend(name: str, *, results_dir: Path, apiserver: LocalAPIServerLike | None = None,
                 **options: Any) -> Backend:
    """Construct the named backend (``kind``/``existing`` import their Kubernetes code lazily)."""
    if name == "local":
        if apiserver is None:
            raise ValueError("the local backend needs the LocalAPIServer (the `apiserver` fixture)")
        return LocalBackend(apiserver, results_dir, **options)
    from e2e import kind_backend

    if name == "kind":
        return kind_backend.KindBackend(results_dir=results_dir, **options)
    if name == "existing":
        return kind_backend.ClusterBackend.from_kubeconfig(results_dir=results_dir, **options)
    if name == "node":
        from e2e.node_backend import NodeBackend

        return NodeBackend(results_dir=results_dir, **options)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
