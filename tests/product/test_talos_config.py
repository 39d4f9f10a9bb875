"""talosconfig parsing, the Ed25519 key label, address splitting and MachineStatus decoding."""

from __future__ import annotations

import base64
import os
import ssl
import stat
import tempfile
from pathlib import Path

import pytest

from capi_rollout.adapters.talos import TalosConfigError, messages, parse_talosconfig
from capi_rollout.adapters.talos.outcomes import parse_version, split_address
from capi_rollout.adapters.talos.status import MachineStatus, machine_status, to_proto, to_yaml
from capi_rollout.adapters.talos.tls import load_key_pair, mtls_client_context, normalize_key_pem
from sim.pki import ClusterPKI


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI.generate("prod-1")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_bootstrap_provider_talosconfig_parses_into_its_context(pki: ClusterPKI) -> None:
    config = parse_talosconfig(pki.talosconfig(["10.0.0.1", "10.0.0.2"]))
    assert config.context == "prod-1"
    assert config.endpoints == ("10.0.0.1", "10.0.0.2")
    assert config.nodes == ()
    assert config.ca_pem == pki.ca.cert_pem
    assert config.key_pem.startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")


def test_an_explicit_context_overrides_the_current_one(pki: ClusterPKI) -> None:
    text = pki.talosconfig([]).replace("context: prod-1", "context: elsewhere", 1)
    assert parse_talosconfig(text, context="prod-1").context == "prod-1"
    with pytest.raises(TalosConfigError, match=r"no context 'elsewhere' \(known: prod-1\)"):
        parse_talosconfig(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("context: [unclosed", "not YAML"),
        ("- a list", "not YAML mapping"),
        ("context: x\n", "no 'contexts'"),
        ("contexts:\n  x: {}\n", "names no current 'context'"),
        ("context: x\ncontexts:\n  x:\n    endpoints: [a]\n", "'ca' is missing or empty"),
        ("context: x\ncontexts:\n  x:\n    ca: '%%%'\n    crt: c\n    key: k\n", "'ca' is not valid base64"),
        (f"context: x\ncontexts:\n  x:\n    ca: {b64(b'hello')}\n    crt: c\n    key: k\n", "'ca' does not decode"),
        ("context: x\ncontexts:\n  x:\n    endpoints: a\n", "'endpoints' must be a list"),
    ],
)
def test_broken_talosconfigs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(TalosConfigError, match=message):
        parse_talosconfig(text)


def test_errors_about_the_key_never_echo_it(pki: ClusterPKI) -> None:
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbA!!"
    text = pki.talosconfig([]).replace("key: ", f"key: {secret}", 1)
    with pytest.raises(TalosConfigError) as err:
        parse_talosconfig(text)
    assert "'key' is not valid base64" in str(err.value)
    assert secret not in str(err.value)


def test_the_talos_key_label_is_rewritten_for_openssl(pki: ClusterPKI) -> None:
    key = pki.client_cert().key_pem
    assert b"ED25519 PRIVATE KEY" in key
    normalized = normalize_key_pem(key)
    assert normalized.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert normalized.rstrip().endswith(b"-----END PRIVATE KEY-----")


def test_key_files_exist_only_while_loading_and_only_for_the_owner(
    pki: ClusterPKI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[str, int, int]] = []
    real = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: str, keyfile: str | None = None, password: object = None) -> None:
        assert keyfile is not None
        mode = stat.S_IMODE(os.stat(keyfile).st_mode)
        seen.append((keyfile, mode, stat.S_IMODE(os.stat(Path(keyfile).parent).st_mode)))
        real(self, certfile, keyfile)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cert = pki.client_cert()
    load_key_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert.cert_pem, cert.key_pem)
    [(keyfile, mode, dir_mode)] = seen
    assert (mode, dir_mode) == (0o600, 0o700)
    assert not Path(keyfile).exists() and not Path(keyfile).parent.exists()


def test_a_key_that_does_not_match_the_certificate_is_refused(pki: ClusterPKI) -> None:
    with pytest.raises(ValueError, match="do not load"):
        mtls_client_context(pki.ca.cert_pem, pki.client_cert().cert_pem, pki.client_cert().key_pem)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5", ("10.0.0.5", 50000)),
        ("10.0.0.5:50001", ("10.0.0.5", 50001)),
        ("[fd00::5]:50001", ("fd00::5", 50001)),
        ("[fd00::5]", ("fd00::5", 50000)),
        ("fd00::5", ("fd00::5", 50000)),
        ("node-1.example", ("node-1.example", 50000)),
    ],
)
def test_addresses_may_carry_a_port_and_ipv6_literals_use_brackets(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address, 50000) == expected


@pytest.mark.parametrize("address", ["10.0.0.5:http", "[fd00::5]x", "", "fd00::zz"])
def test_malformed_addresses_are_rejected(address: str) -> None:
    with pytest.raises(ValueError):
        split_address(address)


def test_versions_compare_by_minor() -> None:
    assert parse_version("v1.12.0") == (1, 12)
    assert parse_version("v1.13.0-alpha.1") == (1, 13)
    assert parse_version("garbage") is None


def resource(yaml_spec: str = "", proto_spec: bytes = b"") -> object:
    return messages.Resource(spec=messages.ResourceSpec(yaml_spec=yaml_spec, proto_spec=proto_spec))


def test_machine_status_reads_yaml_spec_as_talos_writes_it() -> None:
    text = (
        "stage: running\nstatus:\n    ready: false\n    unmetConditions:\n"
        "        - name: nodeReady\n          reason: node not ready\n"
    )
    assert machine_status(resource(text)) == MachineStatus("running", False, ("nodeReady: node not ready",))


def test_machine_status_falls_back_to_proto_spec() -> None:
    status = MachineStatus("maintenance", False)
    assert machine_status(resource(proto_spec=to_proto(status))) == status
    assert machine_status(resource(yaml_spec=to_yaml(status))) == status
    assert machine_status(resource(proto_spec=to_proto(MachineStatus("shutting down", True)))) == MachineStatus(
        "shutting down", True
    )
    assert machine_status(resource()) is None
