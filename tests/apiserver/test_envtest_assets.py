"""The envtest asset layer: pins, the envtest environment-variable convention, CRD sets, PKI, namespace names.

These run without a server: they check how assets are located and what the generated PKI says.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from envtest import assets, pki
from envtest.pytest_plugin import namespace_name

PINS = {
    "KUBERNETES_VERSION": "v1.37.2",
    "ETCD_VERSION": "v3.7.3",
    "KUSTOMIZE_VERSION": "v5.8.2",
    "CAPI_V110_VERSION": "v1.10.10",
    "CAPI_V114_VERSION": "v1.14.2",
    "TALOS_CONTROLPLANE_VERSION": "v0.5.10",
    "TALOS_BOOTSTRAP_VERSION": "v0.6.12",
    "ARGO_WORKFLOWS_VERSION": "v4.0.2",
    "ARGO_EVENTS_VERSION": "v1.9.11",
    "ARGO_CD_VERSION": "v3.5.7",
}


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_pins_file_parses_values_containing_equals_signs_and_ignores_comments() -> None:
    parsed = assets.parse_versions("# comment\n\nA=v1\nSUM=h1:abc=\n")
    assert parsed == {"A": "v1", "SUM": "h1:abc="}


def test_the_pins_file_pins_every_version_the_assets_need() -> None:
    pins = assets.versions()
    assert set(PINS) <= set(pins)
    for key in PINS:
        assert re.fullmatch(r"v\d+\.\d+\.\d+", pins[key]), (key, pins[key])
    assert pins["TALOS_CONTROLPLANE_SUM"].startswith("h1:")


def test_malformed_pin_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        assets.parse_versions("no equals sign here\n")


def test_test_asset_variables_win_over_the_built_binaries(tmp_path: Path) -> None:
    apiserver = _executable(tmp_path / "a" / "my-apiserver")
    etcd = _executable(tmp_path / "b" / "my-etcd")
    env = {"TEST_ASSET_KUBE_APISERVER": str(apiserver), "TEST_ASSET_ETCD": str(etcd), "CAPI_ROLLOUT_CACHE": "/nope"}
    found = assets.binaries(env=env, pins=PINS)
    assert (found.kube_apiserver, found.etcd, found.kustomize) == (apiserver, etcd, None)


def test_kubebuilder_assets_directory_is_used_when_set(tmp_path: Path) -> None:
    _executable(tmp_path / "kube-apiserver")
    _executable(tmp_path / "etcd")
    found = assets.binaries(env={"KUBEBUILDER_ASSETS": str(tmp_path), "CAPI_ROLLOUT_CACHE": "/nope"}, pins=PINS)
    assert found.kube_apiserver == tmp_path / "kube-apiserver"
    assert found.etcd == tmp_path / "etcd"


def test_built_binaries_are_found_under_the_version_keyed_cache_directory(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin" / "kubernetes-v1.37.2-etcd-v3.7.3-kustomize-v5.8.2"
    for name in ("kube-apiserver", "etcd", "kustomize"):
        _executable(bin_dir / name)
    found = assets.binaries(env={"CAPI_ROLLOUT_CACHE": str(tmp_path)}, pins=PINS)
    assert found == assets.Assets(bin_dir / "kube-apiserver", bin_dir / "etcd", bin_dir / "kustomize")


def test_missing_binaries_tell_to_run_make_tools(tmp_path: Path) -> None:
    with pytest.raises(assets.AssetsMissingError, match="make tools"):
        assets.binaries(env={"CAPI_ROLLOUT_CACHE": str(tmp_path)}, pins=PINS)


def test_a_non_executable_test_asset_is_rejected(tmp_path: Path) -> None:
    plain = tmp_path / "etcd"
    plain.write_text("not a program")
    env = {"TEST_ASSET_KUBE_APISERVER": str(plain), "TEST_ASSET_ETCD": str(plain)}
    with pytest.raises(assets.AssetsMissingError, match="TEST_ASSET_KUBE_APISERVER"):
        assets.binaries(env=env, pins=PINS)


def _fake_crd_cache(root: Path) -> None:
    for directory in (
        "capi-v1.10.10",
        "capi-v1.14.2",
        "talos-controlplane-v0.5.10",
        "talos-bootstrap-v0.6.12",
        "argo-workflows-v4.0.2",
        "argo-events-v1.9.11",
        "argo-cd-v3.5.7",
    ):
        folder = root / "crds" / directory
        folder.mkdir(parents=True)
        (folder / "b.yaml").write_text("{}")
        (folder / "a.yaml").write_text("{}")
        (folder / ".stamp").write_text("x")


def test_crd_paths_select_one_capi_line_and_the_named_extra_sets_in_order(tmp_path: Path) -> None:
    _fake_crd_cache(tmp_path)
    env = {"CAPI_ROLLOUT_CACHE": str(tmp_path)}
    paths = assets.crd_paths("v1.10", ("talos", "argo-events"), env=env, pins=PINS)
    assert [f"{p.parent.name}/{p.name}" for p in paths] == [
        "capi-v1.10.10/a.yaml",
        "capi-v1.10.10/b.yaml",
        "talos-controlplane-v0.5.10/a.yaml",
        "talos-controlplane-v0.5.10/b.yaml",
        "talos-bootstrap-v0.6.12/a.yaml",
        "talos-bootstrap-v0.6.12/b.yaml",
        "argo-events-v1.9.11/a.yaml",
        "argo-events-v1.9.11/b.yaml",
    ]


def test_crd_paths_reject_unknown_lines_and_sets_and_unfetched_sets(tmp_path: Path) -> None:
    env = {"CAPI_ROLLOUT_CACHE": str(tmp_path)}
    with pytest.raises(ValueError, match="CAPI line"):
        assets.crd_paths("v1.12", (), env=env, pins=PINS)
    with pytest.raises(ValueError, match="unknown CRD sets"):
        assets.crd_paths("v1.14", ("flux",), env=env, pins=PINS)
    with pytest.raises(assets.AssetsMissingError, match="make tools"):
        assets.crd_paths("v1.14", (), env=env, pins=PINS)


def test_generated_pki_gives_admin_system_masters_and_serves_the_loopback_address(tmp_path: Path) -> None:
    now = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    generated = pki.generate(tmp_path, now=now)
    ca = x509.load_pem_x509_certificate(generated.ca_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(generated.admin_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(generated.serving_cert.read_bytes())
    admin.verify_directly_issued_by(ca)
    serving.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert serving.not_valid_before_utc < now < serving.not_valid_after_utc
    assert generated.sa_private_key.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "test_name",
    ["test_simple", "test_x[Param With Spaces-1]", "test_" + "very_long_" * 20, "---"],
)
def test_namespace_names_are_valid_dns_labels(test_name: str) -> None:
    name = namespace_name(test_name, "abc123")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert len(name) <= 63
    assert name.endswith("abc123")
