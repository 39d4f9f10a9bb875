"""Parse a talosconfig (the client configuration ``talosctl`` reads) into a :class:`TalosConfig`.

Contract: pure, no I/O. The format is siderolabs/talos ``pkg/machinery/client/config/config.go``::

    context: <name>
    contexts:
        <name>:
            endpoints: [<address>, ...]
            nodes: [<address>, ...]      # optional; unset in the Secret the bootstrap provider writes
            ca: <base64 of the CA certificate PEM>
            crt: <base64 of the client certificate PEM>
            key: <base64 of the client key PEM, label "ED25519 PRIVATE KEY">

Errors are :class:`TalosConfigError` with a message that says what is wrong and never echoes key material.
The key never shows in ``repr``/``str`` of the result.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import yaml

from capi_rollout.userfiles import load_yaml


class TalosConfigError(ValueError):
    """The talosconfig cannot be used; the message says why."""


@dataclass(frozen=True)
class TalosConfig:
    """One context of a talosconfig, with the PEM material decoded. ``repr`` hides the key."""

    context: str
    endpoints: tuple[str, ...]
    nodes: tuple[str, ...]
    ca_pem: bytes
    crt_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return (
            f"TalosConfig(context={self.context!r}, endpoints={list(self.endpoints)!r}, nodes={list(self.nodes)!r}, "
            f"ca_pem=<{len(self.ca_pem)} bytes>, crt_pem=<{len(self.crt_pem)} bytes>, key_pem=<hidden>)"
        )

    __str__ = __repr__


def _decode_pem(context: str, name: str, value: Any) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise TalosConfigError(f"talosconfig context {context!r}: '{name}' is missing or empty")
    try:
        decoded = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise TalosConfigError(f"talosconfig context {context!r}: '{name}' is not valid base64") from None
    if b"-----BEGIN " not in decoded:
        raise TalosConfigError(f"talosconfig context {context!r}: '{name}' does not decode to a PEM block")
    return decoded


def _addresses(context: str, name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TalosConfigError(f"talosconfig context {context!r}: '{name}' must be a list of addresses")
    return tuple(value)


def parse_talosconfig(text: str, context: str | None = None) -> TalosConfig:
    """Parse talosconfig YAML; ``context`` overrides the file's current context."""
    try:
        doc = load_yaml(text)  # bounded: aliases and size capped (capi_rollout.userfiles)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise TalosConfigError(f"talosconfig is not YAML{where}") from None
    if not isinstance(doc, dict):
        raise TalosConfigError("talosconfig is not YAML mapping with 'context' and 'contexts'")
    contexts = doc.get("contexts")
    if not isinstance(contexts, dict) or not contexts:
        raise TalosConfigError("talosconfig has no 'contexts'")
    name = context if context is not None else doc.get("context")
    if not isinstance(name, str) or not name:
        raise TalosConfigError("talosconfig names no current 'context' and none was given")
    entry = contexts.get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(str(k) for k in contexts))
        raise TalosConfigError(f"talosconfig has no context {name!r} (known: {known})")
    endpoints = _addresses(name, "endpoints", entry.get("endpoints"))
    nodes = _addresses(name, "nodes", entry.get("nodes"))
    ca, crt, key = (_decode_pem(name, field, entry.get(field)) for field in ("ca", "crt", "key"))
    return TalosConfig(context=name, endpoints=endpoints, nodes=nodes, ca_pem=ca, crt_pem=crt, key_pem=key)
