"""The record of one workflow run, shaped like Argo's ``Workflow.status``, shared by every e2e backend.

Contract: plain data and pure formatting, no I/O except :meth:`WorkflowRun.write`. The local executor fills a
:class:`WorkflowRun` as it goes; the kind/existing backends build one from a real ``Workflow`` object with
:func:`run_from_argo_workflow`, so scenarios assert on the same record whatever ran the template.

Names follow Argo v4: node IDs are ``<workflow>-<fnv32a(node name)>`` (``Workflow.NodeID``), the entry node is
named after the workflow, step groups ``<parent>[i]``, steps ``<group>.<step>``, retry attempts
``<step>(n)``, the exit handler ``<workflow>.onExit``. Phases are Argo's strings.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Node and workflow phases (Argo's spelling).
PENDING, RUNNING, SUCCEEDED, FAILED, ERROR, SKIPPED = "Pending", "Running", "Succeeded", "Failed", "Error", "Skipped"
COMPLETED_PHASES = frozenset({SUCCEEDED, FAILED, ERROR, SKIPPED})

# Node types (Argo's spelling).
STEPS, STEP_GROUP, RETRY, POD = "Steps", "StepGroup", "Retry", "Pod"


def fnv32a(text: str) -> int:
    """The 32-bit FNV-1a hash Argo uses for node IDs and pod names."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def node_id(workflow_name: str, node_name: str) -> str:
    """Argo's ``Workflow.NodeID``: the workflow name for the entry node, else ``<wf>-<fnv32a(name)>``."""
    return workflow_name if node_name == workflow_name else f"{workflow_name}-{fnv32a(node_name)}"


def pod_name(workflow_name: str, node_name: str, template_name: str) -> str:
    """Argo's v2 pod name (``GeneratePodName``): ``<wf>-<template>-<fnv32a(node name)>``."""
    if workflow_name == node_name:
        return workflow_name
    prefix = f"{workflow_name}-{template_name}" if template_name else workflow_name
    return f"{prefix[:242]}-{fnv32a(node_name)}"


def rfc3339(ts: float | None) -> str | None:
    """Seconds since the epoch as Kubernetes ``metav1.Time`` JSON (second precision, UTC, ``Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Node:
    """One node of the run: a Steps/StepGroup/Retry boundary or a Pod (one attempt of a leaf template)."""

    id: str
    name: str
    display_name: str
    type: str
    template: str
    phase: str = PENDING
    message: str = ""
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    result: str | None = None
    children: list[str] = field(default_factory=list)
    log_path: str | None = None
    # What a pod would have had but the local executor did differently (path rewrites, ignored fields).
    notes: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.phase in COMPLETED_PHASES

    @property
    def failed_or_error(self) -> bool:
        return self.phase in (FAILED, ERROR)

    def end(self, phase: str, message: str = "") -> Node:
        """Complete the node now with ``phase`` and ``message``; returns it."""
        self.phase, self.message, self.finished = phase, message, time.time()
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "displayName": self.display_name,
            "type": self.type,
            "templateName": self.template,
            "phase": self.phase,
            "message": self.message,
            "startedAt": rfc3339(self.started),
            "finishedAt": rfc3339(self.finished),
            "exitCode": self.exit_code,
            "outputs": dict(self.outputs),
            "result": self.result,
            "children": list(self.children),
            "logPath": self.log_path,
            "notes": list(self.notes),
        }


@dataclass
class WorkflowRun:
    """A workflow run: phase, message, nodes in creation order, and the exit handler's outputs."""

    name: str
    namespace: str
    uid: str
    parameters: dict[str, str] = field(default_factory=dict)
    phase: str = PENDING
    message: str = ""
    started: float | None = None
    finished: float | None = None
    nodes: dict[str, Node] = field(default_factory=dict)  # by node name, insertion = creation order
    exit_outputs: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # readable lifecycle notes (mutex waits, refusals, faults)
    results_dir: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def completed(self) -> bool:
        return self.phase in COMPLETED_PHASES

    def add_node(self, node: Node, parent: Node | None = None) -> Node:
        with self._lock:
            self.nodes[node.name] = node
            if parent is not None:
                parent.children.append(node.id)
        return node

    def node(self, name: str) -> Node:
        """The node named ``name``; a short display name (``wait-control-plane``) matches its Retry/Pod node."""
        if name in self.nodes:
            return self.nodes[name]
        matches = [n for n in self.nodes.values() if n.display_name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} nodes are displayed as {name!r} in {self.name}")
        return matches[0]

    def attempts(self, step: str) -> list[Node]:
        """The Pod nodes that ran step ``step`` (one per attempt, in order)."""
        return [
            n
            for n in self.nodes.values()
            if n.type == POD and (n.display_name == step or n.display_name.startswith(step + "("))
        ]

    def failures(self) -> list[dict[str, Any]]:
        """Argo's ``workflow.failures`` list: every Failed/Error node (here in creation order)."""
        out: list[dict[str, Any]] = []
        for n in list(self.nodes.values()):
            if n.failed_or_error:
                out.append(
                    {
                        "displayName": n.display_name,
                        "message": n.message,
                        "templateName": n.template,
                        "phase": n.phase,
                        "podName": pod_name(self.name, n.name, n.template),
                        "finishedAt": rfc3339(n.finished),
                    }
                )
        return out

    def note(self, text: str) -> None:
        with self._lock:
            self.events.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "parameters": dict(self.parameters),
            "phase": self.phase,
            "message": self.message,
            "startedAt": rfc3339(self.started),
            "finishedAt": rfc3339(self.finished),
            "nodes": [n.as_dict() for n in list(self.nodes.values())],
            "exitOutputs": dict(self.exit_outputs),
            "events": list(self.events),
        }

    def text(self) -> str:
        """An ``argo get``-like tree: phase, message, then each node with its phase, duration and message."""
        lines = [
            f"Name:        {self.name}",
            f"Namespace:   {self.namespace}",
            f"Status:      {self.phase}",
        ]
        if self.message:
            lines.append(f"Message:     {self.message}")
        if self.parameters:
            lines.append("Parameters:")
            lines.extend(f"  {k}: {v}" for k, v in self.parameters.items())
        lines.append("")
        lines.append(f"{'STEP':<48} {'TEMPLATE':<28} {'PHASE':<10} {'DURATION':>9}  MESSAGE")
        by_id = {n.id: n for n in list(self.nodes.values())}
        roots = [n for n in list(self.nodes.values()) if not any(n.id in p.children for p in by_id.values())]

        def walk(n: Node, depth: int) -> None:
            icon = {SUCCEEDED: "✔", FAILED: "✖", ERROR: "⚠", RUNNING: "●", PENDING: "◷", SKIPPED: "○"}.get(n.phase, "?")
            duration = ""
            if n.started is not None and n.finished is not None:
                duration = f"{n.finished - n.started:.1f}s"
            label = ("  " * depth + f"{icon} {n.display_name}")[:48]
            extra = n.message
            if n.exit_code is not None and n.type == POD:
                extra = f"exit {n.exit_code}" + (f": {n.message}" if n.message else "")
            lines.append(f"{label:<48} {n.template[:28]:<28} {n.phase:<10} {duration:>9}  {extra}".rstrip())
            for cid in n.children:
                child = by_id.get(cid)
                if child is not None:
                    walk(child, depth + 1)

        for root in roots:
            walk(root, 0)
        if self.exit_outputs:
            lines.append("")
            lines.append("Exit handler outputs:")
            lines.extend(f"  {k}: {v}" for k, v in self.exit_outputs.items())
        if self.events:
            lines.append("")
            lines.append("Events:")
            lines.extend(f"  {e}" for e in self.events)
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path) -> Path:
        """Write ``workflow.txt`` and ``workflow.json`` into ``directory``; returns the directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "workflow.txt").write_text(self.text())
        (d / "workflow.json").write_text(json.dumps(self.as_dict(), indent=2, sort_keys=False) + "\n")
        return d


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def run_from_argo_workflow(wf: dict[str, Any]) -> WorkflowRun:
    """Build a :class:`WorkflowRun` from a real Argo ``Workflow`` object (kind / existing backends)."""
    meta = wf.get("metadata", {})
    spec = wf.get("spec", {})
    status = wf.get("status", {}) or {}
    run = WorkflowRun(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        parameters={
            p["name"]: str(p.get("value", "")) for p in (spec.get("arguments", {}) or {}).get("parameters", []) or []
        },
        phase=status.get("phase") or PENDING,
        message=status.get("message", "") or "",
        started=_parse_time(status.get("startedAt")),
        finished=_parse_time(status.get("finishedAt")),
    )
    raw_nodes = sorted((status.get("nodes") or {}).values(), key=lambda n: (n.get("startedAt") or "", n.get("name")))
    for raw in raw_nodes:
        outputs = raw.get("outputs") or {}
        exit_code = outputs.get("exitCode")
        node = Node(
            id=raw.get("id", ""),
            name=raw.get("name", ""),
            display_name=raw.get("displayName", ""),
            type=raw.get("type", ""),
            template=raw.get("templateName", "") or (raw.get("templateRef") or {}).get("template", ""),
            phase=raw.get("phase", PENDING),
            message=raw.get("message", "") or "",
            started=_parse_time(raw.get("startedAt")),
            finished=_parse_time(raw.get("finishedAt")),
            exit_code=int(exit_code) if exit_code not in (None, "") else None,
            outputs={p["name"]: str(p.get("value", "")) for p in outputs.get("parameters", []) or []},
            result=outputs.get("result"),
            children=list(raw.get("children", []) or []),
        )
        run.nodes[node.name] = node
    on_exit = run.nodes.get(f"{run.name}.onExit")
    if on_exit is not None:
        run.exit_outputs = _leaf_outputs(run, on_exit)
    return run


def _leaf_outputs(run: WorkflowRun, node: Node) -> dict[str, str]:
    """Outputs of a node, or merged outputs of its descendants for a Steps/Retry boundary."""
    if node.outputs:
        return dict(node.outputs)
    by_id = {n.id: n for n in run.nodes.values()}
    merged: dict[str, str] = {}
    for cid in node.children:
        child = by_id.get(cid)
        if child is not None:
            merged.update(_leaf_outputs(run, child))
    return merged
