"""What every e2e backend is: the :class:`Backend` interface and the manifests it installs.

Contract: every backend implements :class:`Backend` --

* ``install(manifests)``: apply RBAC, namespaces and the WorkflowTemplate (paths, YAML text or dicts);
* ``submit(parameters, *, template=None, faults=())`` -> a :class:`WorkflowRun` (Pending/Running);
* ``wait(run, timeout)`` -> the same run completed (phase, message, nodes, outputs) with ``workflow.txt``,
  ``workflow.json`` and per-step logs under ``<results_dir>/<run name>/``; ``TimeoutError`` if it does not end;
* ``close()``.

:func:`load_manifests` turns what ``install`` takes into documents; :func:`workflow_templates` picks the
WorkflowTemplates out of them. Nothing here talks to a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from capi_rollout.userfiles import manifest_objects, read_text
from e2e.argo_local import KillStep, WorkflowRun

ARGO_GROUP, ARGO_VERSION = "argoproj.io", "v1alpha1"  # the Argo Workflows API the backends submit to
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


def load_manifests(manifests: Iterable[Manifest]) -> list[dict[str, Any]]:
    """Documents from file paths (multi-document YAML), YAML text, or dicts, as
    :func:`capi_rollout.userfiles.manifest_objects` reads them (bounded; empty documents dropped, Lists
    flattened; ``InputError`` naming the file for anything else)."""
    docs: list[dict[str, Any]] = []
    for item in manifests:
        if isinstance(item, Mapping):
            docs.append(dict(item))
            continue
        if isinstance(item, Path) or "\n" not in item:
            text, source = read_text(str(item), what="manifest"), f"manifest {item}"
        else:
            text, source = item, "manifest text"
        docs.extend(obj for _, obj in manifest_objects(text, source))
    return docs


def workflow_templates(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: dict(d) for d in docs if d.get("kind") == "WorkflowTemplate"}
