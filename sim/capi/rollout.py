"""Rollout arithmetic of the fake controllers: what CACPPT and the CAPI MachineDeployment/MachineSet
controllers would do next, decided from a snapshot of state alone.

Contract: pure, no I/O, no clock. Each planner returns its decisions with a readable reason, e.g.
``"rolling: 3 machines = 3 spec.replicas + 0 maxSurge, delete outdated demo-cp-0"``; the controller
applies them. The arithmetic follows upstream:

* TalosControlPlane (CACPPT): one machine at a time; scale up to ``replicas + maxSurge`` only when every
  machine is Ready and none is deleting; then delete the oldest outdated machine. With maxSurge 0 that is
  "delete one old, create one new, wait until it is Ready".
* MachineDeployment (CAPI ``rolloutRollingUpdate``): scale the new MachineSet up to at most
  ``replicas + maxSurge`` machines in total, scale old MachineSets down while at least
  ``replicas - maxUnavailable`` machines stay available (unhealthy old machines go first).
  Percentages resolve against ``spec.replicas``: maxSurge rounds up, maxUnavailable rounds down.
* MachineSet: create or delete machines until the live (not deleting) count equals ``spec.replicas``;
  it deletes not-Ready machines first, then the oldest. With CAPI's MachineSet preflight checks
  (:func:`machineset_preflight`) it creates none while the control plane is not stable
  (:func:`control_plane_stable`) or a new Machine's Kubernetes minor would be newer than the control plane's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def scaled_int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """An IntOrString against ``total``: ``"25%"`` of 3 is 1 rounding up, 0 rounding down.

    The simulator's own copy of upstream's ``GetScaledValueFromIntOrPercent``, deliberately not the product's
    ``resolve_int_or_percent``: a bug shared by the fake controllers and the product would pass every test.
    """
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.endswith("%"):
        return int(text)
    exact = int(text[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def resolve_surge_unavailable(max_surge: int | str, max_unavailable: int | str, replicas: int) -> tuple[int, int]:
    return (
        scaled_int_or_percent(max_surge, replicas, round_up=True),
        scaled_int_or_percent(max_unavailable, replicas, round_up=False),
    )


@dataclass(frozen=True)
class MachineView:
    """What the planners need to know of one Machine."""

    name: str
    created: float
    up_to_date: bool = True
    ready: bool = True
    deleting: bool = False


@dataclass(frozen=True)
class Step:
    """One control-plane decision: ``create``, ``delete`` (``machine``), ``wait`` or ``done``."""

    action: str
    reason: str
    machine: str | None = None


def plan_control_plane(machines: Sequence[MachineView], *, replicas: int, max_surge: int) -> Step:
    """CACPPT's next step for a rolling update (see the module docstring)."""
    live = sorted((m for m in machines if not m.deleting), key=lambda m: (m.created, m.name))
    deleting = [m.name for m in machines if m.deleting]
    outdated = [m for m in live if not m.up_to_date]
    if len(live) < replicas:
        return Step("create", f"{len(live)} machines < {replicas} spec.replicas")
    if deleting:
        return Step("wait", f"waiting for {', '.join(sorted(deleting))} to be deleted")
    not_ready = [m.name for m in live if not m.ready]
    if not outdated and len(live) == replicas:
        if not_ready:
            return Step("wait", f"up to date; waiting for {', '.join(not_ready)} to be ready")
        return Step("done", f"{replicas} machines up to date and ready")
    if not_ready:
        return Step("wait", f"rolling: waiting for {', '.join(not_ready)} to be ready")
    if outdated and len(live) < replicas + max_surge:
        return Step("create", f"rolling: {len(live)} machines < {replicas} spec.replicas + {max_surge} maxSurge")
    victim = (outdated or live)[0]
    why = "outdated" if outdated else "surplus"
    return Step(
        "delete",
        f"rolling: {len(live)} machines ≥ {replicas} spec.replicas + {max_surge} maxSurge, delete {why} {victim.name}",
        victim.name,
    )


@dataclass(frozen=True)
class SetView:
    """One MachineSet: its spec.replicas and how many of its live machines are available."""

    name: str
    created: float
    up_to_date: bool
    replicas: int
    available: int


@dataclass(frozen=True)
class Scale:
    machine_set: str
    replicas: int
    reason: str


def plan_deployment(
    sets: Sequence[SetView], *, replicas: int, max_surge: int | str, max_unavailable: int | str, strategy: str
) -> list[Scale]:
    """New ``spec.replicas`` for the MachineSets of one MachineDeployment (exactly one set is up to date)."""
    new = next(s for s in sets if s.up_to_date)
    olds = sorted((s for s in sets if not s.up_to_date), key=lambda s: (s.created, s.name))
    out: list[Scale] = []
    if strategy == "OnDelete":
        # Old sets only shrink when the user deletes their machines; the new set fills the gap.
        want = max(0, replicas - sum(min(s.replicas, s.available) for s in olds))
        for s in olds:
            if s.available < s.replicas:
                out.append(Scale(s.name, s.available, f"OnDelete: {s.name} keeps its {s.available} remaining"))
        if want != new.replicas:
            out.append(Scale(new.name, want, f"OnDelete: {replicas} spec.replicas - old machines = {want}"))
        return out
    surge, unavailable = resolve_surge_unavailable(max_surge, max_unavailable, replicas)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # as upstream: a rollout must be able to make progress
    total = sum(s.replicas for s in sets)
    new_replicas = new.replicas
    if new_replicas > replicas:
        new_replicas = replicas
        out.append(Scale(new.name, replicas, f"{new.name} above {replicas} spec.replicas"))
    elif total < replicas + surge and new_replicas < replicas:
        new_replicas = min(replicas, new_replicas + replicas + surge - total)
        out.append(
            Scale(new.name, new_replicas, f"{total} machines < {replicas} spec.replicas + {surge} maxSurge")
        )
    # Scale old sets down: keep at least replicas - maxUnavailable available machines.
    min_available = replicas - unavailable
    new_unavailable = max(0, new.replicas - new.available)
    budget = total - min_available - new_unavailable
    old_specs = {s.name: s.replicas for s in olds}
    for s in olds:  # unhealthy old machines first
        if budget <= 0:
            break
        cut = min(budget, old_specs[s.name] - s.available)
        if cut > 0:
            old_specs[s.name] -= cut
            budget -= cut
    available = sum(s.available for s in sets)
    budget2 = available - min_available
    for s in olds:
        if budget2 <= 0:
            break
        cut = min(budget2, old_specs[s.name], s.available)
        if cut > 0:
            old_specs[s.name] -= cut
            budget2 -= cut
    for s in olds:
        if old_specs[s.name] != s.replicas:
            out.append(
                Scale(
                    s.name,
                    old_specs[s.name],
                    f"{available} available machines, {min_available} = {replicas} spec.replicas"
                    f" - {unavailable} maxUnavailable must stay available",
                )
            )
    return out


@dataclass(frozen=True)
class SetPlan:
    create: int
    delete: tuple[str, ...]
    reason: str


def plan_machine_set(machines: Sequence[MachineView], *, replicas: int) -> SetPlan:
    """Create or delete machines until the live count is ``replicas`` (not-Ready first, then oldest go)."""
    live = [m for m in machines if not m.deleting]
    if len(live) < replicas:
        return SetPlan(replicas - len(live), (), f"{len(live)} machines < {replicas} spec.replicas")
    if len(live) > replicas:
        order = sorted(live, key=lambda m: (m.ready, m.created, m.name))
        victims = tuple(m.name for m in order[: len(live) - replicas])
        return SetPlan(0, victims, f"{len(live)} machines > {replicas} spec.replicas")
    return SetPlan(0, (), f"{replicas} machines")


def _minor(version: str) -> tuple[int, int] | None:
    parts = version.lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def control_plane_stable(*, spec_version: str, status_version: str | None, rolling: bool) -> bool:
    """CAPI's ControlPlaneIsStable: the control plane is neither provisioning (no ``status.version``) nor
    upgrading (``status.version``, the lowest machine version, differs from ``spec.version``) nor rolling."""
    return bool(status_version) and status_version == spec_version and not rolling


def machineset_preflight(*, cp_stable: bool, cp_version: str | None, machine_version: str) -> str | None:
    """Why a MachineSet may not create a Machine now (CAPI's MachineSet preflight checks), or None.

    ControlPlaneIsStable, then KubernetesVersionSkew (the Machine's minor may not be newer than the control
    plane's). Messages follow upstream's ``PreflightCheckFailed`` wording.
    """
    if not cp_stable:
        return "ControlPlaneIsStable: the control plane is provisioning or upgrading"
    cp, m = _minor(cp_version or ""), _minor(machine_version)
    if cp is not None and m is not None and m > cp:
        return (f"KubernetesVersionSkew: the Machine's version {machine_version} is newer than the control "
                f"plane's {cp_version}")
    return None
