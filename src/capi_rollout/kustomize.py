"""The one way this repository runs ``kustomize build`` (``capi-rollout lint``, the e2e backends, the tests).

Contract: :func:`command` finds the binary — ``$KUSTOMIZE`` if set, else ``kustomize`` on PATH, else
``kubectl kustomize`` — or None; :func:`build` runs it on a directory and returns the rendered YAML, or raises
:class:`~capi_rollout.userfiles.InputError` in one line naming the directory and the problem (no kustomize, it
failed, it ran longer than :data:`TIMEOUT_SECONDS`). Runs a local process only: no network of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from capi_rollout.userfiles import InputError

FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
TIMEOUT_SECONDS = 120


def is_kustomization(directory: Path) -> bool:
    """Whether ``directory`` holds a kustomization file."""
    return any((directory / name).is_file() for name in FILES)


def command(env: Mapping[str, str] | None = None) -> list[str] | None:
    """The argv prefix that runs ``kustomize build``, or None when there is no kustomize."""
    environ = os.environ if env is None else env
    if explicit := environ.get("KUSTOMIZE"):
        return [explicit, "build"]
    if found := shutil.which("kustomize", path=environ.get("PATH")):
        return [found, "build"]
    if kubectl := shutil.which("kubectl", path=environ.get("PATH")):
        return [kubectl, "kustomize"]
    return None


def build(directory: Path | str, env: Mapping[str, str] | None = None) -> str:
    """The YAML that ``kustomize build directory`` prints; :class:`InputError` when it cannot be had."""
    argv = command(env)
    if argv is None:
        raise InputError(f"{directory}: is a kustomization, but no kustomize (set $KUSTOMIZE or install kubectl)")
    try:
        proc = subprocess.run([*argv, str(directory)], capture_output=True, text=True,
                              timeout=TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"{directory}: kustomize build failed: {exc}") from exc
    if proc.returncode != 0:
        raise InputError(f"{directory}: kustomize build failed: {' '.join(proc.stderr.split())}")
    return proc.stdout
