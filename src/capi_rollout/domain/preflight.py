"""Preflight: every reason not to start, all at once, and the warnings worth reading.

Contract: pure. :func:`preflight` takes the raw objects of the cluster (so messages can quote field paths),
the Talos status of every Machine address, and returns a :class:`PreflightReport`. Violations stop the run
before any action; warnings are reported in the summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capi_rollout.domain.decide import maintenance_message
from capi_rollout.domain.model import Machine
from capi_rollout.domain.state import MAINTENANCE, UNREACHABLE, ClusterState, NodeStatus
from capi_rollout.domain.strategy import (
    check_control_plane_strategy,
    check_machine_deployment_strategy,
    paused_reason,
)


@dataclass(frozen=True)
class PreflightReport:
    violations: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def preflight(
    *,
    cluster: Mapping[str, Any],
    control_plane: Mapping[str, Any],
    deployments: Sequence[Mapping[str, Any]],
    state: ClusterState,
    nodes: Mapping[str, NodeStatus],
) -> PreflightReport:
    violations: list[str] = []
    warnings: list[str] = []
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
            violations.append(maintenance_message(m, node.address))
        elif node.state == UNREACHABLE:
            warnings.append(f"Talos API of {m.node_name or m.name} ({node.address}) unreachable: {node.detail}")
        elif node.state == "denied":
            violations.append(
                f"the talosconfig is not allowed to reboot {m.node_name or m.name} ({node.address}): {node.detail}; "
                "it needs the os:admin or os:operator role"
            )

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
    return PreflightReport(tuple(violations), tuple(warnings))
