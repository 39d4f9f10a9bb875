"""The COSI resources one simulated node serves through ``cosi.resource.State`` Get and List.

Contract: pure functions of node state (read through :class:`sim.talos.node.FakeTalosNode`'s properties), no I/O.
Each resource carries what Talos's COSI state carries: metadata with namespace, type, id, version, owner, phase
``running`` and the ``created``/``updated`` timestamps, and a spec both as protobuf (the upstream message:
``MachineStatusSpec``, ``BootIDSpec``, ``cosi.resource.meta.ResourceDefinitionSpec``) and as the YAML text that
``talosctl get -o yaml`` prints. Served types: ``MachineStatuses.runtime.talos.dev`` (id ``machine``),
``BootIDs.runtime.talos.dev`` (id ``boot-id``, Talos v1.14 and later only) and their
``ResourceDefinitions.meta.cosi.dev``. Anything else is NotFound, worded like COSI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from sim.talos import api
from sim.talos.api import enums_pb2, resource_pb2, runtime_pb2
from sim.talos.node import unmet_conditions

if TYPE_CHECKING:
    from sim.talos.node import FakeTalosNode

BOOT_ID_MIN_VERSION = (1, 14)


class ResourceNotFound(LookupError):
    """COSI's NotFound: ``resource <type>(<namespace>/<id>@undefined) doesn't exist``."""

    def __init__(self, namespace: str, type_: str, id_: str) -> None:
        super().__init__(f"resource {type_}({namespace}/{id_}@undefined) doesn't exist")


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def definitions(node: FakeTalosNode) -> list[api.Definition]:
    served = [api.MACHINE_STATUSES, api.RESOURCE_DEFINITIONS]
    if node.version_tuple >= BOOT_ID_MIN_VERSION:
        served.append(api.BOOT_IDS)
    return sorted(served, key=lambda d: d.id)


def _resource(namespace: str, type_: str, id_: str, *, version: int, owner: str, created: float, updated: float,
              proto_spec: bytes, yaml_spec: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(
        metadata=resource_pb2.Metadata(namespace=namespace, type=type_, id=id_, version=str(version), owner=owner,
                                       phase="running", created=_timestamp(created), updated=_timestamp(updated)),
        spec=resource_pb2.Spec(proto_spec=proto_spec, yaml_spec=yaml_spec))


def machine_status(node: FakeTalosNode) -> resource_pb2.Resource:
    stage, ready = node.stage, node.ready
    unmet = unmet_conditions(stage, ready)
    spec = runtime_pb2.MachineStatusSpec(stage=enums_pb2.RuntimeMachineStage.Name(api.stage_number(stage)))
    spec.status.ready = ready
    for name, reason in unmet:
        spec.status.unmet_conditions.add(name=name, reason=reason)
    conditions = "".join(f"        - name: {n}\n          reason: {r}\n" for n, r in unmet)
    text = (f"stage: {stage}\nstatus:\n    ready: {'true' if ready else 'false'}\n"
            + (f"    unmetConditions:\n{conditions}" if unmet else "    unmetConditions: []\n"))
    version, created, updated = node.status_metadata
    return _resource(api.RUNTIME_NAMESPACE, api.MACHINE_STATUS_TYPE, api.MACHINE_STATUS_ID, version=version,
                     owner="runtime.MachineStatusController", created=created, updated=updated,
                     proto_spec=spec.SerializeToString(), yaml_spec=text)


def boot_id(node: FakeTalosNode) -> resource_pb2.Resource:
    _, created, _ = node.status_metadata
    return _resource(api.RUNTIME_NAMESPACE, api.BOOT_ID_TYPE, api.BOOT_ID_ID, version=1,
                     owner="runtime.BootIDController", created=created, updated=created,
                     proto_spec=runtime_pb2.BootIDSpec(boot_id=node.boot_id).SerializeToString(),
                     yaml_spec=f"bootID: {node.boot_id}\n")


def resource_definition(node: FakeTalosNode, definition: api.Definition) -> resource_pb2.Resource:
    _, created, _ = node.status_metadata  # registered at boot
    return _resource(api.META_NAMESPACE, api.RESOURCE_DEFINITION_TYPE, definition.id, version=1, owner="",
                     created=created, updated=created, proto_spec=definition.spec().SerializeToString(),
                     yaml_spec=definition.yaml_spec())


def list_resources(node: FakeTalosNode, namespace: str, type_: str) -> list[resource_pb2.Resource]:
    """``State/List``: every resource of ``type_`` in ``namespace`` (empty for an unknown type, as COSI lists)."""
    if (namespace, type_) == (api.META_NAMESPACE, api.RESOURCE_DEFINITION_TYPE):
        return [resource_definition(node, d) for d in definitions(node)]
    if (namespace, type_) == (api.RUNTIME_NAMESPACE, api.MACHINE_STATUS_TYPE):
        return [machine_status(node)]
    if (namespace, type_) == (api.RUNTIME_NAMESPACE, api.BOOT_ID_TYPE) and \
            node.version_tuple >= BOOT_ID_MIN_VERSION:
        return [boot_id(node)]
    return []


def get_resource(node: FakeTalosNode, namespace: str, type_: str, id_: str) -> resource_pb2.Resource:
    """``State/Get``; :class:`ResourceNotFound` when there is no such resource."""
    for item in list_resources(node, namespace, type_):
        if item.metadata.id == id_:
            return item
    raise ResourceNotFound(namespace, type_, id_)
