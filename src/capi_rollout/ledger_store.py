"""Where the run's ledger lives: a RolloutLedger owned by the Workflow, or memory.

Contract: :class:`KubeLedgerStore` keeps the ledger JSON in ``spec.ledger`` of the RolloutLedger
(``capi-rollout.io/v1alpha1``, a kind no other component reads) ``capi-rollout-<run id>`` in the workflow's
namespace, with an ownerReference to the Workflow (so it is garbage-collected with it) and optimistic
concurrency (a lost update raises instead of silently overwriting). :class:`MemoryLedgerStore` is for
``capi-rollout run`` without a run id and for tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from capi_rollout.adapters.kube import Kube
from capi_rollout.domain.ledger import Ledger

LABELS = {"app.kubernetes.io/name": "capi-rollout", "app.kubernetes.io/component": "ledger"}


class LedgerStore(Protocol):
    def load(self) -> Ledger | None: ...

    def save(self, ledger: Ledger) -> None: ...


def ledger_name(run_id: str) -> str:
    """``capi-rollout-<run id>`` made a valid object name."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", run_id.lower()).strip("-.") or "run"
    return f"capi-rollout-{cleaned}"[:253]


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
    def __init__(self, kube: Kube, *, namespace: str, run_id: str, owner: Mapping[str, str] | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = ledger_name(run_id)
        self.owner = owner
        self._version: str | None = None

    def load(self) -> Ledger | None:
        found = self.kube.read_ledger(self.namespace, self.name)
        if found is None:
            self._version = None
            return None
        text, self._version = found
        return Ledger.from_json(text) if text else None

    def save(self, ledger: Ledger) -> None:
        spec = {"clusterName": ledger.cluster, "clusterNamespace": ledger.namespace, "ledger": ledger.to_json()}
        self._version = self.kube.write_ledger(self.namespace, self.name, spec, resource_version=self._version,
                                               labels=LABELS, owner=self.owner)
