"""Control plane first: MachineDeployments rolling before the control plane is complete are a warning."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

from capi_rollout.domain.decide import decide
from capi_rollout.domain.ledger import PhaseRecord
from capi_rollout.domain.ordering import workers_ahead
from capi_rollout.domain.params import parse_params
from capi_rollout.domain.preflight import preflight
from capi_rollout.domain.state import ClusterState
from tests import builders as b

T0 = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
PARAMS = parse_params({"clusterName": "homelab"})


class TcpRollout(TypedDict):
    """The ``b.tcp`` keywords of a control plane mid-rollout."""

    generation: int
    observed: int
    up_to_date: bool


ROLLING_CP: TcpRollout = {"generation": 2, "observed": 1, "up_to_date": False}


def healthy_cp() -> list[dict[str, Any]]:
    return [b.machine(f"cp-{i}", cp=True, address=f"10.0.0.{i}") for i in range(3)]


def state(md: dict[str, Any], machines: list[dict[str, Any]] | None = None, **tcp: Any) -> ClusterState:
    return ClusterState.from_objects(cluster=b.cluster(), control_plane=b.tcp(**tcp), deployments=[md],
                                     machines=[*healthy_cp(), *(machines or [])])


def test_a_machine_deployment_whose_spec_changed_before_the_control_plane_completed_is_reported() -> None:
    assert workers_ahead(state(b.md(generation=2, observed=1), **ROLLING_CP)) == {
        "homelab-workers": "spec changed: observedGeneration 1 < generation 2"}


def test_machines_still_on_the_old_template_and_machines_being_replaced_are_reported() -> None:
    s = state(b.md(up_to_date=0), [b.machine("w-0", deleting="2026-01-01T00:59:00Z")], **ROLLING_CP)
    assert workers_ahead(s) == {"homelab-workers": "upToDate 0 < replicas 2, Machines being replaced: w-0"}


def test_a_settled_machine_deployment_is_not_reported_while_the_control_plane_rolls() -> None:
    assert workers_ahead(state(b.md(), **ROLLING_CP)) == {}


def test_nothing_is_reported_once_the_control_plane_is_complete() -> None:
    assert workers_ahead(state(b.md(generation=2, observed=1, up_to_date=0))) == {}


def test_the_control_plane_phase_warns_in_its_progress_line_and_never_fails_for_it() -> None:
    s = state(b.md(generation=2, observed=1, up_to_date=0), **ROLLING_CP)
    rec = PhaseRecord(name="control-plane", started=T0, last_progress=T0)
    action = decide(phase="control-plane", state=s, record=rec, nodes={}, now=T0, params=PARAMS)
    assert action.kind == "wait"
    assert action.progress.endswith("; WARNING: MachineDeployment homelab-workers rolling before the control plane "
                                    "is complete (spec changed: observedGeneration 1 < generation 2, upToDate 0 "
                                    "< replicas 2)")
    (warning,) = action.warnings
    assert warning.startswith("MachineDeployment homelab-workers is rolling before TalosControlPlane homelab-cp "
                              "is complete: CAPI replaces workers alongside the control plane")
    assert "commit the control-plane change first" in warning


def test_the_workers_phase_does_not_warn_about_its_own_rollout() -> None:
    s = state(b.md(generation=2, observed=1, up_to_date=0))
    rec = PhaseRecord(name="workers", started=T0, last_progress=T0)
    action = decide(phase="workers", state=s, record=rec, nodes={}, now=T0, params=PARAMS)
    assert action.warnings == () and "WARNING" not in action.progress


def test_preflight_warns_about_workers_rolling_ahead_and_still_passes() -> None:
    md = b.md(generation=2, observed=1, up_to_date=0)
    report = preflight(cluster=b.cluster(), control_plane=b.tcp(**ROLLING_CP), deployments=[md],
                       state=state(md, **ROLLING_CP), nodes={})
    assert report.ok
    assert [w for w in report.warnings if w.startswith("MachineDeployment homelab-workers is rolling before")]
    assert any(w.endswith("(spec changed: observedGeneration 1 < generation 2, upToDate 0 < replicas 2)")
               for w in report.warnings)
