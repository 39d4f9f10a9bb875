"""Ed25519 PKI of a simulated Talos cluster: the OS CA, node server certificates, client certificates and the
talosconfig (file and Secret) the CAPI Talos bootstrap provider writes.

Contract: pure computation with ``cryptography``, no I/O. Mirrors what Talos mints:

* CA: Ed25519, self-signed, ``O=talos``, CA:true, keyCertSign.
* Server certificates: signed by the CA, SANs = the node address (IP) and hostname (plus any extra names the
  in-cluster mode adds: Service DNS names, the pod address), ExtKeyUsage ServerAuth.
* Client certificates: signed by the CA, roles in the Subject Organization (``os:admin``, ``os:operator``,
  ``os:reader``), ExtKeyUsage exactly ClientAuth (``client_auth_only=False`` adds ServerAuth, which Talos refuses).
* Maintenance mode: a self-signed certificate unrelated to the CA.

Keys are PKCS#8 PEM with the label Talos uses, ``ED25519 PRIVATE KEY``; reprs never show them.
The talosconfig YAML is laid out as Talos's ``config.Bytes()`` (gopkg.in/yaml.v3) writes it, from
siderolabs/talos ``pkg/machinery/client/config/config.go``; the Secret as siderolabs/
cluster-api-bootstrap-provider-talos writes it (``<cluster>-talosconfig``, data key ``talosconfig``).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sim.objects import CAPI_CLUSTER_LABEL

_VALIDITY = dt.timedelta(days=365)
CLUSTER_API_VERSION = "cluster.x-k8s.io/v1beta2"


@dataclass(frozen=True)
class CertKey:
    """A PEM certificate and its PEM key (Talos label). ``repr`` hides the key."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"CertKey(cert_pem=<{len(self.cert_pem)} bytes>, key_pem=<hidden>)"

    __str__ = __repr__


def _key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.replace(b"BEGIN PRIVATE KEY", b"BEGIN ED25519 PRIVATE KEY").replace(
        b"END PRIVATE KEY", b"END ED25519 PRIVATE KEY"
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ed25519.Ed25519PublicKey, *,
             valid: tuple[dt.datetime, dt.datetime] | None = None) -> x509.CertificateBuilder:
    now = _now()
    not_before, not_after = valid or (now - dt.timedelta(minutes=5), now + _VALIDITY)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _san(address: str, hostname: str | None, extra: tuple[str, ...] = ()) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [_general_name(address)]
    if hostname and hostname != address:
        names.append(x509.DNSName(hostname))
    for name in extra:
        general = _general_name(name)
        if general not in names:
            names.append(general)
    return x509.SubjectAlternativeName(names)


def _leaf_usage(builder: x509.CertificateBuilder, ekus: list[x509.ObjectIdentifier]) -> x509.CertificateBuilder:
    return (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    )


@dataclass(frozen=True, repr=False)
class ClusterPKI:
    """The Talos OS CA of one simulated cluster; mints node and client certificates."""

    cluster_name: str
    ca: CertKey
    _ca_key: ed25519.Ed25519PrivateKey
    _ca_cert: x509.Certificate

    def __repr__(self) -> str:
        return f"ClusterPKI(cluster_name={self.cluster_name!r})"

    @classmethod
    def generate(cls, cluster_name: str) -> ClusterPKI:
        key = ed25519.Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talos")])
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, None)
        )
        ca = CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
        return cls(cluster_name, ca, key, cert)

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()), critical=False
        ).sign(self._ca_key, None)

    def server_cert(self, address: str, hostname: str, *, extra_sans: tuple[str, ...] = (),
                    valid: tuple[dt.datetime, dt.datetime] | None = None) -> CertKey:
        """A node's apid certificate: SANs = address (IP), hostname and ``extra_sans`` (e.g. a Service's DNS
        names and the pod address in the in-cluster mode), ExtKeyUsage ServerAuth; ``valid`` = (not before,
        not after) for tests of expired certificates."""
        key = ed25519.Ed25519PrivateKey.generate()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
        builder = _leaf_usage(
            _builder(subject, self._ca_cert.subject, key.public_key(), valid=valid), [ExtendedKeyUsageOID.SERVER_AUTH]
        ).add_extension(_san(address, hostname, extra_sans), critical=False)
        return CertKey(self._sign(builder).public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def client_cert(self, role: str = "os:admin", *, client_auth_only: bool = True,
                    valid: tuple[dt.datetime, dt.datetime] | None = None) -> CertKey:
        """A talosctl client certificate; ``role`` may list several roles separated by commas."""
        key = ed25519.Ed25519PrivateKey.generate()
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, r.strip()) for r in role.split(",") if r.strip()]
        subject = x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, "talosctl")])
        ekus = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if not client_auth_only:
            ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = _leaf_usage(_builder(subject, self._ca_cert.subject, key.public_key(), valid=valid), ekus)
        return CertKey(self._sign(builder).public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def talosconfig(self, endpoints: list[str], *, role: str = "os:admin", client: CertKey | None = None) -> str:
        """The talosconfig YAML as the bootstrap provider writes it: one context named after the cluster
        (``client``: a certificate of your own, e.g. an expired one)."""
        client = client or self.client_cert(role)
        b64 = [base64.b64encode(pem).decode("ascii") for pem in (self.ca.cert_pem, client.cert_pem, client.key_pem)]
        lines = [f"context: {self.cluster_name}", "contexts:", f"    {self.cluster_name}:"]
        if endpoints:
            lines.append("        endpoints:")
            lines.extend(f"            - {e}" for e in endpoints)
        else:
            lines.append("        endpoints: []")
        lines += [f"        ca: {b64[0]}", f"        crt: {b64[1]}", f"        key: {b64[2]}"]
        return "\n".join(lines) + "\n"

    def talosconfig_secret(
        self,
        namespace: str,
        cluster_uid: str | None,
        *,
        endpoints: list[str] | None = None,
        cluster_api_version: str = CLUSTER_API_VERSION,
    ) -> dict[str, Any]:
        """The ``<cluster>-talosconfig`` Secret (data base64-encoded, as the API server stores it)."""
        text = self.talosconfig(endpoints or [])
        metadata: dict[str, Any] = {
            "name": f"{self.cluster_name}-talosconfig",
            "namespace": namespace,
            "labels": {CAPI_CLUSTER_LABEL: self.cluster_name},
        }
        if cluster_uid is not None:
            metadata["ownerReferences"] = [{
                "apiVersion": cluster_api_version,
                "kind": "Cluster",
                "name": self.cluster_name,
                "uid": cluster_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }]
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
            "data": {"talosconfig": base64.b64encode(text.encode()).decode("ascii")},
        }


def self_signed(address: str) -> CertKey:
    """The certificate a node in maintenance mode serves: self-signed, unrelated to any cluster CA."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talos"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "maintenance-service")])
    cert = _leaf_usage(_builder(name, name, key.public_key()), [ExtendedKeyUsageOID.SERVER_AUTH]).add_extension(
        _san(address, None), critical=False
    ).sign(key, None)
    return CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
