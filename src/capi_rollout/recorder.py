"""Every write of a run's ledger goes through one recorder.

Contract: :class:`LedgerRecorder` holds the run's ledger as last loaded or written and is the only code that
saves it (through a :class:`~capi_rollout.ledger_store.LedgerStore`): the resolved targets, the preflight report,
new warnings, a failure reason and phase records (the remediator's intent and outcome writes too, through
:meth:`LedgerRecorder.save_phase`). It loads the stored ledger on first use and trusts it only when it belongs to
this cluster: :class:`LedgerUnusable` otherwise, and nothing is ever written over it. A write that lost a race
(:class:`~capi_rollout.ledger_store.LedgerConflict`) propagates; :meth:`LedgerRecorder.forget` drops the held copy
so the next read sees the winner's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from capi_rollout.domain.ledger import Ledger, LedgerError, PhaseRecord
from capi_rollout.domain.resolve import Targets
from capi_rollout.ledger_store import LedgerStore
from capi_rollout.step_table import StepFailed


class LedgerUnusable(StepFailed):
    """The stored ledger breaks its schema, names another cluster or was not written by this run."""


class LedgerRecorder:
    """One run's ledger: read once, then every change written through here first."""

    def __init__(self, store: LedgerStore, *, cluster: str, namespace: str) -> None:
        self.store = store
        self.cluster = cluster
        self.namespace = namespace
        self._ledger: Ledger | None = None

    @property
    def ledger(self) -> Ledger:
        """The run's ledger: as held, else as stored, else a new empty one."""
        if self._ledger is None:
            self._ledger = self.load() or Ledger(cluster=self.cluster, namespace=self.namespace)
        return self._ledger

    def load(self) -> Ledger | None:
        """The stored ledger (None when none yet); :class:`LedgerUnusable` when it is garbage or another cluster's."""
        try:
            ledger = self.store.load()
            if ledger is not None:
                ledger.check_belongs_to(cluster=self.cluster, namespace=self.namespace)
        except LedgerError as exc:
            raise LedgerUnusable(f"cannot use the run's ledger: {exc}") from exc
        return ledger

    def forget(self) -> None:
        """Drop the held copy (another attempt wrote the ledger): the next read loads the stored one."""
        self._ledger = None

    def _save(self, ledger: Ledger) -> Ledger:
        self._ledger = ledger
        self.store.save(ledger)
        return ledger

    def save_phase(self, record: PhaseRecord) -> None:
        self._save(self.ledger.with_phase(record))

    def record_targets(self, targets: Targets) -> None:
        self._save(replace(self.ledger, targets=targets.to_dict()))

    def record_preflight(self, *, warnings: Sequence[str], failure: str | None) -> Ledger:
        return self._save(replace(self.ledger, warnings=tuple(warnings), preflight=failure))

    def add_warnings(self, warnings: Sequence[str]) -> None:
        self._save(replace(self.ledger, warnings=(*self.ledger.warnings, *warnings)))

    def record_failure(self, reason: str) -> None:
        self._save(replace(self.ledger, failure=reason))
