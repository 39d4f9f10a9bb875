"""The Talos API subset as protobuf descriptors built in Python, its message classes and gRPC method paths.

Contract: no I/O, no generated code. :data:`FILES` describes exactly what the hand-written ``.proto`` files in
``proto/`` say (a unit test compiles them with ``grpc_tools.protoc`` and compares), keeping the upstream file
paths, package names, message names and field numbers:

* ``machine/machine.proto``  — siderolabs/talos ``api/machine/machine.proto`` (``MachineService.Reboot``,
  ``MachineService.Version``, ``MachineService.Read`` (server streaming); ``RebootRequest.Mode.FORCE = 2``
  since Talos v1.12).
* ``common/common.proto``    — siderolabs/talos ``api/common/common.proto`` (``common.Metadata``).
* ``v1alpha1/resource.proto``, ``v1alpha1/state.proto`` — cosi-project/specification
  ``proto/v1alpha1/{resource,state}.proto`` (``cosi.resource.State/Get``).
* ``resource/definitions/{enums,runtime}/*.proto`` — siderolabs/talos ``api/resource/definitions/...``
  (the ``MachineStatus`` proto_spec).
* ``google/rpc/status.proto`` — googleapis, minimal ``google.rpc.Status``.

The descriptors live in a private :class:`~google.protobuf.descriptor_pool.DescriptorPool`, so they never clash
with other protobuf users in the process. ``google.protobuf.Empty`` is the well-known ``empty_pb2.Empty``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, empty_pb2, message_factory
from google.protobuf.message import Message

_F = descriptor_pb2.FieldDescriptorProto

# (name, number, type, type_name or None, repeated)
_Field = tuple[str, int, int, str | None, bool]


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _message(
    name: str, fields: list[_Field], enums: list[descriptor_pb2.EnumDescriptorProto] | None = None
) -> descriptor_pb2.DescriptorProto:
    msg = descriptor_pb2.DescriptorProto(name=name)
    for fname, number, ftype, type_name, repeated in fields:
        field = msg.field.add(
            name=fname,
            number=number,
            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            type=ftype,
            json_name=_json_name(fname),
        )
        if type_name is not None:
            field.type_name = type_name
    msg.enum_type.extend(enums or [])
    return msg


def _enum(name: str, values: list[str]) -> descriptor_pb2.EnumDescriptorProto:
    enum = descriptor_pb2.EnumDescriptorProto(name=name)
    for number, value in enumerate(values):
        enum.value.add(name=value, number=number)
    return enum


def _service(name: str, methods: list[tuple[str, str, str]], *,
             streaming: frozenset[str] = frozenset()) -> descriptor_pb2.ServiceDescriptorProto:
    svc = descriptor_pb2.ServiceDescriptorProto(name=name)
    for mname, input_type, output_type in methods:
        method = svc.method.add(name=mname, input_type=input_type, output_type=output_type)
        if mname in streaming:
            method.server_streaming = True
    return svc


def _file(
    name: str,
    package: str,
    deps: list[str],
    messages: list[descriptor_pb2.DescriptorProto],
    *,
    enums: list[descriptor_pb2.EnumDescriptorProto] | None = None,
    services: list[descriptor_pb2.ServiceDescriptorProto] | None = None,
) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    fd.dependency.extend(deps)
    fd.message_type.extend(messages)
    fd.enum_type.extend(enums or [])
    fd.service.extend(services or [])
    return fd


_S, _B, _BOOL, _I32 = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_BOOL, _F.TYPE_INT32
_M, _E = _F.TYPE_MESSAGE, _F.TYPE_ENUM

FILES: tuple[descriptor_pb2.FileDescriptorProto, ...] = (
    _file(
        "google/rpc/status.proto", "google.rpc", ["google/protobuf/any.proto"],
        [_message("Status", [
            ("code", 1, _I32, None, False),
            ("message", 2, _S, None, False),
            ("details", 3, _M, ".google.protobuf.Any", True),
        ])],
    ),
    _file(
        "common/common.proto", "common", ["google/rpc/status.proto"],
        [_message("Metadata", [
            ("hostname", 1, _S, None, False),
            ("error", 2, _S, None, False),
            ("status", 3, _M, ".google.rpc.Status", False),
        ]), _message("Data", [
            ("metadata", 1, _M, ".common.Metadata", False),
            ("bytes", 2, _B, None, False),
        ])],
    ),
    _file(
        "machine/machine.proto", "machine", ["common/common.proto", "google/protobuf/empty.proto"],
        [
            _message(
                "RebootRequest",
                [("mode", 1, _E, ".machine.RebootRequest.Mode", False)],
                [_enum("Mode", ["DEFAULT", "POWERCYCLE", "FORCE"])],
            ),
            _message("Reboot", [
                ("metadata", 1, _M, ".common.Metadata", False),
                ("actor_id", 2, _S, None, False),
            ]),
            _message("RebootResponse", [("messages", 1, _M, ".machine.Reboot", True)]),
            _message("Version", [
                ("metadata", 1, _M, ".common.Metadata", False),
                ("version", 2, _M, ".machine.VersionInfo", False),
            ]),
            _message("VersionResponse", [("messages", 1, _M, ".machine.Version", True)]),
            _message("VersionInfo", [
                (name, number, _S, None, False)
                for number, name in enumerate(["tag", "sha", "built", "go_version", "os", "arch"], start=1)
            ]),
            _message("ReadRequest", [("path", 1, _S, None, False)]),
        ],
        services=[_service("MachineService", [
            ("Reboot", ".machine.RebootRequest", ".machine.RebootResponse"),
            ("Version", ".google.protobuf.Empty", ".machine.VersionResponse"),
            ("Read", ".machine.ReadRequest", ".common.Data"),
        ], streaming=frozenset({"Read"}))],
    ),
    _file(
        "resource/definitions/enums/enums.proto", "talos.resource.definitions.enums", [], [],
        enums=[_enum("RuntimeMachineStage", [
            "MACHINE_STAGE_UNKNOWN", "MACHINE_STAGE_BOOTING", "MACHINE_STAGE_INSTALLING",
            "MACHINE_STAGE_MAINTENANCE", "MACHINE_STAGE_RUNNING", "MACHINE_STAGE_REBOOTING",
            "MACHINE_STAGE_SHUTTING_DOWN", "MACHINE_STAGE_RESETTING", "MACHINE_STAGE_UPGRADING",
        ])],
    ),
    _file(
        "resource/definitions/runtime/runtime.proto", "talos.resource.definitions.runtime",
        ["resource/definitions/enums/enums.proto"],
        [
            _message("MachineStatusSpec", [
                ("stage", 1, _E, ".talos.resource.definitions.enums.RuntimeMachineStage", False),
                ("status", 2, _M, ".talos.resource.definitions.runtime.MachineStatusStatus", False),
            ]),
            _message("MachineStatusStatus", [
                ("ready", 1, _BOOL, None, False),
                ("unmet_conditions", 2, _M, ".talos.resource.definitions.runtime.UnmetCondition", True),
            ]),
            _message("UnmetCondition", [("name", 1, _S, None, False), ("reason", 2, _S, None, False)]),
            _message("BootIDSpec", [("boot_id", 1, _S, None, False)]),
        ],
    ),
    _file(
        "v1alpha1/resource.proto", "cosi.resource", [],
        [
            _message("Metadata", [
                (name, number, _S, None, False)
                for number, name in enumerate(["namespace", "type", "id", "version", "owner", "phase"], start=1)
            ]),
            _message("Spec", [("proto_spec", 1, _B, None, False), ("yaml_spec", 2, _S, None, False)]),
            _message("Resource", [
                ("metadata", 1, _M, ".cosi.resource.Metadata", False),
                ("spec", 2, _M, ".cosi.resource.Spec", False),
            ]),
        ],
    ),
    _file(
        "v1alpha1/state.proto", "cosi.resource", ["v1alpha1/resource.proto"],
        [
            _message("GetRequest", [
                ("namespace", 1, _S, None, False),
                ("type", 2, _S, None, False),
                ("id", 3, _S, None, False),
                ("options", 4, _M, ".cosi.resource.GetOptions", False),
            ]),
            _message("GetOptions", []),
            _message("GetResponse", [("resource", 1, _M, ".cosi.resource.Resource", False)]),
        ],
        services=[_service("State", [("Get", ".cosi.resource.GetRequest", ".cosi.resource.GetResponse")])],
    ),
)


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for well_known in (any_pb2, empty_pb2):
        pool.AddSerializedFile(well_known.DESCRIPTOR.serialized_pb)
    for fd in FILES:
        pool.Add(fd)
    return pool


POOL = _build_pool()


def message_class(full_name: str) -> type[Message]:
    """The message class for a fully qualified name in the private pool (``"machine.RebootRequest"``)."""
    cls: type[Message] = message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))
    return cls


# Message classes the client and the fake server use. Typed as Any: they are built at runtime.
RebootRequest: Any = message_class("machine.RebootRequest")
RebootResponse: Any = message_class("machine.RebootResponse")
Reboot: Any = message_class("machine.Reboot")
VersionResponse: Any = message_class("machine.VersionResponse")
Version: Any = message_class("machine.Version")
VersionInfo: Any = message_class("machine.VersionInfo")
Metadata: Any = message_class("common.Metadata")
GetRequest: Any = message_class("cosi.resource.GetRequest")
GetResponse: Any = message_class("cosi.resource.GetResponse")
Resource: Any = message_class("cosi.resource.Resource")
ResourceMetadata: Any = message_class("cosi.resource.Metadata")
ResourceSpec: Any = message_class("cosi.resource.Spec")
MachineStatusSpec: Any = message_class("talos.resource.definitions.runtime.MachineStatusSpec")
BootIDSpec: Any = message_class("talos.resource.definitions.runtime.BootIDSpec")
ReadRequest: Any = message_class("machine.ReadRequest")
Data: Any = message_class("common.Data")
Empty: Any = empty_pb2.Empty

# RebootRequest.Mode values by the lower-case names the tool's parameters use.
REBOOT_MODES: dict[str, int] = {"default": 0, "powercycle": 1, "force": 2}
REBOOT_MODE_NAMES: dict[int, str] = {v: k for k, v in REBOOT_MODES.items()}

# gRPC method paths (":path" of the HTTP/2 request), as grpclib's generated ``_grpc.py`` files spell them.
REBOOT_PATH = "/machine.MachineService/Reboot"
VERSION_PATH = "/machine.MachineService/Version"
STATE_GET_PATH = "/cosi.resource.State/Get"
READ_PATH = "/machine.MachineService/Read"  # server streaming: common.Data chunks

# What ``talosctl reboot --wait`` reads before and after the reboot (cmd/talosctl/pkg/talos/action/tracker.go
# getBootID: ``c.Read(ctx, "/proc/sys/kernel/random/boot_id")``; Read needs os:admin).
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# The same value as a resource, readable by every role, since Talos v1.14
# (siderolabs/talos pkg/machinery/resources/runtime/boot_id.go).
BOOT_ID_TYPE = "BootIDs.runtime.talos.dev"
BOOT_ID_ID = "boot-id"

# The MachineStatus resource pointer (siderolabs/talos pkg/machinery/resources/runtime/machine_status.go).
MACHINE_STATUS_NAMESPACE = "runtime"
MACHINE_STATUS_TYPE = "MachineStatuses.runtime.talos.dev"
MACHINE_STATUS_ID = "machine"
