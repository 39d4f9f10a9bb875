"""Control plane first: MachineDeployments that roll before the control plane is complete, as warnings.

Contract: pure. Without ClusterClass, CAPI rolls a changed TalosControlPlane and changed MachineDeployments at
the same time; this tool never patches CAPI, so it cannot hold workers back — it says so. :func:`workers_ahead`
returns, for each MachineDeployment that is rolling while the control plane is not complete, what shows it:

* its spec changed and the controller has not caught up (``observedGeneration < generation``);
* ``upToDate < spec.replicas`` (Machines still on the old template);
* its Machines being replaced (deleting).

It returns nothing once the control plane is complete. :func:`ahead_warning` is the stable text kept in the
ledger's warnings (once per MachineDeployment, whatever the evidence); the evidence goes to the progress line.
"""

from __future__ import annotations

from capi_rollout.domain.progress import control_plane_status
from capi_rollout.domain.state import ClusterState


def workers_ahead(state: ClusterState) -> dict[str, str]:
    """MachineDeployment name → evidence that it rolls before the control plane is complete (empty when none)."""
    if control_plane_status(state).complete:
        return {}
    out: dict[str, str] = {}
    for md in state.deployments:
        evidence: list[str] = []
        if md.observed_generation < md.meta.generation:
            evidence.append(f"spec changed: observedGeneration {md.observed_generation} < generation "
                            f"{md.meta.generation}")
        if md.up_to_date < md.spec_replicas:
            evidence.append(f"upToDate {md.up_to_date} < replicas {md.spec_replicas}")
        deleting = sorted(m.name for m in state.deployment_machines(md.meta.name) if m.deleting)
        if deleting:
            evidence.append(f"Machines being replaced: {', '.join(deleting)}")
        if evidence:
            out[md.meta.name] = ", ".join(evidence)
    return out


def ahead_warning(deployment: str, control_plane: str) -> str:
    """The warning for one MachineDeployment rolling before TalosControlPlane ``control_plane`` is complete."""
    return (f"MachineDeployment {deployment} is rolling before TalosControlPlane {control_plane} is complete: "
            "CAPI replaces workers alongside the control plane (this tool never holds them back); commit the "
            "control-plane change first and the MachineDeployment change once it is complete (docs/workflow.md, "
            "\"Control plane first\")")
