"""When a phase is complete, what is still incomplete, and whether anything moved since the last look.

Contract: pure. :func:`phase_status` returns a :class:`PhaseStatus` for ``control-plane`` or ``workers``:

* control plane complete: ``status.observedGeneration ≥ metadata.generation``, condition
  ``MachinesSpecUpToDate`` True, exactly ``spec.replicas`` non-deleting control-plane Machines, all with a
  nodeRef and Ready, and ``status.readyReplicas == spec.replicas``;
* a MachineDeployment complete: CAPI's own rule (upToDate == replicas == available == ``spec.replicas``,
  ``observedGeneration ≥ generation``) and none of its Machines deleting; the workers phase is complete when
  every MachineDeployment is (trivially so when the cluster has none).

The fingerprint changes whenever a counter, a condition, the set of Machines or any Machine's phase,
nodeRef, readiness or deletion changes; a change to a fingerprint the phase has not had before is what
"progress" means for the stall clock (:mod:`capi_rollout.domain.decide`: a flap back to an earlier state is not).
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from capi_rollout.domain.model import Machine, MachineDeployment
from capi_rollout.domain.state import ClusterState


@dataclass(frozen=True)
class PhaseStatus:
    phase: str
    complete: bool
    incomplete: tuple[str, ...]
    counters: str
    fingerprint: str


def _machines_key(machines: Sequence[Machine]) -> list[tuple[str, str, bool, bool, bool]]:
    return [(m.name, m.phase, m.node_name is not None, m.ready, m.deleting) for m in machines]


def _digest(payload: Any) -> str:
    """A short hash of plain data (tuples, lists, str, int, bool, None) that depends only on the values.

    marshal format version 0 writes no back-references, so equal values give equal bytes whatever the
    objects' identity; the hash is stored in the ledger and compared by later steps of the same image.
    """
    return hashlib.sha256(marshal.dumps(payload, 0)).hexdigest()[:16]


def control_plane_status(state: ClusterState) -> PhaseStatus:
    cp = state.control_plane
    machines = state.control_plane_machines
    live = [m for m in machines if not m.deleting]
    want = cp.spec_replicas
    cond = cp.spec_up_to_date
    incomplete: list[str] = []
    if cp.observed_generation < cp.meta.generation:
        incomplete.append(
            f"TalosControlPlane {cp.meta.name} status.observedGeneration {cp.observed_generation} "
            f"< metadata.generation {cp.meta.generation}"
        )
    if cond is None or not cond.is_true:
        why = f"{cond.status} ({cond.reason})" if cond and cond.reason else (cond.status if cond else "absent")
        incomplete.append(f"condition MachinesSpecUpToDate is {why}")
    if len(live) != want:
        incomplete.append(f"{len(live)} control-plane Machines (not deleting) for spec.replicas {want}")
    deleting = [m.name for m in machines if m.deleting]
    if deleting:
        incomplete.append(f"deleting: {', '.join(deleting)}")
    not_ready = [m.name for m in live if m.node_name is None or not m.ready]
    if not_ready:
        incomplete.append(f"not Ready or without a node: {', '.join(not_ready)}")
    if cp.ready_replicas != want:
        incomplete.append(f"status.readyReplicas {cp.ready_replicas} != spec.replicas {want}")
    ready = sum(1 for m in live if m.ready and m.node_name)
    rolling = "up to date" if cond and cond.is_true else f"rolling out ({cond.reason if cond else 'no condition'})"
    counters = f"{len(live)}/{want} machines, {ready}/{want} ready, {rolling}"
    fingerprint = _digest(
        [
            cp.meta.generation,
            cp.observed_generation,
            cp.status_replicas,
            cp.ready_replicas,
            cp.unavailable_replicas,
            cond.status if cond else None,
            cond.reason if cond else None,
            _machines_key(machines),
        ]
    )
    return PhaseStatus("control-plane", not incomplete, tuple(incomplete), counters, fingerprint)


def deployment_incomplete(md: MachineDeployment, machines: Sequence[Machine]) -> list[str]:
    """What keeps one MachineDeployment from CAPI's "complete" (empty when complete)."""
    want = md.spec_replicas
    out: list[str] = []
    if md.observed_generation < md.meta.generation:
        out.append(f"observedGeneration {md.observed_generation} < generation {md.meta.generation}")
    if not (md.up_to_date == md.replicas == md.available == want):
        out.append(f"upToDate {md.up_to_date}, replicas {md.replicas}, available {md.available}, want {want}")
    deleting = [m.name for m in machines if m.deleting]
    if deleting:
        out.append(f"deleting: {', '.join(deleting)}")
    return out


def workers_status(state: ClusterState) -> PhaseStatus:
    incomplete: list[str] = []
    parts: list[str] = []
    payload: list[object] = []
    for md in state.deployments:
        machines = state.deployment_machines(md.meta.name)
        problems = deployment_incomplete(md, machines)
        incomplete.extend(f"MachineDeployment {md.meta.name}: {p}" for p in problems)
        want = md.spec_replicas
        parts.append(f"{md.meta.name} {md.up_to_date}/{want} up to date, {md.available}/{want} available")
        payload.append(
            [md.meta.name, md.meta.generation, md.observed_generation, md.replicas, md.up_to_date, md.ready,
             md.available, _machines_key(machines)]
        )
    counters = "; ".join(parts) if parts else "no MachineDeployments"
    return PhaseStatus("workers", not incomplete, tuple(incomplete), counters, _digest(payload))


def phase_status(phase: str, state: ClusterState) -> PhaseStatus:
    if phase == "control-plane":
        return control_plane_status(state)
    if phase == "workers":
        return workers_status(state)
    raise ValueError(f"unknown phase {phase!r}")
