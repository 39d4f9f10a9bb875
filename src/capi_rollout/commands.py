"""``capi-rollout plan`` and ``capi-rollout run``: argv already parsed in, exit code out.

Contract: ``plan`` never writes (no deletes, no reboots, no ledger); it prints (``-o json``, or a table for people)
the targets (the run's, from its ledger, else resolved as the resolve step would), the preflight report, the
decision for the current phase with its reasons, and ``next``: what the run will do next and when if nothing
moves (:mod:`capi_rollout.domain.forecast`). Against a live cluster without ``--ledger`` it reads the
RolloutLedger of ``--workflow``, else of the cluster's latest run (:func:`capi_rollout.ledger_store.find_ledger`),
so its clocks are the running workflow's. It observes the objects through the rollout loop's own rule
(:func:`capi_rollout.observation.observe_objects`: the TalosControlPlane and MachineDeployments the targets name),
so it decides on what the run would see.
``run`` performs the whole rollout in this process (the code the workflow steps run) and exits 0 on
success, 1 on a failed rollout, 2 on bad parameters.

Every user input is read through :mod:`capi_rollout.userfiles` and checked before anything acts: the snapshot's
objects (:func:`capi_rollout.userfiles.object_problem`), the ``--ledger`` file (its schema and that it is this
cluster's), the kubeconfig (readable, one mapping, list-shaped sections), ``--summary-file`` (writable, then
replaced whole). A problem raises :class:`InputError` (one line naming the input; the CLI exits 2);
an API server that cannot be used raises :class:`ApiUnusable` (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capi_rollout.domain.decide import decide
from capi_rollout.domain.forecast import forecast
from capi_rollout.domain.ledger import Ledger, LedgerError, PhaseRecord
from capi_rollout.domain.model import CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, parse_time
from capi_rollout.domain.params import DEFAULTS, ParamError, Params, parse_params
from capi_rollout.domain.preflight import preflight
from capi_rollout.domain.resolve import ResolveError, Targets, resolve_targets, talosconfig_secret_name
from capi_rollout.observation import observe_objects
from capi_rollout.step_table import StepFailed
from capi_rollout.userfiles import InputError, manifest_objects, object_problem, read_text, yaml_documents

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def raw_params(args: argparse.Namespace) -> dict[str, str]:
    return {name: getattr(args, name) for name in DEFAULTS if getattr(args, name, None) is not None}


def load_documents(path: str) -> list[dict[str, Any]]:
    """YAML or JSON documents from a file (``-`` = stdin); a ``v1 List`` is flattened into its items.

    :class:`InputError` (one line naming the file) when the file cannot be read, is not YAML, holds no objects
    or holds a document that is not a Kubernetes object of the expected shape."""
    source = "snapshot " + ("on stdin" if path == "-" else path)
    docs: list[dict[str, Any]] = []
    for where, obj in manifest_objects(read_text(path, what="snapshot"), source):
        if problem := object_problem(obj):
            raise InputError(f"{source}: {where} {problem}")
        docs.append(obj)
    if not docs:
        raise InputError(f"{source}: no Kubernetes objects in it")
    return docs


def load_ledger(path: str, params: Params) -> Ledger:
    """The ``plan --ledger`` file, checked against its schema and the cluster being planned."""
    text = read_text(path, what="ledger")
    try:
        ledger = Ledger.from_json(text)
        ledger.check_belongs_to(cluster=params.cluster_name, namespace=params.cluster_namespace)
    except LedgerError as exc:
        raise InputError(f"ledger {path}: {exc}") from exc
    return ledger


def check_kubeconfig(path: str | None) -> None:
    """Refuse an explicit (or ``$KUBECONFIG``) kubeconfig that is unreadable, bombed or of the wrong shape,
    before the Kubernetes client parses it."""
    path = path or os.environ.get("KUBECONFIG") or None
    if path is None or os.pathsep in path:
        return
    source = f"kubeconfig {path}"
    docs = yaml_documents(read_text(path, what="kubeconfig"), source)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise InputError(f"{source}: not a kubeconfig (one YAML mapping with clusters, contexts and users)")
    for key in ("clusters", "contexts", "users"):
        value = docs[0].get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, dict) for v in value)):
            raise InputError(f"{source}: {key} must be a list of mappings")


def connect_kube(kubeconfig: str | None) -> Any:
    """A connected :class:`Kube`; :class:`InputError` naming the kubeconfig when it is missing or unusable."""
    from capi_rollout.adapters.kube import Kube, connect

    check_kubeconfig(kubeconfig)
    try:
        return Kube(connect(kubeconfig))
    except Exception as exc:  # the client's ConfigException, or its TypeError/KeyError on a strange kubeconfig
        where = f"kubeconfig {kubeconfig or os.environ.get('KUBECONFIG') or '~/.kube/config'}"
        raise InputError(f"{where}: not usable: {type(exc).__name__}: {exc}") from exc


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
    try:  # the run's targets (its phases observe those), else resolved as the resolve step would
        targets = Targets.from_dict(ledger.targets) if ledger and ledger.targets else resolve_targets(
            cluster_name=name, namespace=ns, capi_version=version, cluster=cluster, control_planes=tcps,
            deployments=mds, talosconfig=secrets[0] if secrets else _placeholder(name))
    except ResolveError as exc:
        out["decision"] = {"kind": "fail", "reason": "cannot resolve the cluster: " + "; ".join(exc.problems)}
        return out
    out["targets"] = targets.to_dict()
    machines = _kind(docs, "Machine", name, ns)
    try:  # the rollout loop's own observation: the TalosControlPlane and MachineDeployments the targets name
        seen = observe_objects(targets, cluster=cluster, control_planes=tcps, deployments=mds, machines=machines,
                               health_checks=_kind(docs, "MachineHealthCheck", name, ns))
    except StepFailed as exc:
        out["decision"] = {"kind": "fail", "reason": str(exc)}
        return out
    state = seen.state
    report = preflight(cluster=seen.cluster, control_plane=seen.control_plane, deployments=seen.deployments,
                       state=state, nodes={})
    out["preflight"] = {"ok": report.ok, "violations": list(report.violations), "warnings": list(report.warnings)}
    if phase is None:
        cp = ledger.phase("control-plane") if ledger else None
        phase = "workers" if cp is not None and cp.result == "succeeded" else "control-plane"
    record = (ledger.phase(phase) if ledger else None) or PhaseRecord(name=phase, started=now, last_progress=now)
    action = decide(phase=phase, state=state, record=record, nodes={}, now=now, params=params)
    out["phase"] = phase
    out["next"] = forecast(phase=phase, state=state, record=record, now=now, params=params).to_dict()
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
        raise InputError(str(exc)) from exc
    now = parse_time(args.now) if args.now else datetime.now(UTC)
    if now is None:
        raise InputError(f"--now {args.now[:60]!r} is not an RFC 3339 time")
    if args.file and (args.workflow or args.ledger_namespace):
        raise InputError("--workflow and --ledger-namespace read a live cluster's RolloutLedger; "
                         "with -f give the ledger as a file (--ledger)")
    if args.ledger_namespace is not None and not _DNS_LABEL.fullmatch(args.ledger_namespace):
        raise InputError(f"--ledger-namespace must be a namespace name (DNS-1123 label), "
                         f"got {args.ledger_namespace[:63]!r}")
    ledger = load_ledger(args.ledger, params) if args.ledger else None
    source = f"file {args.ledger}" if args.ledger else None
    if args.file:
        docs = load_documents(args.file)
        try:
            result = plan_snapshot(docs, params, now=now, ledger=ledger, phase=args.phase)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:  # a field the shape check
            raise InputError(f"snapshot {args.file}: a field has an unexpected type or value "  # does not cover
                             f"({type(exc).__name__}: {exc})") from exc
    else:
        kube = connect_kube(args.kubeconfig)
        if ledger is None:
            source, ledger = _live_ledger(kube, params, workflow=args.workflow, namespace=args.ledger_namespace)
        docs = _live_documents(kube, params)
        result = plan_snapshot(docs, params, now=now, ledger=ledger, phase=args.phase)
    result["ledger"] = source
    output = args.output or ("table" if sys.stdout.isatty() else "json")
    print(plan_table(result) if output == "table" else json.dumps(result, indent=2, sort_keys=True))
    return 1 if result["decision"]["kind"] == "fail" or not result.get("preflight", {}).get("ok", True) else 0


def _live_ledger(kube: Any, params: Params, *, workflow: str | None,
                 namespace: str | None) -> tuple[str | None, Ledger | None]:
    """The RolloutLedger of ``workflow``, else of this cluster's latest run: ``(namespace/name, ledger)``."""
    from capi_rollout.adapters.kube import KubeError
    from capi_rollout.ledger_store import find_ledger

    try:
        found = find_ledger(kube, cluster=params.cluster_name, cluster_namespace=params.cluster_namespace,
                            workflow=workflow, namespace=namespace)
    except KubeError as exc:
        if workflow is None and exc.status in (403, 404):  # no CRD, or not allowed: plan as before, and say so
            return f"none read ({exc}); evaluated as if the phase started now", None
        raise ApiUnusable(f"cannot list RolloutLedgers: {exc}") from exc
    except LedgerError as exc:
        raise InputError(str(exc)) from exc
    if found is None:
        if workflow:
            raise InputError(f"no RolloutLedger of Workflow {workflow} in "
                             f"{namespace or 'any namespace'} (is it a capi-rollout run, and still there?)")
        return None, None
    return found


def plan_table(result: Mapping[str, Any]) -> str:
    """The plan for people: what the run will do next and when first, then the decision and the preflight."""
    lines = [f"capi-rollout plan for {result['namespace']}/{result['cluster']} at {result['now']}"]
    lines.append(f"ledger: {result.get('ledger') or 'none found (evaluated as if the phase started now)'}")
    nxt = result.get("next")
    if nxt:
        lines.append(f"next: {nxt['sentence']}")
    decision = result.get("decision") or {}
    lines.append(f"{'PHASE':<15}{'DECISION':<11}REASON")
    lines.append(f"{result.get('phase') or '-':<15}{decision.get('kind', '-'):<11}{decision.get('reason', '')}")
    if decision.get("progress"):
        lines.append(f"progress: {decision['progress']}")
    pre = result.get("preflight") or {}
    for v in pre.get("violations", []):
        lines.append(f"preflight violation: {v}")
    for w in pre.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def _live_documents(kube: Any, params: Params) -> list[dict[str, Any]]:
    from capi_rollout.adapters.kube import KubeError

    ns, sel = params.cluster_namespace, f"{CLUSTER_NAME_LABEL}={params.cluster_name}"
    try:
        cluster = kube.get_cluster(ns, params.cluster_name)
        docs: list[dict[str, Any]] = [cluster] if cluster else []
        docs += [{**o, "kind": "TalosControlPlane"} for o in kube.list_control_planes(ns, sel)]
        docs += [{**o, "kind": "MachineDeployment"} for o in kube.list_machine_deployments(ns, sel)]
        docs += [{**o, "kind": "Machine"} for o in kube.list_machines(ns, sel)]
        docs += [{**o, "kind": "MachineHealthCheck"} for o in kube.list_health_checks(ns)]
        secret = kube.get_secret(ns, talosconfig_secret_name(params.cluster_name))
        docs += [{"kind": "Secret", "metadata": secret["metadata"],
                  "data": {k: "" for k in secret.get("data") or {}}}] if secret else []
    except KubeError as exc:
        raise ApiUnusable(f"Kubernetes API error: {exc}") from exc
    return docs


class ApiUnusable(InputError):
    """The API server could not be used (not trusted, unreachable, RBAC): the run failed, exit 1."""

    exit_code = 1


def check_output_file(path: str) -> None:
    """Refuse, before anything runs, an output path that could not be written (a directory, no such parent)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"summary file {path}: is a directory, not a file")
    if not p.parent.is_dir():
        raise InputError(f"summary file {path}: the directory {p.parent} does not exist")


def write_output_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed over it)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"summary file {path}: cannot write: {exc.strerror or exc}") from exc


def run_main(args: argparse.Namespace) -> int:
    from capi_rollout.adapters.kube import KubeError
    from capi_rollout.ledger_store import KubeLedgerStore, LedgerStore, MemoryLedgerStore
    from capi_rollout.run import configure_logging, run_all

    try:
        params = parse_params(raw_params(args))
    except ParamError as exc:
        raise InputError(str(exc)) from exc
    if args.ledger_namespace is not None and not _DNS_LABEL.fullmatch(args.ledger_namespace):
        raise InputError(f"--ledger-namespace must be a namespace name (DNS-1123 label), "
                         f"got {args.ledger_namespace[:63]!r}")
    if args.summary_file:
        check_output_file(args.summary_file)
    kube = connect_kube(args.kubeconfig)
    configure_logging()
    try:
        store: LedgerStore = MemoryLedgerStore()
        if args.ledger_namespace:
            run_id = f"{params.cluster_namespace}-{params.cluster_name}-{datetime.now(UTC):%Y%m%d%H%M%S}"
            store = KubeLedgerStore(kube, namespace=args.ledger_namespace, run_id=run_id)
        result = run_all(params, kube=kube, store=store)
    except KubeError as exc:
        raise ApiUnusable(f"Kubernetes API error: {exc}") from exc
    if args.summary_file:
        write_output_file(args.summary_file, result.outputs.get("summary", "{}"))
    if not result.ok:
        print(f"capi-rollout run: FAILED: {result.message}", file=sys.stderr)
    return 0 if result.ok else 1
