"""One rollout per cluster: the claim decision (pure) and the runner's resolve waiting on it (a fake claim store).

The real store against a real API server, with the runner's own token, is tested in tests/product/test_rbac.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from capi_rollout.domain.claim import Holder, decide_claim
from capi_rollout.domain.params import parse_params
from capi_rollout.ledger_store import MemoryLedgerStore
from capi_rollout.rollout_loop import RolloutLoop
from capi_rollout.step_table import StepFailed
from tests.fakes import Clock, FakeControlPlaneController, FakeKube

ME = Holder("capi-rollout-b", "uid-b", "2026-03-01T12:00:00Z")
OTHER = Holder("capi-rollout-a", "uid-a", "2026-03-01T11:50:00Z")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("current", "phase", "action"), [
    (None, None, "create"),
    (ME, None, "mine"),
    (Holder(ME.workflow, ME.uid, "another since"), "Running", "mine"),
    (OTHER, "Running", "held"),
    (OTHER, "Pending", "held"),
    (OTHER, "", "held"),
    (OTHER, "Succeeded", "take-over"),
    (OTHER, "Failed", "take-over"),
    (OTHER, "Error", "take-over"),
    (OTHER, None, "take-over"),
    (Holder(ME.workflow, "an older uid"), None, "take-over"),  # same name, resubmitted: the old run is gone
])
def test_the_claim_decision(current: Holder | None, phase: str | None, action: str) -> None:
    decision = decide_claim(cluster="default/homelab", current=current, me=ME, holder_phase=phase)
    assert decision.action == action
    assert "default/homelab" in decision.reason
    if action == "held":
        assert OTHER.workflow in decision.reason and OTHER.since in decision.reason


class FakeClaim:
    """The claim store's contract in memory; ``phases`` is what the holder's Workflow says at each read."""

    def __init__(self, clock: Clock, current: Holder | None, phases: list[str | None],
                 lose_first_write: bool = False) -> None:
        self.clock, self.current, self.phases = clock, current, phases
        self.me = ME
        self.version = 1
        self.writes: list[str | None] = []
        self.lose_first_write = lose_first_write

    def read(self) -> tuple[Holder | None, str | None]:
        return self.current, (str(self.version) if self.current else None)

    def holder_phase(self, holder: Holder) -> str | None:
        return self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]

    def write(self, resource_version: str | None) -> bool:
        self.writes.append(resource_version)
        if self.lose_first_write:
            self.lose_first_write = False
            self.current, self.version = OTHER, self.version + 1  # another run created it first
            return False
        self.current, self.version = ME, self.version + 1
        return True


def make(claim: FakeClaim, clock: Clock, lines: list[str]) -> tuple[RolloutLoop, FakeKube]:
    kube = FakeKube()
    FakeControlPlaneController(kube, clock)  # a TalosControlPlane and its Machines to resolve
    params = parse_params({"clusterName": "homelab", "pollInterval": "30s"})
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    runner = RolloutLoop(params=params, kube=kube, store=MemoryLedgerStore(), clock=clock,
                    out=lines.append, sleep=sleep, claim=claim)  # type: ignore[arg-type]
    return runner, kube


def test_resolve_takes_over_the_claim_of_a_run_that_ended() -> None:
    clock, lines = Clock(T0), list[str]()
    claim = FakeClaim(clock, OTHER, ["Succeeded"])
    runner, _ = make(claim, clock, lines)
    runner.resolve()
    assert claim.current == ME and claim.writes == ["1"], "taken over with the resourceVersion read"
    assert any("which ended (Succeeded)" in line for line in lines), lines
    assert any(line.endswith("Secret homelab-talosconfig") for line in lines), "resolved after the claim"


def test_resolve_fails_at_once_without_acting_while_a_live_run_holds_the_claim() -> None:
    """Never wait: a run that got past Argo's mutex holds it, so the holder could not finish while it waited."""
    clock, lines = Clock(T0), list[str]()
    claim = FakeClaim(clock, OTHER, ["Running"])
    runner, kube = make(claim, clock, lines)
    with pytest.raises(StepFailed, match=r"another rollout of default/homelab is running: .*capi-rollout-a") as err:
        runner.resolve()
    assert "did not act" in str(err.value) and "resubmit" in str(err.value)
    assert clock.now == T0, "no waiting"
    assert claim.current == OTHER and claim.writes == []
    assert not runner.ledger.targets, "nothing resolved, nothing written"
    assert kube.deleted == []


def test_a_lost_create_race_is_read_again() -> None:
    clock, lines = Clock(T0), list[str]()
    claim = FakeClaim(clock, None, ["Running"], lose_first_write=True)
    runner, _ = make(claim, clock, lines)
    with pytest.raises(StepFailed, match="another rollout"):
        runner.resolve()  # the run that won the race is live
    assert claim.writes == [None] and claim.current == OTHER
    claim = FakeClaim(clock, None, ["Failed"], lose_first_write=True)
    runner, _ = make(claim, clock, lines)
    runner.resolve()  # the run that won the race has ended since
    assert claim.writes == [None, "2"] and claim.current == ME


def test_a_retried_resolve_of_the_holder_goes_straight_on() -> None:
    clock, lines = Clock(T0), list[str]()
    claim = FakeClaim(clock, ME, ["Running"])
    runner, _ = make(claim, clock, lines)
    runner.resolve()
    assert claim.writes == [] and clock.now == T0


def test_a_claim_this_tool_did_not_write_stops_resolve_with_its_reason() -> None:
    from capi_rollout.claim_store import ClaimUnusable

    class Foreign(FakeClaim):
        def read(self) -> tuple[Holder | None, str | None]:
            raise ClaimUnusable("RolloutLedger argo/capi-rollout-claim-default-homelab: not a claim capi-rollout "
                                "wrote (labels or spec.holder missing); delete it if no rollout of this cluster runs")

    clock, lines = Clock(T0), list[str]()
    runner, _ = make(Foreign(clock, None, [None]), clock, lines)
    with pytest.raises(StepFailed, match=r"^RolloutLedger argo/capi-rollout-claim-default-homelab: not a claim"):
        runner.resolve()
