"""Real talosctl (both pinned Talos lines) against a simulated fleet: each command behaves as against real Talos.

Needs the talosctl binaries of ``make tools``; skipped, saying so, when one is not built. Each test runs the line's
talosctl against nodes of the same Talos release. The last test breaks one simulator reply on purpose and shows
that the judge catches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.pki import ClusterPKI
from sim.talos import FakeTalosFleet, RebootStages
from tests.sim.conformance.judge import (
    Talosctl,
    check_handshake_refused,
    check_machine_status_yaml,
    check_reboot_waited,
    check_refused,
    check_version,
    talosctl,
    talosctl_version,
)

pytestmark = pytest.mark.talosctl

LINES = ["v1.12", "v1.13"]
# a reboot walks Talos's stages; wall seconds, small but long enough for talosctl to see each
STAGES = RebootStages(rebooting=0.3, booting=0.3, not_ready=0.3)


@pytest.fixture(params=LINES)
def line(request: pytest.FixtureRequest) -> str:
    line: str = request.param
    if talosctl(line) is None:
        pytest.skip(f"talosctl {talosctl_version(line)} is not built: run `make tools` (tools/talosctl.sh)")
    return line


@pytest.fixture
def tag(line: str) -> str:
    return talosctl_version(line)


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI.generate("conformance")


@pytest.fixture
def fleet(pki: ClusterPKI) -> Iterator[FakeTalosFleet]:
    with FakeTalosFleet(pki, reboot_downtime=0.3, reboot_stages=STAGES) as f:
        yield f


def as_role(line: str, pki: ClusterPKI, tmp_path: Path, role: str = "os:admin", *,
            client_auth_only: bool = True) -> Talosctl:
    binary = talosctl(line)
    assert binary is not None
    config = tmp_path / f"talosconfig-{role.replace(':', '-')}-{client_auth_only}"
    config.write_text(pki.talosconfig([], client=pki.client_cert(role, client_auth_only=client_auth_only)))
    return Talosctl(binary, config)


def test_version(line: str, tag: str, fleet: FakeTalosFleet, pki: ClusterPKI, tmp_path: Path) -> None:
    node = fleet.add_node("cp-0", talos_version=tag)
    run = as_role(line, pki, tmp_path).run(node.address, "version")
    assert check_version(run, address=node.address, tag=tag) == [], str(run)


def test_get_machinestatus_yaml(line: str, tag: str, fleet: FakeTalosFleet, pki: ClusterPKI, tmp_path: Path) -> None:
    node = fleet.add_node("cp-0", talos_version=tag, stage="running", ready=False)
    run = as_role(line, pki, tmp_path, "os:reader").run(node.address, "get", "machinestatus", "-o", "yaml")
    assert check_machine_status_yaml(run, node=node.address, stage="running", ready=False) == [], str(run)


@pytest.mark.parametrize("mode", ["powercycle", "default", "force"])
def test_reboot_waits_for_the_node_to_come_back(
    line: str, tag: str, fleet: FakeTalosFleet, pki: ClusterPKI, tmp_path: Path, mode: str
) -> None:
    node = fleet.add_node("w-0", talos_version=tag)
    boot = node.boot_id
    run = as_role(line, pki, tmp_path).run(node.address, "reboot", "--mode", mode)
    assert check_reboot_waited(run) == [], str(run)
    assert node.boot_id != boot and (node.stage, node.ready) == ("running", True)
    assert [(r.mode, r.effective_mode, r.role) for r in fleet.reboots()] == [(mode, mode, "os:admin")]


def test_roles_reader_reads_operator_reboots_admin_reads_the_boot_id(
    line: str, tag: str, fleet: FakeTalosFleet, pki: ClusterPKI, tmp_path: Path
) -> None:
    node = fleet.add_node("w-0", talos_version=tag)
    reader = as_role(line, pki, tmp_path, "os:reader")
    assert check_version(reader.run(node.address, "version"), address=node.address, tag=tag) == []
    refused = reader.run(node.address, "reboot")
    assert check_refused(refused, code="PermissionDenied", message="not authorized") == [], str(refused)
    assert fleet.reboots() == []
    # the operator may reboot but not read the boot ID: talosctl skips its boot-ID post check, as against Talos
    operator = as_role(line, pki, tmp_path, "os:operator").run(node.address, "reboot")
    assert check_reboot_waited(operator, boot_id_checked=False) == [], str(operator)
    assert [r.role for r in fleet.reboots()] == ["os:operator"]


def test_a_method_the_simulator_does_not_serve_is_unimplemented_not_unknown(
    line: str, tag: str, fleet: FakeTalosFleet, pki: ClusterPKI, tmp_path: Path
) -> None:
    node = fleet.add_node("w-0", talos_version=tag)
    run = as_role(line, pki, tmp_path).run(node.address, "memory")
    assert check_refused(run, code="Unimplemented", message="method Memory not implemented") == [], str(run)


def test_a_client_certificate_beyond_client_auth_fails_the_handshake(
    line: str, tag: str, fleet: FakeTalosFleet, pki: ClusterPKI, tmp_path: Path
) -> None:
    node = fleet.add_node("w-0", talos_version=tag)
    run = as_role(line, pki, tmp_path, client_auth_only=False).run(node.address, "version", timeout=30)
    assert check_handshake_refused(run) == [], str(run)


def test_insecure_calls_on_a_maintenance_node(
    line: str, tag: str, fleet: FakeTalosFleet, pki: ClusterPKI, tmp_path: Path
) -> None:
    node = fleet.add_node("w-0", talos_version=tag)
    fleet.set_maintenance(node.name)
    cli = as_role(line, pki, tmp_path)
    status = cli.run(node.address, "get", "machinestatus", "--insecure", "-o", "yaml")
    # the maintenance client sends no `nodes` metadata: talosctl prints an empty node
    assert check_machine_status_yaml(status, node=None, stage="maintenance", ready=False) == [], str(status)
    version = cli.run(node.address, "version", "--insecure")
    if line == "v1.12":  # the separate maintenance server serves Version to os:admin only
        problems = check_refused(version, code="Unimplemented", message="API is not implemented in maintenance mode")
    else:
        problems = check_version(version, address=node.address, tag=tag, maintenance=True)
    assert problems == [], str(version)
    reboot = cli.run(node.address, "reboot", "--insecure")
    assert reboot.rc != 0 and fleet.reboots() == [], str(reboot)


def test_the_judge_catches_a_broken_simulator_reply(
    line: str, tag: str, fleet: FakeTalosFleet, pki: ClusterPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mutation: the ResourceDefinition's protobuf spec with resource_type and display_type swapped — what a wrong
    field number on one side would do. talosctl cannot resolve `machinestatus` any more, and the check says so."""
    from sim.talos import api

    original = api.Definition.spec

    def swapped(self: api.Definition) -> object:
        spec = original(self)
        spec.resource_type, spec.display_type = spec.display_type, spec.resource_type
        return spec

    node = fleet.add_node("cp-0", talos_version=tag)
    cli = as_role(line, pki, tmp_path)
    assert check_machine_status_yaml(cli.run(node.address, "get", "machinestatus", "-o", "yaml"),
                                     node=node.address, stage="running", ready=True) == []
    monkeypatch.setattr(api.Definition, "spec", swapped)
    broken = cli.run(node.address, "get", "machinestatus", "-o", "yaml")
    problems = check_machine_status_yaml(broken, node=node.address, stage="running", ready=True)
    assert problems == ["not one resource: ''"], str(broken)  # talosctl lists type "MachineStatus": nothing
