"""The one place that acts: delete a Machine, reboot its node, record it.

Contract: :meth:`Remediator.remediate` carries out a ``remediate`` :class:`~capi_rollout.domain.decide.Action`:

1. the remediation is written to the ledger first (outcome ``started``), conditional on the ledger's
   resourceVersion, so a crash or a retried step can never perform more than ``maxRemediations``, and of two
   attempts racing on one ledger (a retried pod while the old one still runs on a partitioned node) only the
   one whose intent write lands acts: the other gets :class:`RemediationAborted` and deletes/reboots nothing;
2. the Machine is deleted (UID precondition) unless it is already deleting;
3. its node is rebooted through the Talos API with ``rebootMode`` when its address is known — only when the node
   answering at that address names itself as the Machine's node — and an accepted reboot is then confirmed:
   the boot ID changes (or the API goes away and comes back) within ``confirm_within`` seconds (the loop
   passes ``stallTimeout``), else the outcome says "reboot requested but not observed"; either way the
   remediation counts against the budget;
4. the outcome is written to the ledger, and an Event is recorded on the Machine's owner
   (TalosControlPlane or MachineDeployment).

With ``dryRun`` nothing is deleted, rebooted or recorded as an Event: the ledger notes "would delete /
would reboot" so the summary can show what would have happened. Talos and Kubernetes are reached only
through the adapters handed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from capi_rollout.domain.decide import Action
from capi_rollout.domain.ledger import INTENT_OUTCOME, PhaseRecord, Remediation
from capi_rollout.ledger_store import LedgerConflict
from capi_rollout.ports import KubePort, ObservationLike, TalosPort

log = logging.getLogger("capi_rollout")


class RemediationAborted(RuntimeError):
    """The intent could not be recorded (the ledger changed since it was read): nothing was deleted or rebooted."""


class Remediator:
    def __init__(self, *, kube: KubePort, talos: TalosPort | None, dry_run: bool,
                 save: Callable[[PhaseRecord], None], confirm_within: float = 0.0, confirm_interval: float = 1.0,
                 say: Callable[[str], None] | None = None) -> None:
        self.kube = kube
        self.talos = talos
        self.dry_run = dry_run
        self.save = save
        self.confirm_within = confirm_within
        self.confirm_interval = confirm_interval
        self.say = say or (lambda line: None)

    def _confirm(self, talos: TalosPort, address: str, boot_id: str | None, *, removing: bool) -> ObservationLike:
        """Wait (bounded by ``confirm_within``) for the accepted reboot to be seen; say so now and then."""
        every = max(self.confirm_interval, min(30.0, self.confirm_within / 4))
        said = [0.0]

        def on_wait(elapsed: float) -> None:
            if elapsed - said[0] >= every:
                said[0] = elapsed
                self.say(f"waiting to observe the reboot of {address} (boot id change or API away and back): "
                         f"{elapsed:.0f}s of {self.confirm_within:g}s")

        return talos.confirm_reboot(address, boot_id, within=self.confirm_within, interval=self.confirm_interval,
                                    on_wait=on_wait, removing=removing)

    def remediate(self, action: Action, *, owner: Mapping[str, Any] | None, reboot_mode: str,
                  now: datetime) -> PhaseRecord:
        machine = action.machine
        assert machine is not None and action.kind == "remediate"
        address = machine.address if action.reboot else None
        entry = Remediation(
            at=now, machine=machine.name, node=machine.node_name, address=address, reason=action.reason,
            reboot_mode=reboot_mode, deleted=False, rebooted=False, outcome=INTENT_OUTCOME, dry_run=self.dry_run,
        )
        record = replace(action.record, remediations=(*action.record.remediations, entry), last_progress=now)
        index = len(record.remediations) - 1

        if self.dry_run:
            would = [f"would delete Machine {machine.name}"] if action.delete else []
            if address:
                would.append(f"would reboot {address} ({reboot_mode})")
            outcome = "dry run: " + (" and ".join(would) or "nothing possible")
            log.info("DRY RUN: %s", action.reason)
            return self._finish(record, index, outcome=outcome)

        try:
            self.save(record)  # intent first: a retry sees this remediation even if we crash right now
        except LedgerConflict as exc:
            raise RemediationAborted(
                f"remediation of Machine {machine.name} aborted before acting: another attempt of this step "
                f"wrote the ledger first ({exc}); re-reading it"
            ) from exc
        deleted = False
        notes: list[str] = []
        if action.delete:
            deleted = self.kube.delete_machine(machine.meta.namespace, machine.name, machine.meta.uid)
            notes.append(f"deleted Machine {machine.name}" if deleted else f"Machine {machine.name} was already gone")
            log.info("remediation: %s", notes[-1])
        rebooted = False
        observed: bool | None = None
        if address:
            if self.talos is None:
                notes.append(f"could not reboot {address}: no Talos client")
            else:
                result = self.talos.reboot(address, reboot_mode, node_name=machine.identity)
                rebooted = result.accepted
                notes.append(f"reboot {address} ({reboot_mode}) " + ("accepted" if rebooted else "failed")
                             + (f": {result.detail}" if result.detail else ""))
                if rebooted and self.confirm_within > 0:
                    log.info("remediation: %s", notes[-1])
                    seen = self._confirm(self.talos, address, result.boot_id, removing=deleted)
                    observed = seen.observed
                    notes.append(f"reboot observed: {seen.detail}" if observed else seen.detail)
            log.info("remediation: %s", notes[-1])
        outcome = "; ".join(notes) or "nothing to do"
        record = self._finish(record, index, outcome=outcome, deleted=deleted, rebooted=rebooted, observed=observed)
        if owner is not None:
            self.kube.record_event(
                involved=owner, reason="CapiRolloutRemediation", now=now, warning=True,
                message=f"capi-rollout remediated Machine {machine.name}: {outcome}. Why: {action.reason}",
            )
        return record

    def _finish(self, record: PhaseRecord, index: int, *, outcome: str, deleted: bool = False,
                rebooted: bool = False, observed: bool | None = None) -> PhaseRecord:
        rems = list(record.remediations)
        rems[index] = replace(rems[index], outcome=outcome, deleted=deleted, rebooted=rebooted,
                              reboot_observed=observed)
        record = replace(record, remediations=tuple(rems))
        self.save(record)
        return record
