"""Why a Talos node's certificate failed verification, and whether that may be Talos maintenance mode.

Contract: pure, no I/O (``cryptography`` only). The client hands in the DER certificate a node presented (read
without verification after the verified handshake failed), the talosconfig CA and ``now``; :func:`judge` says
whether the credential-free read is allowed and why, with the x509 reason and the certificate's SHA-256
fingerprint. The rule:

* signed by the talosconfig CA, yet it failed: expired, not yet valid, or issued for another address/name. A
  node of *this* cluster answering with the wrong identity is never read without credentials and never
  rebooted — it is not maintenance mode (which never has a certificate of the cluster CA);
* self-signed and not the CA: what Talos maintenance mode serves (``maintenance-service``, self-signed). Only
  this case may be read without credentials, to see whether the stage says ``maintenance``;
* issued by some other CA (not self-signed): not maintenance mode, not ours — an impostor or another cluster's
  node. Never read, never rebooted.

:func:`client_validity` reads the talosconfig client certificate's validity window, for preflight;
:func:`client_ext_key_usage` its ExtKeyUsage (apid refuses anything but exactly ClientAuth in the TLS handshake).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID


@dataclass(frozen=True)
class Judgement:
    """The verdict on one presented certificate."""

    may_be_maintenance: bool  # True only for a self-signed certificate that is not the talosconfig CA
    reason: str  # the x509 reason, in words
    fingerprint: str  # "SHA256:AB:CD:..."

    @property
    def detail(self) -> str:
        return f"{self.reason}; certificate SHA-256 fingerprint {self.fingerprint}"


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint as ``openssl x509 -fingerprint -sha256`` prints it (``SHA256:AB:CD:…``)."""
    cert = x509.load_der_x509_certificate(der)
    return "SHA256:" + ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """DNS names and IP addresses of the Subject Alternative Name extension (empty when there is none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(n) for n in san.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _host_matches(host: str, names: tuple[str, ...]) -> bool:
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".") in {n.lower().rstrip(".") for n in names}
    for name in names:
        try:
            if ipaddress.ip_address(name) == wanted:
                return True
        except ValueError:
            continue
    return False


def judge(der: bytes, *, ca_pem: bytes, host: str, now: dt.datetime, openssl_reason: str = "") -> Judgement:
    """The verdict on the certificate ``der`` that the node at ``host`` presented (see the module docstring)."""
    cert = x509.load_der_x509_certificate(der)
    print_ = fingerprint(der)
    cas = x509.load_pem_x509_certificates(ca_pem)
    names = certificate_names(cert)
    if any(_issued_by(cert, ca) for ca in cas):
        if cert.not_valid_after_utc < now:
            why = f"x509: certificate has expired (valid until {_ts(cert.not_valid_after_utc)})"
        elif cert.not_valid_before_utc > now:
            why = f"x509: certificate is not yet valid (valid from {_ts(cert.not_valid_before_utc)})"
        elif not _host_matches(host, names):
            why = f"x509: certificate is valid for {', '.join(names) or 'no name'}, not {host}"
        else:
            why = f"x509: {openssl_reason or 'certificate rejected'}"
        return Judgement(False, why + ", although it is signed by the talosconfig CA: the node answering is not "
                         "the node meant (not maintenance mode, which never has a certificate of the cluster CA)",
                         print_)
    if cert.issuer == cert.subject and _issued_by(cert, cert):
        return Judgement(True, "x509: certificate signed by unknown authority (self-signed, not the talosconfig "
                         "CA, as Talos maintenance mode presents)", print_)
    issuer = cert.issuer.rfc4514_string() or "an empty issuer name"
    return Judgement(False, f"x509: certificate signed by unknown authority ({issuer}, which is neither the "
                     "talosconfig CA nor self-signed as Talos maintenance mode's certificate is)", print_)


@dataclass(frozen=True)
class Validity:
    not_before: dt.datetime
    not_after: dt.datetime


def client_ext_key_usage(crt_pem: bytes) -> tuple[str, ...]:
    """The ExtKeyUsage of the (first) certificate in ``crt_pem`` (``("ClientAuth",)``; unknown usages as dotted
    OIDs; empty without the extension); ValueError when it does not parse. apid accepts exactly ClientAuth."""
    cert = x509.load_pem_x509_certificates(crt_pem)[0]
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ()
    names = {ExtendedKeyUsageOID.CLIENT_AUTH: "ClientAuth", ExtendedKeyUsageOID.SERVER_AUTH: "ServerAuth"}
    return tuple(names.get(oid, oid.dotted_string) for oid in usages)


def client_validity(crt_pem: bytes) -> Validity:
    """The validity window of the (first) certificate in ``crt_pem``; ValueError when it does not parse."""
    cert = x509.load_pem_x509_certificates(crt_pem)[0]
    return Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)
