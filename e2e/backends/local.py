"""The ``local`` e2e backend: the real local API server and the strict local interpreter of Argo templates.

Contract: :class:`LocalBackend` implements :class:`e2e.backends.base.Backend` on ``envtest.LocalAPIServer``
(any :class:`LocalAPIServerLike`): ``install`` applies every document to the API server (the Argo CRD's schema
validates the WorkflowTemplates, which are also checked against the interpreter's allow-lists, so a refused
construct fails the install rather than a scenario) and keeps the WorkflowTemplates; ``submit`` runs one in a
thread with :mod:`e2e.argo_local`, each step a subprocess under a TokenRequest token of the runner
ServiceAccount. Fault injection (``faults``) SIGKILLs the step's process group; the cluster backends
force-delete its pod instead (both are a lost pod to Argo).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from e2e.argo_local import InterpreterOptions, KillStep, WorkflowRun, check_supported, new_run, start
from e2e.backends.base import RUNNER_SERVICE_ACCOUNT, Manifest, load_manifests, workflow_templates


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
        options = InterpreterOptions(
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
