"""The runtime descriptors equal the committed .proto subset, and the messages speak the upstream wire format."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2

from capi_rollout.adapters.talos import messages

PROTO_DIR = Path(str(importlib.resources.files("capi_rollout.adapters.talos") / "proto"))


def compile_subset(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out = tmp_path / "subset.pb"
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
         f"--descriptor_set_out={out}", *sources],
        check=True, capture_output=True, text=True,
    )
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def test_runtime_descriptors_equal_the_committed_proto_files_compiled_by_protoc(tmp_path: Path) -> None:
    compiled = {f.name: f for f in compile_subset(tmp_path).file}
    runtime = {f.name: f for f in messages.FILES}
    assert sorted(compiled) == sorted(runtime)
    for name, fd in runtime.items():
        assert fd == compiled[name], f"{name} drifted from its .proto file"


def test_reboot_request_mode_keeps_upstream_numbers_on_the_wire() -> None:
    # field 1, varint -> tag 0x08; FORCE = 2, POWERCYCLE = 1, DEFAULT = 0 (not serialised in proto3)
    assert messages.RebootRequest(mode=2).SerializeToString() == b"\x08\x02"
    assert messages.RebootRequest(mode=1).SerializeToString() == b"\x08\x01"
    assert messages.RebootRequest(mode=0).SerializeToString() == b""
    assert messages.REBOOT_MODES == {"default": 0, "powercycle": 1, "force": 2}


def test_get_request_fields_are_numbered_as_in_cosi_state_proto() -> None:
    wire = messages.GetRequest(namespace="a", type="b", id="c").SerializeToString()
    assert wire == b"\x0a\x01a\x12\x01b\x1a\x01c"


def test_reply_messages_round_trip_through_nested_upstream_types() -> None:
    reply = messages.VersionResponse(
        messages=[
            messages.Version(metadata=messages.Metadata(hostname="n1"), version=messages.VersionInfo(tag="v1.12.0"))
        ]
    )
    decoded = messages.VersionResponse.FromString(reply.SerializeToString())
    assert decoded.messages[0].version.tag == "v1.12.0"
    assert decoded.messages[0].metadata.hostname == "n1"
    spec = messages.MachineStatusSpec(stage=3)
    spec.status.ready = True
    assert spec.SerializeToString() == b"\x08\x03\x12\x02\x08\x01"
