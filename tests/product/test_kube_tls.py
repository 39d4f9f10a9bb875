"""An API server whose certificate fails verification is not a transient failure: it is said at once, with the
x509 reason, and never retried for five minutes. A transient failure says how long it will keep being retried.

Real parts: a real TLS server on 127.0.0.1 and the real Kubernetes client reading a real kubeconfig."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from capi_rollout.adapters.kube import Backoff, Kube, KubeError, connect, tls_verification_failure


def _cert(common_name: str, *, ip: str, key: ec.EllipticCurvePrivateKey,
          issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None, ca: bool = False,
          ) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer[0].subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class TLSServer:
    """Accepts TLS connections on 127.0.0.1 with the given certificate and counts handshakes attempted."""

    def __init__(self, tmp: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (tmp / "srv.crt").write_bytes(_pem(cert))
        (tmp / "srv.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tmp / "srv.crt", tmp / "srv.key")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self.sock.close()


def kubeconfig(tmp: Path, port: int, ca: x509.Certificate) -> Path:
    (tmp / "ca.crt").write_bytes(_pem(ca))
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}",
                                               "certificate-authority": str(tmp / "ca.crt")}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))
    return path


@pytest.fixture
def keys() -> Iterator[tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]]:
    yield ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())


def _kube(path: Path, sleeps: list[float]) -> Kube:
    return Kube(connect(str(path)), backoff=Backoff(initial=1.0, retry_for=300, sleep=sleeps.append))


def test_a_server_certificate_from_another_ca_fails_at_once(tmp_path: Path, keys: tuple[
        ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]) -> None:
    server_key, other_key = keys
    server = TLSServer(tmp_path, _cert("impostor", ip="127.0.0.1", key=server_key), server_key)
    trusted_ca = _cert("the real CA", ip="127.0.0.1", key=other_key, ca=True)
    sleeps: list[float] = []
    try:
        with pytest.raises(KubeError) as err:
            _kube(kubeconfig(tmp_path, server.port, trusted_ca), sleeps).capi_version()
    finally:
        server.close()
    assert sleeps == [] and server.connections == 1  # one attempt, no five minutes of retries
    assert "TLS certificate failed verification" in str(err.value) and "not retried" in str(err.value)
    assert "self-signed certificate" in str(err.value) or "unable to get local issuer" in str(err.value)


def test_a_certificate_of_the_right_ca_for_another_address_fails_at_once(tmp_path: Path, keys: tuple[
        ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]) -> None:
    ca_key, server_key = keys
    ca = _cert("ca", ip="127.0.0.1", key=ca_key, ca=True)
    server = TLSServer(tmp_path, _cert("elsewhere", ip="127.0.0.2", key=server_key, issuer=(ca, ca_key)), server_key)
    sleeps: list[float] = []
    try:
        with pytest.raises(KubeError, match=r"failed verification .*(mismatch|match)") as err:
            _kube(kubeconfig(tmp_path, server.port, ca), sleeps).capi_version()
    finally:
        server.close()
    assert sleeps == [] and server.connections == 1, str(err.value)


def test_a_refused_connection_is_retried_and_says_for_how_long(tmp_path: Path, keys: tuple[
        ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey], caplog: pytest.LogCaptureFixture) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    kube = Kube(connect(str(kubeconfig(tmp_path, port, _cert("ca", ip="127.0.0.1", key=keys[0], ca=True)))),
                backoff=Backoff(initial=1.0, cap=2.0, retry_for=5.0, sleep=sleep, clock=lambda: now[0]))
    with caplog.at_level(logging.WARNING, logger="capi_rollout.adapters.kube"), pytest.raises(KubeError) as err:
        kube.capi_version()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings[0].endswith("retrying in 1.0s, for up to 5s more before giving up"), warnings
    assert "API server unreachable for 5s" in str(err.value)


def test_the_x509_reason_is_found_in_the_clients_status_0_exception() -> None:
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=0, reason="SSLError\nHTTPSConnectionPool: Max retries exceeded (Caused by SSLError("
                                        "SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                        "verify failed: certificate has expired (_ssl.c:1006)')))")
    assert tls_verification_failure(exc) == "certificate has expired"
    assert tls_verification_failure(ApiException(status=503)) is None
    assert tls_verification_failure(ConnectionRefusedError()) is None
