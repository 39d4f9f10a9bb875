"""The simulator refuses targets where it could touch something real (pure rules of ``sim.safety``)."""

from __future__ import annotations

from sim.safety import MARKER_LABEL, ControllerInfo, refusal_reasons


def reasons(**kw: object) -> list[str]:
    base: dict[str, object] = dict(namespace="sim-x", labels=None, exists=False, foreign_objects=[],
                                   controllers=[], allow_real_capi=False)
    base.update(kw)
    return refusal_reasons(**base)  # type: ignore[arg-type]


def test_a_new_namespace_on_a_cluster_without_capi_is_accepted() -> None:
    assert reasons() == []


def test_an_existing_namespace_without_the_marker_is_refused() -> None:
    assert any(MARKER_LABEL in r for r in reasons(exists=True, labels={"team": "a"}))
    assert reasons(exists=True, labels={MARKER_LABEL: "true"}) == []


def test_foreign_capi_objects_in_the_namespace_are_refused() -> None:
    out = reasons(exists=True, labels={MARKER_LABEL: "true"}, foreign_objects=["clusters/prod"])
    assert any("clusters/prod" in r for r in out)


def test_a_real_capi_controller_is_refused_even_with_allow_unless_confined() -> None:
    capi = ControllerInfo("capi-system", "capi-controller-manager", ("--leader-elect",))
    assert reasons(controllers=[capi])
    assert reasons(controllers=[capi], allow_real_capi=True)
    filtered = ControllerInfo("capi-system", "capi-controller-manager", ("--watch-filter=prod",))
    assert reasons(controllers=[filtered], allow_real_capi=True) == []
    assert reasons(controllers=[filtered]), "without --allow-real-capi any real controller is refused"
    elsewhere = ControllerInfo("capi-system", "capi-controller-manager", ("--namespace=prod",))
    assert reasons(controllers=[elsewhere], allow_real_capi=True) == []
    here = ControllerInfo("capi-system", "capi-controller-manager", ("--namespace=sim-x",))
    assert reasons(controllers=[here], allow_real_capi=True)


def test_unknown_controllers_are_refused_unless_allowed() -> None:
    assert reasons(controllers=None)
    assert reasons(controllers=None, allow_real_capi=True) == []
