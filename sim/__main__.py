"""``python -m sim``: run the simulator as a process (drills, kind, demos).

Contract: a thin shell (argv in, exit code out) around :class:`sim.simulator.Simulator`.

    python -m sim scenarios                       # list the bundled scenarios
    python -m sim run --kubeconfig KC --scenario happy [--namespace NS] [--time-scale 60]
                      [--trigger-after 5] [--duration 600] [--timeline-out timeline.txt] [--allow-real-capi]

``run`` prints the timeline as it grows, triggers the rollout (the GitOps change) after
``--trigger-after`` wall seconds unless it is negative, and stops on SIGINT/SIGTERM or after ``--duration``.
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
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Simulate a Talos CAPI cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("scenarios", help="list the bundled scenarios")
    run = sub.add_parser("run", help="make a simulated cluster appear on an API server")
    run.add_argument("--kubeconfig", required=True)
    run.add_argument("--context", default=None)
    run.add_argument("--scenario", required=True, help="a bundled scenario name or a YAML file")
    run.add_argument("--namespace", default=None, help="override the scenario's namespace")
    run.add_argument("--time-scale", type=float, default=None, help="simulated seconds per wall second")
    run.add_argument("--trigger-after", type=float, default=2.0, help="wall seconds; negative: never")
    run.add_argument("--duration", type=float, default=0.0, help="stop after this many wall seconds (0: never)")
    run.add_argument("--timeline-out", default=None, help="write the timeline here when stopping")
    run.add_argument("--talos-port", type=int, default=50000)
    run.add_argument("--allow-real-capi", action="store_true",
                     help="tolerate real CAPI controllers confined by --watch-filter or --namespace")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sim.scenario import ScenarioError, bundled, load

    if args.command == "scenarios":
        for name in bundled():
            print(f"{name:<36} {load(name).description}")
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
    return _run(args, scenario)


def _run(args: Any, scenario: Any) -> int:
    from kubernetes import config

    from sim.safety import UnsafeTargetError
    from sim.simulator import Simulator

    api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sim = Simulator(api, scenario, talos_port=args.talos_port, allow_real_capi=args.allow_real_capi)
    try:
        sim.start()
    except UnsafeTargetError as exc:
        print(f"python -m sim: {exc}", file=sys.stderr)
        return 1
    started = time.monotonic()
    printed = 0
    triggered = args.trigger_after < 0
    try:
        print(f"simulating {scenario.cluster} in {scenario.namespace} ({scenario.capi_line}, "
              f"x{scenario.timings.time_scale:g}); talosconfig endpoints: "
              f"{', '.join(m.node.address for m in sim.machines('cp') if m.node)}", flush=True)
        while not stop.wait(0.2):
            elapsed = time.monotonic() - started
            if not triggered and elapsed >= args.trigger_after:
                sim.trigger_rollout()
                triggered = True
            events = sim.timeline.events()
            for e in events[printed:]:
                print(e.line(), flush=True)
            printed = len(events)
            if args.duration and elapsed >= args.duration:
                break
    finally:
        sim.stop()
        if args.timeline_out:
            sim.timeline.write(args.timeline_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
