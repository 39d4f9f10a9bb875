"""``python -m sim.deploy [--check]``: write (or check for drift) ``sim/deploy/simulator.yaml``, the default
in-cluster simulator (namespace ``sim-demo``, scenario ``happy``, trigger on SIGUSR1 only).

Contract: a thin shell around :func:`sim.deploy.manifests.render`; exit 1 when ``--check`` finds drift.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sim.deploy.manifests import DEFAULT_NAMESPACE, manifests, render
from sim.scenario_format import load

RENDERED = Path(__file__).parent / "simulator.yaml"


def rendered_default() -> str:
    scenario = load("happy")
    return render(manifests(namespace=DEFAULT_NAMESPACE, scenario=scenario), namespace=DEFAULT_NAMESPACE,
                  cluster=scenario.cluster)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.deploy")
    parser.add_argument("--check", action="store_true", help="fail if simulator.yaml is not up to date")
    args = parser.parse_args(argv)
    text = rendered_default()
    if args.check:
        if not RENDERED.is_file() or RENDERED.read_text() != text:
            print(f"{RENDERED} is out of date: run `python -m sim.deploy`", file=sys.stderr)
            return 1
        return 0
    RENDERED.write_text(text)
    print(RENDERED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
