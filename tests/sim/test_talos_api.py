"""The simulated Talos API behaves as real Talos does where the product or talosctl can tell: checked with a plain
grpclib client and the upstream protos (``sim.talos.api``), not the product's client."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import empty_pb2
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from capi_rollout.adapters.talos.tls import insecure_client_context, mtls_client_context
from sim.pki import ClusterPKI
from sim.talos import FakeTalosFleet, FakeTalosNode, RebootStages
from sim.talos.api import (
    EVENTS_PATH,
    REBOOT_PATH,
    STATE_GET_PATH,
    STATE_LIST_PATH,
    VERSION_PATH,
    machine_pb2,
    state_pb2,
)
from sim.timeline import Timeline

TIMEOUT = 3.0


@pytest.fixture
def fleet(pki: ClusterPKI, timeline: Timeline) -> Iterator[FakeTalosFleet]:
    with FakeTalosFleet(pki, timeline=timeline, reboot_downtime=0.05) as f:
        yield f


def admin(pki: ClusterPKI, role: str = "os:admin") -> ssl.SSLContext:
    pair = pki.client_cert(role)
    return mtls_client_context(pki.ca.cert_pem, pair.cert_pem, pair.key_pem)


def call(node: FakeTalosNode, ctx: ssl.SSLContext, path: str, request: Any, reply_type: Any, *,
         stream: bool = False, metadata: dict[str, str] | None = None, limit: int = 100) -> Any:
    """One call; a server stream is read until it ends or ``limit`` messages arrived."""
    async def go() -> Any:
        channel = Channel(node.address, node.port, ssl=ctx)
        kind = Cardinality.UNARY_STREAM if stream else Cardinality.UNARY_UNARY
        try:
            async with asyncio.timeout(TIMEOUT):
                async with channel.request(path, kind, type(request), reply_type, metadata=metadata) as s:
                    await s.send_message(request, end=True)
                    if not stream:
                        return await s.recv_message()
                    out: list[Any] = []
                    while len(out) < limit and (message := await s.recv_message()) is not None:
                        out.append(message)
                    if len(out) == limit:
                        await s.cancel()  # an Events stream never ends by itself
                    return out
        finally:
            channel.close()

    return asyncio.run(go())


def version(node: FakeTalosNode, ctx: ssl.SSLContext, **kw: Any) -> Any:
    return call(node, ctx, VERSION_PATH, empty_pb2.Empty(), machine_pb2.VersionResponse, **kw)


# --- unknown methods ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "message"), [
    ("/machine.MachineService/Hostname", "method Hostname not implemented"),
    ("/machine.MachineService/NoSuchMethod", "unknown method NoSuchMethod for service machine.MachineService"),
    ("/no.Such/Service", "unknown service no.Such"),
])
def test_unknown_and_unserved_methods_answer_unimplemented_like_grpc_go(
    fleet: FakeTalosFleet, pki: ClusterPKI, path: str, message: str
) -> None:
    node = fleet.add_node("n-0")
    with pytest.raises(GRPCError) as err:  # without a content type grpclib's client would report UNKNOWN
        call(node, admin(pki), path, empty_pb2.Empty(), empty_pb2.Empty)
    assert (err.value.status, err.value.message) == (Status.UNIMPLEMENTED, message)


# --- Version -----------------------------------------------------------------------------------------------------
def test_version_carries_sha_go_version_platform_and_the_rbac_feature(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    node = fleet.add_node("n-0", talos_version="v1.13.0")
    [reply] = version(node, admin(pki)).messages
    assert reply.version.tag == "v1.13.0"
    assert len(reply.version.sha) == 10 and reply.version.go_version == "go1.26.1"
    assert (reply.version.os, reply.version.arch) == ("linux", "amd64")
    assert (reply.platform.name, reply.platform.mode) == ("metal", "metal")
    assert reply.features.rbac
    assert not reply.HasField("metadata")  # a direct call: apid's local backend adds none


def test_version_through_apid_aggregation_names_each_target(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    node = fleet.add_node("n-0")
    replies = version(node, admin(pki), metadata={"nodes": node.address}).messages
    assert [r.metadata.hostname for r in replies] == [node.address]


@pytest.mark.parametrize(("talos", "served"), [("v1.12.1", False), ("v1.13.0", True)])
def test_maintenance_version_is_unimplemented_up_to_1_12_and_served_from_1_13(
    fleet: FakeTalosFleet, talos: str, served: bool
) -> None:
    node = fleet.add_node("n-0", talos_version=talos)
    fleet.set_maintenance(node.name)
    if served:
        [reply] = version(node, insecure_client_context()).messages
        assert reply.version.tag == talos
        assert not reply.HasField("features")  # no machine config, no RBAC flag
    else:
        with pytest.raises(GRPCError) as err:
            version(node, insecure_client_context())
        assert (err.value.status, err.value.message) == (Status.UNIMPLEMENTED,
                                                         "API is not implemented in maintenance mode")


# --- TLS ----------------------------------------------------------------------------------------------------------
def test_a_client_certificate_not_exactly_client_auth_fails_the_handshake_not_a_call(
    fleet: FakeTalosFleet, pki: ClusterPKI
) -> None:
    node = fleet.add_node("n-0")
    pair = pki.client_cert("os:admin", client_auth_only=False)
    ctx = mtls_client_context(pki.ca.cert_pem, pair.cert_pem, pair.key_pem)
    raw = ctx.wrap_socket(socket.create_connection((node.address, node.port), timeout=TIMEOUT),
                          server_hostname=node.address)
    with raw:  # TLS 1.3: the client's side completes; the server ends the connection, no HTTP/2 frame is sent
        raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        try:
            received = raw.recv(64)
        except (ssl.SSLError, ConnectionError):
            received = b""
    assert received == b""
    with pytest.raises((StreamTerminatedError, ConnectionError, ssl.SSLError)):
        version(node, ctx)
    assert version(node, admin(pki)).messages  # a certificate with ClientAuth only is served


# --- COSI ---------------------------------------------------------------------------------------------------------
def test_resource_definitions_are_listed_with_the_aliases_talosctl_resolves(
    fleet: FakeTalosFleet, pki: ClusterPKI
) -> None:
    node = fleet.add_node("n-0", talos_version="v1.14.0")
    listed = call(node, admin(pki), STATE_LIST_PATH,
                  state_pb2.ListRequest(namespace="meta", type="ResourceDefinitions.meta.cosi.dev"),
                  state_pb2.ListResponse, stream=True)
    ids = [r.resource.metadata.id for r in listed]
    assert "machinestatuses.runtime.talos.dev" in ids and "bootids.runtime.talos.dev" in ids
    [status] = [r.resource for r in listed if r.resource.metadata.id == "machinestatuses.runtime.talos.dev"]
    assert "machinestatus" in status.spec.yaml_spec and "allAliases:" in status.spec.yaml_spec
    assert status.spec.proto_spec  # ResolveResourceKind decodes the protobuf spec


def test_machine_status_metadata_carries_timestamps_and_a_version_that_moves(
    fleet: FakeTalosFleet, pki: ClusterPKI
) -> None:
    node = fleet.add_node("n-0")
    get = state_pb2.GetRequest(namespace="runtime", type="MachineStatuses.runtime.talos.dev", id="machine")
    first = call(node, admin(pki), STATE_GET_PATH, get, state_pb2.GetResponse).resource.metadata
    assert first.created.seconds > 1_700_000_000 and first.updated.ToNanoseconds() >= first.created.ToNanoseconds()
    time.sleep(0.01)  # so that `updated` can differ (a real clock, not a wait for a condition)
    node.set_stage("running", False)
    second = call(node, admin(pki), STATE_GET_PATH, get, state_pb2.GetResponse).resource.metadata
    assert int(second.version) == int(first.version) + 1
    assert second.updated.ToNanoseconds() > first.updated.ToNanoseconds()
    assert second.created == first.created


# --- Events and reboots --------------------------------------------------------------------------------------------
def _stage_events(events: list[Any]) -> list[tuple[str, bool]]:
    out = []
    for event in events[1:]:  # the first is machined's empty event
        if event.data.type_url == "talos/runtime/machine.MachineStatusEvent":
            payload = machine_pb2.MachineStatusEvent.FromString(event.data.value)
            out.append((machine_pb2.MachineStatusEvent.MachineStage.Name(payload.stage), payload.status.ready))
    return out


def test_events_start_with_an_empty_event_and_tail_this_boots_log(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    node = fleet.add_node("n-0", stage="booting", ready=False)
    node.set_stage("running", False)
    node.set_stage("running", True)
    events = call(node, admin(pki), EVENTS_PATH, machine_pb2.EventsRequest(tail_events=-1), machine_pb2.Event,
                  stream=True, limit=4)
    assert events[0].data.type_url == "" and events[0].id
    assert _stage_events(events) == [("BOOTING", False), ("RUNNING", False), ("RUNNING", True)]
    none = call(node, admin(pki), EVENTS_PATH, machine_pb2.EventsRequest(tail_events=0), machine_pb2.Event,
                stream=True, limit=1)
    assert len(none) == 1  # only the empty event: tail 0 means no past events


def test_a_reboot_walks_talos_stages_with_the_scenario_timings(pki: ClusterPKI, timeline: Timeline) -> None:
    stages = RebootStages(rebooting=0.3, booting=0.3, not_ready=0.3)
    with FakeTalosFleet(pki, timeline=timeline, reboot_downtime=0.3, reboot_stages=stages) as fleet:
        node = fleet.add_node("n-0")
        boot = node.boot_id
        reply = call(node, admin(pki), REBOOT_PATH, machine_pb2.RebootRequest(), machine_pb2.RebootResponse)
        actor = reply.messages[0].actor_id
        seen: list[object] = []  # what a client can see: (stage, ready) while the API is up, else "down"
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            state = (node.stage, node.ready) if node.up else "down"
            if state == ("running", True) and not seen:
                time.sleep(0.005)  # the reboot starts right after the reply: until then the node is as before
                continue
            if not seen or seen[-1] != state:
                seen.append(state)
            if state == ("running", True):
                break
            time.sleep(0.02)  # sampling a simulated sequence; each stage lasts ≥ 0.3 s
        assert actor
        assert seen == [("rebooting", False), "down", ("booting", False), ("running", False), ("running", True)]
        assert node.boot_id != boot
        events = call(node, admin(pki), EVENTS_PATH, machine_pb2.EventsRequest(tail_events=-1),
                      machine_pb2.Event, stream=True, limit=4)
        assert _stage_events(events) == [("BOOTING", False), ("RUNNING", False), ("RUNNING", True)]


@pytest.mark.parametrize("stage", ["installing", "upgrading", "shutting down"])
def test_a_reboot_while_installing_upgrading_or_shutting_down_is_accepted_and_does_nothing(
    fleet: FakeTalosFleet, pki: ClusterPKI, stage: str
) -> None:
    node = fleet.add_node("n-0", stage=stage, ready=False)
    boot = node.boot_id
    reply = call(node, admin(pki), REBOOT_PATH, machine_pb2.RebootRequest(mode=machine_pb2.RebootRequest.POWERCYCLE),
                 machine_pb2.RebootResponse)
    assert reply.messages[0].actor_id
    time.sleep(0.2)  # longer than the fleet's reboot downtime: a reboot would have happened by now
    assert (node.boot_id, node.stage, node.up) == (boot, stage, True)
    assert [r.dropped for r in fleet.reboots("n-0")] == [True]
    events = call(node, admin(pki), EVENTS_PATH, machine_pb2.EventsRequest(tail_events=-1), machine_pb2.Event,
                  stream=True, limit=3)
    [noop] = [machine_pb2.SequenceEvent.FromString(e.data.value) for e in events
              if e.data.type_url == "talos/runtime/machine.SequenceEvent"]
    assert (noop.sequence, noop.action) == ("reboot", machine_pb2.SequenceEvent.NOOP)
    assert noop.error.message == "sequence not started: locked"


def test_the_event_log_keeps_the_last_thousand_events_like_machined() -> None:
    from sim.talos.events import CAPACITY, EventLog

    log = EventLog()
    for i in range(CAPACITY + 5):
        log.append(machine_pb2.TaskEvent(task=f"t{i}"))
    kept, end = log.since(0)
    assert (len(kept), end) == (CAPACITY, CAPACITY + 5)
    assert kept[0].payload.task == "t5"
    assert log.since(end - 1)[0][0].payload.task == f"t{CAPACITY + 4}"
    everything, _ = log.tail(machine_pb2.EventsRequest(tail_events=-1))
    assert len(everything) == CAPACITY


def test_a_scenarios_reboot_stage_timings_reach_its_fleet_in_wall_seconds() -> None:
    import yaml

    from sim.capi.memstore import MemoryStore
    from sim.scenario_format import from_dict
    from sim.simulator import Simulator

    scenario = from_dict(yaml.safe_load(
        "cluster: demo\nnamespace: sim-unit\ntimings: {reboot: 60, reboot_rebooting: 6, reboot_booting: 30, "
        "reboot_not_ready: 12, time_scale: 60}\n"))
    with Simulator(None, scenario, store=MemoryStore("sim-unit")) as sim:
        assert sim.fleet is not None
        assert sim.fleet.reboot_downtime == pytest.approx(1.0)
        assert sim.fleet.reboot_stages == RebootStages(rebooting=0.1, booting=0.5, not_ready=0.2)
