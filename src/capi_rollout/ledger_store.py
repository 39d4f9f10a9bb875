"""Where the run's ledger lives: a RolloutLedger owned by the Workflow, or memory.

Contract: :class:`KubeLedgerStore` keeps the ledger JSON in ``spec.ledger`` of the RolloutLedger
(``capi-rollout.io/v1alpha1``, a kind no other component reads) ``capi-rollout-<run id>`` in the workflow's
namespace, with an ownerReference to the Workflow (so it is garbage-collected with it) and optimistic
concurrency: every write carries the resourceVersion this store last read or wrote, and a write that lost the
race (HTTP 409: another attempt wrote first) raises :class:`LedgerConflict` instead of silently overwriting.
Loading trusts nothing it reads: a RolloutLedger without the store's labels, not owned by this Workflow (when an
owner is known), or whose ledger breaks the schema raises :class:`LedgerError`. :class:`MemoryLedgerStore` is
for ``capi-rollout run`` without a run id and for tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from capi_rollout.adapters.kube import KubeError
from capi_rollout.domain.ledger import Ledger, LedgerError
from capi_rollout.ports import KubePort

LABELS = {"app.kubernetes.io/name": "capi-rollout", "app.kubernetes.io/component": "ledger"}


class LedgerConflict(KubeError):
    """The ledger changed since this store read it: another process (a retried attempt) wrote first."""


class LedgerStore(Protocol):
    def load(self) -> Ledger | None: ...

    def save(self, ledger: Ledger) -> None: ...


def ledger_name(run_id: str) -> str:
    """``capi-rollout-<run id>`` made a valid object name."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", run_id.lower()).strip("-.") or "run"
    return f"capi-rollout-{cleaned}"[:253]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class MemoryLedgerStore:
    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger
        self.saves = 0

    def load(self) -> Ledger | None:
        return self.ledger

    def save(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.saves += 1


class KubeLedgerStore:
    def __init__(self, kube: KubePort, *, namespace: str, run_id: str, owner: Mapping[str, str] | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = ledger_name(run_id)
        self.owner = owner
        self._version: str | None = None

    def load(self) -> Ledger | None:
        """The stored ledger, or None when there is none yet; :class:`LedgerError` when the RolloutLedger is not
        one this store wrote (labels, owner) or its ledger breaks the schema."""
        found = self.kube.read_ledger(self.namespace, self.name)
        if found is None:
            self._version = None
            return None
        where = f"RolloutLedger {self.namespace}/{self.name}"
        metadata = _mapping(found.get("metadata"))
        self._version = str(metadata.get("resourceVersion", ""))
        labels = _mapping(metadata.get("labels"))
        if any(labels.get(k) != v for k, v in LABELS.items()):
            wanted = ", ".join(f"{k}={v}" for k, v in LABELS.items())
            raise LedgerError(f"{where}: not written by capi-rollout (labels {wanted} missing)")
        if self.owner and self.owner.get("uid"):
            refs = metadata.get("ownerReferences")
            refs = refs if isinstance(refs, list) else []
            if not any(isinstance(r, dict) and r.get("uid") == self.owner["uid"] for r in refs):
                raise LedgerError(f"{where}: not owned by this Workflow ({self.owner.get('name')}, uid "
                                  f"{self.owner['uid']}); refusing a ledger another run or user wrote")
        text = _mapping(found.get("spec")).get("ledger")
        if not isinstance(text, str) or not text:
            raise LedgerError(f"{where}: has no spec.ledger")
        try:
            return Ledger.from_json(text)
        except LedgerError as exc:
            raise LedgerError(f"{where}: {exc}") from exc

    def save(self, ledger: Ledger) -> None:
        spec = {"clusterName": ledger.cluster, "clusterNamespace": ledger.namespace, "ledger": ledger.to_json()}
        try:
            self._version = self.kube.write_ledger(self.namespace, self.name, spec,
                                                   resource_version=self._version, labels=LABELS, owner=self.owner)
        except KubeError as exc:
            if exc.status == 409:
                raise LedgerConflict(f"RolloutLedger {self.namespace}/{self.name} changed since read",
                                     detail=str(exc)) from exc
            raise


def find_ledger(kube: KubePort, *, cluster: str, cluster_namespace: str, workflow: str | None = None,
                namespace: str | None = None) -> tuple[str, Ledger] | None:
    """The RolloutLedger of the run ``plan`` and ``report`` look at: the Workflow ``workflow``'s, else the newest
    (by creationTimestamp) of ``cluster_namespace/cluster``, in ``namespace`` (all namespaces when None).

    Returns ``("<namespace>/<name>", ledger)`` or None when there is none. Only RolloutLedgers with the store's
    labels are considered; :class:`LedgerError` when the chosen one breaks the schema or records another cluster.
    """
    wanted = ledger_name(workflow) if workflow else None
    found = []
    for obj in kube.list_ledgers(namespace):
        metadata, spec = _mapping(obj.get("metadata")), _mapping(obj.get("spec"))
        labels = _mapping(metadata.get("labels"))
        if any(labels.get(k) != v for k, v in LABELS.items()):
            continue
        if wanted is not None and metadata.get("name") != wanted:
            continue
        if wanted is None and (spec.get("clusterName"), spec.get("clusterNamespace")) != (cluster, cluster_namespace):
            continue
        found.append((str(metadata.get("creationTimestamp") or ""), str(metadata.get("name") or ""), obj))
    if not found:
        return None
    _, name, obj = max(found, key=lambda f: (f[0], f[1]))
    where = f"RolloutLedger {_mapping(obj.get('metadata')).get('namespace')}/{name}"
    text = _mapping(obj.get("spec")).get("ledger")
    if not isinstance(text, str) or not text:
        raise LedgerError(f"{where}: has no spec.ledger")
    try:
        ledger = Ledger.from_json(text)
        ledger.check_belongs_to(cluster=cluster, namespace=cluster_namespace)
    except LedgerError as exc:
        raise LedgerError(f"{where}: {exc}") from exc
    return where.removeprefix("RolloutLedger "), ledger
