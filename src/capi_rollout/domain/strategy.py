"""Rollout-strategy and pause rules, shared by preflight and ``capi-rollout lint``.

Contract: pure. Each check takes one object dict and returns human-readable violations (empty = safe).

The tool only drives rollouts that replace one machine at a time without surging:

* TalosControlPlane: ``spec.rolloutStrategy.type`` RollingUpdate (the CRD default) and
  ``rollingUpdate.maxSurge`` resolving to 0. An absent maxSurge is the CRD default 1 — unsafe.
* MachineDeployment: strategy type RollingUpdate (v1beta1 ``spec.strategy``, v1beta2 ``spec.rollout.strategy``)
  with maxSurge → 0 and maxUnavailable → 1. Absent values take CAPI's defaults (maxSurge 1, maxUnavailable 0),
  so both must be set. Percentages resolve against ``spec.replicas`` the way CAPI does
  (``intstr.GetScaledValueFromIntOrPercent``): maxSurge rounds up, maxUnavailable rounds down.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from capi_rollout.domain.model import PAUSED_ANNOTATION, api_version_of

_PERCENT = re.compile(r"^(\d+)%$")


class IntOrStringError(ValueError):
    pass


def resolve_int_or_percent(value: int | str | None, *, total: int, round_up: bool, default: int) -> int:
    """Resolve an IntOrString against ``total`` (``"25%"`` of 10 → 3 rounding up, 2 rounding down)."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise IntOrStringError(f"{value!r} is not an integer or a percentage")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        # The API server keeps "1" as a string; CAPI rejects non-percent strings, so flag it.
        raise IntOrStringError(f"{text!r} is a string without '%': write the integer {text} or a percentage")
    m = _PERCENT.match(text)
    if not m:
        raise IntOrStringError(f"{text!r} is not an integer or a percentage like '25%'")
    scaled = int(m.group(1)) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def _name(obj: Mapping[str, Any]) -> str:
    md = obj.get("metadata") or {}
    ns = f"{md['namespace']}/" if md.get("namespace") else ""
    return f"{obj.get('kind', 'object')} {ns}{md.get('name', '?')}"


def check_control_plane_strategy(tcp: Mapping[str, Any]) -> list[str]:
    """Violations of the TalosControlPlane's rolloutStrategy (maxSurge must resolve to 0)."""
    spec = tcp.get("spec") or {}
    strategy = spec.get("rolloutStrategy") or {}
    replicas = spec.get("replicas", 1) or 0
    who = _name(tcp)
    kind = strategy.get("type") or "RollingUpdate"
    if kind != "RollingUpdate":
        return [
            f"{who}: spec.rolloutStrategy.type is {kind}; set RollingUpdate with rollingUpdate.maxSurge: 0 "
            "(OnDelete never replaces machines by itself)"
        ]
    raw = (strategy.get("rollingUpdate") or {}).get("maxSurge")
    if raw is None:
        return [
            f"{who}: spec.rolloutStrategy.rollingUpdate.maxSurge is not set, which defaults to 1 (a surge machine "
            "joins etcd during the rollout); set maxSurge: 0"
        ]
    try:
        surge = resolve_int_or_percent(raw, total=replicas, round_up=True, default=1)
    except IntOrStringError as exc:
        return [f"{who}: spec.rolloutStrategy.rollingUpdate.maxSurge {exc}"]
    if surge != 0:
        return [f"{who}: spec.rolloutStrategy.rollingUpdate.maxSurge {raw!r} resolves to {surge}; it must be 0"]
    return []


def check_machine_deployment_strategy(md: Mapping[str, Any]) -> list[str]:
    """Violations of a MachineDeployment's strategy (maxSurge → 0, maxUnavailable → 1), either CAPI shape."""
    spec = md.get("spec") or {}
    if api_version_of(md) == "v1beta1":
        path, strategy = "spec.strategy", spec.get("strategy") or {}
    else:
        path, strategy = "spec.rollout.strategy", (spec.get("rollout") or {}).get("strategy") or {}
    replicas = spec.get("replicas", 1) or 0
    who = _name(md)
    kind = strategy.get("type") or "RollingUpdate"
    if kind != "RollingUpdate":
        return [f"{who}: {path}.type is {kind}; set RollingUpdate with maxSurge: 0 and maxUnavailable: 1"]
    rolling = strategy.get("rollingUpdate") or {}
    problems: list[str] = []
    for field, round_up, default, want in (("maxSurge", True, 1, 0), ("maxUnavailable", False, 0, 1)):
        raw = rolling.get(field)
        if raw is None:
            problems.append(f"{who}: {path}.rollingUpdate.{field} is not set (CAPI default {default}); set {want}")
            continue
        try:
            value = resolve_int_or_percent(raw, total=replicas, round_up=round_up, default=default)
        except IntOrStringError as exc:
            problems.append(f"{who}: {path}.rollingUpdate.{field} {exc}")
            continue
        if value != want:
            problems.append(
                f"{who}: {path}.rollingUpdate.{field} {raw!r} resolves to {value} for {replicas} replicas; "
                f"it must be {want}"
            )
    return problems


def paused_reason(obj: Mapping[str, Any]) -> str | None:
    """Why CAPI controllers would not reconcile this object (spec.paused or the paused annotation), or None."""
    md = obj.get("metadata") or {}
    who = _name(obj)
    if PAUSED_ANNOTATION in (md.get("annotations") or {}):
        return f"{who} carries the annotation {PAUSED_ANNOTATION}: CAPI does not reconcile it, no rollout can progress"
    if (obj.get("spec") or {}).get("paused"):
        return f"{who} has spec.paused: true: its rollout cannot progress"
    return None
