"""State of one simulated Talos node and the records the fake keeps about it.

Contract: plain data, thread-safe through a lock; no I/O, and no reference to a fleet. Changes that affect the
endpoint (maintenance, unreachable, a served certificate) are the fleet's (``FakeTalosFleet.set_maintenance``,
``set_unreachable``, ``set_certificate``), which records them here (``FakeTalosNode._set``).

Like Talos, the node keeps the events of its current boot (:class:`sim.talos.events.EventLog`): every change of
stage or readiness appends a ``MachineStatusEvent`` and bumps the MachineStatus resource's version and ``updated``
time; a new boot starts an empty log and a MachineStatus created at that moment.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sim.talos.api import machine_pb2, parse_version
from sim.talos.events import EventLog

if TYPE_CHECKING:
    from sim.pki import CertKey


# MachineStatusEvent.MachineStage numbers by stage name (``shutting down`` → SHUTTING_DOWN).
STAGE_NUMBERS = {v.name.lower().replace("_", " "): v.number
                 for v in machine_pb2.MachineStatusEvent.MachineStage.DESCRIPTOR.values}


def unmet_conditions(stage: str, ready: bool) -> list[tuple[str, str]]:
    """Why a booting or running node is not ready (Talos's MachineStatus controller checks time, network,
    services, static pods and the Kubernetes node; the simulator only models the last one)."""
    if ready or stage not in ("booting", "running"):
        return []
    return [("nodeReady", "node not ready")]


class RebootOutcome(StrEnum):
    """What a node does after a reboot (the CAPI simulator decides through ``FakeTalosFleet.on_reboot``)."""

    RUNNING = "running"  # comes back running and ready, same certificate
    MAINTENANCE = "maintenance"  # comes back in maintenance mode (lost its machine config)
    NEVER = "never"  # stays down
    DROPPED = "dropped"  # accepted (actor id) but never performed: Talos was installing/upgrading/shutting down


@dataclass(frozen=True)
class RebootRecord:
    node: str
    address: str
    mode: str  # as requested: default, powercycle, force
    effective_mode: str  # what this Talos version does with it (force → default before v1.12)
    role: str
    boot_id_before: str
    at: float  # fleet clock
    dropped: bool = False  # accepted, then dropped (no reboot happened)


class FakeTalosNode:
    """One simulated node. ``address`` is the host (IP); the endpoint is ``address:port``.

    The endpoint listens on ``bind_host:bind_port`` — the same as ``address:port`` unless the fleet exposes it
    another way (in-cluster: ``address`` is a Service's ClusterIP, ``bind_*`` the pod address and port) —
    and its server certificate also names ``sans``.
    """

    def __init__(self, name: str, address: str, port: int, talos_version: str,
                 stage: str, ready: bool, *, bind_host: str | None = None, bind_port: int | None = None,
                 sans: tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self.name = name
        self.address = address
        self.port = port
        self.bind_host = address if bind_host is None else bind_host
        self.bind_port = port if bind_port is None else bind_port
        self.sans = sans
        self.talos_version = talos_version
        self._stage = stage
        self._ready = ready
        self._boot_id = str(uuid.uuid4())
        self._maintenance = stage == "maintenance"
        self._unreachable = False
        self._up = False
        self._certificate: CertKey | None = None  # served instead of the node's own (impostor tests)
        self.events = EventLog()
        self._status_version = 1
        self._status_created = self._status_updated = time.time()
        self._record_status()

    def __repr__(self) -> str:
        return (f"FakeTalosNode({self.name!r}, {self.endpoint!r}, {self.talos_version}, stage={self.stage!r}, "
                f"ready={self.ready}, up={self.up})")

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def listen(self) -> str:
        """``bind_host:bind_port``: where this process reaches the endpoint directly."""
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.bind_port}"

    @property
    def version_tuple(self) -> tuple[int, int]:
        return parse_version(self.talos_version) or (0, 0)

    @property
    def maintenance_reboot_behaviour(self) -> str:
        """How maintenance mode answers Reboot: ``"unimplemented"`` (Talos ≤ 1.12, a separate maintenance
        server) or ``"permission-denied"`` (≥ 1.13, apid serves maintenance with the reader role)."""
        return "unimplemented" if self.version_tuple <= (1, 12) else "permission-denied"

    @property
    def supports_force(self) -> bool:
        return self.version_tuple >= (1, 12)

    @property
    def stage(self) -> str:
        with self._lock:
            return self._stage

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready

    @property
    def boot_id(self) -> str:
        with self._lock:
            return self._boot_id

    @property
    def maintenance(self) -> bool:
        with self._lock:
            return self._maintenance

    @property
    def unreachable(self) -> bool:
        with self._lock:
            return self._unreachable

    @property
    def up(self) -> bool:
        """True while the endpoint accepts connections."""
        with self._lock:
            return self._up

    @property
    def status_metadata(self) -> tuple[int, float, float]:
        """The MachineStatus resource's (version, created, updated) — times as ``time.time()`` values."""
        with self._lock:
            return self._status_version, self._status_created, self._status_updated

    def set_stage(self, stage: str, ready: bool) -> None:
        """Change what MachineStatus says (no effect on TLS: maintenance mode is the fleet's ``set_maintenance``)."""
        self._set(stage=stage, ready=ready)

    def record_event(self, payload: Any, actor_id: str = "") -> None:
        """Append an event of this boot (a ``SequenceEvent`` for an accepted reboot, ...)."""
        self.events.append(payload, actor_id)

    def _record_status(self) -> None:
        stage_number = STAGE_NUMBERS.get(self._stage, 0)
        status = machine_pb2.MachineStatusEvent.MachineStatus(ready=self._ready, unmet_conditions=[
            machine_pb2.MachineStatusEvent.MachineStatus.UnmetCondition(name=n, reason=r)
            for n, r in unmet_conditions(self._stage, self._ready)])
        self.events.append(machine_pb2.MachineStatusEvent(stage=stage_number, status=status))

    # --- used by the fleet -------------------------------------------------------------------------------
    def _set(self, *, stage: str | None = None, ready: bool | None = None, maintenance: bool | None = None,
             unreachable: bool | None = None, up: bool | None = None, new_boot: bool = False) -> None:
        with self._lock:
            if new_boot:
                self._boot_id = str(uuid.uuid4())
                self.events = EventLog()
                self._status_version = 0
                self._status_created = time.time()
            changed = new_boot or (stage is not None and stage != self._stage) or (
                ready is not None and ready != self._ready)
            if stage is not None:
                self._stage = stage
            if ready is not None:
                self._ready = ready
            if changed:
                self._status_version += 1
                self._status_updated = time.time()
                self._record_status()
            if maintenance is not None:
                self._maintenance = maintenance
            if unreachable is not None:
                self._unreachable = unreachable
            if up is not None:
                self._up = up
