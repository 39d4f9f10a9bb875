"""Preflight: every reason not to start, all at once, and the warnings worth reading.

Contract: pure. :func:`preflight` takes the raw objects of the cluster (so messages can quote field paths),
the Talos status of every Machine address, the talosconfig client certificate's validity window with ``now``,
and — for ``rebootMode=force`` — every node's Talos version tag; it returns a :class:`PreflightReport`.
Violations stop the run before any action; warnings are reported in the summary. Talos rules:

* a node in maintenance mode, a node whose certificate cannot be trusted, a node refusing our role → violation;
* a client certificate that is expired or not yet valid → violation naming the date (every call would fail);
* ``force`` with any node older than Talos v1.12 (which would silently do a default reboot) → violation naming
  the nodes and versions; a node whose version could not be read → warning.

A MachineDeployment already rolling while the control plane is not complete → warning
(:mod:`capi_rollout.domain.ordering`): never a violation, the tool never patches CAPI.

Talos answers take time and the cluster moves meanwhile: before violations stop the run, the caller observes
again and :func:`still_meant` keeps only the answers that still speak for a Machine (one that still exists, with
the same uid and address); a Machine deleted while it was asked about blocks nothing and is named in a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from capi_rollout.domain.decide import maintenance_message, untrusted_message
from capi_rollout.domain.model import Machine
from capi_rollout.domain.ordering import ahead_warning, workers_ahead
from capi_rollout.domain.state import MAINTENANCE, UNREACHABLE, UNTRUSTED, ClusterState, NodeStatus
from capi_rollout.domain.strategy import (
    check_control_plane_strategy,
    check_machine_deployment_strategy,
    paused_reason,
)

FORCE_MIN_VERSION = (1, 12)


@dataclass(frozen=True)
class PreflightReport:
    violations: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def talos_minor(tag: str) -> tuple[int, int] | None:
    """``"v1.12.0"`` / ``"v1.13.0-alpha.1"`` → (1, 12); None when the tag is not a version."""
    parts = tag.strip().lstrip("v").split("-", 1)[0].split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def client_certificate_problem(validity: tuple[datetime, datetime] | None, now: datetime) -> str | None:
    """Why the talosconfig client certificate cannot be used at ``now`` (None when it can, or is unknown)."""
    if validity is None:
        return None
    not_before, not_after = validity
    if not_after < now:
        days = (now - not_after).days
        return (f"the talosconfig client certificate expired at {_ts(not_after)} ({days} days ago): every Talos call "
                "would be refused; renew it (the bootstrap provider's <cluster>-talosconfig Secret) and resubmit")
    if not_before > now:
        return (f"the talosconfig client certificate is not valid before {_ts(not_before)}: every Talos call would "
                "be refused; check this machine's clock or the certificate, then resubmit")
    return None


def still_meant(before: ClusterState, after: ClusterState,
                nodes: Mapping[str, NodeStatus]) -> tuple[dict[str, NodeStatus], list[str]]:
    """The Talos answers of ``nodes`` (asked about ``before``'s Machines) that still speak for a Machine in
    ``after``, and a warning for each non-running answer dropped because its Machine was deleted (or moved to
    another address) meanwhile: its address may already belong to another machine, whose answer says nothing
    about this one."""
    where = {m.meta.uid: m.address for m in after.machines}
    kept: dict[str, NodeStatus] = {}
    dropped: list[str] = []
    for m in before.machines:
        node = nodes.get(m.address or "")
        if node is None:
            continue
        if where.get(m.meta.uid) == m.address:
            kept[node.address] = node
        elif node.state != "running":
            what = f"moved to {where[m.meta.uid] or 'no address'}" if m.meta.uid in where else "was deleted"
            dropped.append(f"Machine {m.name} {what} while preflight asked Talos about it; what answered at its "
                           f"former address {node.address} ({node.state}: {node.detail or 'no detail'}) no longer "
                           "speaks for it and blocks nothing")
    return kept, dropped


def force_problems(machines: Sequence[Machine], versions: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(violations, warnings) for ``rebootMode=force``: nodes older than Talos v1.12, nodes of unknown version."""
    old: list[str] = []
    unknown: list[str] = []
    for m in machines:
        tag = versions.get(m.address or "")
        if tag is None:
            continue
        who = f"{m.node_name or m.name} ({m.address})"
        parsed = talos_minor(tag)
        if parsed is None:
            unknown.append(f"{who}: {tag}")
        elif parsed < FORCE_MIN_VERSION:
            old.append(f"{who} runs {tag}")
    violations = [
        f"rebootMode=force needs Talos v1.12 or later on every node, and {len(old)} run older Talos: "
        f"{'; '.join(old)} (older Talos silently does a default reboot); use rebootMode=powercycle or default"
    ] if old else []
    warnings = [
        f"rebootMode=force: the Talos version of {len(unknown)} nodes could not be read ({'; '.join(unknown)}); a "
        "remediation reboot of such a node is refused if it turns out older than v1.12"
    ] if unknown else []
    return violations, warnings


def preflight(
    *,
    cluster: Mapping[str, Any],
    control_plane: Mapping[str, Any],
    deployments: Sequence[Mapping[str, Any]],
    state: ClusterState,
    nodes: Mapping[str, NodeStatus],
    client_certificate: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    versions: Mapping[str, str] | None = None,
) -> PreflightReport:
    violations: list[str] = []
    warnings: list[str] = []
    if now is not None:
        problem = client_certificate_problem(client_certificate, now)
        if problem:
            violations.append(problem)
    violations += check_control_plane_strategy(control_plane)
    for md in deployments:
        violations += check_machine_deployment_strategy(md)
    for obj in (cluster, control_plane, *deployments):
        reason = paused_reason(obj)
        if reason:
            violations.append(reason)

    for m in state.machines:
        node = nodes.get(m.address or "")
        if node is None:
            continue
        if node.state == MAINTENANCE:
            violations.append(maintenance_message(m, node.address, node.detail))
        elif node.state == UNTRUSTED:
            violations.append(untrusted_message(m, node.address, node.detail))
        elif node.state == UNREACHABLE:
            warnings.append(f"Talos API of {m.node_name or m.name} ({node.address}) unreachable: {node.detail}")
        elif node.state == "denied":
            violations.append(
                f"the talosconfig is not allowed to reboot {m.node_name or m.name} ({node.address}): {node.detail}; "
                "it needs the os:admin or os:operator role"
            )

    if versions is not None:
        force_violations, force_warnings = force_problems(state.machines, versions)
        violations += force_violations
        warnings += force_warnings

    selected: dict[str, list[Machine]] = {}
    for hc in state.health_checks:
        hit = [m for m in state.machines if hc.selects(m)]
        if hit:
            selected[hc.meta.name] = hit
    for name, hit in sorted(selected.items()):
        warnings.append(
            f"MachineHealthCheck {name} selects {len(hit)} of this cluster's Machines "
            f"({', '.join(m.name for m in hit[:5])}{', ...' if len(hit) > 5 else ''}): it remediates the same "
            "Machines and races with this tool"
        )
    if state.control_plane.spec_replicas == 1:
        warnings.append(
            f"TalosControlPlane {state.control_plane.meta.name} has a single replica: a control-plane stall cannot "
            "be remediated without losing etcd, and the API is down while its machine is replaced"
        )
    for name, evidence in workers_ahead(state).items():
        warnings.append(f"{ahead_warning(name, state.control_plane.meta.name)} ({evidence})")
    return PreflightReport(tuple(violations), tuple(warnings))
