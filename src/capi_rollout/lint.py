"""``capi-rollout lint PATH...``: check GitOps manifests offline for rollouts this tool cannot drive safely.

Contract: reads files, never a cluster. Each PATH is a YAML file (multi-document, ``v1 List`` allowed), a
kustomize directory (built with ``kustomize build``, so patches count), or a plain directory (every ``*.yaml`` /
``*.yml`` below it). Every TalosControlPlane and MachineDeployment is checked with the engine's own rules
(:mod:`capi_rollout.domain.strategy`, no second copy here), and every CAPI object for a pause that would stall a
rollout. Findings print as ``<source>: <violation>``.

Exit codes: 0 no findings, 1 findings, 2 a path could not be read (missing, a directory or file that cannot be read,
binary or not UTF-8, bad or bombed YAML — read by :mod:`capi_rollout.userfiles` — a CAPI object of the wrong
shape, kustomize failed or absent) or held no TalosControlPlane or MachineDeployment at all (nothing checked).
The kustomize binary is found by :mod:`capi_rollout.kustomize`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capi_rollout import kustomize
from capi_rollout.domain.strategy import (
    check_control_plane_strategy,
    check_machine_deployment_strategy,
    paused_reason,
)
from capi_rollout.userfiles import InputError, manifest_objects, object_problem, read_text

_CAPI_GROUPS = ("cluster.x-k8s.io/", "controlplane.cluster.x-k8s.io/")


class LintInputError(Exception):
    """A path could not be turned into objects (exit code 2)."""


@dataclass(frozen=True)
class Finding:
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


def _documents(text: str, source: str) -> Iterator[dict[str, Any]]:
    try:
        found = manifest_objects(text, source)
    except InputError as exc:
        raise LintInputError(str(exc)) from exc
    for where, obj in found:
        # Only CAPI objects are checked: only they must have the shape the rules read.
        if str(obj.get("apiVersion", "")).startswith(_CAPI_GROUPS) and (problem := object_problem(obj)):
            raise LintInputError(f"{source}: {where} {problem}")
        yield obj


def _read(path: Path) -> str:
    try:
        return read_text(str(path))
    except InputError as exc:
        raise LintInputError(str(exc)) from exc


def _build_kustomization(directory: Path, env: Mapping[str, str] | None) -> str:
    try:
        return kustomize.build(directory, env)
    except InputError as exc:
        raise LintInputError(str(exc)) from exc


def load(path: Path, env: Mapping[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The objects under ``path`` with the source each came from; :class:`LintInputError` if unreadable."""
    if path.is_dir():
        if kustomize.is_kustomization(path):
            source = f"{path} (kustomize build)"
            return [(source, doc) for doc in _documents(_build_kustomization(path, env), source)]
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        return [(str(f), doc) for f in files for doc in _documents(_read(f), str(f))]
    return [(str(path), doc) for doc in _documents(_read(path), str(path))]


def check_object(obj: Mapping[str, Any]) -> list[str]:
    """Violations of one object: rollout strategy (TalosControlPlane, MachineDeployment) and pauses (CAPI kinds)."""
    api_version = str(obj.get("apiVersion", ""))
    if not api_version.startswith(_CAPI_GROUPS):
        return []
    kind = obj.get("kind")
    problems: list[str] = []
    if kind == "TalosControlPlane":
        problems += check_control_plane_strategy(obj)
    elif kind == "MachineDeployment":
        problems += check_machine_deployment_strategy(obj)
    if reason := paused_reason(obj):
        problems.append(reason)
    return problems


def lint(paths: Sequence[Path], env: Mapping[str, str] | None = None) -> tuple[list[Finding], int]:
    """Findings over every object under ``paths`` and how many rollout objects were checked."""
    findings: list[Finding] = []
    checked = 0
    for path in paths:
        for source, obj in load(path, env):
            if obj.get("kind") in ("TalosControlPlane", "MachineDeployment"):
                checked += 1
            findings += [Finding(source, message) for message in check_object(obj)]
    return findings, checked


def main(paths: list[str]) -> int:
    """The ``lint`` subcommand: print findings; exit 0 clean, 1 findings, 2 unreadable input or nothing to check."""
    try:
        findings, checked = lint([Path(p) for p in paths])
    except LintInputError as exc:
        print(f"lint: {exc}", file=sys.stderr)
        return 2
    if checked == 0:
        print(f"lint: no TalosControlPlane or MachineDeployment found in {', '.join(paths)}: nothing was checked "
              "(wrong path?)", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    if findings:
        print(f"lint: {len(findings)} problem(s) in {checked} rollout object(s)", file=sys.stderr)
        return 1
    print(f"lint: {checked} rollout object(s), no problems")
    return 0
