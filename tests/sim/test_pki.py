"""The simulated cluster PKI mints what Talos mints: Ed25519 CA, node and client certificates, talosconfig."""

from __future__ import annotations

import base64
import ipaddress

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from capi_rollout.adapters.talos import parse_talosconfig
from sim.pki import ClusterPKI, self_signed


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI.generate("prod-1")


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_the_ca_is_an_ed25519_self_signed_ca(pki: ClusterPKI) -> None:
    ca = cert(pki.ca.cert_pem)
    assert isinstance(ca.public_key(), ed25519.Ed25519PublicKey)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.issuer == ca.subject


def test_server_certificates_carry_the_node_address_and_hostname(pki: ClusterPKI) -> None:
    server = cert(pki.server_cert("127.1.2.3", "cp-1").cert_pem)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.1.2.3")]
    assert san.get_values_for_type(x509.DNSName) == ["cp-1"]
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    server.verify_directly_issued_by(cert(pki.ca.cert_pem))


@pytest.mark.parametrize(("only", "ekus"), [
    (True, [ExtendedKeyUsageOID.CLIENT_AUTH]),
    (False, [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
])
def test_client_certificates_carry_the_role_in_the_organization(
    pki: ClusterPKI, only: bool, ekus: list[x509.ObjectIdentifier]
) -> None:
    client = cert(pki.client_cert("os:operator", client_auth_only=only).cert_pem)
    assert [a.value for a in client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["os:operator"]
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == ekus
    client.verify_directly_issued_by(cert(pki.ca.cert_pem))


def test_keys_use_the_talos_pem_label_and_reprs_hide_them(pki: ClusterPKI) -> None:
    pair = pki.client_cert()
    assert pair.key_pem.startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")
    assert "hidden" in repr(pair) and pair.key_pem.decode() not in repr(pair) + str(pair) + repr(pki)


def test_the_talosconfig_is_laid_out_as_the_bootstrap_provider_writes_it(pki: ClusterPKI) -> None:
    text = pki.talosconfig(["10.0.0.1", "10.0.0.2"], role="os:admin")
    lines = text.splitlines()
    assert lines[:7] == [
        "context: prod-1", "contexts:", "    prod-1:", "        endpoints:", "            - 10.0.0.1",
        "            - 10.0.0.2", lines[6],
    ]
    assert [line.split(":")[0].strip() for line in lines[6:]] == ["ca", "crt", "key"]
    doc = yaml.safe_load(text)
    assert "nodes" not in doc["contexts"]["prod-1"]
    assert base64.b64decode(doc["contexts"]["prod-1"]["ca"]) == pki.ca.cert_pem
    assert parse_talosconfig(text).endpoints == ("10.0.0.1", "10.0.0.2")


def test_the_talosconfig_secret_is_owned_by_the_cluster(pki: ClusterPKI) -> None:
    secret = pki.talosconfig_secret("fleet", "uid-123", endpoints=["10.0.0.1"])
    assert secret["metadata"]["name"] == "prod-1-talosconfig"
    assert secret["metadata"]["namespace"] == "fleet"
    assert secret["metadata"]["labels"] == {"cluster.x-k8s.io/cluster-name": "prod-1"}
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Cluster", "prod-1", "uid-123", True)
    assert owner["apiVersion"].startswith("cluster.x-k8s.io/")
    text = base64.b64decode(secret["data"]["talosconfig"]).decode()
    assert parse_talosconfig(text).context == "prod-1"
    assert "ownerReferences" not in pki.talosconfig_secret("fleet", None)["metadata"]


def test_the_maintenance_certificate_is_self_signed_and_not_from_the_ca(pki: ClusterPKI) -> None:
    maintenance = cert(self_signed("127.1.2.3").cert_pem)
    assert maintenance.issuer == maintenance.subject
    assert maintenance.issuer != cert(pki.ca.cert_pem).subject
