"""Where a simulated Machine is in its life, computed from facts and ``now`` alone.

Contract: pure, no I/O, no clock. :func:`progress` maps :class:`MachineFacts` (creation time, a duration
factor for jitter/slowness, fault windows, reboots, deletion) and the simulated time ``now`` to a
:class:`Progress`: the CAPI phase, whether the Machine has addresses and a nodeRef, whether its Node is
Ready, the Talos stage its node reports, a readable waiting reason, and when the answer next changes.

The boot is modelled as ordered phases (as CAPI's in-memory provider does), each lasting a scenario
duration times ``factor``::

    Pending --pending--> Provisioning --provisioning--> Provisioned --boot--> Running --node_ready--> Ready

The simulated node (and its addresses) exists from Provisioning on, so a stalled provisioning can still be
rebooted through the Talos API — a simplification documented in ``sim/README.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.scenario import Timings

INF = math.inf


@dataclass(frozen=True)
class Window:
    """A span of simulated time during which the Node is not Ready; ``maintenance``: Talos is in maintenance."""

    start: float
    end: float = INF
    maintenance: bool = False

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, kw_only=True)
class MachineFacts:
    created_at: float
    factor: float = 1.0
    hold_provisioning_until: float | None = None  # stall-provisioning: Provisioning lasts until then
    unready: tuple[Window, ...] = ()
    reboots: tuple[float, ...] = ()  # simulated times a Talos reboot was received
    deleting_since: float | None = None


@dataclass(frozen=True)
class Progress:
    phase: str
    has_addresses: bool
    node_ref: bool
    ready: bool
    talos_stage: str | None  # None: no simulated node exists yet
    reason: str
    next_change: float | None  # simulated time at which this answer changes, None if never

    @property
    def running(self) -> bool:
        return self.phase == "Running"


def boundaries(f: MachineFacts, t: Timings) -> tuple[float, float, float, float]:
    """Simulated times at which the Machine becomes Provisioning, Provisioned, Running (nodeRef), Ready."""
    provisioning = f.created_at + t.pending * f.factor
    provisioned = provisioning + t.provisioning * f.factor
    if f.hold_provisioning_until is not None:
        provisioned = max(provisioned, f.hold_provisioning_until)
    running = provisioned + t.boot * f.factor
    # A node in maintenance mode before it ever joined never gets its machine config: no nodeRef until healed.
    for w in f.unready:
        if w.maintenance and w.start <= running:
            running = max(running, w.end)
    ready = running + t.node_ready * f.factor
    return provisioning, provisioned, running, ready


def progress(f: MachineFacts, now: float, t: Timings) -> Progress:
    """The Machine's observable state at ``now`` (see the module docstring)."""
    b_prov, b_provd, b_run, b_ready = boundaries(f, t)
    rebooting_until = _rebooting_until(f, now, t)
    upcoming = [b for b in (b_prov, b_provd, b_run, b_ready) if b > now]
    upcoming += [e for w in f.unready for e in (w.start, w.end) if e > now]
    if rebooting_until is not None:
        upcoming.append(rebooting_until)
    next_change = min(upcoming) if upcoming and min(upcoming) < INF else None

    if now < b_prov:
        phase, addresses, node_ref, stage, reason = "Pending", False, False, None, "waiting for bootstrap data"
    elif now < b_provd:
        phase, addresses, node_ref, stage = "Provisioning", True, False, "installing"
        reason = "infrastructure is not ready" + (" (stalled)" if b_provd == INF else "")
    elif now < b_run:
        phase, addresses, node_ref, stage = "Provisioned", True, False, "booting"
        reason = "waiting for the node to join" + (" (stalled)" if b_run == INF else "")
    else:
        phase, addresses, node_ref, stage = "Running", True, True, "running"
        reason = "node is not ready yet" if now < b_ready else "node is ready"
    ready = node_ref and now >= b_ready

    covering = sorted((w for w in f.unready if w.covers(now)), key=lambda w: not w.maintenance)
    window = covering[0] if covering else None  # maintenance wins over a plain NotReady
    if window is not None and stage is not None:
        ready = False
        if window.maintenance:
            stage, reason = "maintenance", "Talos is in maintenance mode"
        elif node_ref:
            reason = "node is NotReady" + (" (stalled)" if window.end == INF else "")
    if rebooting_until is not None and stage is not None:
        stage, ready, reason = "rebooting", False, "Talos is rebooting"
    if f.deleting_since is not None and now >= f.deleting_since:
        phase, reason = "Deleting", "draining the node"
    return Progress(phase, addresses, node_ref, ready, stage, reason, next_change)


def _rebooting_until(f: MachineFacts, now: float, t: Timings) -> float | None:
    ends = [r + t.reboot * f.factor for r in f.reboots if r <= now < r + t.reboot * f.factor]
    return max(ends) if ends else None
