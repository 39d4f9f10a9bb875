"""``make bench``: how long one engine evaluation takes over a large snapshot.

One evaluation = reading every object into the domain views, deciding which addresses to probe, and the
per-poll decision — exactly what the runner does between two API reads. "Cold" reads every Machine
afresh (the first poll); "warm" is a later poll where the runner's MachineViews reuses unchanged Machines.
Reported as median / p95 / max over repeated runs; never asserted in tests (targets are read by people).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from capi_rollout.domain.decide import addresses_to_probe, decide
from capi_rollout.domain.ledger import PhaseRecord
from capi_rollout.domain.params import parse_params
from capi_rollout.domain.state import ClusterState
from capi_rollout.observation import MachineViews
from tests import builders as b


def snapshot(machines: int) -> dict[str, Any]:
    deployments = 50
    objs = [b.machine(f"cp-{i}", cp=True, address=f"10.0.0.{i}") for i in range(5)]
    mds = []
    for d in range(deployments):
        name = f"md-{d:02d}"
        per_md = (machines - 5) // deployments + (1 if d < (machines - 5) % deployments else 0)
        mds.append(b.md(name, replicas=per_md, up_to_date=per_md - 1))
        for i in range(per_md):
            ready = not (d == 7 and i == 3)
            objs.append(b.machine(f"{name}-m{i:04d}", deployment=name, ready=ready,
                                  address=f"10.{d}.{i // 250}.{i % 250}"))
    return {"cluster": b.cluster(), "control_plane": b.tcp(replicas=5, ready=5), "deployments": mds,
            "machines": objs}


def stamp(snap: dict[str, Any]) -> None:
    """Give every Machine a uid and resourceVersion, as the API server does."""
    for i, m in enumerate(snap["machines"]):
        m["metadata"]["resourceVersion"] = str(1000 + i)


def timed(rounds: int, evaluate: Callable[[], str]) -> tuple[list[float], str]:
    samples = []
    kind = ""
    for _ in range(rounds):
        start = time.perf_counter()
        kind = evaluate()
        samples.append((time.perf_counter() - start) * 1000)
    return sorted(samples), kind


def report(label: str, samples: list[float]) -> None:
    p95 = samples[max(int(len(samples) * 0.95) - 1, 0)]
    print(f"  {label:<44} median {statistics.median(samples):6.1f} ms   p95 {p95:6.1f} ms   max {samples[-1]:6.1f} ms")


def main(machines: int = 5000, rounds: int = 50) -> int:
    snap = snapshot(machines)
    stamp(snap)
    params = parse_params({"clusterName": "homelab"})
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    record = PhaseRecord(name="workers", started=t0, last_progress=t0, fingerprint="stale")
    now = t0 + timedelta(minutes=11)

    def evaluate(views: MachineViews | None) -> str:
        state = ClusterState.from_objects(**snap, views=views)
        addresses_to_probe(phase="workers", state=state, now=now, params=params)
        return decide(phase="workers", state=state, record=record, nodes={}, now=now, params=params).kind

    cold, kind = timed(rounds, lambda: evaluate(None))
    views = MachineViews()
    evaluate(views)
    warm, _ = timed(rounds, lambda: evaluate(views))
    print(f"engine evaluation over {len(snap['machines'])} Machines in {len(snap['deployments'])} "
          f"MachineDeployments, {rounds} rounds each (decision: {kind}); target: median <= 20 ms")
    report("cold (every Machine read afresh):", cold)
    report("warm (a later poll, unchanged Machines reused):", warm)
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:])))
