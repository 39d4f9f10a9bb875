"""How a run of the local Argo interpreter is set up: :class:`InterpreterOptions` and the faults it plays.

Contract: plain data. :class:`KillStep` names one attempt of one step to lose from outside and how (``force``,
``graceful`` or ``evict``; what each does is in :mod:`e2e.argo_local.pod`); the cluster backends play the same
record on real pods. :class:`InterpreterOptions` is everything a run needs besides the template and its
parameters: where results go, the runner's kubeconfig and ServiceAccount, the interpreter steps run with, the
faults, the pod path prefixes, the time limits and the mutex registry.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.argo_local.mutex import DEFAULT_REGISTRY, MutexRegistry

FORCE, GRACEFUL, EVICT = "force", "graceful", "evict"


@dataclass(frozen=True)
class KillStep:
    """Fault injection: lose attempt ``attempt`` of step ``step`` (display name) ``after`` seconds in, ``how``:
    ``force`` (SIGKILL, pod gone), ``graceful`` (SIGTERM then SIGKILL, pod Failed) or ``evict`` (see
    :mod:`e2e.argo_local.interpreter`).

    ``after_remediations`` (> 0) also waits until the run's RolloutLedger shows that many of the phase named
    ``step`` finished (an outcome written, not just the intent): a kill placed between two remediations by the
    ledger, not by a clock that a loaded machine stretches. The cluster backends play it (they poll the ledger);
    the local interpreter's time-only faults refuse it."""

    step: str
    after: float
    attempt: int = 0
    how: str = FORCE
    after_remediations: int = 0

    def __post_init__(self) -> None:
        if self.how not in (FORCE, GRACEFUL, EVICT):
            raise ValueError(f"KillStep.how: {self.how!r} is not one of {FORCE}, {GRACEFUL}, {EVICT}")
        if self.after_remediations < 0:
            raise ValueError(f"KillStep.after_remediations: {self.after_remediations} is negative")


@dataclass
class InterpreterOptions:
    results_dir: Path
    kubeconfig: Path | None = None
    # The ServiceAccount whose token ``kubeconfig`` carries; every leaf must run as it (None: no token, no check).
    service_account: str | None = None
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] | None = None
    faults: Sequence[KillStep] = ()
    pod_prefixes: tuple[str, ...] = ("/tmp",)
    safety_timeout: float = 900.0
    kill_grace: float = 1.0
    mutex_timeout: float = 600.0
    # Multiplies retryStrategy.backoff waits (1.0 = Argo's real durations); a declared, logged difference.
    backoff_scale: float = 1.0
    mutexes: MutexRegistry = field(default_factory=lambda: DEFAULT_REGISTRY)
