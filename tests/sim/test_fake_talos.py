"""The fake Talos API serves what Talos serves, checked with a plain grpclib client (not the product client)."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from capi_rollout.adapters.talos import messages
from capi_rollout.adapters.talos.tls import insecure_client_context, mtls_client_context
from sim.pki import ClusterPKI
from sim.talos import FakeTalosFleet, loopback_block
from sim.talos import fleet as sim_fleet
from sim.timeline import Timeline


@pytest.fixture
def fleet(pki: ClusterPKI, timeline: Timeline) -> Iterator[FakeTalosFleet]:
    with FakeTalosFleet(pki, timeline=timeline, reboot_downtime=0.05) as f:
        yield f


def call(address: str, port: int, ctx: ssl.SSLContext, path: str, request: Any, reply_type: Any) -> Any:
    async def go() -> Any:
        channel = Channel(address, port, ssl=ctx)
        try:
            async with asyncio.timeout(2.0):
                return await _unary(channel, path, request, reply_type)
        finally:
            channel.close()

    return asyncio.run(go())


async def _unary(channel: Channel, path: str, request: Any, reply_type: Any) -> Any:
    async with channel.request(path, Cardinality.UNARY_UNARY, type(request), reply_type) as stream:
        await stream.send_message(request, end=True)
        return await stream.recv_message()


def admin(pki: ClusterPKI) -> ssl.SSLContext:
    pair = pki.client_cert("os:admin")
    return mtls_client_context(pki.ca.cert_pem, pair.cert_pem, pair.key_pem)


def test_nodes_get_distinct_loopback_addresses_from_this_process_block(fleet: FakeTalosFleet) -> None:
    a, _ = loopback_block()
    nodes = [fleet.add_node(f"n-{i}") for i in range(3)]
    addresses = [n.address for n in nodes]
    assert len(set(addresses)) == 3
    for address in addresses:
        ip = ipaddress.ip_address(address)
        assert ip.is_loopback and address.startswith(f"127.{a}.")
    assert loopback_block(1234) != loopback_block(1235)
    assert loopback_block() == loopback_block(os.getpid())


def test_an_address_in_use_is_skipped(fleet: FakeTalosFleet) -> None:
    first = fleet.add_node("n-0")
    fleet.remove_node("n-0")
    fleet.add_node("blocker", first.address)  # occupies the address the allocator would try next
    fleet._next_host = 0  # rewind the allocator onto the occupied address
    assert fleet.add_node("n-1").address != first.address


def test_only_loopback_addresses_are_served(fleet: FakeTalosFleet) -> None:
    with pytest.raises(ValueError, match="loopback"):
        fleet.add_node("n-0", "10.0.0.1")


def test_a_client_without_a_certificate_is_refused_in_normal_mode(fleet: FakeTalosFleet) -> None:
    node = fleet.add_node("n-0")
    # TLS 1.3: the client's handshake completes, then the server rejects it and drops the connection.
    with pytest.raises((StreamTerminatedError, ssl.SSLError, ConnectionError)):
        call(node.address, node.port, insecure_client_context(), messages.VERSION_PATH, messages.Empty(),
             messages.VersionResponse)


def test_version_and_machine_status_are_served_over_mtls(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    node = fleet.add_node("n-0", talos_version="v1.13.2", stage="booting", ready=False)
    version = call(node.address, node.port, admin(pki), messages.VERSION_PATH, messages.Empty(),
                   messages.VersionResponse)
    assert version.messages[0].version.tag == "v1.13.2"
    # a direct call reaches machined through apid's local backend: no metadata (apid names nodes only when asked
    # to aggregate, with `nodes` metadata: see test_talos_api.py)
    assert not version.messages[0].HasField("metadata")
    request = messages.GetRequest(namespace="runtime", type="MachineStatuses.runtime.talos.dev", id="machine")
    reply = call(node.address, node.port, admin(pki), messages.STATE_GET_PATH, request, messages.GetResponse)
    assert reply.resource.metadata.id == "machine"
    assert "stage: booting" in reply.resource.spec.yaml_spec
    missing = messages.GetRequest(namespace="runtime", type="Nope", id="x")
    with pytest.raises(GRPCError) as err:
        call(node.address, node.port, admin(pki), messages.STATE_GET_PATH, missing, messages.GetResponse)
    assert err.value.status is Status.NOT_FOUND


@pytest.mark.parametrize(
    ("version", "status", "message"),
    [("v1.11.0", Status.UNIMPLEMENTED, "method Reboot not implemented"),
     ("v1.12.0", Status.UNIMPLEMENTED, "method Reboot not implemented"),
     ("v1.13.0", Status.PERMISSION_DENIED, "not authorized")],
)
def test_maintenance_mode_serves_readers_without_a_client_cert_and_refuses_reboot_like_talos(
    fleet: FakeTalosFleet, timeline: Timeline, version: str, status: Status, message: str
) -> None:
    node = fleet.add_node("n-0", talos_version=version)
    fleet.set_maintenance("n-0")
    assert timeline.first("talos.maintenance", "n-0") is not None
    insecure = insecure_client_context()
    request = messages.GetRequest(namespace="runtime", type="MachineStatuses.runtime.talos.dev", id="machine")
    reply = call(node.address, node.port, insecure, messages.STATE_GET_PATH, request, messages.GetResponse)
    assert "stage: maintenance" in reply.resource.spec.yaml_spec
    with pytest.raises(GRPCError) as err:
        call(node.address, node.port, insecure, messages.REBOOT_PATH, messages.RebootRequest(mode=1),
             messages.RebootResponse)
    assert (err.value.status, err.value.message) == (status, message)
    assert fleet.reboots() == []


def test_raw_force_on_talos_1_11_is_performed_as_a_default_reboot_like_upstream(
    fleet: FakeTalosFleet, pki: ClusterPKI, timeline: Timeline
) -> None:
    node = fleet.add_node("n-0", talos_version="v1.11.3")
    reply = call(node.address, node.port, admin(pki), messages.REBOOT_PATH, messages.RebootRequest(mode=2),
                 messages.RebootResponse)
    assert reply.messages[0].actor_id
    [record] = fleet.reboots("n-0")
    assert (record.mode, record.effective_mode) == ("force", "default")
    event = timeline.first("talos.reboot", "n-0")
    assert event is not None and event.details["effective_mode"] == "default"


def test_remove_node_closes_the_endpoint(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    node = fleet.add_node("n-0")
    fleet.remove_node("n-0")
    with pytest.raises(ConnectionRefusedError):
        call(node.address, node.port, admin(pki), messages.VERSION_PATH, messages.Empty(), messages.VersionResponse)
    with pytest.raises(KeyError):
        fleet.node("n-0")


def test_a_node_removed_while_rebooting_stays_gone(pki: ClusterPKI, timeline: Timeline,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    with FakeTalosFleet(pki, timeline=timeline, reboot_downtime=0.3) as fleet:
        node = fleet.add_node("n-gone")
        reply = call(node.address, node.port, admin(pki), messages.REBOOT_PATH,
                     messages.RebootRequest(mode=messages.RebootRequest.POWERCYCLE), messages.RebootResponse)
        assert len(reply.messages) == 1
        deadline = time.monotonic() + 5
        # removed once it is down, i.e. while it reboots (removing it before its reboot task ran is another case)
        while not timeline.events("talos.down", "n-gone") and time.monotonic() < deadline:
            time.sleep(0.01)
        fleet.remove_node("n-gone")
        time.sleep(0.5)  # past the simulated downtime: a node that was removed must not come back
        (down,) = timeline.events("talos.down", "n-gone")
        assert [e for e in timeline.events("talos.up", "n-gone") if e.sim_seconds > down.sim_seconds] == []
        assert [n.name for n in fleet.nodes()] == []
    gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_fleets_of_one_process_never_share_an_address_not_even_one_whose_node_is_rebooting(
        pki: ClusterPKI, timeline: Timeline) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with FakeTalosFleet(pki, timeline=timeline, reboot_downtime=2.0) as a, \
            FakeTalosFleet(pki, timeline=timeline, reboot_downtime=2.0) as b:
        rebooting = a.add_node("a-0")
        call(rebooting.address, rebooting.port, admin(pki), messages.REBOOT_PATH,
             messages.RebootRequest(mode=messages.RebootRequest.POWERCYCLE), messages.RebootResponse)
        deadline = time.monotonic() + 5
        while not timeline.events("talos.down", "a-0") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert timeline.events("talos.down", "a-0"), "the node went down: its address is unbound now"

        with ThreadPoolExecutor(max_workers=4) as pool:  # both fleets adding nodes at the same time
            added = list(pool.map(lambda i: (a if i % 2 else b).add_node(f"n-{i}"), range(8)))

        addresses = [rebooting.address, *[n.address for n in added]]
        assert len(set(addresses)) == len(addresses), addresses
        b.remove_node("n-0")
        assert added[0].address not in sim_fleet._CLAIMED, "a removed node's address is released"
    assert not {n.address for n in added} & sim_fleet._CLAIMED, "a stopped fleet releases its addresses"
