"""Which Machine to remediate, and when remediating would be unsafe.

Contract: pure. A Machine is a remediation candidate when it is

1. ``Failed`` (``status.phase``),
2. without a nodeRef (never got a node),
3. not Ready (its node is NotReady, or the Ready condition is not True),
4. stuck deleting (``deletionTimestamp`` older than the stall timeout: drain or volume detach blocked),

in that priority order; among not-Ready Machines the one not Ready the longest (its Ready condition's
``lastTransitionTime``) goes first, so a node that flaps NotReady for a moment never takes the turn of the
Machine that stalled the rollout; other ties go to the oldest ``creationTimestamp``, then the name (the shape
of KCP's ``pickMachineToBeRemediated``). Machines annotated ``cluster.x-k8s.io/skip-remediation`` are never
candidates. A Machine that is deleting but not yet stuck is normal rollout work, not a candidate.

The control-plane guard follows KCP's etcd rule: the members after removal (non-deleting control-plane
Machines with a node, minus the candidate) must still hold a quorum of healthy members.
:func:`recently_unhealthy` names the other members that stopped being Ready less than a stall timeout ago: while
there are any, a refusal is a transient state (a flap) to wait out, not a reason to fail the phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from capi_rollout.domain.model import Machine
from capi_rollout.domain.params import format_duration

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_READY = 3


@dataclass(frozen=True)
class Candidate:
    machine: Machine
    priority: int
    reason: str

    @property
    def sort_key(self) -> tuple[int, datetime, datetime, str]:
        created = self.machine.meta.created or _EPOCH
        since = (self.machine.not_ready_since or created) if self.priority == _NOT_READY else created
        return (self.priority, since, created, self.machine.name)


def classify(machine: Machine, *, now: datetime, stuck_after: timedelta) -> Candidate | None:
    """The machine's most urgent problem as a :class:`Candidate`, or None when it needs no remediation."""
    if machine.healthy or machine.skip_remediation:
        return None
    if machine.deleting:
        since = machine.meta.deleting_since or now
        if now - since >= stuck_after:
            return Candidate(machine, 4, f"stuck deleting for {format_duration((now - since).total_seconds())}")
        return None
    if machine.failed:
        return Candidate(machine, 1, "phase Failed")
    if machine.node_name is None:
        return Candidate(machine, 2, f"no nodeRef (phase {machine.phase})")
    if not machine.ready:
        cond = machine.conditions.get("Ready") or machine.conditions.get("NodeHealthy")
        detail = f": {cond.reason}" if cond and cond.reason else ""
        return Candidate(machine, _NOT_READY, f"node {machine.node_name} not Ready{detail}")
    return None


def candidates(machines: Sequence[Machine], *, now: datetime, stuck_after: timedelta) -> list[Candidate]:
    """Every candidate, most urgent first (priority, then oldest creation, then name)."""
    found = [c for m in machines if (c := classify(m, now=now, stuck_after=stuck_after)) is not None]
    return sorted(found, key=lambda c: c.sort_key)


def quorum_refusal(control_plane_machines: Sequence[Machine], candidate: Machine) -> str | None:
    """Why removing ``candidate`` would risk etcd quorum, or None when it is safe."""
    members = [m for m in control_plane_machines if not m.deleting and m.node_name is not None]
    is_member = any(m.name == candidate.name for m in members)
    target_total = len(members) - (1 if is_member else 0)
    target_quorum = target_total // 2 + 1
    healthy_after = [m for m in members if m.healthy and m.name != candidate.name]
    if target_total == 0:
        state = "deleting" if candidate.deleting else ("without a node" if candidate.node_name is None else "")
        others = f" (it is {state})" if state else ""
        return (
            f"control-plane Machine {candidate.name} is the cluster's only etcd member{others} and no other "
            "control-plane Machine has a node yet: rebooting or deleting it would stop etcd, the store behind the "
            "workload cluster's Kubernetes API, with no other member to keep the API answering or to rebuild "
            "from; the guard refuses. Take an etcd snapshot (`talosctl etcd snapshot`) and fix it by hand"
        )
    if len(healthy_after) < target_quorum:
        unhealthy = sorted(m.name for m in members if not m.healthy)
        return (
            f"removing control-plane Machine {candidate.name} would leave {len(healthy_after)} healthy of "
            f"{target_total} etcd members, below the quorum of {target_quorum} "
            f"(unhealthy: {', '.join(unhealthy) or 'none'}): without a quorum etcd stops accepting writes and the "
            "workload cluster's Kubernetes API stops working; fix the control plane by hand"
        )
    return None


def recently_unhealthy(control_plane_machines: Sequence[Machine], candidate: Machine, *, now: datetime,
                       within: timedelta) -> list[str]:
    """The other etcd members (non-deleting, with a node) not Ready for less than ``within``: "name (since T)"."""
    out = []
    for m in control_plane_machines:
        since = m.not_ready_since
        if m.name != candidate.name and not m.deleting and since is not None and now - since < within:
            out.append(f"{m.name} (not Ready since {since.isoformat().replace('+00:00', 'Z')})")
    return out
