"""The product's Talos client against real Talos in a container, held to the contract the simulator meets
(tests/sim/conformance/contract.py; the simulator half is test_contract_sim.py).

Needs a Docker engine (GitHub Actions' ubuntu runners have one) and the talosctl of ``make tools`` (to generate a
machine config); skipped, with the reason, without either. Per pinned Talos line the image is
``ghcr.io/siderolabs/talos:<talosctl version>``, started the way ``talosctl cluster create --provisioner docker``
starts a node (siderolabs/talos ``pkg/provision/providers/docker/node.go``): ``PLATFORM=container``, privileged,
seccomp unconfined, read-only root, tmpfs on /run, /system and /tmp, anonymous volumes on /var, /system/state and
the overlay paths, the machine config (if any) base64 in ``USERDATA``; the Talos API port 50000 published on
loopback. One container boots without a config (maintenance mode), one with a generated control-plane config whose
certificate SANs include 127.0.0.1 (the address the client dials).
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capi_rollout.adapters.talos import SyncTalosClient, parse_talosconfig
from e2e.backends.selection import docker_available
from tests.sim.conformance.contract import expect_configured, expect_maintenance, expect_reboot_accepted, wait_for_stage
from tests.sim.conformance.judge import talosctl, talosctl_version

pytestmark = pytest.mark.kind

IMAGE = "ghcr.io/siderolabs/talos"
TALOS_PORT = 50000
BOOT_WITHIN = 300.0  # seconds for a container node to serve its API (image pull excluded: done before start)
VOLUMES = ["/var", "/system/state", "/etc/cni", "/etc/kubernetes", "/usr/libexec/kubernetes", "/opt"]


@pytest.fixture(params=["v1.12", "v1.13"])
def line(request: pytest.FixtureRequest) -> str:
    ok, why = docker_available()
    if not ok:
        pytest.skip(f"real Talos in a container needs a Docker engine: {why}")
    line: str = request.param
    if talosctl(line) is None:
        pytest.skip(f"talosctl {talosctl_version(line)} is not built (it generates the machine config): "
                    "run `make tools`")
    return line


def talos_container(tag: str, userdata: str | None) -> Any:
    from docker.types import Mount
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(f"{IMAGE}:{tag}").with_env("PLATFORM", "container")
    if userdata is not None:
        container = container.with_env("USERDATA", base64.b64encode(userdata.encode()).decode())
    for path in ("/run", "/system", "/tmp"):
        container = container.with_tmpfs_mount(path)
    return container.with_bind_ports(TALOS_PORT, None).with_kwargs(
        privileged=True, security_opt=["seccomp:unconfined"], read_only=True,
        mounts=[Mount(target=path, source=None, type="volume") for path in VOLUMES],
        sysctls={"net.ipv6.conf.all.disable_ipv6": "0"},
    )


def address_of(container: Any) -> str:
    host = container.get_container_host_ip()
    host = "127.0.0.1" if host in ("localhost", "0.0.0.0") else host
    return f"{host}:{container.get_exposed_port(TALOS_PORT)}"


@pytest.fixture
def generated(line: str, tmp_path: Path) -> tuple[str, str]:
    """(controlplane machine config, talosconfig) from this line's talosctl."""
    binary = talosctl(line)
    assert binary is not None
    subprocess.run([str(binary), "gen", "config", "contract", "https://127.0.0.1:6443", "--additional-sans",
                    "127.0.0.1", "--output-types", "controlplane,talosconfig", "--output", str(tmp_path),
                    "--with-docs=false", "--with-examples=false"], check=True, capture_output=True, timeout=60)
    return (tmp_path / "controlplane.yaml").read_text(), (tmp_path / "talosconfig").read_text()


@pytest.fixture
def maintenance_node(line: str) -> Iterator[str]:
    with talos_container(talosctl_version(line), None) as container:
        yield address_of(container)


@pytest.fixture
def configured_node(line: str, generated: tuple[str, str]) -> Iterator[str]:
    with talos_container(talosctl_version(line), generated[0]) as container:
        yield address_of(container)


def test_real_talos_in_maintenance_mode(line: str, maintenance_node: str, generated: tuple[str, str]) -> None:
    tag = talosctl_version(line)
    with SyncTalosClient(parse_talosconfig(generated[1]), timeout=10.0) as client:
        wait_for_stage(client, maintenance_node, {"maintenance"}, within=BOOT_WITHIN)
        expect_maintenance(client, maintenance_node, tag)


def test_real_talos_with_a_machine_config(line: str, configured_node: str, generated: tuple[str, str]) -> None:
    tag = talosctl_version(line)
    with SyncTalosClient(parse_talosconfig(generated[1]), timeout=10.0) as client:
        wait_for_stage(client, configured_node, {"running"}, within=BOOT_WITHIN)
        expect_configured(client, configured_node, tag)
        expect_reboot_accepted(client, configured_node)
