"""Where the run's ledger lives: a ConfigMap owned by the Workflow, or memory.

Contract: :class:`ConfigMapLedgerStore` keeps the ledger JSON under the key ``ledger`` of the ConfigMap
``capi-rollout-<run id>`` in the workflow's namespace, with an ownerReference to the Workflow (so it is
garbage-collected with it) and optimistic concurrency: every write carries the resourceVersion this store last
read or wrote, and a write that lost the race (HTTP 409: another attempt wrote first) raises
:class:`LedgerConflict` instead of silently overwriting. :class:`MemoryLedgerStore` is for ``capi-rollout run``
without a run id and for tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from capi_rollout.adapters.kube import Kube, KubeError
from capi_rollout.domain.ledger import Ledger

LEDGER_KEY = "ledger"
LABELS = {"app.kubernetes.io/name": "capi-rollout", "app.kubernetes.io/component": "ledger"}


class LedgerConflict(KubeError):
    """The ledger changed since this store read it: another process (a retried attempt) wrote first."""


class LedgerStore(Protocol):
    def load(self) -> Ledger | None: ...

    def save(self, ledger: Ledger) -> None: ...


def ledger_name(run_id: str) -> str:
    """``capi-rollout-<run id>`` made a valid ConfigMap name."""
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


class ConfigMapLedgerStore:
    def __init__(self, kube: Kube, *, namespace: str, run_id: str, owner: Mapping[str, str] | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = ledger_name(run_id)
        self.owner = owner
        self._version: str | None = None

    def load(self) -> Ledger | None:
        found = self.kube.read_config_map(self.namespace, self.name)
        if found is None:
            self._version = None
            return None
        data, self._version = found
        text = data.get(LEDGER_KEY)
        return Ledger.from_json(text) if text else None

    def save(self, ledger: Ledger) -> None:
        try:
            self._version = self.kube.write_config_map(
                self.namespace, self.name, {LEDGER_KEY: ledger.to_json()}, resource_version=self._version,
                labels=LABELS, owner=self.owner,
            )
        except KubeError as exc:
            if exc.status == 409:
                raise LedgerConflict(f"ledger ConfigMap {self.namespace}/{self.name} changed since read",
                                     detail=str(exc)) from exc
            raise
