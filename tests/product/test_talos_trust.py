"""Impostors on the Talos port: real TLS servers (the fake Talos) presenting certificates the client must not trust.

Each impostor answers "maintenance" to anyone who reads it without credentials. The client must fall back to that
credential-free read only for a self-signed certificate (what Talos maintenance mode serves), never for a
certificate of another CA, a certificate of the talosconfig CA issued for another address, or an expired one;
and it must never send such a node a Reboot. Messages carry the x509 reason and the SHA-256 fingerprint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from capi_rollout.adapters.talos import ProbeState, SyncTalosClient, parse_talosconfig
from capi_rollout.adapters.talos.outcomes import TalosCallError
from sim.pki import CertKey, ClusterPKI
from sim.talos import FakeTalosFleet, FakeTalosNode
from sim.timeline import Timeline

TIMEOUT = 0.5


@pytest.fixture
def fleet(pki: ClusterPKI, timeline: Timeline) -> Iterator[FakeTalosFleet]:
    with FakeTalosFleet(pki, timeline=timeline, reboot_downtime=0.05) as f:
        yield f


@pytest.fixture
def client(pki: ClusterPKI) -> Iterator[SyncTalosClient]:
    with SyncTalosClient(parse_talosconfig(pki.talosconfig([])), timeout=TIMEOUT) as c:
        yield c


def sha256(cert: CertKey) -> str:
    digest = x509.load_pem_x509_certificate(cert.cert_pem).fingerprint(hashes.SHA256())
    return "SHA256:" + ":".join(f"{b:02X}" for b in digest)


def impostor(fleet: FakeTalosFleet, pki: ClusterPKI, kind: str) -> tuple[FakeTalosNode, CertKey]:
    """A node at a Machine's address claiming maintenance, presenting the certificate ``kind`` names."""
    node = fleet.add_node("w-1")
    now = dt.datetime.now(dt.UTC)
    if kind == "wrong CA":
        cert = ClusterPKI.generate("evil").server_cert(node.address, "w-1")
    elif kind == "right CA, wrong IP":
        cert = pki.server_cert("127.254.254.254", "w-7")
    else:  # expired, right CA
        cert = pki.server_cert(node.address, "w-1", valid=(now - dt.timedelta(days=3), now - dt.timedelta(days=1)))
    fleet.set_maintenance(node.name)  # answers "maintenance" to a credential-free read
    fleet.set_certificate("w-1", cert)
    return node, cert


REASONS = {
    "wrong CA": "x509: certificate signed by unknown authority (O=talos",
    "right CA, wrong IP": "x509: certificate is valid for w-7, 127.254.254.254, not ",
    "expired, right CA": "x509: certificate has expired (valid until ",
}


@pytest.mark.parametrize("kind", list(REASONS))
def test_an_impostor_is_neither_believed_in_maintenance_nor_rebooted(
    fleet: FakeTalosFleet, pki: ClusterPKI, client: SyncTalosClient, kind: str
) -> None:
    node, cert = impostor(fleet, pki, kind)
    probe = client.probe(node.address)
    assert probe.state is ProbeState.UNTRUSTED, probe
    assert probe.stage is None  # it was never read without credentials
    assert REASONS[kind] in probe.detail
    assert f"certificate SHA-256 fingerprint {sha256(cert)}" in probe.detail
    result = client.reboot(node.address, "powercycle", node_name="w-1")
    assert (result.accepted, result.state) == (False, ProbeState.UNTRUSTED)
    assert REASONS[kind] in result.detail and "not sent" in result.detail
    with pytest.raises(TalosCallError) as err:
        client.version(node.address)
    assert err.value.state is ProbeState.UNTRUSTED
    assert fleet.reboots() == []


def test_genuine_maintenance_mode_is_believed_and_says_the_fingerprint(
    fleet: FakeTalosFleet, client: SyncTalosClient
) -> None:
    node = fleet.add_node("w-1")
    fleet.set_maintenance(node.name)
    probe = client.probe(node.address)
    assert probe.state is ProbeState.MAINTENANCE
    assert "self-signed, not the talosconfig CA" in probe.detail
    assert "certificate SHA-256 fingerprint SHA256:" in probe.detail


def test_a_self_signed_certificate_on_a_node_that_is_not_in_maintenance_is_not_trusted(
    fleet: FakeTalosFleet, client: SyncTalosClient
) -> None:
    from sim.pki import self_signed

    node = fleet.add_node("w-1")
    node._set(maintenance=True)  # serves without asking for a client certificate ...
    fleet.set_certificate("w-1", self_signed(node.address))
    node.set_stage("running", True)  # ... but says stage running
    probe = client.probe(node.address)
    assert probe.state is ProbeState.UNTRUSTED
    assert "insecure read says stage running" in probe.detail
    assert not client.reboot(node.address, "default").accepted
    assert fleet.reboots() == []


def test_a_node_of_this_cluster_answering_for_another_machine_is_not_rebooted(
    fleet: FakeTalosFleet, client: SyncTalosClient
) -> None:
    node = fleet.add_node("w-2")  # the Machine w-1's address now leads to node w-2 (address reused)
    result = client.reboot(node.address, "powercycle", node_name="w-1")
    assert (result.accepted, result.state) == (False, ProbeState.UNTRUSTED)
    assert f"not sent: the node answering at {node.address} is not node w-1" in result.detail
    # Talos's Version reply names no host on a direct call (apid's local backend), so the certificate decides
    assert "its Version reply says no hostname; its certificate names" in result.detail
    assert ", w-2)" in result.detail
    assert fleet.reboots() == []
    assert client.reboot(node.address, "powercycle", node_name="w-2").accepted  # the right name: sent


def test_the_hostname_check_accepts_the_short_name_of_an_fqdn(fleet: FakeTalosFleet, client: SyncTalosClient) -> None:
    node = fleet.add_node("w-3")
    assert client.reboot(node.address, "default", node_name="W-3.cluster.example").accepted
