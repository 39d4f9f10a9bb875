"""The real Talos client against the simulator's fake Talos API, over real Ed25519 mTLS on loopback."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from capi_rollout.adapters.talos import (
    ProbeState,
    SyncTalosClient,
    TalosClient,
    TalosConfig,
    parse_talosconfig,
)
from capi_rollout.adapters.talos.outcomes import NodeProbe, RebootResult, TalosCallError
from sim.pki import ClusterPKI
from sim.talos import FakeTalosFleet, RebootOutcome, loopback_block
from sim.timeline import Timeline

TIMEOUT = 0.5  # seconds; every client call is bounded by it
DOWNTIME = 0.1  # simulated reboot duration


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait for ``condition`` with a deadline (checks every 10 ms); fail the test when it never holds."""
    deadline = time.monotonic() + timeout
    idle = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        idle.wait(0.01)


@pytest.fixture
def fleet(pki: ClusterPKI, timeline: Timeline) -> Iterator[FakeTalosFleet]:
    with FakeTalosFleet(pki, timeline=timeline, reboot_downtime=DOWNTIME) as f:
        yield f


def config_for(pki: ClusterPKI, role: str = "os:admin", *, client_auth_only: bool = True) -> TalosConfig:
    if client_auth_only:
        return parse_talosconfig(pki.talosconfig([], role=role))
    cert = pki.client_cert(role, client_auth_only=False)
    return TalosConfig("prod-1", (), (), pki.ca.cert_pem, cert.cert_pem, cert.key_pem)


@pytest.fixture
def client(pki: ClusterPKI) -> Iterator[SyncTalosClient]:
    with SyncTalosClient(config_for(pki), timeout=TIMEOUT) as c:
        yield c


def test_a_running_node_probes_running_with_its_stage_over_mtls(fleet: FakeTalosFleet, client: SyncTalosClient) -> None:
    node = fleet.add_node("cp-1")
    probe = client.probe(node.address)
    assert probe == NodeProbe(node.address, ProbeState.RUNNING, "running", True, "stage running, ready")
    assert client.version(node.address) == "v1.12.0"


@pytest.mark.parametrize(("stage", "ready"), [("booting", False), ("running", False), ("upgrading", False)])
def test_other_stages_and_running_but_not_ready_probe_booting(
    fleet: FakeTalosFleet, client: SyncTalosClient, stage: str, ready: bool
) -> None:
    node = fleet.add_node("w-1", stage=stage, ready=ready)
    probe = client.probe(node.address)
    assert (probe.state, probe.stage, probe.ready) == (ProbeState.BOOTING, stage, False)


@pytest.mark.parametrize("mode", ["default", "powercycle", "force"])
def test_reboot_sends_the_mode_and_the_fake_sees_mode_and_role(
    fleet: FakeTalosFleet, client: SyncTalosClient, timeline: Timeline, mode: str
) -> None:
    node = fleet.add_node("cp-1")
    result = client.reboot(node.address, mode)
    assert result.accepted, result.detail
    assert result.state is ProbeState.BOOTING
    assert "Talos reboots in the background" in result.detail
    [record] = fleet.reboots("cp-1")
    assert (record.mode, record.effective_mode, record.role) == (mode, mode, "os:admin")
    event = timeline.first("talos.reboot", "cp-1")
    assert event is not None and event.details["mode"] == mode and event.details["role"] == "os:admin"


def test_a_reboot_takes_the_endpoint_down_then_it_comes_back_with_a_new_boot_id(
    fleet: FakeTalosFleet, client: SyncTalosClient, timeline: Timeline
) -> None:
    node = fleet.add_node("cp-1")
    before = node.boot_id
    assert client.reboot(node.address, "powercycle").accepted
    wait_until(lambda: timeline.first("talos.down", "cp-1") is not None)
    wait_until(lambda: client.probe(node.address).state is ProbeState.RUNNING)
    assert node.boot_id != before
    kinds = [e.kind for e in timeline.events(subject="cp-1")]
    assert kinds == ["talos.up", "talos.reboot", "talos.down", "talos.up"]


def test_while_the_node_is_down_the_probe_says_unreachable(fleet: FakeTalosFleet, client: SyncTalosClient) -> None:
    fleet.on_reboot(lambda node, mode, role: RebootOutcome.NEVER)
    node = fleet.add_node("w-1")
    assert client.reboot(node.address, "default").accepted
    wait_until(lambda: not node.up)
    probe = client.probe(node.address)
    assert probe.state is ProbeState.UNREACHABLE
    assert probe.detail == "connection refused"


def test_a_node_that_reboots_into_maintenance_probes_maintenance(
    fleet: FakeTalosFleet, client: SyncTalosClient, timeline: Timeline
) -> None:
    fleet.on_reboot(lambda node, mode, role: RebootOutcome.MAINTENANCE)
    node = fleet.add_node("w-1")
    assert client.reboot(node.address, "powercycle").accepted
    wait_until(lambda: client.probe(node.address).state is ProbeState.MAINTENANCE)
    assert timeline.first("talos.maintenance", "w-1") is not None


def test_the_operator_role_may_reboot(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    node = fleet.add_node("w-1")
    with SyncTalosClient(config_for(pki, "os:operator"), timeout=TIMEOUT) as operator:
        assert operator.reboot(node.address, "default").accepted
    assert fleet.reboots("w-1")[0].role == "os:operator"


def test_the_reader_role_may_probe_but_its_reboot_is_denied(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    node = fleet.add_node("w-1")
    with SyncTalosClient(config_for(pki, "os:reader"), timeout=TIMEOUT) as reader:
        assert reader.probe(node.address).state is ProbeState.RUNNING
        result = reader.reboot(node.address, "powercycle")
    assert (result.accepted, result.state) == (False, ProbeState.DENIED)
    assert "PERMISSION_DENIED: not authorized" in result.detail
    assert fleet.reboots() == []


def test_a_client_certificate_with_more_than_client_auth_is_refused(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    """apid refuses it in the TLS handshake (TLS 1.3: after the client's side completed), never with a gRPC status:
    the connection just ends. That is a refusal, not an unreachable node, and never an accepted reboot."""
    node = fleet.add_node("w-1")
    with SyncTalosClient(config_for(pki, client_auth_only=False), timeout=TIMEOUT) as wrong_eku:
        probe = wrong_eku.probe(node.address)
        result = wrong_eku.reboot(node.address, "default")
        version = wrong_eku.versions([node.address])[node.address]
    assert probe.state is ProbeState.DENIED
    note = "the talosconfig client certificate's ExtKeyUsage is ClientAuth, ServerAuth, not exactly ClientAuth"
    assert note in probe.detail
    assert (result.accepted, result.state) == (False, ProbeState.DENIED)
    assert note in result.detail
    assert note in version
    assert fleet.reboots() == []


def test_a_node_whose_certificate_is_from_another_ca_is_never_called_running(fleet: FakeTalosFleet) -> None:
    node = fleet.add_node("w-1")
    stranger = ClusterPKI.generate("other")
    with SyncTalosClient(parse_talosconfig(stranger.talosconfig([])), timeout=TIMEOUT) as c:
        probe = c.probe(node.address)
        result = c.reboot(node.address, "default")
    # Issued by another CA (not self-signed like maintenance mode's): untrusted, never read without credentials.
    assert probe.state is ProbeState.UNTRUSTED
    assert probe.detail.startswith("x509: certificate signed by unknown authority")
    assert "certificate SHA-256 fingerprint SHA256:" in probe.detail
    assert not result.accepted
    assert fleet.reboots() == []


@pytest.mark.parametrize(
    ("version", "behaviour"), [("v1.12.0", "unimplemented"), ("v1.13.0", "permission-denied")]
)
def test_maintenance_mode_is_detected_and_never_sent_a_reboot(
    fleet: FakeTalosFleet, client: SyncTalosClient, version: str, behaviour: str
) -> None:
    node = fleet.add_node("w-1", talos_version=version)
    fleet.set_maintenance(node.name)
    assert node.maintenance_reboot_behaviour == behaviour
    probe = client.probe(node.address)
    assert (probe.state, probe.stage) == (ProbeState.MAINTENANCE, "maintenance")
    assert "x509: certificate signed by unknown authority" in probe.detail
    result = client.reboot(node.address, "powercycle")
    assert (result.accepted, result.state) == (False, ProbeState.MAINTENANCE)
    assert fleet.reboots() == []
    if version == "v1.13.0":
        assert client.version(node.address) == version  # apid serves the reader role the version
    else:  # the separate maintenance server of Talos ≤ 1.12 serves Version to os:admin only
        with pytest.raises(TalosCallError) as err:
            client.version(node.address)
        assert err.value.state is ProbeState.MAINTENANCE
        assert "UNIMPLEMENTED: API is not implemented in maintenance mode" in err.value.detail


def test_force_on_talos_older_than_1_12_is_refused_before_sending(
    fleet: FakeTalosFleet, client: SyncTalosClient
) -> None:
    node = fleet.add_node("w-1", talos_version="v1.11.5")
    result = client.reboot(node.address, "force")
    assert (result.accepted, result.state) == (False, ProbeState.RUNNING)
    assert "needs Talos v1.12 or later and the node runs v1.11.5" in result.detail
    assert fleet.reboots() == []
    assert client.reboot(node.address, "powercycle").accepted


def test_an_unknown_reboot_mode_is_a_caller_error(client: SyncTalosClient) -> None:
    with pytest.raises(ValueError, match="reboot mode must be one of"):
        client.reboot("127.0.0.1", "halt")


def test_a_stopped_endpoint_is_unreachable(fleet: FakeTalosFleet, client: SyncTalosClient) -> None:
    node = fleet.add_node("w-1")
    fleet.set_unreachable(node.name, True)
    probe = client.probe(node.address)
    assert (probe.state, probe.detail) == (ProbeState.UNREACHABLE, "connection refused")
    result = client.reboot(node.address, "default")
    assert (result.accepted, result.state) == (False, ProbeState.UNREACHABLE)
    with pytest.raises(TalosCallError) as err:
        client.version(node.address)
    assert err.value.state is ProbeState.UNREACHABLE
    fleet.set_unreachable(node.name, False)
    assert client.probe(node.address).state is ProbeState.RUNNING


def test_a_silent_endpoint_is_unreachable_within_the_timeout(pki: ClusterPKI) -> None:
    a, b = loopback_block()
    with socket.socket() as silent:  # accepts TCP (backlog) but never speaks TLS
        silent.bind((f"127.{a}.{b}.250", 0))
        silent.listen(8)
        host, port = silent.getsockname()
        with SyncTalosClient(config_for(pki), timeout=0.2) as c:
            started = time.monotonic()
            probe = c.probe(f"{host}:{port}")
            elapsed = time.monotonic() - started
    assert probe.state is ProbeState.UNREACHABLE
    assert probe.detail == "no answer within 0.2s"
    assert elapsed < 2.0  # the bound, not the default timeout (10 s), ended the call


def test_an_address_port_overrides_the_default_port(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    node = fleet.add_node("cp-1")
    with SyncTalosClient(config_for(pki), port=1, timeout=TIMEOUT) as c:
        assert c.probe(f"{node.address}:{node.port}").state is ProbeState.RUNNING
        assert c.probe(node.address).state is ProbeState.UNREACHABLE


def test_probe_many_probes_every_node_with_bounded_concurrency(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    nodes = [fleet.add_node(f"w-{i}") for i in range(6)]
    fleet.set_unreachable(nodes[2].name, True)
    nodes[4].set_stage("booting", False)

    class Counting(TalosClient):
        active = peak = 0

        async def probe(self, address: str) -> NodeProbe:
            Counting.active += 1
            Counting.peak = max(Counting.peak, Counting.active)
            try:
                await asyncio.sleep(0)  # yield so concurrent probes can overlap
                return await super().probe(address)
            finally:
                Counting.active -= 1

    async def run() -> dict[str, NodeProbe]:
        return await Counting(config_for(pki), timeout=TIMEOUT).probe_many([n.address for n in nodes], concurrency=2)

    results = asyncio.run(run())
    assert list(results) == [n.address for n in nodes]
    states = [results[n.address].state for n in nodes]
    assert states == [ProbeState.RUNNING, ProbeState.RUNNING, ProbeState.UNREACHABLE, ProbeState.RUNNING,
                      ProbeState.BOOTING, ProbeState.RUNNING]
    assert Counting.peak == 2


def test_sync_probe_many_returns_one_probe_per_address(fleet: FakeTalosFleet, client: SyncTalosClient) -> None:
    nodes = [fleet.add_node(f"w-{i}") for i in range(3)]
    results = client.probe_many([n.address for n in nodes] + [nodes[0].address])
    assert {a: p.state for a, p in results.items()} == {n.address: ProbeState.RUNNING for n in nodes}


def test_key_material_never_appears_in_reprs_or_logs(
    fleet: FakeTalosFleet, pki: ClusterPKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    text = pki.talosconfig([])
    config = parse_talosconfig(text)
    node = fleet.add_node("cp-1")
    with SyncTalosClient(config, timeout=TIMEOUT) as c:
        c.probe(node.address)
        c.reboot(node.address, "powercycle")
        shown = repr(config) + str(config) + repr(c)
    key_body = b"".join(config.key_pem.splitlines()[1:-1]).decode()
    key_b64 = base64.b64encode(config.key_pem).decode()
    for secret in (key_body, key_b64, key_body[:24]):
        assert secret not in shown
        assert secret not in caplog.text
    assert "key_pem=<hidden>" in repr(config)
    assert "talos reboot" in caplog.text  # the logs do say what happened


def test_unavailable_right_after_the_request_was_sent_counts_as_accepted(pki: ClusterPKI) -> None:
    """Talos may drop the connection as it starts rebooting; the request was sent, so the reboot is accepted."""
    import grpclib.const
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError
    from grpclib.server import Server, Stream

    from capi_rollout.adapters.talos import messages
    from sim.talos.tls import server_context

    received: list[int] = []

    class GoingDown:
        async def reboot(self, stream: Stream[object, object]) -> None:
            request: object = await stream.recv_message()
            received.append(request.mode)  # type: ignore[attr-defined]
            raise GRPCError(Status.UNAVAILABLE, "connection closing")

        def __mapping__(self) -> dict[str, grpclib.const.Handler]:
            return {messages.REBOOT_PATH: grpclib.const.Handler(
                self.reboot, grpclib.const.Cardinality.UNARY_UNARY, messages.RebootRequest, messages.RebootResponse)}

    a, b = loopback_block()
    host = f"127.{a}.{b}.251"
    cert = pki.server_cert(host, "cp-9")

    async def scenario() -> RebootResult:
        server = Server([GoingDown()])
        await server.start(host, 0, ssl=server_context(cert.cert_pem, cert.key_pem, pki.ca.cert_pem)[0])
        port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            return await TalosClient(config_for(pki), timeout=TIMEOUT).reboot(f"{host}:{port}", "powercycle")
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(scenario())
    assert received == [1]
    assert result.accepted
    assert "UNAVAILABLE right after the request was sent" in result.detail


# --- boot id and reboot confirmation (what `talosctl reboot --wait` checks) ------------------------------------
def test_the_boot_id_is_read_like_talosctl_and_from_the_v1_14_resource(fleet: FakeTalosFleet, pki: ClusterPKI) -> None:
    old = fleet.add_node("w-1", talos_version="v1.12.0")
    new = fleet.add_node("w-2", talos_version="v1.14.0")
    with SyncTalosClient(config_for(pki), timeout=TIMEOUT) as admin:
        assert admin._run(admin._client.boot_id(old.address)) == old.boot_id  # MachineService/Read, os:admin
    with SyncTalosClient(config_for(pki, "os:operator"), timeout=TIMEOUT) as operator:
        assert operator._run(operator._client.boot_id(old.address)) is None  # Read denied, no BootID resource
        assert operator._run(operator._client.boot_id(new.address)) == new.boot_id  # BootIDs.runtime.talos.dev


def test_an_accepted_reboot_is_confirmed_by_the_boot_id_changing(
    fleet: FakeTalosFleet, client: SyncTalosClient
) -> None:
    node = fleet.add_node("cp-1")
    before = node.boot_id
    result = client.reboot(node.address, "powercycle", node_name="cp-1")
    assert result.accepted and result.boot_id == before
    seen = client.confirm_reboot(node.address, result.boot_id, within=3.0, interval=0.02)
    assert seen.observed, seen.detail
    assert seen.detail.startswith(f"boot id changed ({before[:8]}")


@pytest.mark.parametrize("stage", ["upgrading", "installing"])
def test_a_reboot_talos_accepts_but_drops_is_reported_as_not_observed(
    fleet: FakeTalosFleet, client: SyncTalosClient, stage: str
) -> None:
    node = fleet.add_node("w-1")
    node.set_stage(stage, False)
    result = client.reboot(node.address, "powercycle", node_name="w-1")
    assert result.accepted and "actor id" in result.detail  # Talos says yes ...
    started = time.monotonic()
    seen = client.confirm_reboot(node.address, result.boot_id, within=0.4, interval=0.05)
    assert not seen.observed  # ... and nothing happens
    assert seen.detail.startswith("reboot requested but not observed within 0.4s: the boot id is still ")
    assert time.monotonic() - started < 2.0
    [record] = fleet.reboots("w-1")
    assert record.dropped


def test_a_reboot_the_fake_is_told_to_drop_is_not_observed(fleet: FakeTalosFleet, client: SyncTalosClient) -> None:
    fleet.on_reboot(lambda node, mode, role: RebootOutcome.DROPPED)
    node = fleet.add_node("w-1")
    result = client.reboot(node.address, "default")
    seen = client.confirm_reboot(node.address, result.boot_id, within=0.3, interval=0.05)
    assert result.accepted and not seen.observed


def test_without_a_readable_boot_id_the_api_going_away_and_back_confirms_the_reboot(
    fleet: FakeTalosFleet, pki: ClusterPKI
) -> None:
    # Without a boot id only the API's absence proves the reboot: the outage must outlast one probe, which a
    # loaded machine stretches past the usual 0.1 s.
    fleet.reboot_downtime = 1.0
    node = fleet.add_node("w-1", talos_version="v1.12.0")
    with SyncTalosClient(config_for(pki, "os:operator"), timeout=TIMEOUT) as operator:
        result = operator.reboot(node.address, "default", node_name="w-1")
        assert result.accepted and result.boot_id is None
        seen = operator.confirm_reboot(node.address, None, within=3.0, interval=0.02)
    assert seen.observed and seen.detail.startswith("the Talos API went away and came back")


def test_a_node_that_never_comes_back_is_not_observed(fleet: FakeTalosFleet, client: SyncTalosClient) -> None:
    fleet.on_reboot(lambda node, mode, role: RebootOutcome.NEVER)
    node = fleet.add_node("w-1")
    result = client.reboot(node.address, "default")
    seen = client.confirm_reboot(node.address, result.boot_id, within=0.6, interval=0.05)
    assert not seen.observed and "went away and did not come back" in seen.detail


def test_a_node_whose_machine_was_deleted_is_confirmed_once_its_api_goes_away(
    fleet: FakeTalosFleet, client: SyncTalosClient
) -> None:
    """The Machine was deleted with the reboot: its infrastructure may never bring the node back, so waiting for
    it to come back would hold the phase loop for the whole bound (stallTimeout)."""
    fleet.on_reboot(lambda node, mode, role: RebootOutcome.NEVER)
    node = fleet.add_node("w-1")
    result = client.reboot(node.address, "default")
    started = time.monotonic()
    seen = client.confirm_reboot(node.address, result.boot_id, within=30.0, interval=0.05, removing=True)
    assert seen.observed and seen.detail.startswith("the Talos API went away after its Machine was deleted")
    assert time.monotonic() - started < 15.0, "it did not wait out the bound"


def test_a_dropped_reboot_is_not_observed_even_when_the_machine_was_deleted(
    fleet: FakeTalosFleet, client: SyncTalosClient
) -> None:
    fleet.on_reboot(lambda node, mode, role: RebootOutcome.DROPPED)
    node = fleet.add_node("w-1")
    result = client.reboot(node.address, "default")
    seen = client.confirm_reboot(node.address, result.boot_id, within=0.3, interval=0.05, removing=True)
    assert result.accepted and not seen.observed  # the API never went away: removing proves nothing
