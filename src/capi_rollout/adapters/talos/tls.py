"""TLS contexts for the Talos API with the standard ``ssl`` module (Ed25519 works with OpenSSL ≥ 1.1.1).

Contract: builds :class:`ssl.SSLContext` objects from PEM bytes; the only file I/O is the short-lived key
file ``ssl`` needs: written 0600 into a private (0700) temporary directory and removed right after loading.
Talos writes Ed25519 keys with the PEM label ``ED25519 PRIVATE KEY`` (PKCS#8 inside); OpenSSL only reads
``PRIVATE KEY``, so the label is rewritten first. Errors never include key material.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

_TALOS_LABEL = b"ED25519 PRIVATE KEY"


def normalize_key_pem(key_pem: bytes) -> bytes:
    """Rewrite Talos's ``ED25519 PRIVATE KEY`` PEM label to the PKCS#8 ``PRIVATE KEY`` label OpenSSL reads."""
    return key_pem.replace(b"-----BEGIN " + _TALOS_LABEL + b"-----", b"-----BEGIN PRIVATE KEY-----").replace(
        b"-----END " + _TALOS_LABEL + b"-----", b"-----END PRIVATE KEY-----"
    )


def load_key_pair(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and its key into ``ctx`` via 0600 files that exist only while loading."""
    with tempfile.TemporaryDirectory(prefix="capi-rollout-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        for path, data in ((cert_path, cert_pem), (key_path, normalize_key_pem(key_pem))):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        try:
            ctx.load_cert_chain(str(cert_path), str(key_path))
        except ssl.SSLError as exc:
            raise ValueError(f"the certificate and key do not load ({exc.reason or 'unknown reason'})") from None


def _base_client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    return ctx


def mtls_client_context(ca_pem: bytes, crt_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A client context that trusts only the Talos CA, checks the server address, and presents the client cert."""
    ctx = _base_client_context()
    try:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError):
        raise ValueError("the talosconfig CA certificate does not load") from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    load_key_pair(ctx, crt_pem, key_pem)
    return ctx


def insecure_client_context() -> ssl.SSLContext:
    """No verification and no client certificate: only to read a maintenance-mode node's stage."""
    ctx = _base_client_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
