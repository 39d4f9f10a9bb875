"""A strict local interpreter of rendered Argo Workflows templates (the ``local`` e2e backend's engine).

Contract: :func:`run_workflow` / :func:`execute` / :func:`start` run a WorkflowTemplate dict the way Argo v4
runs it, one step at a time as subprocesses on this machine, and return a :class:`WorkflowRun`; any construct
not implemented raises :class:`UnsupportedConstruct` before anything runs. See :mod:`.interpreter` for the exact
semantics, :mod:`.pod` for the declared differences from a pod, :mod:`.spec` for the allow-lists.
"""

from e2e.argo_local.interpreter import execute, new_run, run_workflow, start
from e2e.argo_local.model import Node, WorkflowRun, run_from_argo_workflow
from e2e.argo_local.mutex import DEFAULT_REGISTRY, MutexRegistry
from e2e.argo_local.options import InterpreterOptions, KillStep
from e2e.argo_local.spec import InvalidSpec, UnsupportedConstruct, check_supported

__all__ = [
    "DEFAULT_REGISTRY",
    "InterpreterOptions",
    "InvalidSpec",
    "KillStep",
    "MutexRegistry",
    "Node",
    "UnsupportedConstruct",
    "WorkflowRun",
    "check_supported",
    "execute",
    "new_run",
    "run_from_argo_workflow",
    "run_workflow",
    "start",
]
