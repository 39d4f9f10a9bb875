"""``python -m tests.bench.scale``: one simulator process, 1,000 Machines, the rollout engine watching, at 60x.

On the real local API server (``envtest``) it builds one cluster of 3 control-plane Machines and 20
MachineDeployments (997 workers; maxSurge 0 / maxUnavailable 1, the strategy the engine accepts), with the fake
Talos API of every node, triggers a TCP + MachineDeployment change (both at once) and runs ``capi-rollout run``
(through ``tests.bench.runner``, which counts its requests and times its evaluations) in a child process until it
ends. It reports the machines simulated, the simulator's passes (count, passes/s, pass time), the API requests per
minute of the simulator and of the runner, the runner's evaluation time (``observe`` = objects into domain views,
``decide``) and peak memory, and whether the whole rollout completed. Figures are for people (README); nothing here
is asserted by a test.

    python -m tests.bench.scale [--machines 1000] [--deployments 20] [--timings default|fast] [--time-scale 60]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from envtest import LocalAPIServer
from sim.scenario import DeploymentSpec, Scenario, Timings
from sim.simulator import Simulator

FAST = dict(pending=3, provisioning=12, boot=12, node_ready=6, deletion=6, reboot=30)  # the e2e FAST_TIMINGS


def build(machines: int, deployments: int, timings: str, scale: float) -> Scenario:
    workers = machines - 3
    per, extra = divmod(workers, deployments)
    mds = tuple(DeploymentSpec(name=f"md-{i:02d}", replicas=per + (1 if i < extra else 0), max_surge=0,
                               max_unavailable=1) for i in range(deployments))
    t = Timings(jitter=0.2, seed=3, time_scale=scale, **(FAST if timings == "fast" else {}))
    return Scenario(cluster="bench", namespace=f"bench-{uuid.uuid4().hex[:6]}", cp_replicas=3, deployments=mds,
                    timings=t, trigger="both").validate()


class Counter:
    """Counts the requests of one kubernetes ApiClient (a watch stream counts once)."""

    def __init__(self, api: Any) -> None:
        self.count = 0
        self._lock = threading.Lock()
        rest = api.rest_client
        original = rest.request

        def request(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.count += 1
            return original(*args, **kwargs)

        rest.request = request


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered):.1f} ms, p95 {p95:.1f} ms, max {ordered[-1]:.1f} ms"


def _last_word(output: str) -> str:
    """The runner's last line that is not a warning (warnings are repeated in the summary)."""
    lines = [line for line in output.strip().splitlines() if line.strip() and "warning:" not in line]
    return lines[-1][:160] if lines else ""


def _schedule(s: Scenario) -> float:
    """Wall seconds the slowest MachineDeployment's rollout takes if the simulator never lags (no jitter): one
    machine at a time, each deleted, then its replacement booted to Ready."""
    t = s.timings
    per_machine = t.deletion + t.pending + t.provisioning + t.boot + t.node_ready
    return max(d.replicas for d in s.deployments) * per_machine / t.time_scale


def run(machines: int, deployments: int, timings: str, scale: float, timeout: float) -> dict[str, Any]:
    s = build(machines, deployments, timings, scale)
    with LocalAPIServer(capi_line=s.capi_line, extra_crds=("talos",)) as server:
        api = server.api_client()
        counter = Counter(api)
        sim = Simulator(api, s)
        durations: list[float] = []
        original = sim.controllers.reconcile

        def timed() -> float | None:
            start = time.perf_counter()
            try:
                return original()
            finally:
                durations.append((time.perf_counter() - start) * 1000)

        sim.controllers.reconcile = timed  # type: ignore[method-assign]
        t0 = time.monotonic()
        with sim:
            setup = time.monotonic() - t0
            created = len(sim.machines())
            print(f"simulating {created} Machines ({deployments} MachineDeployments) after {setup:.1f}s of setup",
                  flush=True)
            stats_file = Path(tempfile.mkdtemp(prefix="bench-runner-")) / "stats.json"
            params = ["--clusterName", s.cluster, "--clusterNamespace", s.namespace, "--pollInterval", "5s",
                      "--stallTimeout", "5m", "--controlPlaneTimeout", "30m", "--workersTimeout", "60m"]
            requests0, passes0, n0 = counter.count, sim.controllers.passes, len(durations)
            sim.trigger_rollout()
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "tests.bench.runner", "run", *params, "--kubeconfig",
                 str(server.kubeconfig_path)],
                env={**os.environ, "BENCH_RUNNER_STATS": str(stats_file)}, capture_output=True, text=True,
                timeout=timeout)
            wall = time.monotonic() - started
            sim_requests, passes = counter.count - requests0, sim.controllers.passes - passes0
            rolled = [e.subject for e in sim.timeline.events("rollout.completed")]
            replaced = len(sim.timeline.events("machine.deleted"))
            errors = list(sim.controllers.errors)
            pass_ms = durations[n0:]
        runner_stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        api.close()  # type: ignore[no-untyped-call]  # kubernetes' ApiClient.close is unannotated
    minutes = wall / 60
    evaluations = [a + b for a, b in zip(runner_stats.get("observe_ms", []), runner_stats.get("decide_ms", []),
                                         strict=False)]
    return {
        "machines": created, "deployments": deployments, "timings": timings, "time_scale": scale,
        "setup_s": round(setup, 1), "rollout_wall_s": round(wall, 1), "schedule_wall_s": round(_schedule(s), 1),
        "runner_exit": proc.returncode, "runner_said": _last_word(proc.stdout),
        "rollouts_completed": len(set(rolled)), "machines_replaced": replaced, "sim_errors": len(errors),
        "sim_passes": passes, "sim_passes_per_s": round(passes / wall, 2), "sim_pass": _ms(pass_ms),
        "sim_requests_per_min": round(sim_requests / minutes), "sim_max_rss_mb":
            round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "runner_requests_per_min": round(runner_stats.get("requests", 0) / minutes),
        "runner_evaluations": len(evaluations), "runner_evaluation": _ms(evaluations),
        "runner_observe": _ms(runner_stats.get("observe_ms", [])),
        "runner_decide": _ms(runner_stats.get("decide_ms", [])),
        "runner_max_rss_mb": round(runner_stats.get("max_rss_mb", 0)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.scale")
    p.add_argument("--machines", type=int, default=1000)
    p.add_argument("--deployments", type=int, default=20)
    p.add_argument("--timings", choices=("default", "fast"), default="default")
    p.add_argument("--time-scale", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=1800.0, help="wall seconds the runner may take")
    args = p.parse_args(argv)
    result = run(args.machines, args.deployments, args.timings, args.time_scale, args.timeout)
    for key, value in result.items():
        print(f"  {key:<26} {value}")
    return 0 if result["runner_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
