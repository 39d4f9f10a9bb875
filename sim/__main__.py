"""``python -m sim``: run the simulator as a process (drills, kind, demos).

Contract: a thin shell (argv in, exit code out) around :class:`sim.simulator.Simulator`.

    python -m sim scenarios                       # list the bundled scenarios
    python -m sim params happy [--namespace NS] [--format flags|argo]   # the scenario's workflow parameters
    python -m sim run --kubeconfig KC --scenario happy [--namespace NS] [--time-scale 60]
                      [--trigger-after 5] [--duration 600] [--timeline-out timeline.txt] [--allow-real-capi]
                      [--output text|json] [--ready-file F]
    python -m sim run --in-cluster --scenario FILE --namespace "$POD_NAMESPACE" --endpoints service
                      --pod-ip "$POD_IP" --pod-labels app.kubernetes.io/name=capi-rollout-sim [--ready-file F]

``run`` prints the timeline as it grows (``--output json``: one :meth:`sim.timeline.Event.to_json` object per
line, which ``sim.timeline.Timeline.parse`` reads back), triggers the rollout (the GitOps change) after
``--trigger-after`` wall seconds unless it is negative, or at the first SIGUSR1, and stops on SIGINT/SIGTERM
or after ``--duration``. ``--in-cluster`` uses the pod's ServiceAccount; ``--endpoints service`` serves each
fake Talos node on the pod address behind its own Service (see ``sim.simulator``); ``--ready-file`` is written
once the simulated cluster exists and removed when the simulator stops (a readiness probe reads it).
``params`` prints the scenario's workflow parameters (``workflow.parameters`` plus its cluster name and namespace)
as flags for ``capi-rollout run`` (``--format flags``, the default) or for ``argo submit`` (``--format argo``), so
a scenario file is a complete story: ``python -m sim run --scenario S`` in one shell, then
``capi-rollout run $(python -m sim params S) --kubeconfig KC`` in another.
Exit codes: 0 stopped normally, 1 the simulator failed or refused the target, 2 bad usage or scenario.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Simulate a Talos CAPI cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("scenarios", help="list the bundled scenarios")
    params = sub.add_parser("params", help="print a scenario's workflow parameters as command-line flags")
    params.add_argument("scenario", help="a bundled scenario name or a YAML file")
    params.add_argument("--namespace", default=None, help="override the scenario's namespace")
    params.add_argument("--format", choices=("flags", "argo"), default="flags",
                        help="flags: --name value (capi-rollout run); argo: -p name=value (argo submit)")
    run = sub.add_parser("run", help="make a simulated cluster appear on an API server")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--kubeconfig")
    where.add_argument("--in-cluster", action="store_true", help="use the pod's ServiceAccount")
    run.add_argument("--context", default=None)
    run.add_argument("--scenario", required=True, help="a bundled scenario name or a YAML file")
    run.add_argument("--namespace", default=None, help="override the scenario's namespace")
    run.add_argument("--time-scale", type=float, default=None, help="simulated seconds per wall second")
    run.add_argument("--trigger-after", type=float, default=2.0, help="wall seconds; negative: never")
    run.add_argument("--duration", type=float, default=0.0, help="stop after this many wall seconds (0: never)")
    run.add_argument("--timeline-out", default=None, help="write the timeline here when stopping")
    run.add_argument("--output", choices=("text", "json"), default="text",
                     help="timeline events as text lines, or one JSON object per line (for a test to parse)")
    run.add_argument("--talos-port", type=int, default=50000)
    run.add_argument("--allow-real-capi", action="store_true",
                     help="tolerate real CAPI controllers confined by --watch-filter or --namespace")
    run.add_argument("--endpoints", choices=("loopback", "service"), default="loopback",
                     help="loopback: 127.x.y.z:50000 per node; service: the pod address + one Service per node")
    run.add_argument("--pod-ip", default=None, help="--endpoints service: the pod's IP (downward API)")
    run.add_argument("--pod-labels", default="", help="--endpoints service: the pod's labels, k=v,k2=v2")
    run.add_argument("--ready-file", default=None, help="written once the simulated cluster exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sim.scenario import ScenarioError
    from sim.scenario_format import bundled, load

    if args.command == "scenarios":
        for name in bundled():
            print(f"{name:<36} {load(name).description}")
        return 0
    if args.command == "params":
        try:
            scenario = load(args.scenario)
        except (OSError, ScenarioError) as exc:
            print(f"python -m sim: {exc}", file=sys.stderr)
            return 2
        print(" ".join(workflow_arguments(scenario, namespace=args.namespace, style=args.format)))
        return 0
    try:
        scenario = load(args.scenario)
        if args.namespace:
            scenario = dataclasses.replace(scenario, namespace=args.namespace)
        if args.time_scale:
            scenario = scenario.with_timings(time_scale=args.time_scale)
        scenario = scenario.validate()
    except (OSError, ScenarioError) as exc:
        print(f"python -m sim: {exc}", file=sys.stderr)
        return 2
    if args.endpoints == "service":
        from sim.talos.exposure import parse_labels

        try:
            args.pod_labels = parse_labels(args.pod_labels)
        except ValueError as exc:
            print(f"python -m sim: --pod-labels: {exc}", file=sys.stderr)
            return 2
        if not args.pod_ip or not args.pod_labels:
            print("python -m sim: --endpoints service needs --pod-ip and --pod-labels", file=sys.stderr)
            return 2
    return _run(args, scenario)


def workflow_arguments(scenario: Any, *, namespace: str | None = None, style: str = "flags") -> list[str]:
    """The scenario's workflow parameters with its cluster name and namespace, as argv words."""
    import shlex

    values = {"clusterName": scenario.cluster, "clusterNamespace": namespace or scenario.namespace,
              **scenario.workflow_parameters}
    if style == "argo":
        return [w for k, v in values.items() for w in ("-p", shlex.quote(f"{k}={v}"))]
    return [w for k, v in values.items() for w in (f"--{k}", shlex.quote(v))]


def _api_client(args: Any) -> Any:
    from kubernetes import client, config

    if args.in_cluster:
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=args.kubeconfig, context=args.context)


def _run(args: Any, scenario: Any) -> int:
    from sim.safety import UnsafeTargetError
    from sim.simulator import Simulator

    api = _api_client(args)
    stop = threading.Event()
    trigger_now = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: trigger_now.set())
    service: dict[str, Any] = {}
    if args.endpoints == "service":
        service = {"endpoints": "service", "pod_ip": args.pod_ip, "pod_labels": args.pod_labels}
    sim = Simulator(api, scenario, talos_port=args.talos_port, allow_real_capi=args.allow_real_capi, **service)
    try:
        sim.start()
    except UnsafeTargetError as exc:
        print(f"python -m sim: {exc}", file=sys.stderr)
        return 1
    ready = Path(args.ready_file) if args.ready_file else None
    started = time.monotonic()
    printed = 0
    triggered = False
    try:
        print(f"simulating {scenario.cluster} in {scenario.namespace} ({scenario.capi_line}, "
              f"x{scenario.timings.time_scale:g}); talosconfig endpoints: "
              f"{', '.join(m.node.address for m in sim.machines('cp') if m.node)}", flush=True)
        print(f"run the rollout: capi-rollout run {' '.join(workflow_arguments(scenario))} --kubeconfig KC",
              flush=True)
        if ready is not None:
            ready.write_text(f"{scenario.cluster} {scenario.namespace}\n")
        while not stop.wait(0.2):
            elapsed = time.monotonic() - started
            due = 0 <= args.trigger_after <= elapsed
            if not triggered and (due or trigger_now.is_set()):
                sim.trigger_rollout()
                triggered = True
            events = sim.timeline.events()
            for e in events[printed:]:
                print(e.to_json() if args.output == "json" else e.line(), flush=True)
            printed = len(events)
            if args.duration and elapsed >= args.duration:
                break
    finally:
        if ready is not None:
            ready.unlink(missing_ok=True)
        sim.stop()
        if args.timeline_out:
            sim.timeline.write(args.timeline_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
