"""Fault matching and fault windows: which scenario faults hit a Machine, and when each is in force.

Contract: pure, no I/O, no clock. :func:`matches` decides whether a fault targets a machine described by
its name, role, MachineDeployment and *new-machine ordinal* (``None`` for machines that existed before
the rollout). :func:`window` turns an armed fault plus the reboots its node received into the span of
simulated time it is in force, ``(start, end)`` with ``end = inf`` while unhealed, or ``None`` when it is
not (yet) in force. :func:`facts` folds a machine's faults into
:class:`~sim.capi.phases.MachineFacts` (a ``flap`` becomes its NotReady windows, see :func:`flap_windows`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sim.capi.phases import MachineFacts, Window
from sim.scenario import Fault

INF = math.inf


def matches(fault: Fault, *, name: str, role: str, deployment: str | None, ordinal: int | None) -> bool:
    """Does ``fault`` target this machine? ``ordinal`` is the machine's rank among new machines of its role."""
    t = fault.target
    if t.machine is not None:
        return t.machine == name
    if t.role is None:
        return True
    if t.role != role or (t.deployment is not None and t.deployment != deployment):
        return False
    if t.ordinal is not None:
        return ordinal == t.ordinal
    # A role without an ordinal: every existing machine for `before`, every new machine otherwise.
    return (ordinal is None) == (fault.when == "before")


@dataclass(frozen=True)
class Armed:
    """A fault attached to one machine, armed at a simulated time (creation, start or trigger)."""

    fault: Fault
    armed_at: float


def window(armed: Armed, reboots: Sequence[float], reboot_duration: float) -> tuple[float, float] | None:
    """When ``armed.fault`` is in force on its machine, given the times its node was rebooted."""
    f = armed.fault
    after = sorted(r for r in reboots if r >= armed.armed_at)
    if f.when == "after-reboot":
        if not after:
            return None
        start, healing = after[0], after[1:]
    else:
        start, healing = armed.armed_at, after
    needed = {"after-reboot": 1, "after-n-reboots": f.reboots}.get(f.recover)
    if needed is not None and len(healing) >= needed:
        return start, healing[needed - 1] + reboot_duration
    return start, INF


def heals_on_reboot(armed: Armed, reboots_so_far: Sequence[float], at: float) -> bool:
    """Does a reboot at ``at`` (after ``reboots_so_far``) end this fault?"""
    before = window(armed, reboots_so_far, 0.0)
    after = window(armed, [*reboots_so_far, at], 0.0)
    return before is not None and before[1] == INF and after is not None and after[1] < INF


def starts_on_reboot(armed: Armed, reboots_so_far: Sequence[float], at: float) -> bool:
    """Does a reboot at ``at`` put this fault in force (``when: after-reboot``)?"""
    return window(armed, reboots_so_far, 0.0) is None and window(armed, [*reboots_so_far, at], 0.0) is not None


def facts(
    *, created_at: float, jitter: float, armed: Sequence[Armed], reboots: Sequence[float], reboot_duration: float,
    deleting_since: float | None = None,
) -> MachineFacts:
    """The phase-model facts of a machine carrying ``armed`` faults."""
    factor = jitter
    for a in armed:
        if a.fault.kind == "slow":
            factor *= a.fault.factor
    hold: float | None = None
    unready: list[Window] = []
    for a in armed:
        w = window(a, reboots, reboot_duration * factor)
        if w is None:
            continue
        start, end = w
        if a.fault.kind == "stall-provisioning":
            hold = end if hold is None else max(hold, end)
        elif a.fault.kind == "node-not-ready":
            unready.append(Window(start, end))
        elif a.fault.kind == "maintenance":
            unready.append(Window(start, end, maintenance=True))
        elif a.fault.kind == "flap":
            unready.extend(flap_windows(a.fault, start, end))
    return MachineFacts(
        created_at=created_at, factor=factor, hold_provisioning_until=hold, unready=tuple(unready),
        reboots=tuple(reboots), deleting_since=deleting_since,
    )


def flap_windows(fault: Fault, start: float, end: float = INF) -> list[Window]:
    """The NotReady halves of a flap that starts at ``start``: Ready for ``period / 2``, then NotReady for
    ``period / 2``, repeated until ``start + duration`` (or ``end``, a reboot that heals it, if sooner)."""
    stop = min(start + fault.duration, end)
    half = fault.period / 2
    out: list[Window] = []
    t = start + half
    while t < stop:
        out.append(Window(t, min(t + half, stop)))
        t += fault.period
    return out


def in_force(armed: Sequence[Armed], kind: str, reboots: Sequence[float], now: float, reboot_duration: float) -> bool:
    """Is a fault of ``kind`` in force at ``now``?"""
    for a in armed:
        if a.fault.kind != kind:
            continue
        w = window(a, reboots, reboot_duration)
        if w is not None and w[0] <= now < w[1]:
            return True
    return False
