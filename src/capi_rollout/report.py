"""``capi-rollout report``: a real run's summary and its picture, from its RolloutLedger and the cluster's Events.

Contract: reads only (the RolloutLedger of ``--workflow`` or of the cluster's latest run, the cluster's Machines
and the Events of its namespace) and writes three files into ``--output-dir``, each whole: ``summary.json`` (the
summary the exit handler writes, built from the ledger), ``summary.txt`` (its table) and ``rollout.svg`` (the
timeline per Machine, :mod:`capi_rollout.picture`). Machines gone before the API server's Event TTL (1 h by
default) show only what the ledger says of them: run it soon after a rollout, or keep Events longer.
Exit 0 written; 1 no ledger found or the API server could not be used; 2 bad parameters or an unusable directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from capi_rollout.commands import ApiUnusable, connect_kube, raw_params, write_output_file
from capi_rollout.domain.ledger import LedgerError
from capi_rollout.domain.model import CLUSTER_NAME_LABEL
from capi_rollout.domain.params import ParamError, parse_params
from capi_rollout.picture.build import build, epoch, from_cluster
from capi_rollout.picture.svg import render
from capi_rollout.summary import build_summary, render_table
from capi_rollout.userfiles import InputError

LEAD_SECONDS = 60.0  # the picture starts this long before the first phase: the rollout CAPI began before it


def report_main(args: argparse.Namespace) -> int:
    from capi_rollout.adapters.kube import KubeError
    from capi_rollout.ledger_store import find_ledger

    try:
        params = parse_params(raw_params(args))
    except ParamError as exc:
        raise InputError(str(exc)) from exc
    out = Path(args.output_dir)
    if not out.is_dir():
        raise InputError(f"--output-dir {args.output_dir}: not a directory")
    kube = connect_kube(args.kubeconfig)
    ns, name = params.cluster_namespace, params.cluster_name
    try:
        found = find_ledger(kube, cluster=name, cluster_namespace=ns, workflow=args.workflow,
                            namespace=args.ledger_namespace)
        if found is None:
            which = f"of Workflow {args.workflow}" if args.workflow else f"of cluster {ns}/{name}"
            raise ApiUnusable(f"no RolloutLedger {which} in {args.ledger_namespace or 'any namespace'}")
        where, ledger = found
        machines = kube.list_machines(ns, f"{CLUSTER_NAME_LABEL}={name}")
        events = kube.list_events(ns)
    except KubeError as exc:
        raise ApiUnusable(f"Kubernetes API error: {exc}") from exc
    except LedgerError as exc:
        raise InputError(str(exc)) from exc
    summary = build_summary(ledger)
    data = json.loads(ledger.to_json())
    starts = [t for p in data.get("phases", {}).values() if (t := epoch(p.get("started"))) is not None]
    picture = build(title=f"capi-rollout {ns}/{name}: {summary['result']} (RolloutLedger {where})",
                    subtitle=summary["headline"],
                    events=from_cluster(machines, events), ledger=data, stall_timeout=params.stall_timeout,
                    start=min(starts) - LEAD_SECONDS if starts else None)
    for file, text in (("summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n"),
                       ("summary.txt", render_table(summary) + "\n"), ("rollout.svg", render(picture))):
        write_output_file(str(out / file), text)
    print(render_table(summary))
    print(f"wrote {out / 'summary.json'}, {out / 'summary.txt'} and {out / 'rollout.svg'} (from {where})")
    return 0
