"""Read the stage and readiness out of a Talos ``MachineStatus`` resource (``cosi.resource.Resource``), and the
boot ID out of a ``BootIDs.runtime.talos.dev`` one (:func:`boot_id_from_spec`).

Contract: pure, no I/O. The spec comes either as YAML text (``yaml_spec``: ``stage: running`` and
``status: {ready: true, unmetConditions: [...]}``, field names from siderolabs/talos
``pkg/machinery/resources/runtime/machine_status.go``) or as protobuf (``proto_spec``: a
``talos.resource.definitions.runtime.MachineStatusSpec``). YAML wins when both are present. Stage names are
the ones Talos prints: booting, installing, maintenance, running, rebooting, shutting down, resetting,
upgrading (``unknown`` for anything else).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf.message import DecodeError

from capi_rollout.adapters.talos import messages
from capi_rollout.userfiles import load_yaml

# RuntimeMachineStage enum number -> the name Talos uses in YAML (machinestage_enumer.go).
STAGE_NAMES: tuple[str, ...] = (
    "unknown", "booting", "installing", "maintenance", "running", "rebooting", "shutting down", "resetting",
    "upgrading",
)


@dataclass(frozen=True)
class MachineStatus:
    stage: str
    ready: bool | None
    unmet: tuple[str, ...] = ()


def stage_number(stage: str) -> int:
    """The RuntimeMachineStage number for a stage name (0 = unknown)."""
    return STAGE_NAMES.index(stage) if stage in STAGE_NAMES else 0


def from_yaml(text: str) -> MachineStatus | None:
    try:
        doc = load_yaml(text)  # bounded: aliases and size capped (capi_rollout.userfiles)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("stage"), str):
        return None
    status = doc.get("status")
    ready: bool | None = None
    unmet: tuple[str, ...] = ()
    if isinstance(status, dict):
        if isinstance(status.get("ready"), bool):
            ready = status["ready"]
        conditions = status.get("unmetConditions")
        if isinstance(conditions, list):
            unmet = tuple(
                f"{c.get('name')}: {c.get('reason')}" for c in conditions if isinstance(c, dict)
            )
    return MachineStatus(stage=doc["stage"], ready=ready, unmet=unmet)


def from_proto(data: bytes) -> MachineStatus | None:
    try:
        spec: Any = messages.MachineStatusSpec.FromString(data)
    except DecodeError:
        return None
    stage = STAGE_NAMES[spec.stage] if 0 <= spec.stage < len(STAGE_NAMES) else "unknown"
    unmet = tuple(f"{c.name}: {c.reason}" for c in spec.status.unmet_conditions)
    return MachineStatus(stage=stage, ready=bool(spec.status.ready), unmet=unmet)


def machine_status(resource: Any) -> MachineStatus | None:
    """Stage and readiness from a ``cosi.resource.Resource``; None when the spec says neither."""
    spec = resource.spec
    if spec.yaml_spec:
        parsed = from_yaml(spec.yaml_spec)
        if parsed is not None:
            return parsed
    if spec.proto_spec:
        return from_proto(spec.proto_spec)
    return None


def to_yaml(status: MachineStatus) -> str:
    """The YAML text Talos would put into ``yaml_spec`` for this status."""
    body: dict[str, Any] = {"ready": bool(status.ready)}
    if status.unmet:
        body["unmetConditions"] = [
            {"name": n.split(": ", 1)[0], "reason": n.split(": ", 1)[-1]} for n in status.unmet
        ]
    return yaml.safe_dump({"stage": status.stage, "status": body}, sort_keys=False)


def to_proto(status: MachineStatus) -> bytes:
    spec: Any = messages.MachineStatusSpec(stage=stage_number(status.stage))
    spec.status.ready = bool(status.ready)
    for item in status.unmet:
        name, _, reason = item.partition(": ")
        spec.status.unmet_conditions.add(name=name, reason=reason)
    data: bytes = spec.SerializeToString()
    return data


def boot_id_from_spec(spec: Any) -> str | None:
    """The boot ID of a ``BootIDs.runtime.talos.dev`` resource spec (YAML ``bootID`` first, then protobuf)."""
    if spec.yaml_spec:
        try:
            doc = yaml.safe_load(spec.yaml_spec)
        except yaml.YAMLError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("bootID"), str) and doc["bootID"]:
            return str(doc["bootID"])
    if spec.proto_spec:
        with contextlib.suppress(DecodeError):
            value = str(messages.BootIDSpec.FromString(spec.proto_spec).boot_id)
            return value or None
    return None
