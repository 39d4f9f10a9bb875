"""How far a phase has got in replacing its Machines: ``N/M`` for Argo's progress bar, a sentence for people.

Contract: pure. :func:`replacement_progress` counts, for ``control-plane`` or ``workers``:

* ``to_replace`` (M): the Machines the phase must end with: the TalosControlPlane's ``spec.replicas``, or the
  sum of the MachineDeployments' ``spec.replicas`` (0 when the cluster has none);
* ``replaced`` (N): the phase's serving Machines (Ready, with a node, not deleting) that are new: created at or
  after the phase started, or carrying the v1beta2 Machine condition ``UpToDate`` True while the phase rolls.
  It never exceeds M, and it is M once the phase is complete (Machines that were already up to date count as
  replaced: nothing was left to do for them).

A Machine CAPI created just before the phase started (the rollout began before the workflow) counts only once the
phase completes, so the bar can jump at the end. The bar moves back only when a new Machine stops serving (a
stall: what the bar should show).

:func:`sentence` says it in words: ``control plane: 2/3 replaced, 1 remediation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from capi_rollout.domain.ledger import PHASE_TITLES
from capi_rollout.domain.state import ClusterState


@dataclass(frozen=True)
class Replacement:
    phase: str
    replaced: int
    to_replace: int

    @property
    def argo(self) -> str | None:
        """``N/M`` as Argo's executor parses it (``0 <= N <= M`` and ``M > 0``); None when M is 0."""
        return f"{self.replaced}/{self.to_replace}" if self.to_replace > 0 else None


def _desired(phase: str, state: ClusterState) -> int:
    if phase == "control-plane":
        return max(state.control_plane.spec_replicas, 0)
    return sum(max(md.spec_replicas, 0) for md in state.deployments)


def replacement_progress(phase: str, state: ClusterState, *, since: datetime, complete: bool) -> Replacement:
    """Machines replaced / to replace in ``phase`` (see the module docstring)."""
    want = _desired(phase, state)
    if complete:
        return Replacement(phase, want, want)
    new = 0
    for m in state.phase_machines(phase):
        if not m.healthy:
            continue
        created = m.meta.created
        up_to_date = m.conditions.get("UpToDate")
        if (created is not None and created >= since) or (up_to_date is not None and up_to_date.is_true):
            new += 1
    return Replacement(phase, min(new, want), want)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def sentence(progress: Replacement, *, remediations: int) -> str:
    """``control plane: 2/3 replaced, 1 remediation`` (``workers: nothing to replace`` when M is 0)."""
    title = PHASE_TITLES[progress.phase]
    if progress.to_replace == 0:
        return f"{title}: nothing to replace, {plural(remediations, 'remediation')}"
    return f"{title}: {progress.replaced}/{progress.to_replace} replaced, {plural(remediations, 'remediation')}"
