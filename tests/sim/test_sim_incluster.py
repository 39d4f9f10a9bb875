"""The simulator's in-cluster mode without an API server: Service naming and shape, port choice, certificates that
name the Service address, a fleet served through an exposer and reached with the engine's real Talos client, the
manifests that run the simulator in a pod, and the kind backend's pure parts.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from capi_rollout.adapters.talos import ProbeState, SyncTalosClient
from capi_rollout.adapters.talos.config import parse_talosconfig
from capi_rollout.adapters.talos.tls import mtls_client_context
from sim import __main__ as sim_cli
from sim.capi.memstore import MemoryStore
from sim.deploy import POD_LABELS, READY_FILE, labels_arg, manifests, render, sim_image
from sim.deploy.__main__ import RENDERED, rendered_default
from sim.pki import ClusterPKI
from sim.safety import MARKER_LABEL
from sim.scenario import DeploymentSpec, Scenario, Timings
from sim.scenario_format import bundled, from_dict, load, to_dict
from sim.simulator import Simulator
from sim.talos import Exposure, FakeTalosFleet, loopback_block
from sim.talos.exposure import (
    MACHINE_LABEL,
    SERVICE_LABEL,
    TALOS_PORT,
    exposure_from_service,
    parse_labels,
    pick_port,
    service_name,
    service_object,
)
from sim.talos.services import bindable
from sim.timeline import Timeline

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# --- pure decisions --------------------------------------------------------------------------------------------


def test_a_service_name_is_a_dns_1035_label_derived_from_the_machine() -> None:
    assert service_name("demo-cp-3") == "talos-demo-cp-3"
    long_a, long_b = "x" * 60 + "-workers-r2-0", "x" * 60 + "-workers-r2-1"
    for name in (service_name(long_a), service_name(long_b), service_name("0day.cluster-cp-0")):
        assert len(name) <= 63 and DNS_1035.match(name), name
    assert service_name(long_a) != service_name(long_b)
    assert service_name(long_a) == service_name(long_a)


def test_a_node_service_maps_the_talos_port_to_the_node_port_on_the_sim_pod() -> None:
    owner = {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "demo", "uid": "u-1"}
    svc = service_object(machine="demo-cp-0", namespace="sim-x", cluster="demo", selector=POD_LABELS,
                         target_port=50123, owner=owner)
    assert svc["metadata"]["name"] == "talos-demo-cp-0"
    assert svc["metadata"]["labels"] == {"capi-rollout.dev/simulated": "true", SERVICE_LABEL: "true",
                                         MACHINE_LABEL: "demo-cp-0", "cluster.x-k8s.io/cluster-name": "demo"}
    assert svc["metadata"]["ownerReferences"] == [owner]
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["selector"] == POD_LABELS
    assert svc["spec"]["ports"] == [{"name": "talos-api", "protocol": "TCP", "port": 50000, "targetPort": 50123}]
    with pytest.raises(ValueError, match="selector"):
        service_object(machine="m", namespace="n", cluster="c", selector={}, target_port=1)


def test_the_exposure_of_a_service_is_its_cluster_ip_and_names_the_dns_names_and_the_pod_address() -> None:
    svc = {"metadata": {"name": "talos-demo-cp-0", "namespace": "sim-x"}, "spec": {"clusterIP": "10.96.4.7"}}
    x = exposure_from_service(svc, bind_host="10.244.0.5", bind_port=50100)
    assert x == Exposure("10.96.4.7", "10.244.0.5", 50100, (
        "talos-demo-cp-0.sim-x.svc", "talos-demo-cp-0.sim-x.svc.cluster.local", "10.244.0.5"))
    headless = {"metadata": svc["metadata"], "spec": {"clusterIP": "None"}}
    with pytest.raises(ValueError, match="no ClusterIP"):
        exposure_from_service(headless, bind_host="10.244.0.5", bind_port=50100)


def test_ports_are_handed_out_in_turn_so_a_released_port_waits_and_the_range_runs_out_loudly() -> None:
    assert pick_port(set(), lambda p: True, first=50100, last=50110) == 50100
    assert pick_port({50100, 50101}, lambda p: p != 50102, first=50100, last=50110) == 50103
    # 50101 was released a moment ago: the next node gets 50104, not the lowest free port
    assert pick_port({50100, 50102, 50103}, lambda p: True, first=50100, last=50110, after=50103) == 50104
    # past the end it wraps round to the ports released longest ago
    assert pick_port({50110, 50100}, lambda p: True, first=50100, last=50110, after=50110) == 50101
    assert pick_port(set(), lambda p: True, first=50100, last=50110, after=7) == 50100  # outside: from the start
    with pytest.raises(RuntimeError, match="no free port"):
        pick_port({1, 2}, lambda p: True, first=1, last=2)
    with pytest.raises(RuntimeError, match="no free port"):
        pick_port({1}, lambda p: p != 2, first=1, last=2, after=1)


def test_pod_labels_parse_from_the_cli_form_and_bad_items_are_refused() -> None:
    assert parse_labels(labels_arg(POD_LABELS)) == POD_LABELS
    assert parse_labels(" a=b , c=d ,") == {"a": "b", "c": "d"}
    for bad in ("a", "=b", "a="):
        with pytest.raises(ValueError, match="key=value"):
            parse_labels(bad)


def test_a_server_certificate_names_the_extra_sans_after_address_and_hostname() -> None:
    pki = ClusterPKI.generate("demo")
    pair = pki.server_cert("10.96.4.7", "demo-cp-0", extra_sans=("talos-demo-cp-0.sim-x.svc", "127.0.0.1",
                                                                    "10.96.4.7"))
    san = x509.load_pem_x509_certificate(pair.cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.96.4.7"),
                                                       ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["demo-cp-0", "talos-demo-cp-0.sim-x.svc"]


def test_every_bundled_scenario_survives_the_trip_through_yaml() -> None:
    for name in bundled():
        s = load(name)
        assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(s)))) == s, name


# --- a fleet behind an exposer, reached with the engine's client -----------------------------------------------


class FakeServiceExposer:
    """Pretends to be Kubernetes: a 'ClusterIP' from a documentation range per node, the pod address = loopback."""

    def __init__(self, pod_ip: str) -> None:
        self.pod_ip = pod_ip
        self.exposed: dict[str, Exposure] = {}
        self.released: list[str] = []
        self._n = 0

    def expose(self, name: str) -> Exposure:
        self._n += 1
        port = pick_port({x.bind_port for x in self.exposed.values()}, lambda p: bindable(self.pod_ip, p))
        x = Exposure(f"192.0.2.{self._n}", self.pod_ip, port, (f"{service_name(name)}.ns.svc", self.pod_ip))
        self.exposed[name] = x
        return x

    def release(self, name: str) -> None:
        self.released.append(name)
        self.exposed.pop(name, None)


def _pod_ip() -> str:
    a, b = loopback_block()
    return f"127.{a}.{(b + 211) % 256}.9"  # outside the block the loopback-mode fleet allocates from


@pytest.fixture
def exposer() -> FakeServiceExposer:
    return FakeServiceExposer(_pod_ip())


@pytest.fixture
def pki() -> ClusterPKI:
    return ClusterPKI.generate("demo")


@pytest.fixture
def fleet(pki: ClusterPKI, exposer: FakeServiceExposer) -> Iterator[FakeTalosFleet]:
    with FakeTalosFleet(pki, timeline=Timeline(), reboot_downtime=0.05, exposer=exposer) as f:
        yield f


def handshake(pki: ClusterPKI, listen: tuple[str, int], server_hostname: str) -> str:
    """A TLS handshake to the pod address as a client that dialled ``server_hostname`` (what kube-proxy's DNAT
    from a ClusterIP looks like to TLS), with the engine's own mTLS context; returns the negotiated ALPN."""
    client = pki.client_cert("os:admin")
    ctx = mtls_client_context(pki.ca.cert_pem, client.cert_pem, client.key_pem)
    with socket.create_connection(listen, timeout=2.0) as raw, ctx.wrap_socket(raw, server_hostname=server_hostname) \
            as tls:
        return str(tls.selected_alpn_protocol())


def test_an_exposed_node_listens_on_the_pod_address_and_is_addressed_by_its_service(
    fleet: FakeTalosFleet, exposer: FakeServiceExposer, pki: ClusterPKI
) -> None:
    node = fleet.add_node("demo-cp-0", talos_version="v1.12.0")
    x = exposer.exposed["demo-cp-0"]
    assert (node.address, node.port, node.endpoint) == (x.address, TALOS_PORT, f"{x.address}:{TALOS_PORT}")
    assert (node.bind_host, node.bind_port, node.listen) == (x.bind_host, x.bind_port, f"{x.bind_host}:{x.bind_port}")
    config = parse_talosconfig(pki.talosconfig([node.address]))
    with SyncTalosClient(config, timeout=2.0) as talos:
        assert talos.version(node.listen) == "v1.12.0"
        assert talos.probe(node.listen).state is ProbeState.RUNNING
    assert handshake(pki, (x.bind_host, x.bind_port), x.address) == "h2"
    assert handshake(pki, (x.bind_host, x.bind_port), "talos-demo-cp-0.ns.svc") == "h2"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(pki, (x.bind_host, x.bind_port), "192.0.2.250")
    assert fleet.timeline is not None
    up = fleet.timeline.events("talos.up")
    assert up[0].details["listen"] == node.listen and up[0].details["address"] == x.address


def test_an_exposed_node_reboots_and_comes_back_on_the_same_pod_port(
    fleet: FakeTalosFleet, exposer: FakeServiceExposer, pki: ClusterPKI
) -> None:
    node = fleet.add_node("demo-cp-0")
    boot = node.boot_id
    config = parse_talosconfig(pki.talosconfig([node.address]))
    with SyncTalosClient(config, timeout=2.0) as talos:
        assert talos.reboot(node.listen, "powercycle").accepted
        back = threading.Event()
        deadline = 5.0
        while not back.wait(0.02):  # a condition: the boot ID changed and the endpoint answers again
            deadline -= 0.02
            assert deadline > 0, "the node did not come back"
            if node.boot_id != boot and node.up and talos.probe(node.listen).state is ProbeState.RUNNING:
                back.set()
    assert fleet.reboots("demo-cp-0")[0].address == node.address


def test_removing_an_exposed_node_releases_its_exposure_and_the_port_is_reused(
    fleet: FakeTalosFleet, exposer: FakeServiceExposer
) -> None:
    first = fleet.add_node("a")
    port = first.bind_port
    fleet.add_node("b")
    fleet.remove_node("a")
    assert exposer.released == ["a"]
    assert fleet.add_node("c").bind_port == port
    with pytest.raises(ValueError, match="comes from the exposure"):
        fleet.add_node("d", "127.0.0.1")


def test_the_default_fleet_still_listens_on_its_loopback_address_on_50000(pki: ClusterPKI) -> None:
    timeline = Timeline()
    with FakeTalosFleet(pki, timeline=timeline, port=50000) as fleet:
        node = fleet.add_node("n-0")
        assert (node.bind_host, node.bind_port) == (node.address, 50000)
        assert node.listen == node.endpoint and ipaddress.ip_address(node.address).is_loopback
        assert "listen" not in timeline.events("talos.up")[0].details


# --- the simulator's switch ------------------------------------------------------------------------------------


FAST = Timings(pending=1, provisioning=3, boot=3, node_ready=2, deletion=2, reboot=3, time_scale=60)


def _scenario() -> Scenario:
    return Scenario(cluster="demo", namespace="sim-unit", cp_replicas=3, timings=FAST,
                    deployments=(DeploymentSpec(name="workers", replicas=1),)).validate()


def test_the_service_mode_needs_what_it_exposes_with() -> None:
    store = MemoryStore("sim-unit")
    with pytest.raises(ValueError, match="expected one of loopback, service"):
        Simulator(None, _scenario(), store=store, endpoints="nodeport")
    with pytest.raises(ValueError, match="pod_ip and pod_labels"):
        Simulator(None, _scenario(), store=store, endpoints="service")


def test_in_service_mode_machines_and_talosconfig_carry_the_service_addresses(exposer: FakeServiceExposer) -> None:
    with Simulator(None, _scenario(), store=MemoryStore("sim-unit"), endpoints="service", exposer=exposer) as sim:
        machines = sim.machines()
        assert {m.name for m in machines} == set(exposer.exposed)
        for m in machines:
            obj = next(o for o in sim.store.list("machines") if o["metadata"]["name"] == m.name)
            internal = [a["address"] for a in obj["status"]["addresses"] if a["type"] == "InternalIP"]
            assert internal == [exposer.exposed[m.name].address]
        config = parse_talosconfig(sim.talosconfig)
        assert list(config.endpoints) == [exposer.exposed[m.name].address for m in sim.machines("cp")]


# --- the CLI --------------------------------------------------------------------------------------------------


def test_the_cli_refuses_the_service_mode_without_pod_address_or_labels(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_cli.main(["run", "--in-cluster", "--scenario", "happy", "--endpoints", "service",
                         "--pod-labels", "a=b"]) == 2
    assert "needs --pod-ip and --pod-labels" in capsys.readouterr().err
    assert sim_cli.main(["run", "--in-cluster", "--scenario", "happy", "--endpoints", "service",
                         "--pod-ip", "10.0.0.1", "--pod-labels", "oops"]) == 2
    assert "key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sim_cli.main(["run", "--in-cluster", "--kubeconfig", "kc", "--scenario", "happy"])


# --- the manifests ----------------------------------------------------------------------------------------------


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def test_the_deployment_runs_the_service_mode_with_its_own_address_namespace_and_labels() -> None:
    s = _scenario()
    docs = _by_kind(manifests(namespace="sim-kind", scenario=s, image="capi-rollout-sim:test", trigger_after=3))
    pod = docs["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    args = container["args"]
    flag = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert "--in-cluster" in args and flag["--endpoints"] == "service"
    assert flag["--pod-ip"] == "$(POD_IP)" and flag["--namespace"] == "$(POD_NAMESPACE)"
    assert parse_labels(flag["--pod-labels"]).items() <= pod["metadata"]["labels"].items()
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    assert flag["--trigger-after"] == "3" and flag["--ready-file"] == READY_FILE
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_IP": "status.podIP", "POD_NAMESPACE": "metadata.namespace"}
    assert container["readinessProbe"]["exec"]["command"] == ["cat", READY_FILE]
    assert container["image"] == "capi-rollout-sim:test"
    assert docs["Deployment"]["spec"]["replicas"] == 1 and docs["Deployment"]["spec"]["strategy"]["type"] == "Recreate"
    assert pod["spec"]["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    mounted = yaml.safe_load(docs["ConfigMap"]["data"]["scenario.yaml"])
    assert from_dict(mounted) == s
    assert "/etc/capi-rollout-sim/scenario.yaml" in args
    assert docs["Namespace"]["metadata"] == {"name": "sim-kind", "labels": {MARKER_LABEL: "true"}}


def test_the_rbac_is_namespaced_except_the_two_safety_reads() -> None:
    docs = _by_kind(manifests(namespace="sim-kind", scenario=_scenario()))
    role_rules = docs["Role"]["rules"]
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in role_rules)
    secrets = [r for r in role_rules if r["resources"] == ["secrets"]]
    assert {"delete"} == {v for r in secrets if r.get("resourceNames") == ["demo-talosconfig"] for v in r["verbs"]}
    assert all(set(r["verbs"]) == {"create"} for r in secrets if "resourceNames" not in r)
    cluster = docs["ClusterRole"]["rules"]
    assert cluster == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"], "resourceNames": ["sim-kind"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
    ]
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"] == "capi-rollout-sim-sim-kind"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "capi-rollout-sim", "namespace": "sim-kind"}]


def test_the_rendered_default_is_up_to_date_and_every_rbac_rule_has_its_reason() -> None:
    assert RENDERED.read_text() == rendered_default(), "run `python -m sim.deploy`"
    text = RENDERED.read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                         "ClusterRoleBinding", "ConfigMap", "Deployment"]
    for kind in ("Role", "ClusterRole"):
        block = text.split(f"kind: {kind}\n", 1)[1].split("---", 1)[0]
        rules = block.split("rules:\n", 1)[1]
        commented = re.findall(r"^# .+\n- apiGroups:", rules, flags=re.M)
        # the TalosControlPlane status rule shares the comment of the rule above it
        assert len(commented) >= len(_by_kind(docs)[kind]["rules"]) - (1 if kind == "Role" else 0)
    assert render(docs, namespace="sim-demo", cluster="demo") == text


def test_the_sim_image_is_tagged_with_the_package_version() -> None:
    from capi_rollout import __version__
    from capi_rollout.workflow.image import IMAGE

    assert sim_image() == f"ghcr.io/capi-rollout/capi-rollout-sim:{__version__}"
    assert IMAGE.rsplit(":", 1)[1] == sim_image().rsplit(":", 1)[1]
    assert Path(RENDERED).parent.joinpath("manifests.py").is_file()


# --- the kind backend's pure parts --------------------------------------------------------------------------------


def test_kind_builds_the_step_and_the_simulator_image_from_their_dockerfiles() -> None:
    from capi_rollout.workflow.image import IMAGE
    from e2e.backends.kind import images_to_build

    built = images_to_build()
    assert built == [(IMAGE, "Dockerfile"), (sim_image(), "sim/Dockerfile")]
    root = Path(__file__).resolve().parents[2]
    assert all((root / dockerfile).is_file() for _, dockerfile in built)


def test_kind_runs_the_scenario_in_the_simulator_namespace() -> None:
    from e2e.backends.sim_pod import simulator_documents

    docs = simulator_documents("cp-stall-recover-after-reboot", "sim-kind-1", image="img:1", trigger_after=2)
    namespaced = [d for d in docs if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"sim-kind-1"}
    mounted = from_dict(yaml.safe_load(_by_kind(docs)["ConfigMap"]["data"]["scenario.yaml"]))
    assert mounted.namespace == "sim-kind-1" and mounted.faults == load("cp-stall-recover-after-reboot").faults
    assert _by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == "img:1"


def test_kind_waits_for_the_pod_the_talosconfig_and_one_service_per_machine() -> None:
    from e2e.backends.sim_pod import simulator_ready

    ready = {"status": {"readyReplicas": 1}}
    assert simulator_ready(deployment=None, talosconfig=True, services=4, machines=4)[0] is False
    assert simulator_ready(deployment={"status": {}}, talosconfig=True, services=4, machines=4)[0] is False
    assert simulator_ready(deployment=ready, talosconfig=False, services=4, machines=4) == (
        False, "no talosconfig Secret yet")
    assert simulator_ready(deployment=ready, talosconfig=True, services=3, machines=4) == (
        False, "3 per-node Services for 4 Machines")
    assert simulator_ready(deployment=ready, talosconfig=True, services=0, machines=0)[0] is False
    assert simulator_ready(deployment=ready, talosconfig=True, services=4, machines=4)[0] is True


def test_the_probe_job_mounts_the_talosconfig_and_its_script_probes_every_endpoint(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from e2e.backends.sim_pod import PROBE_SCRIPT, talos_probe_job

    job = talos_probe_job("sim-kind-1", "demo", image="img:1")
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "talosconfig", "secret": {"secretName": "demo-talosconfig"}}]
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/talos"
    # the script itself, run here against a loopback-mode simulator (the same client code the pod runs)
    with Simulator(None, _scenario(), store=MemoryStore("sim-unit")) as sim:
        path = tmp_path / "talosconfig"
        path.write_text(sim.talosconfig)
        done = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, str(path)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        states = json.loads(done.stdout.strip().splitlines()[-1])
        assert states == {m.node.address: "running" for m in sim.machines("cp")}
