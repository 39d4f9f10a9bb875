"""`python -m e2e.measure`: the numbers issue 6 asks for, measured on scenario 2 (control-plane stall, one remediation).

Contract: starts its own local API server (CAPI v1.14) and plays scenario 2 as the e2e suite does
(``e2e.harness``), while a sampler thread records, every 50 ms, the run's ledger (the control-plane phase's
``lastProgress``) and, every 0.5 s, the API server's ``/metrics``. It prints and writes
(``results/measure/measure.txt``):

* **stall → deletion**: from the moment the stall timeout elapsed (the last ``lastProgress`` the ledger held before
  the first remediation appeared, plus ``stallTimeout``) to the ``machine.deleting`` event of the remediated Machine
  in the simulator's timeline (and to the fake Talos API's ``talos.reboot``);
* **API requests per minute of the runner**: ``apiserver_flowcontrol_dispatched_requests_total`` of the
  ``service-accounts`` flow schema — only ServiceAccount tokens land there, and the runner's is the only one in
  use (the simulator and the harness act as ``system:masters``, flow schema ``exempt``) — over the whole run and
  over the control-plane step alone; ``apiserver_request_total`` (everyone, simulator included) for comparison.

Exit status 0 when the run succeeded and every number could be taken, 1 otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e.argo_local import WorkflowRun
from e2e.harness import Stage, parameters, scaled
from e2e.simhandles import SimHandle
from envtest import LocalAPIServer

EXTRA_CRDS = ("talos", "argo-workflows", "argo-events", "argo-cd")
RUNNER_FLOW = 'apiserver_flowcontrol_dispatched_requests_total{flow_schema="service-accounts"'
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?P<labels>\{[^}]*\})? (?P<value>[0-9.e+-]+)$")


def metrics_text(server: LocalAPIServer) -> str:
    """The API server's Prometheus text (as admin)."""
    api = server.admin
    request = api.param_serialize("GET", "/metrics", header_params={"Accept": "text/plain"},
                                  auth_settings=["BearerToken"])
    response: Any = api.call_api(*request, _request_timeout=30)
    response.read()
    return str(response.data.decode())


def counter(text: str, prefix: str) -> float:
    """Sum of every sample whose ``name{labels`` starts with ``prefix``."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and (m["name"] + (m["labels"] or "")).startswith(prefix):
            total += float(m["value"])
    return total


@dataclass
class Samples:
    metrics: list[tuple[float, float, float]] = field(default_factory=list)  # (wall, runner, everyone)
    progress: list[tuple[float, str, int]] = field(default_factory=list)  # (wall, lastProgress, remediations)


def _sampler(stage: Stage, server: LocalAPIServer, run: WorkflowRun, samples: Samples,
             stop: threading.Event) -> None:
    next_metrics = 0.0
    while not stop.is_set():
        now = time.time()
        if now >= next_metrics:
            text = metrics_text(server)
            samples.metrics.append((now, counter(text, RUNNER_FLOW), counter(text, "apiserver_request_total{")))
            next_metrics = now + 0.5
        ledger = stage.ledger(run) or {}
        cp = (ledger.get("phases") or {}).get("control-plane")
        if cp:
            samples.progress.append((now, cp["lastProgress"], len(cp.get("remediations") or [])))
        stop.wait(0.05)


def _at(samples: list[tuple[float, float, float]], wall: float) -> tuple[float, float]:
    """Counters at the last sample not after ``wall`` (or the first one)."""
    best = samples[0]
    for s in samples:
        if s[0] <= wall:
            best = s
    return best[1], best[2]


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results") / "measure")
    args = parser.parse_args(argv)
    results: Path = args.results.resolve()
    samples, stop = Samples(), threading.Event()
    threads: list[threading.Thread] = []

    def during(sim: SimHandle, run: WorkflowRun) -> None:
        t = threading.Thread(target=_sampler, args=(stage, server, run, samples, stop), name="measure", daemon=True)
        t.start()
        threads.append(t)

    with LocalAPIServer(capi_line="v1.14", extra_crds=EXTRA_CRDS) as server:
        stage = Stage.local(server, results, scenario_dir=results)
        try:
            s = scaled("cp-stall-recover-after-reboot")
            params = parameters(s)
            out = stage.run("scenario-2", s, params, during=during)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
            stage.abort()
            stage.close()
        final = metrics_text(server)
        samples.metrics.append((time.time(), counter(final, RUNNER_FLOW), counter(final, "apiserver_request_total{")))

    lines = [f"run {out.run.name}: {out.run.phase}; parameters {params}"]
    ok = out.run.phase == "Succeeded"
    stall = float(params["stallTimeout"].rstrip("s"))
    before = [p for p in samples.progress if p[2] == 0]
    rems = out.remediations("control-plane")
    rem = rems[0] if len(rems) == 1 else None
    deleting = next((e for e in out.timeline.events("machine.deleting") if rem and e.subject == rem["machine"]), None)
    reboot = next((e for e in out.reboots() if rem and e.subject == rem["machine"]), None)
    if before and rem and deleting and reboot:
        elapsed = _wall(before[-1][1]) + stall
        lines += [
            f"stall timeout elapsed (lastProgress {before[-1][1]} + {stall:g}s) -> remediation decided "
            f"({rem['at']}): {_wall(rem['at']) - elapsed:.3f}s",
            f"stall timeout elapsed -> Machine {rem['machine']} deleting (simulator saw it): "
            f"{deleting.wall - elapsed:.3f}s",
            f"stall timeout elapsed -> Talos reboot received by the fake node: {reboot.wall - elapsed:.3f}s",
        ]
    else:
        ok = False
        lines.append("stall -> deletion: not measurable (no remediation or no ledger samples before it)")

    if len(samples.metrics) >= 2 and out.run.started and out.run.finished:
        first, last = samples.metrics[0], samples.metrics[-1]
        minutes = (last[0] - first[0]) / 60
        lines.append(f"whole run ({last[0] - first[0]:.1f}s): runner {last[1] - first[1]:.0f} requests = "
                     f"{(last[1] - first[1]) / minutes:.0f}/min; everyone (simulator included) "
                     f"{(last[2] - first[2]) / minutes:.0f}/min")
        pods = out.run.attempts("control-plane")
        if pods and pods[0].started and pods[-1].finished:
            a, b = _at(samples.metrics, pods[0].started), _at(samples.metrics, pods[-1].finished)
            span = (pods[-1].finished - pods[0].started) / 60
            lines.append(f"control-plane step ({span * 60:.1f}s): runner {(b[0] - a[0]) / span:.0f}/min; "
                         f"everyone {(b[1] - a[1]) / span:.0f}/min")
    else:
        ok = False
        lines.append("requests per minute: no metrics samples")

    report = "\n".join(lines) + "\n"
    results.mkdir(parents=True, exist_ok=True)
    (results / "measure.txt").write_text(report)
    print(report, end="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
