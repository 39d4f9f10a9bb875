"""The ``capi-rollout`` command line: a thin shell (argv in, exit code out) around the package.

Subcommands:

* ``plan``   — evaluate a live cluster or a snapshot file and print the decision (a table or JSON); never writes.
  Against a live cluster it reads the latest run's RolloutLedger and says what that run will do next and when.
* ``lint``   — check GitOps manifests offline for unsafe rollout strategies and paused objects.
* ``run``    — the whole rollout for one cluster (the same code the workflow steps call).
* ``report`` — a run's summary and its picture (``rollout.svg``) from its RolloutLedger and the cluster's Events.
* ``render`` — write (or ``--check``) the Argo manifests generated from the Hera definition.

Flag style: every flag is kebab-case; the workflow parameters are also accepted in the WorkflowTemplate's camelCase
(``--cluster-name`` or ``--clusterName``). Each command's ``--help`` lists its exit codes.

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
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from capi_rollout.domain.params import DEFAULTS, DESCRIPTIONS
from capi_rollout.userfiles import InputError

EXIT_FAILED, EXIT_USAGE = 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with no abbreviated flags and one-line errors (``capi-rollout plan: error: ...``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def flag_name(parameter: str) -> str:
    """The kebab-case flag of a workflow parameter: ``clusterName`` -> ``cluster-name``."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "-" + m.group(1).lower(), parameter)


def _add_param_flags(p: argparse.ArgumentParser) -> None:
    for name, default in DEFAULTS.items():
        help_text = DESCRIPTIONS[name] + (f" (default {default})" if default is not None else "")
        spellings = dict.fromkeys([f"--{flag_name(name)}", f"--{name}"])  # kebab-case first; camelCase accepted
        p.add_argument(*spellings, dest=name, default=None, metavar="VALUE",
                       help=help_text)


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of any error")


def _add_kubeconfig(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", metavar="FILE",
                   help="kubeconfig of the management cluster (default: $KUBECONFIG, ~/.kube/config or in-cluster)")


_EXITS = {
    "plan": "0 the decision was printed and nothing blocks the rollout; 1 the decision is to fail or preflight "
            "found a violation, or the API server could not be used; 2 bad usage, parameters or input",
    "lint": "0 no findings; 1 findings were printed; 2 bad usage or an unreadable input",
    "run": "0 the rollout succeeded; 1 it failed (the summary says why) or the API server could not be used; "
           "2 bad usage, parameters or input",
    "report": "0 the report was written; 1 no ledger was found or the API server could not be used; "
              "2 bad usage, parameters or input",
    "render": "0 written (or up to date with --check); 1 the committed YAML differs or the template is unsound; "
              "2 bad usage",
}


def _sub(sub: Any, name: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=description, description=description, epilog=f"exit codes: {_EXITS[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="capi-rollout", description=__doc__.splitlines()[0],
                     epilog="Flags are kebab-case; the workflow parameters are also accepted in the camelCase of the "
                            "WorkflowTemplate (--cluster-name or --clusterName). Flags are never abbreviated.\n"
                            "exit codes: 0 success; 1 the rollout or check failed (a message says why); "
                            "2 bad usage, parameters or input",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = _sub(sub, "plan", "Show what the rollout would do, or what the running workflow will do next and when, "
                             "without changing anything.")
    _add_param_flags(plan)
    _add_kubeconfig(plan)
    plan.add_argument("-f", "--file", metavar="FILE",
                      help="a snapshot instead of a live cluster: YAML/JSON documents or a v1 List of CAPI objects "
                           "(- for stdin)")
    plan.add_argument("--now", metavar="TIME", help="RFC 3339 time to evaluate at (default: now)")
    plan.add_argument("--ledger", metavar="FILE",
                      help="a ledger JSON file (remediations already done, phase clocks); default with "
                           "--kubeconfig: the RolloutLedger of the latest run of this cluster")
    plan.add_argument("--workflow", metavar="NAME",
                      help="read the RolloutLedger of this Workflow instead of the latest run's")
    plan.add_argument("--ledger-namespace", default=None, metavar="NAMESPACE",
                      help="where the RolloutLedgers are (the workflows' namespace; default: all namespaces)")
    plan.add_argument("--phase", choices=["control-plane", "workers"], default=None,
                      help="the phase to evaluate (default: the ledger's current phase, else control-plane)")
    plan.add_argument("-o", "--output", choices=["table", "json"], default=None,
                      help="table (default on a terminal) or json (default otherwise)")

    lint = _sub(sub, "lint", "Check GitOps manifests offline for rollout strategies and paused objects this tool "
                             "refuses.")
    lint.add_argument("paths", nargs="+", metavar="PATH", help="a manifest file or a kustomize directory")

    run = _sub(sub, "run", "Roll one cluster from this process, the same steps the workflow runs.")
    _add_param_flags(run)
    _add_kubeconfig(run)
    run.add_argument("--ledger-namespace", default=None, metavar="NAMESPACE",
                     help="keep the ledger in a RolloutLedger in this namespace (its CRD installed); "
                          "default: in memory")
    run.add_argument("--summary-file", default=None, metavar="FILE", help="also write the summary JSON here")

    report = _sub(sub, "report", "Write a finished or running rollout's summary and its picture (SVG timeline per "
                                 "Machine) from its RolloutLedger and the cluster's Events.")
    _add_param_flags(report)
    _add_kubeconfig(report)
    report.add_argument("--workflow", metavar="NAME",
                        help="the Workflow whose run to report (default: the latest run of this cluster)")
    report.add_argument("--ledger-namespace", default=None, metavar="NAMESPACE",
                        help="where the RolloutLedgers are (default: all namespaces)")
    report.add_argument("--output-dir", default=".", metavar="DIR",
                        help="where to write summary.json, summary.txt and rollout.svg (default: .)")

    render = _sub(sub, "render", "Write the Argo manifests under overlay/ from the Python definition.")
    render.add_argument("--check", action="store_true", help="write nothing; fail if the committed YAML differs")
    render.add_argument("--root", default=None, metavar="DIR", help="repository root (default: found from cwd)")
    render.add_argument("--cluster", action="append", default=None, metavar="NAMESPACE/NAME",
                        help="print the runner's RBAC narrowed to these clusters' talosconfig Secrets "
                             "(repeatable; NAME alone means namespace default); writes nothing")
    render.add_argument("--image-digest", default=None, metavar="sha256:HEX",
                        help="pin the template's step image by this digest (IMAGE:TAG@sha256:...), as the release "
                             "workflow prints it")
    for p in (plan, lint, run, report, render):
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

        return render_main(check=args.check, root=args.root, clusters=args.cluster, image_digest=args.image_digest)
    if args.command == "lint":
        from capi_rollout.lint import main as lint_main

        return lint_main(args.paths)
    if args.command == "plan":
        from capi_rollout.commands import plan_main

        return plan_main(args)
    if args.command == "run":
        from capi_rollout.commands import run_main

        return run_main(args)
    if args.command == "report":
        from capi_rollout.report import report_main

        return report_main(args)
    raise InputError(f"unknown command {args.command}")
