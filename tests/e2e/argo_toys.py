"""Toy WorkflowTemplates for the local Argo interpreter's tests: builders and one run (the ``opts`` fixture is in
conftest.py)."""

from __future__ import annotations

from typing import Any

from e2e.argo_local import InterpreterOptions, WorkflowRun, run_workflow


def wft(templates: list[dict[str, Any]], *, entrypoint: str = "main", params: list[dict[str, Any]] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "toy", "namespace": "argo"},
        "spec": {"entrypoint": entrypoint, "arguments": {"parameters": params or []}, "templates": templates, **spec},
    }


def py(name: str, source: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "script": {"image": "toy:1", "command": ["python"], "source": source}, **extra}


def steps(name: str, *items: tuple[str, str, dict[str, str]]) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            [{"name": s, "template": t, "arguments": {"parameters": [{"name": k, "value": v} for k, v in a.items()]}}]
            for s, t, a in items
        ],
    }


def run(template: dict[str, Any], opts: InterpreterOptions, params: dict[str, str] | None = None,
        name: str = "toy-1") -> WorkflowRun:
    return run_workflow(template, params or {}, opts, name=name, namespace="argo", uid="uid-1")

