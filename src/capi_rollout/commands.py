"""``capi-rollout plan`` and ``capi-rollout run``: argv already parsed in, exit code out.

Contract: ``plan`` never writes (no deletes, no reboots, no ledger); it prints one JSON document with the
resolved targets, the preflight report and the decision for the current phase, each with its reasons.
``run`` performs the whole rollout in this process (the code the workflow steps run) and exits 0 on
success, 1 on a failed rollout, 2 on bad parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from capi_rollout.domain.decide import decide
from capi_rollout.domain.ledger import Ledger, PhaseRecord
from capi_rollout.domain.model import CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, parse_time
from capi_rollout.domain.preflight import preflight
from capi_rollout.domain.resolve import ResolveError, resolve_targets, talosconfig_secret_name
from capi_rollout.domain.state import ClusterState
from capi_rollout.params import DEFAULTS, ParamError, Params, parse_params


def raw_params(args: argparse.Namespace) -> dict[str, str]:
    return {name: getattr(args, name) for name in DEFAULTS if getattr(args, name, None) is not None}


def load_documents(path: str) -> list[dict[str, Any]]:
    """YAML or JSON documents from a file (``-`` = stdin); a ``v1 List`` is flattened into its items."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    docs: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict):
            continue
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            docs.extend(d for d in doc["items"] if isinstance(d, dict))
        else:
            docs.append(doc)
    return docs


def _kind(docs: Sequence[Mapping[str, Any]], kind: str, cluster: str, namespace: str) -> list[dict[str, Any]]:
    out = []
    for d in docs:
        md = d.get("metadata") or {}
        if d.get("kind") != kind or (md.get("namespace") or namespace) != namespace:
            continue
        if kind in ("Cluster", "MachineHealthCheck") or (md.get("labels") or {}).get(CLUSTER_NAME_LABEL) == cluster:
            out.append(dict(d))
    return out


def plan_snapshot(docs: Sequence[Mapping[str, Any]], params: Params, *, now: datetime, ledger: Ledger | None,
                  phase: str | None) -> dict[str, Any]:
    """The decision for a snapshot of objects, without any I/O (Talos is not probed)."""
    ns, name = params.cluster_namespace, params.cluster_name
    clusters = [c for c in _kind(docs, "Cluster", name, ns) if c["metadata"]["name"] == name]
    tcps = _kind(docs, "TalosControlPlane", name, ns)
    mds = _kind(docs, "MachineDeployment", name, ns)
    cluster = clusters[0] if clusters else None
    version = str((cluster or (mds[0] if mds else {})).get("apiVersion", "/v1beta2")).rpartition("/")[2]
    secrets = [d for d in docs if d.get("kind") == "Secret" and (d.get("metadata") or {}).get("name")
               == talosconfig_secret_name(name) and ((d.get("metadata") or {}).get("namespace") or ns) == ns]
    out: dict[str, Any] = {"cluster": name, "namespace": ns, "now": now.isoformat(), "talos": "not probed (snapshot)"}
    try:
        targets = resolve_targets(cluster_name=name, namespace=ns, capi_version=version, cluster=cluster,
                                  control_planes=tcps, deployments=mds,
                                  talosconfig=secrets[0] if secrets else _placeholder(name))
    except ResolveError as exc:
        out["decision"] = {"kind": "fail", "reason": "cannot resolve the cluster: " + "; ".join(exc.problems)}
        return out
    out["targets"] = targets.to_dict()
    machines = _kind(docs, "Machine", name, ns)
    state = ClusterState.from_objects(cluster=cluster, control_plane=tcps[0], deployments=mds, machines=machines,
                                      health_checks=_kind(docs, "MachineHealthCheck", name, ns))
    report = preflight(cluster=cluster or {}, control_plane=tcps[0], deployments=mds, state=state, nodes={})
    out["preflight"] = {"ok": report.ok, "violations": list(report.violations), "warnings": list(report.warnings)}
    if phase is None:
        cp = ledger.phase("control-plane") if ledger else None
        phase = "workers" if cp is not None and cp.result == "succeeded" else "control-plane"
    record = (ledger.phase(phase) if ledger else None) or PhaseRecord(name=phase, started=now, last_progress=now)
    action = decide(phase=phase, state=state, record=record, nodes={}, now=now, params=params)
    out["phase"] = phase
    out["decision"] = {
        "kind": action.kind,
        "reason": action.reason,
        "progress": action.progress,
        "machine": action.machine.name if action.machine else None,
        "delete": action.delete,
        "reboot": action.reboot,
        "controlPlaneMachines": sum(1 for m in machines if CONTROL_PLANE_LABEL in m["metadata"].get("labels", {})),
    }
    return out


def _placeholder(cluster: str) -> dict[str, Any]:
    # Snapshots usually omit Secrets (they hold keys); resolve only needs to know one exists.
    return {"metadata": {"name": talosconfig_secret_name(cluster), "labels": {CLUSTER_NAME_LABEL: cluster}},
            "data": {"talosconfig": ""}}


def plan_main(args: argparse.Namespace) -> int:
    try:
        params = parse_params(raw_params(args))
    except ParamError as exc:
        print(f"capi-rollout plan: {exc}", file=sys.stderr)
        return 2
    now = parse_time(args.now) if args.now else datetime.now(UTC)
    if now is None:
        print(f"capi-rollout plan: --now {args.now!r} is not an RFC 3339 time", file=sys.stderr)
        return 2
    ledger = Ledger.from_json(Path(args.ledger).read_text()) if args.ledger else None
    docs = load_documents(args.file) if args.file else _live_documents(args.kubeconfig, params)
    result = plan_snapshot(docs, params, now=now, ledger=ledger, phase=args.phase)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 1 if result["decision"]["kind"] == "fail" or not result.get("preflight", {}).get("ok", True) else 0


def _live_documents(kubeconfig: str | None, params: Params) -> list[dict[str, Any]]:
    from capi_rollout.adapters.kube import Kube, connect

    kube = Kube(connect(kubeconfig))
    ns, sel = params.cluster_namespace, f"{CLUSTER_NAME_LABEL}={params.cluster_name}"
    cluster = kube.get_cluster(ns, params.cluster_name)
    docs: list[dict[str, Any]] = [cluster] if cluster else []
    docs += [{**o, "kind": "TalosControlPlane"} for o in kube.list_control_planes(ns, sel)]
    docs += [{**o, "kind": "MachineDeployment"} for o in kube.list_machine_deployments(ns, sel)]
    docs += [{**o, "kind": "Machine"} for o in kube.list_machines(ns, sel)]
    docs += [{**o, "kind": "MachineHealthCheck"} for o in kube.list_health_checks(ns)]
    secret = kube.get_secret(ns, talosconfig_secret_name(params.cluster_name))
    docs += [{"kind": "Secret", "metadata": secret["metadata"], "data": {k: "" for k in secret.get("data") or {}}}
             ] if secret else []
    return docs


def run_main(args: argparse.Namespace) -> int:
    from capi_rollout.adapters.kube import Kube, KubeError, connect
    from capi_rollout.ledger_store import KubeLedgerStore, LedgerStore, MemoryLedgerStore
    from capi_rollout.runner import configure_logging, run_all

    configure_logging()
    try:
        params = parse_params(raw_params(args))
    except ParamError as exc:
        print(f"capi-rollout run: {exc}", file=sys.stderr)
        return 2
    try:
        kube = Kube(connect(args.kubeconfig))
        store: LedgerStore = MemoryLedgerStore()
        if args.ledger_namespace:
            run_id = f"{params.cluster_namespace}-{params.cluster_name}-{datetime.now(UTC):%Y%m%d%H%M%S}"
            store = KubeLedgerStore(kube, namespace=args.ledger_namespace, run_id=run_id)
        result = run_all(params, kube=kube, store=store)
    except KubeError as exc:
        print(f"capi-rollout run: Kubernetes API error: {exc}", file=sys.stderr)
        return 1
    if args.summary_file:
        Path(args.summary_file).write_text(result.outputs.get("summary", "{}"))
    if not result.ok:
        print(f"capi-rollout run: FAILED: {result.message}", file=sys.stderr)
    return 0 if result.ok else 1
