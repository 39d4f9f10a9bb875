"""Why a phase waits instead of remediating: the reasons a wait is not plain progress, in words.

Contract: pure. :func:`hold_reasons` looks at one phase's Machines, its ledger record (the remediations done)
and the parameters, and returns every reason the tool holds back, most actionable first:

1. an unhealthy Machine annotated ``cluster.x-k8s.io/skip-remediation`` (never remediated: someone said so);
2. a remediation of this phase already in flight (a Machine it deleted or rebooted is still deleting);
3. an unhealthy control-plane Machine the etcd quorum guard would refuse to remediate;
4. unhealthy Machines with the remediation budget spent (the next stall fails the phase).

:func:`idle_stall` words the one hold that has no Machine to name: the phase stalled and nothing is unhealthy,
so CAPI itself is holding back (a MachineSet preflight check, a paused object, a controller that is down).

A Machine that CAPI itself is deleting is rollout work (plain progress): its deletion restarts the stall clock,
and it becomes a remediation candidate ("stuck deleting") exactly when a stall could be declared.

Each reason is stable text (names, counts and timestamps, never a running duration), so it can be stored in the
ledger on change and shown in the progress line and the summary. An empty result means the wait is plain
progress (or nothing is unhealthy).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from capi_rollout.domain.ledger import Remediation
from capi_rollout.domain.model import SKIP_REMEDIATION_ANNOTATION, Machine
from capi_rollout.domain.remediation import candidates, quorum_refusal


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def problem(machine: Machine) -> str:
    """What is wrong with an unhealthy Machine, in stable words ("" when healthy)."""
    if machine.healthy:
        return ""
    if machine.deleting:
        since = machine.meta.deleting_since
        return f"deleting since {_ts(since)}" if since else "deleting"
    if machine.failed:
        return "phase Failed"
    if machine.node_name is None:
        return f"no nodeRef (phase {machine.phase})"
    cond = machine.conditions.get("Ready") or machine.conditions.get("NodeHealthy")
    detail = f": {cond.reason}" if cond and cond.reason else ""
    return f"node {machine.node_name} not Ready{detail}"


def hold_reasons(
    machines: Sequence[Machine],
    *,
    control_plane: bool,
    remediations: Sequence[Remediation],
    max_remediations: int,
    now: datetime,
    stuck_after: timedelta,
) -> list[str]:
    """Every reason this phase's wait is not plain progress (empty when it is)."""
    out: list[str] = []
    for m in machines:
        if not m.healthy and m.skip_remediation:
            out.append(f"Machine {m.name} ({problem(m)}) carries the annotation {SKIP_REMEDIATION_ANNOTATION}: "
                       "it is never remediated; fix it by hand or remove the annotation")
    remediated = {r.machine: i for i, r in enumerate(remediations, start=1)}
    for m in machines:
        if m.deleting and not m.skip_remediation and m.name in remediated:
            out.append(f"remediation {remediated[m.name]} in flight: Machine {m.name} {problem(m)}")
    found = candidates(machines, now=now, stuck_after=stuck_after)
    if found and control_plane:
        refusal = quorum_refusal(machines, found[0].machine)
        if refusal:
            out.append(f"the etcd quorum guard would refuse to remediate: {refusal}")
    if found and len(remediations) >= max_remediations:
        names = ", ".join(f"{c.machine.name} ({problem(c.machine)})" for c in found)
        spent = (f"remediation budget spent ({len(remediations)} of {max_remediations} used)" if max_remediations
                 else "remediation disabled (maxRemediations 0)")
        out.append(f"{spent} with unhealthy {names}: a stall fails the phase")
    return out


def idle_stall(since: datetime) -> str:
    """Why a stalled phase with no unhealthy Machine waits (stable words: the time it stalled, no duration)."""
    return (f"no progress since {_ts(since)} and no unhealthy Machine to remediate: CAPI is creating or deleting "
            "nothing (a MachineSet preflight check such as ControlPlaneIsStable or KubernetesVersionSkew, a paused "
            "object, or a CAPI controller that is down); the phase timeout decides")
