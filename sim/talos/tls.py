"""The server side of a fake Talos endpoint's TLS, as apid configures it.

Contract: :func:`server_context` builds the :class:`ssl.SSLContext` of one endpoint: TLS ≥ 1.2, ALPN h2, the
node's certificate (Talos's ``ED25519 PRIVATE KEY`` PEM label read as PKCS#8), and — outside maintenance mode —
a required client certificate of the cluster CA whose ExtKeyUsage is *exactly* ClientAuth. apid checks that in
its TLS ``VerifyPeerCertificate`` (siderolabs/talos ``internal/app/apid/main.go`` ``verifyExtKeyUsage``), so a
wrong certificate fails the handshake (alert ``bad certificate``), never a gRPC call. The standard ``ssl`` module
has no verify hook, so on CPython the check is installed as OpenSSL's verify callback through ``ctypes``
(``SSL_CTX_set_verify`` on the context's ``SSL_CTX``; the callback rejects a leaf with
``X509_V_ERR_CERT_REJECTED``, OpenSSL's ``bad certificate``). One difference stays: with TLS 1.3 (what talosctl
and the product negotiate) the client sees the connection end (talosctl: ``Unavailable ... error reading server
preface: EOF``) where Go's apid gets ``remote error: tls: bad certificate`` to it; with TLS 1.2 the alert arrives
as with apid. Either way it is a transport failure, never a gRPC status. Where the callback is not possible
:func:`exact_client_auth` is still there for the fleet to close such a connection right after the handshake.
The only file I/O is the short-lived 0600 key file ``ssl`` needs.
"""

from __future__ import annotations

import ctypes
import os
import platform
import ssl
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

_X509_V_ERR_CERT_REJECTED = 28
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def exact_client_auth(der: bytes) -> bool:
    """Is the certificate's ExtKeyUsage exactly [ClientAuth] (apid's ``slices.Equal`` test)?"""
    cert = x509.load_der_x509_certificate(der)
    try:
        ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = []
    return ekus == [ExtendedKeyUsageOID.CLIENT_AUTH]


def _libssl() -> Any | None:
    if platform.python_implementation() != "CPython":
        return None
    for name in ("libssl.so.3", "libssl.so"):  # the library _ssl is linked with: dlopen returns the loaded one
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
        lib.X509_STORE_CTX_get_error_depth.argtypes = [ctypes.c_void_p]
        lib.X509_STORE_CTX_get_current_cert.argtypes = [ctypes.c_void_p]
        lib.X509_STORE_CTX_get_current_cert.restype = ctypes.c_void_p
        lib.X509_STORE_CTX_set_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
        return lib
    return None


_LIB = _libssl()


def _der(cert: int) -> bytes:
    assert _LIB is not None
    size = _LIB.i2d_X509(cert, None)
    buffer = ctypes.create_string_buffer(size)
    cursor = ctypes.c_char_p(ctypes.addressof(buffer))
    _LIB.i2d_X509(cert, ctypes.byref(cursor))
    return buffer.raw[:size]


def _verify_exact_client_auth(preverify_ok: int, store: int) -> int:
    assert _LIB is not None
    if not preverify_ok:
        return 0
    if _LIB.X509_STORE_CTX_get_error_depth(store) != 0:
        return 1
    try:
        ok = exact_client_auth(_der(_LIB.X509_STORE_CTX_get_current_cert(store)))
    except Exception:  # an unreadable certificate is not one apid accepts either
        ok = False
    if not ok:
        _LIB.X509_STORE_CTX_set_error(store, _X509_V_ERR_CERT_REJECTED)
    return 1 if ok else 0


_verify = _VERIFY_CALLBACK(_verify_exact_client_auth)  # kept referenced: OpenSSL calls it for the process's life


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    """The ``SSL_CTX *`` of ``ctx``: CPython's PySSLContext keeps it right after the object header."""
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    return pointer or None


def enforce_exact_client_auth(ctx: ssl.SSLContext) -> bool:
    """Make the handshake fail for a client certificate whose ExtKeyUsage is not exactly ClientAuth; False when
    this Python cannot (the caller then checks after the handshake)."""
    if _LIB is None:
        return False
    pointer = _ssl_ctx_pointer(ctx)
    if pointer is None or _LIB.SSL_CTX_get_verify_mode(pointer) != 3:  # PEER | FAIL_IF_NO_PEER_CERT
        return False
    _LIB.SSL_CTX_set_verify(pointer, 3, _verify)
    return True


def _load_key_pair(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    key_pem = key_pem.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY")
    with tempfile.TemporaryDirectory(prefix="sim-talos-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        ctx.load_cert_chain(str(cert_path), str(key_path))


def server_context(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None) -> tuple[ssl.SSLContext, bool]:
    """(the context, whether the handshake itself enforces the exact ClientAuth rule)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    _load_key_pair(ctx, cert_pem, key_pem)
    if ca_pem is None:
        ctx.verify_mode = ssl.CERT_NONE
        return ctx, True
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx, enforce_exact_client_auth(ctx)
