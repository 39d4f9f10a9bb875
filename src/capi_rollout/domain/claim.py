"""One rollout per cluster, whatever Argo's mutex does: who may hold a cluster's claim, in words.

Contract: pure. A cluster's claim names the Workflow rolling it (name, uid, since when). :func:`decide_claim`
takes the claim as read (None when there is none), this run's identity and what the API says about the holder's
Workflow (its phase, or None when it is gone or another Workflow now has its name), and returns what to do with a
reason a person can read:

* ``create``: no claim yet: create it (a lost create race is read again);
* ``mine``: this run holds it (a retried or later step of the same Workflow);
* ``take-over``: the holder's Workflow ended (any phase but Pending/Running) or is gone: replace the claim;
* ``wait``: another Workflow that is still Pending or Running holds it: do not act on the cluster.

Argo's per-cluster mutex is the first guard; the claim is the second, for when the mutex did not hold (Argo
Workflows v4.0.2 loses a templated mutex of a ``workflowTemplateRef`` Workflow when its controller restarts).
A claim is never released: it stops mattering when its Workflow ends, and goes with it (ownerReference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LIVE_PHASES = ("", "Pending", "Running")
CLAIM_WAIT_SECONDS = 240  # resolve waits at most this long for another run (its pod deadline is 300 s)

Action = Literal["create", "mine", "take-over", "wait"]


@dataclass(frozen=True)
class Holder:
    """The Workflow a claim names: its name, uid and when it took the claim (RFC 3339)."""

    workflow: str
    uid: str
    since: str = ""

    def same_run(self, other: Holder) -> bool:
        return self.uid == other.uid and self.workflow == other.workflow


@dataclass(frozen=True)
class ClaimDecision:
    action: Action
    reason: str


def decide_claim(*, cluster: str, current: Holder | None, me: Holder,
                 holder_phase: str | None) -> ClaimDecision:
    """What this run does about ``cluster``'s claim; ``holder_phase`` is the holder Workflow's ``status.phase``
    ("" before the controller set one), or None when that Workflow is gone (or its name has a new uid)."""
    if current is None:
        return ClaimDecision("create", f"{cluster}: no rollout holds it; this run ({me.workflow}) takes it")
    if current.same_run(me):
        return ClaimDecision("mine", f"{cluster}: this run ({me.workflow}) already holds it")
    since = f" since {current.since}" if current.since else ""
    if holder_phase is None:
        return ClaimDecision("take-over", f"{cluster}: held{since} by Workflow {current.workflow}, which is gone; "
                                          f"this run ({me.workflow}) takes it over")
    if holder_phase not in LIVE_PHASES:
        return ClaimDecision("take-over", f"{cluster}: held{since} by Workflow {current.workflow}, which ended "
                                          f"({holder_phase}); this run ({me.workflow}) takes it over")
    return ClaimDecision("wait", f"{cluster}: Workflow {current.workflow} is rolling it{since} "
                                 f"({holder_phase or 'just submitted'})")
