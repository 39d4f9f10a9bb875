"""Which backend the e2e suite runs on: ``E2E_CLUSTER``, else kind where a Docker engine answers, else local.

Contract: :func:`select_backend` picks ``E2E_CLUSTER`` when set (one of :data:`BACKENDS`), else ``kind`` where
a Docker engine answers, else ``local``; it never reads anything but the environment and
:func:`docker_available`. :func:`make_backend` constructs the named one (the cluster backends import their
Kubernetes code lazily, so choosing ``local`` loads none of it):

* ``local`` (:class:`e2e.backends.local.LocalBackend`): the real local API server and the strict local
  interpreter of Argo templates (:mod:`e2e.argo_local`);
* ``kind`` (:class:`e2e.backends.kind.KindBackend`): a kind cluster with Argo Workflows v4; needs Docker;
* ``existing`` (:class:`e2e.backends.existing.ClusterBackend`): the cluster of ``KUBECONFIG`` (Argo installed),
  in a throwaway namespace;
* ``node`` (:class:`e2e.backends.node.NodeBackend`): the real node ``python -m e2e.node run`` started.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from e2e.backends.base import Backend
from e2e.backends.local import LocalAPIServerLike, LocalBackend

BACKENDS = ("local", "kind", "existing", "node")


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


def make_backend(name: str, *, results_dir: Path, apiserver: LocalAPIServerLike | None = None,
                 **options: Any) -> Backend:
    """Construct the named backend (``kind``/``existing``/``node`` import their Kubernetes code lazily)."""
    if name == "local":
        if apiserver is None:
            raise ValueError("the local backend needs the LocalAPIServer (the `apiserver` fixture)")
        return LocalBackend(apiserver, results_dir, **options)
    if name == "kind":
        from e2e.backends.kind import KindBackend

        return KindBackend(results_dir=results_dir, **options)
    if name == "existing":
        from e2e.backends.existing import ClusterBackend

        return ClusterBackend.from_kubeconfig(results_dir=results_dir, **options)
    if name == "node":
        from e2e.backends.node import NodeBackend

        return NodeBackend(results_dir=results_dir, **options)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
