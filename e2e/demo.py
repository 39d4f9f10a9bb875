"""`make demo`: the real WorkflowTemplate rolls a simulated Talos cluster whose control plane stalls once.

Contract: ``make demo`` runs ``python -m e2e.demo`` inside a real one-node Kubernetes (``python -m e2e.node run``,
``E2E_CLUSTER=node``): Argo Workflows installed from its pinned manifests, the RolloutLedger CRD, the runner RBAC
and the rendered WorkflowTemplate from ``overlay/``, the simulator as a pod with
``sim/scenarios/cp-stall-recover-after-reboot.yaml`` (durations scaled, see ``e2e.harness``); it triggers the
rollout like a GitOps change and the real Argo engine runs the template, each step a pod under the runner
ServiceAccount's token. ``E2E_CLUSTER=kind`` (``make demo`` with a Docker engine) does the same on a kind cluster.
With ``E2E_CLUSTER=local`` (or unset) it starts a local API server and runs the template through the local emulator
of Argo (the fast template check, not the real engine: it says so), each step a real process. Any other
``E2E_CLUSTER``, or kind without a Docker engine, ends it in one line before anything starts (exit 2, 1). Step
output is printed live;
at the end come the summary table and the timeline, and everything is left under ``results/demo/``, the picture of
the rollout (``rollout.svg``: a timeline per Machine) beside the summary.
Exit status 0 when the workflow succeeded, 1 otherwise, 130 on Ctrl-C. Everything it started (API server,
simulator, step processes) is stopped on every path, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from capi_rollout.summary import render_table
from e2e.harness import Stage, parameters, scaled
from e2e.outcome import Outcome

SCENARIO = "cp-stall-recover-after-reboot"
EXTRA_CRDS = ("talos", "argo-workflows", "argo-events", "argo-cd")  # the test fixtures' set: one cached etcd template
_PREFIX = re.compile(r"^\[capi-rollout-[a-z0-9]+ ")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step_line(line: str) -> None:
    """A step's output line, with the workflow name dropped from its prefix: ``[control-plane(0)] ...``."""
    _say("   " + _PREFIX.sub("[", line))


LOCAL_ENGINE = ("the local emulator of Argo on a local API server: the fast template check, NOT the real Argo "
                "engine")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


DEMO_BACKENDS = ("node", "kind", "local")


def _backend(env: dict[str, str]) -> str:
    """The demo's engine from ``E2E_CLUSTER`` (unset: local). Anything it cannot run ends the demo in one line
    before anything starts: exit 2 for a name it does not play, 1 for kind without a Docker engine."""
    name = env.get("E2E_CLUSTER", "").strip() or "local"
    if name not in DEMO_BACKENDS:
        print(f"python -m e2e.demo: E2E_CLUSTER={name!r} is not a demo engine: use node (a real node, the default "
              "of `make demo`), kind (a Docker engine) or local (the fast template check)", file=sys.stderr)
        raise SystemExit(2)
    if name == "kind":
        from e2e.backends.selection import docker_available

        ok, why = docker_available()
        if not ok:
            print(f"python -m e2e.demo: E2E_CLUSTER=kind needs a Docker engine ({why}); on Linux as root "
                  "`make demo` runs a real node instead", file=sys.stderr)
            raise SystemExit(1)
    return name


@contextlib.contextmanager
def _stage(results: Path, capi_line: str, name: str) -> Iterator[tuple[Stage, bool]]:
    """(the stage, whether it runs on a real Argo engine: the node or kind); the local API server and the
    emulator (the fast template check) otherwise."""
    if name in ("node", "kind"):
        from e2e.backends.kind import KindBackend
        from e2e.backends.selection import make_backend

        backend = make_backend(name, results_dir=results, echo=_step_line)
        assert isinstance(backend, KindBackend)  # node and kind are both KindBackends (NodeBackend subclasses it)
        try:
            backend.install_capi_crds(capi_line)
            stage = Stage.on_cluster(backend, scenario_dir=results)
            yield stage, True
        finally:
            backend.close()
        return
    from envtest import LocalAPIServer

    with LocalAPIServer(capi_line=capi_line, extra_crds=EXTRA_CRDS) as server:
        stage = Stage.local(server, results, echo=_step_line, scenario_dir=results)
        try:
            yield stage, False
        finally:
            stage.abort()  # a no-op after a normal end; after Ctrl-C it stops the executor and its steps
            stage.close()


def _story(out: Outcome) -> str:
    summary = out.summary or {}
    rems = [r for p in summary.get("phases", {}).values() if isinstance(p, dict) for r in p.get("remediations", [])]
    if out.run.phase != "Succeeded":
        return f"The workflow ended {out.run.phase}: {out.run.message}"
    what = "; ".join(f"Machine {r['machine']} deleted and its node rebooted ({r['reboot_mode']})" for r in rems)
    return f"The workflow succeeded after {len(rems)} remediation(s): {what or 'none needed'}."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results") / "demo", help="where to leave the run")
    parser.add_argument("--scenario", default=SCENARIO, help="a bundled simulator scenario (python -m sim scenarios)")
    args = parser.parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)

    name = _backend(dict(os.environ))
    started = time.monotonic()
    results = args.results.resolve()
    scenario = scaled(args.scenario)
    _say(f"capi-rollout demo: {scenario.description}")
    engine = {"node": os.environ.get("E2E_NODE_ENGINE") or "a real node",
              "kind": "Argo Workflows on a kind cluster",
              "local": LOCAL_ENGINE}[name]
    _say(f"1/4 starting Argo Workflows ({engine}) with the CAPI {scenario.capi_line} CRDs...")
    try:
        with _stage(results, scenario.capi_line, name) as (stage, _):
            _say(f"    ready after {time.monotonic() - started:.1f}s")
            _say("2/4 installed the RolloutLedger CRD, the runner RBAC and the rendered WorkflowTemplate "
                 "(overlay/.../argo-workflows/)")
            cp = scenario.cp_replicas
            workers = sum(d.replicas for d in scenario.deployments)
            _say(f"3/4 simulating Talos cluster '{scenario.cluster}' in namespace {scenario.namespace}: {cp} "
                 f"control-plane and {workers} worker Machines, each node with a fake Talos API; then a GitOps "
                 f"change of the TalosControlPlane ({scenario.kubernetes_version} -> "
                 f"{scenario.target_kubernetes_version})")
            params = parameters(scenario)
            _say("4/4 running the workflow: " + ", ".join(f"{k}={v}" for k, v in params.items()))
            out = stage.run("demo", scenario, params, timeout=300.0)
    except KeyboardInterrupt:
        _say("\ninterrupted: the API server, the simulator and the workflow's steps are stopped")
        return 130

    _say()
    _say(render_table(out.summary) if out.summary else out.run.text())
    _say()
    _say("Timeline (simulated seconds; sim = the fake CAPI controllers and Talos API, step/engine = the workflow):")
    _say(out.timeline_text())
    _say(_story(out))
    _say(f"Results: {results / 'demo'} (run.txt, timeline.txt, summary.json, rollout.svg: the picture, steps.log); "
         f"wall time {time.monotonic() - started:.0f}s")
    return 0 if out.run.phase == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
