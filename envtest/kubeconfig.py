"""Write kubeconfig files for a local API server: one for the admin client certificate, one per bearer token.

Contract: pure file writing (YAML, mode 0600) from paths and strings given by the caller; certificates are
referenced by path, tokens are embedded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def _document(server: str, ca_cert: Path, user_name: str, user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": user_name, "context": {"cluster": "envtest", "user": user_name}}],
        "current-context": user_name,
    }


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


def write_cert_kubeconfig(path: Path, *, server: str, ca_cert: Path, client_cert: Path, client_key: Path) -> Path:
    """A kubeconfig authenticating with a client certificate."""
    user = {"client-certificate": str(client_cert), "client-key": str(client_key)}
    return _write(path, _document(server, ca_cert, "admin", user))


def write_token_kubeconfig(path: Path, *, server: str, ca_cert: Path, user_name: str, token: str) -> Path:
    """A kubeconfig authenticating with a bearer token (e.g. a TokenRequest-minted ServiceAccount token)."""
    return _write(path, _document(server, ca_cert, user_name, {"token": token}))
