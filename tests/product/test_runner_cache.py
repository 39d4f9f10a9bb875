"""The runner reading from an object cache: same decisions as with lists, and never a stale copy of its own delete.

The sequences of ``test_runner_sequences`` are replayed with :class:`~tests.fakes.FakeCache` as the ``watch`` seam:
a synced cache replaces the per-evaluation lists, and the golden logs stay byte-for-byte the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capi_rollout.domain.params import parse_params
from capi_rollout.domain.state import ClusterState
from capi_rollout.ledger_store import MemoryLedgerStore
from capi_rollout.rollout_loop import RolloutLoop
from tests.fakes import Clock, FakeCache, FakeControlPlaneController, FakeKube, FakeTalos
from tests.product.test_runner_sequences import T0, check_golden


@dataclass
class Rig:
    runner: RolloutLoop
    kube: FakeKube
    cache: FakeCache
    seen: list[tuple[str, ClusterState]] = field(default_factory=list)  # (where read, what seen) per evaluation
    deleted_at: list[int] = field(default_factory=list)  # evaluations done when each delete was sent
    cache_stale: list[bool] = field(default_factory=list)  # right after each delete: the cache still shows it alive


def make(faulty: dict[int, str] | None = None, *, delivers_writes: bool = True, synced: bool = True,
         freeze_after_waits: int | None = None) -> Rig:
    clock = Clock(T0)
    kube = FakeKube()
    controller = FakeControlPlaneController(kube, clock, faulty=faulty, seed=7)
    cache = FakeCache(clock, [controller], kube, delivers_writes=delivers_writes, synced=synced,
                      freeze_after_waits=freeze_after_waits)
    params = parse_params({"clusterName": "homelab", "pollInterval": "30s", "stallTimeout": "10m",
                           "controlPlaneTimeout": "45m", "maxRemediations": "2"})
    runner = RolloutLoop(params=params, kube=kube, store=MemoryLedgerStore(),
                    talos_factory=lambda _: FakeTalos(), clock=clock, out=kube.log.append, watch=cache,
                    sleep=lambda _: None)
    rig = Rig(runner, kube, cache)
    observe, delete = runner.observe, kube.delete_machine

    def spy_observe(**kwargs: Any) -> Any:
        out = observe(**kwargs)
        rig.seen.append((runner.last_read, out[3]))
        return out

    def spy_delete(namespace: str, name: str, uid: str) -> bool:
        rig.deleted_at.append(len(rig.seen))
        done = delete(namespace, name, uid)
        rig.cache_stale.append(not cache.snapshot().shows_deleting(uid))
        return done

    runner.observe = spy_observe  # type: ignore[method-assign]
    kube.delete_machine = spy_delete  # type: ignore[method-assign]
    runner.resolve()
    kube.machine_lists = 0
    return rig


def deleting(state: ClusterState, name: str) -> bool | None:
    """True/False for a Machine present in ``state``, None when it is gone."""
    m = next((m for m in state.machines if m.name == name), None)
    return None if m is None else m.deleting


def test_a_synced_cache_replaces_every_list_and_the_sequence_is_unchanged() -> None:
    rig = make()
    assert rig.runner.phase("control-plane").result == "succeeded"
    assert rig.kube.machine_lists == 0 and {src for src, _ in rig.seen} == {"cache"}
    check_golden("cp-rollout-no-faults", rig.kube.log)


def test_with_a_stall_the_remediation_is_confirmed_by_one_list_and_its_delete_shows_in_the_cache() -> None:
    rig = make({1: "not-ready"})
    record = rig.runner.phase("control-plane")
    assert [r.machine for r in record.remediations] == ["cp-new-1"]
    (at,) = rig.deleted_at
    # decided from the cache, confirmed by one LIST-based evaluation, then acted on
    assert [src for src, _ in rig.seen[at - 2:at]] == ["cache", "lists"] and rig.kube.machine_lists == 1
    assert rig.cache.barriers == [True, True]
    assert rig.cache_stale == [True], "the delete is not in the cache until the barrier waited for it"
    assert deleting(rig.seen[at - 1][1], "cp-new-1") is False
    assert rig.seen[at][0] == "cache" and deleting(rig.seen[at][1], "cp-new-1") is True
    check_golden("cp-stall-one-remediation", rig.kube.log)


def test_a_cache_that_never_shows_our_delete_forces_one_list_based_evaluation() -> None:
    rig = make({1: "not-ready"}, delivers_writes=False)
    record = rig.runner.phase("control-plane")
    assert record.result == "succeeded" and [r.machine for r in record.remediations] == ["cp-new-1"]
    assert rig.cache.barriers == [True, False]  # synced at the start; our delete never shown
    (at,) = rig.deleted_at
    # The cache still held the pre-delete copy: reading it would have shown cp-new-1 alive (and stalled)...
    assert rig.cache_stale == [True]
    # ...so the very next evaluation is a LIST and sees it deleting; then the runner goes back to the cache.
    source, state = rig.seen[at]
    assert source == "lists" and deleting(state, "cp-new-1") is True
    assert rig.kube.machine_lists == 2  # the confirmation before the delete, and this one
    assert {src for src, _ in rig.seen[at + 1:]} == {"cache"}


def test_a_silently_dead_watch_never_makes_the_runner_delete_a_machine() -> None:
    rig = make(freeze_after_waits=3)  # no faults: every stall the cache shows is its own staleness
    record = rig.runner.phase("control-plane")
    assert record.result == "succeeded" and record.remediations == ()
    assert rig.kube.deleted == [] and rig.kube.events == []
    assert "lists" in {src for src, _ in rig.seen}, "the stale cache did ask for a remediation, and a list said no"


def test_an_unsynced_cache_is_not_read_the_runner_lists_instead() -> None:
    rig = make(synced=False)
    assert rig.runner.phase("control-plane").result == "succeeded"
    assert {src for src, _ in rig.seen} == {"lists"} and rig.kube.machine_lists == len(rig.seen)
