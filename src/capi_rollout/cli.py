"""The ``capi-rollout`` command line: a thin shell (argv in, exit code out) around the package.

Subcommands:

* ``plan``   — evaluate a live cluster or a snapshot file and print the decision as JSON; never writes.
* ``lint``   — check GitOps manifests offline for unsafe rollout strategies and paused objects.
* ``run``    — the whole rollout for one cluster (the same code the workflow steps call).
* ``render`` — write (or ``--check``) the Argo manifests generated from the Hera definition.

Exit codes: 0 success, 1 the rollout or check failed (a message says why), 2 bad usage, parameters or input.

One error boundary (:func:`main`): every expected error — a bad flag or parameter, a missing, unreadable, binary,
non-UTF-8 or oversized file, malformed or bombed YAML/JSON, a snapshot, ledger or kubeconfig of the wrong shape,
a directory given as a file, Ctrl-C — ends in ONE line on stderr (``capi-rollout <command>: <file>: <problem>``)
and exit 2, before anything is written. An API server that cannot be used (refused TLS, RBAC) is one line and
exit 1. Anything else is a bug: one line saying so and exit 1. ``--debug`` shows the traceback instead. Flags are
never abbreviated (``--ledger`` is not ``--ledger-namespace``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from capi_rollout.params import DEFAULTS, DESCRIPTIONS
from capi_rollout.userfiles import InputError

EXIT_FAILED, EXIT_USAGE = 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with no abbreviated flags and one-line errors (``capi-rollout plan: error: ...``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _add_param_flags(p: argparse.ArgumentParser) -> None:
    for name, default in DEFAULTS.items():
        help_text = DESCRIPTIONS[name] + (f" (default {default})" if default is not None else "")
        p.add_argument(f"--{name}", dest=name, default=None, help=help_text)


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of any error")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="capi-rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="evaluate a cluster or a snapshot and print the decision (no writes)")
    _add_param_flags(plan)
    plan.add_argument("--kubeconfig", help="kubeconfig of the management cluster (default: in-cluster/env)")
    plan.add_argument("-f", "--file", help="a snapshot: YAML/JSON documents or a v1 List of CAPI objects")
    plan.add_argument("--now", help="RFC 3339 time to evaluate at (snapshots; default: now)")
    plan.add_argument("--ledger", help="a ledger JSON file (remediations already done, phase clocks)")
    plan.add_argument("--phase", choices=["control-plane", "workers"], default=None)

    lint = sub.add_parser("lint", help="check GitOps manifests offline (files or kustomize directories)")
    lint.add_argument("paths", nargs="+")

    run = sub.add_parser("run", help="run the whole rollout for one cluster")
    _add_param_flags(run)
    run.add_argument("--kubeconfig", help="kubeconfig of the management cluster (default: in-cluster/env)")
    run.add_argument("--ledger-namespace", default=None, help="namespace of the RolloutLedger (its CRD installed)")
    run.add_argument("--summary-file", default=None, help="also write the summary JSON here")

    render = sub.add_parser("render", help="render the Argo manifests under overlay/ from Python")
    render.add_argument("--check", action="store_true", help="fail if the committed YAML differs")
    render.add_argument("--root", default=None, help="repository root (default: found from cwd)")
    render.add_argument("--cluster", action="append", default=None, metavar="NAMESPACE/NAME",
                        help="print the runner's RBAC narrowed to these clusters' talosconfig Secrets "
                             "(repeatable; NAME alone means namespace default); writes nothing")
    for p in (plan, lint, run, render):
        _add_debug(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = f"capi-rollout {args.command}"
    try:
        return _dispatch(args)
    except InputError as exc:
        if args.debug:
            raise
        return _fail(prog, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        if args.debug:
            raise
        done = "see the ledger and the summary for what was done" if args.command == "run" else "nothing was written"
        return _fail(prog, f"interrupted (Ctrl-C); {done}", EXIT_USAGE)
    except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
        if args.debug:
            raise
        name = type(exc).__name__
        return _fail(prog, f"internal error ({name}: {exc}); run again with --debug for the traceback", EXIT_FAILED)


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "render":
        from capi_rollout.workflow.render import main as render_main

        return render_main(check=args.check, root=args.root, clusters=args.cluster)
    if args.command == "lint":
        from capi_rollout.lint import main as lint_main

        return lint_main(args.paths)
    if args.command == "plan":
        from capi_rollout.commands import plan_main

        return plan_main(args)
    if args.command == "run":
        from capi_rollout.commands import run_main

        return run_main(args)
    raise InputError(f"unknown command {args.command}")
