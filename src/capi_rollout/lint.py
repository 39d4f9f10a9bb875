"""``capi-rollout lint PATH...``: check GitOps manifests offline for rollouts this tool cannot drive safely.

Contract: reads files, never a cluster. Each PATH is a YAML file (multi-document, ``v1 List`` allowed), a
kustomize directory (built with ``kustomize build``, so patches count), or a plain directory (every ``*.yaml`` /
``*.yml`` below it). Every TalosControlPlane and MachineDeployment is checked with the engine's own rules
(:mod:`capi_rollout.domain.strategy`, no second copy here), and every CAPI object for a pause that would stall a
rollout. Findings print as ``<source>: <violation>``.

Exit codes: 0 no findings, 1 findings, 2 a path could not be read (missing, a directory or file that cannot be read,
binary or not UTF-8, bad or bombed YAML — read by :mod:`capi_rollout.userfiles` — a CAPI object of the wrong
shape, kustomize failed or absent) or held no TalosControlPlane or MachineDeployment at all (nothing checked).
The kustomize binary: ``$KUSTOMIZE`` if set, else ``kustomize`` on PATH, else ``kubectl kustomize``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capi_rollout.domain.strategy import (
    check_control_plane_strategy,
    check_machine_deployment_strategy,
    paused_reason,
)
from capi_rollout.userfiles import InputError, object_problem, read_text, yaml_documents

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_CAPI_GROUPS = ("cluster.x-k8s.io/", "controlplane.cluster.x-k8s.io/")
KUSTOMIZE_TIMEOUT_SECONDS = 120


class LintInputError(Exception):
    """A path could not be turned into objects (exit code 2)."""


@dataclass(frozen=True)
class Finding:
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


def kustomize_command(env: Mapping[str, str] | None = None) -> list[str] | None:
    """How to run ``kustomize build``: ``$KUSTOMIZE``, ``kustomize`` on PATH or ``kubectl kustomize``; None if none."""
    environ = os.environ if env is None else env
    if explicit := environ.get("KUSTOMIZE"):
        return [explicit, "build"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    return None


def _documents(text: str, source: str) -> Iterator[dict[str, Any]]:
    try:
        docs = yaml_documents(text, source)
    except InputError as exc:
        raise LintInputError(str(exc)) from exc
    for i, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise LintInputError(f"{source}: document {i} is not a mapping")
        if doc.get("kind") == "List":
            items = doc.get("items")
            if not isinstance(items, list):
                raise LintInputError(f"{source}: document {i} is a List without an items list")
            found = [(f"document {i} item {j}", item) for j, item in enumerate(items, start=1)]
        else:
            found = [(f"document {i}", doc)]
        for where, obj in found:
            # Only CAPI objects are checked: only they must have the shape the rules read.
            capi = not isinstance(obj, dict) or str(obj.get("apiVersion", "")).startswith(_CAPI_GROUPS)
            if capi and (problem := object_problem(obj)):
                raise LintInputError(f"{source}: {where} {problem}")
            if isinstance(obj, dict):
                yield obj


def _read(path: Path) -> str:
    try:
        return read_text(str(path))
    except InputError as exc:
        raise LintInputError(str(exc)) from exc


def _build_kustomization(directory: Path, env: Mapping[str, str] | None) -> str:
    command = kustomize_command(env)
    if command is None:
        raise LintInputError(f"{directory}: is a kustomization, but no kustomize (set $KUSTOMIZE or install kubectl)")
    try:
        proc = subprocess.run(
            [*command, str(directory)],
            capture_output=True,
            text=True,
            timeout=KUSTOMIZE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LintInputError(f"{directory}: kustomize build failed: {exc}") from exc
    if proc.returncode != 0:
        raise LintInputError(f"{directory}: kustomize build failed: {proc.stderr.strip()}")
    return proc.stdout


def load(path: Path, env: Mapping[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The objects under ``path`` with the source each came from; :class:`LintInputError` if unreadable."""
    if path.is_dir():
        if any((path / name).is_file() for name in KUSTOMIZATION_FILES):
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
