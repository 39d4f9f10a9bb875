"""Rollout-strategy rules: maxSurge 0 for the control plane; maxSurge 0 / maxUnavailable 1 for workers."""

import pytest

from capi_rollout.domain.strategy import (
    check_control_plane_strategy,
    check_machine_deployment_strategy,
    paused_reason,
    resolve_int_or_percent,
)
from tests import builders as b


@pytest.mark.parametrize(
    ("value", "total", "round_up", "expected"),
    [(0, 3, True, 0), ("0%", 3, True, 0), ("25%", 10, True, 3), ("25%", 10, False, 2), ("1%", 3, True, 1),
     ("1%", 3, False, 0), ("50%", 3, False, 1), ("100%", 1, False, 1), (None, 3, True, 1)],
)
def test_int_or_percent_resolves_like_capi(value: object, total: int, round_up: bool, expected: int) -> None:
    assert resolve_int_or_percent(value, total=total, round_up=round_up, default=1) == expected  # type: ignore[arg-type]


def test_a_control_plane_with_max_surge_zero_is_safe() -> None:
    assert check_control_plane_strategy(b.tcp(max_surge=0)) == []
    assert check_control_plane_strategy(b.tcp(max_surge="0%")) == []


def test_a_missing_control_plane_max_surge_is_the_crd_default_one_and_unsafe() -> None:
    (problem,) = check_control_plane_strategy(b.tcp(max_surge=None))
    assert "maxSurge is not set, which defaults to 1" in problem


def test_a_missing_control_plane_strategy_type_defaults_to_rolling_update() -> None:
    assert check_control_plane_strategy(b.tcp(strategy_type=None, max_surge=0)) == []


@pytest.mark.parametrize(("surge", "resolved"), [(1, "1"), ("34%", "2")])
def test_a_surging_control_plane_is_unsafe(surge: object, resolved: str) -> None:
    (problem,) = check_control_plane_strategy(b.tcp(max_surge=surge))
    assert f"resolves to {resolved}; it must be 0" in problem


def test_on_delete_control_plane_is_refused() -> None:
    (problem,) = check_control_plane_strategy(b.tcp(strategy_type="OnDelete"))
    assert "OnDelete" in problem


@pytest.mark.parametrize("v", ["v1beta1", "v1beta2"])
def test_a_machine_deployment_with_surge_zero_unavailable_one_is_safe_in_both_shapes(v: str) -> None:
    assert check_machine_deployment_strategy(b.md(v=v, max_surge=0, max_unavailable=1)) == []


@pytest.mark.parametrize("v", ["v1beta1", "v1beta2"])
def test_machine_deployment_defaults_are_unsafe_and_both_fields_are_reported(v: str) -> None:
    problems = check_machine_deployment_strategy(b.md(v=v, max_surge=None, max_unavailable=None))
    path = "spec.strategy" if v == "v1beta1" else "spec.rollout.strategy"
    assert problems == [
        f"MachineDeployment default/homelab-workers: {path}.rollingUpdate.maxSurge is not set (CAPI default 1); set 0",
        f"MachineDeployment default/homelab-workers: {path}.rollingUpdate.maxUnavailable is not set "
        "(CAPI default 0); set 1",
    ]


def test_machine_deployment_percentages_resolve_against_replicas() -> None:
    assert check_machine_deployment_strategy(b.md(replicas=4, max_surge="0%", max_unavailable="25%")) == []
    (problem,) = check_machine_deployment_strategy(b.md(replicas=10, max_surge=0, max_unavailable="25%"))
    assert "'25%' resolves to 2 for 10 replicas; it must be 1" in problem


def test_max_unavailable_two_is_unsafe() -> None:
    (problem,) = check_machine_deployment_strategy(b.md(max_unavailable=2))
    assert "maxUnavailable 2 resolves to 2" in problem


def test_a_numeric_string_is_not_an_int_or_percent() -> None:
    (problem,) = check_machine_deployment_strategy(b.md(max_surge="0"))
    assert "without '%'" in problem


def test_paused_objects_are_named() -> None:
    assert paused_reason(b.md()) is None
    assert "spec.paused" in (paused_reason(b.md(paused=True)) or "")
    assert "cluster.x-k8s.io/paused" in (paused_reason(b.tcp(annotations={"cluster.x-k8s.io/paused": ""})) or "")
    assert "spec.paused" in (paused_reason(b.cluster(paused=True)) or "")
