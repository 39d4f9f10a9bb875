"""One decision per poll for one phase: complete, wait, remediate or fail — with the reason in words.

Contract: pure. :func:`decide` takes the observed :class:`ClusterState`, the phase's :class:`PhaseRecord`
from the ledger, what Talos said about the unhealthy Machines' addresses, ``now`` and the parameters, and
returns an :class:`Action` plus the updated record (new fingerprint / stall clock). It never performs the
action; ``capi_rollout.remediator`` does. The rules, in order:

1. complete → ``complete``;
2. an unhealthy Machine whose node reports Talos maintenance → ``fail`` at once (manual intervention; the
   message carries the certificate fingerprint and warns before ``talosctl apply-config --insecure``); one
   whose Talos API presents a certificate that cannot be trusted → ``fail`` at once (never remediated);
3. the phase timeout has passed → ``fail`` naming the phase, the time spent, what is incomplete and why it
   waited;
4. progress (the fingerprint changed to a state this phase has not been in) restarts the stall clock; a return
   to a state seen before (a node flapping Ready/NotReady) does not; not stalled yet → ``wait``;
5. stalled: remediation budget spent → ``fail`` ("remediation budget exhausted"); no candidate → ``wait``
   (the timeout will decide) saying why nothing can be remediated; a control-plane candidate whose removal
   risks etcd quorum → ``wait`` while another member stopped being Ready less than ``stallTimeout`` ago (a
   flap settles), else ``fail``; otherwise → ``remediate`` the most urgent candidate (delete unless already
   deleting; reboot when its address is known).

Every wait that is not plain progress says why (:func:`capi_rollout.domain.waiting.hold_reasons`: a
skip-remediation annotation, a remediation or deletion in flight, the quorum guard, a spent budget): in the
progress line (``; waiting: …``), in ``record.waiting`` (the ledger, hence the summary) and in the timeout
message.

In the control-plane phase, MachineDeployments already rolling (:mod:`capi_rollout.domain.ordering`) are a
warning, never a failure: ``Action.warnings`` carries the stable texts for the ledger, the progress line the
evidence (``; WARNING: …``).

:func:`addresses_to_probe` says which addresses the caller should ask Talos about before deciding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from capi_rollout.domain.ledger import MAX_SEEN, PHASE_TITLES, PhaseRecord
from capi_rollout.domain.model import Machine
from capi_rollout.domain.ordering import ahead_warning, workers_ahead
from capi_rollout.domain.params import Params, format_duration
from capi_rollout.domain.progress import PhaseStatus, phase_status
from capi_rollout.domain.remediation import candidates, classify, quorum_refusal, recently_unhealthy
from capi_rollout.domain.state import MAINTENANCE, UNTRUSTED, ClusterState, NodeStatus
from capi_rollout.domain.waiting import hold_reasons, idle_stall

Kind = Literal["complete", "wait", "remediate", "fail"]


@dataclass(frozen=True)
class Action:
    kind: Kind
    reason: str
    progress: str
    record: PhaseRecord
    machine: Machine | None = None
    delete: bool = False
    reboot: bool = False
    counters: str = ""
    warnings: tuple[str, ...] = ()


def maintenance_message(machine: Machine, address: str, detail: str = "") -> str:
    seen = f" ({detail})" if detail else ""
    return (
        f"node {machine.node_name or machine.name} ({address}) is in Talos maintenance mode: "
        f"manual intervention required{seen}. WARNING: maintenance mode cannot prove who answers; before "
        "`talosctl apply-config --insecure` (which hands the machine config, with the cluster's secrets, to "
        "whoever answers) check on the machine's console that it is in maintenance mode and that its "
        "certificate fingerprint matches the one above"
    )


def untrusted_message(machine: Machine, address: str, detail: str) -> str:
    return (
        f"the Talos API at {address} for node {machine.node_name or machine.name} presents a certificate this "
        f"tool cannot trust ({detail}): not believed, not rebooted; find out what answers at that address "
        "(an address reused by another machine, an expired node certificate, or an impostor)"
    )


def phase_timeout(phase: str, params: Params) -> float:
    return params.control_plane_timeout if phase == "control-plane" else params.workers_timeout


def addresses_to_probe(*, phase: str, state: ClusterState, now: datetime, params: Params) -> list[str]:
    """Addresses of the phase's unhealthy Machines (deleting ones included): those Talos must be asked about."""
    stuck_after = timedelta(seconds=params.stall_timeout)
    out: list[str] = []
    for m in state.phase_machines(phase):
        if m.healthy:
            continue
        unhealthy = classify(m, now=now, stuck_after=stuck_after) is not None or (m.deleting and m.node_name)
        if unhealthy and m.address and m.address not in out:
            out.append(m.address)
    return out


def decide(
    *,
    phase: str,
    state: ClusterState,
    record: PhaseRecord,
    nodes: Mapping[str, NodeStatus],
    now: datetime,
    params: Params,
) -> Action:
    """The decision for this poll; ``counters`` carries the phase's counters and why it waits (for throttled
    logging: a new reason to wait is said at once)."""
    status = phase_status(phase, state)
    action = _decide(phase=phase, state=state, status=status, record=record, nodes=nodes, now=now, params=params)
    waiting = f"; waiting: {action.record.waiting}" if action.record.waiting else ""
    ahead = workers_ahead(state) if phase == "control-plane" else {}
    warning = "".join(f"; WARNING: MachineDeployment {name} rolling before the control plane is complete "
                      f"({evidence})" for name, evidence in ahead.items())
    return replace(action, counters=f"{PHASE_TITLES[phase]}: {status.counters}{waiting}",
                   progress=action.progress + warning,
                   warnings=tuple(ahead_warning(name, state.control_plane.meta.name) for name in ahead))


def _decide(
    *,
    phase: str,
    state: ClusterState,
    status: PhaseStatus,
    record: PhaseRecord,
    nodes: Mapping[str, NodeStatus],
    now: datetime,
    params: Params,
) -> Action:
    title = PHASE_TITLES[phase]
    stuck_after = timedelta(seconds=params.stall_timeout)

    if status.fingerprint != record.fingerprint:
        if status.fingerprint in record.seen:  # back to a state this phase was in: a flap, not progress
            record = replace(record, fingerprint=status.fingerprint)
        else:
            seen = (*record.seen, status.fingerprint)[-MAX_SEEN:]
            record = replace(record, fingerprint=status.fingerprint, last_progress=now, seen=seen)
    stalled_for = (now - record.last_progress).total_seconds()
    elapsed = (now - record.started).total_seconds()
    progress = (
        f"{title}: {status.counters}, no progress for {format_duration(stalled_for)} of "
        f"{format_duration(params.stall_timeout)}, {format_duration(elapsed)} of "
        f"{format_duration(phase_timeout(phase, params))} elapsed"
    )

    if status.complete:
        return Action("complete", f"{title} rollout complete: {status.counters}", progress,
                      replace(record, waiting=""))

    holds = "; ".join(hold_reasons(state.phase_machines(phase), control_plane=phase == "control-plane",
                                   remediations=record.remediations, max_remediations=params.max_remediations,
                                   now=now, stuck_after=stuck_after))
    if holds != record.waiting:
        record = replace(record, waiting=holds)
    if holds:
        progress += f"; waiting: {holds}"
    why = f"; waiting: {holds}" if holds else ""

    in_maintenance = {a for a, n in nodes.items() if n.state == MAINTENANCE}
    if in_maintenance:
        for m in state.phase_machines(phase):
            if not m.healthy and m.address in in_maintenance:
                node = nodes[m.address]
                return Action("fail", maintenance_message(m, node.address, node.detail), progress, record, machine=m)
    untrusted = {a for a, n in nodes.items() if n.state == UNTRUSTED}
    if untrusted:
        for m in state.phase_machines(phase):
            if not m.healthy and m.address in untrusted:
                node = nodes[m.address]
                return Action("fail", untrusted_message(m, node.address, node.detail), progress, record, machine=m)

    limit = phase_timeout(phase, params)
    if elapsed >= limit:
        return Action(
            "fail",
            f"{title} phase timed out after {format_duration(elapsed)} (limit {format_duration(limit)}); "
            f"incomplete: {'; '.join(status.incomplete)}{why}",
            progress,
            record,
        )

    if stalled_for < params.stall_timeout:
        return Action("wait", f"{title}: waiting; incomplete: {'; '.join(status.incomplete)}{why}", progress,
                      record)

    found = candidates(state.phase_machines(phase), now=now, stuck_after=stuck_after)
    used = len(record.remediations)
    if not found:
        if not holds:  # nothing to name in the hold reasons: say why the wait is not plain progress anyway
            idle = idle_stall(record.last_progress)
            record = replace(record, waiting=idle)
            progress += f"; waiting: {idle}"
        return Action(
            "wait",
            f"{title}: no progress for {format_duration(stalled_for)} but "
            f"{'no Machine can be remediated' if holds else 'no unhealthy Machine to remediate'}; "
            f"waiting for the phase timeout; incomplete: {'; '.join(status.incomplete)}{why}",
            progress,
            record,
        )
    if used >= params.max_remediations:
        done = "; ".join(f"{r.machine} ({r.reason}, {r.outcome})" for r in record.remediations) or "none"
        return Action(
            "fail",
            f"{title}: remediation budget exhausted ({used} of {params.max_remediations} used) and still stalled "
            f"for {format_duration(stalled_for)}; remediations done: {done}; next candidate would have been "
            f"{found[0].machine.name} ({found[0].reason})",
            progress,
            record,
            machine=found[0].machine,
        )
    chosen = found[0]
    if phase == "control-plane":
        refusal = quorum_refusal(state.control_plane_machines, chosen.machine)
        recent = recently_unhealthy(state.control_plane_machines, chosen.machine, now=now, within=stuck_after) \
            if refusal else []
        if refusal and recent:  # a member just went NotReady (a flap?): wait it out, the timeout still decides
            return Action(
                "wait",
                f"{title}: no progress for {format_duration(stalled_for)}; the etcd quorum guard refuses for now, "
                f"because {', '.join(recent)} stopped being Ready less than {format_duration(params.stall_timeout)} "
                f"ago: waiting for it to settle; {refusal}",
                progress,
                record,
                machine=chosen.machine,
            )
        if refusal:
            return Action("fail", f"{title}: {refusal}", progress, record, machine=chosen.machine)
    m = chosen.machine
    address = m.address
    delete = not m.deleting
    # A reboot goes only to a node that can be told apart: the answering node must report the Machine's identity.
    reboot = address is not None and m.identity is not None
    steps = ((f"delete Machine {m.name}", delete), (f"reboot {address} ({params.reboot_mode})", reboot))
    verbs = " and ".join(v for v, on in steps if on)
    if address is not None and not reboot:
        verbs += (f" (no reboot of {address}: the Machine has no nodeRef and no Hostname address to check the "
                  "answering node against)")
    return Action(
        "remediate",
        f"{title}: no progress for {format_duration(stalled_for)}; remediation {used + 1} of "
        f"{params.max_remediations}: {verbs or 'nothing possible'} — {chosen.reason}",
        progress,
        record,
        machine=m,
        delete=delete,
        reboot=reboot,
    )
