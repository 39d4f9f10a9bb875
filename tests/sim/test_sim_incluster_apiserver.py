"""The simulator's in-cluster mode on the real local API server, as the simulator pod's own ServiceAccount.

What this proves (and what only kind proves, see sim/README.md): the manifests of ``sim/deploy`` are accepted by
the API server (server-side dry run) and their RBAC is enough for the whole simulator — namespace check, CAPI
objects, statuses, talosconfig Secret, one Service per node — and no more than it needs; each Service selects the
simulator pod's labels and maps port 50000 to the port its node listens on at the pod address; the Machine's
InternalIP and the talosconfig endpoints are the Services' ClusterIPs, allocated by the API server; the engine's
real Talos client, with the talosconfig the simulator wrote, reaches every node at the pod address, and a TLS
handshake to the pod address as a client that dialled the ClusterIP (what kube-proxy's DNAT looks like) or the
Service DNS name verifies. The local API server has no kube-proxy, no DNS and no kubelet: that a ClusterIP
actually routes to the pod is what only kind shows.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from capi_rollout.adapters.talos import ProbeState, SyncTalosClient
from capi_rollout.adapters.talos.config import parse_talosconfig
from capi_rollout.adapters.talos.tls import mtls_client_context
from envtest import LocalAPIServer, rest
from envtest.server import client_from_kubeconfig
from sim.deploy import NAME, POD_LABELS, labels_arg, manifests
from sim.deploy.__main__ import RENDERED
from sim.objects import capi_version
from sim.scenario import DeploymentSpec, Scenario, Timings
from sim.simulator import Simulator
from sim.talos import loopback_block
from sim.talos.exposure import MACHINE_LABEL, SERVICE_LABEL, TALOS_PORT

pytestmark = pytest.mark.apiserver

FAST = Timings(pending=1, provisioning=3, boot=3, node_ready=2, deletion=2, reboot=3, time_scale=60)
WAIT = 30.0
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")  # the local API server's --service-cluster-ip-range
REPO = Path(__file__).resolve().parents[2]


def pod_ip() -> str:
    """The 'pod address': a loopback address outside the block the loopback-mode fleet allocates from."""
    a, b = loopback_block()
    return f"127.{a}.{(b + 223) % 256}.7"


def scenario(namespace: str) -> Scenario:
    return Scenario(cluster="demo", namespace=namespace, cp_replicas=3, timings=FAST, trigger="tcp-version",
                    deployments=(DeploymentSpec(name="workers", replicas=1, max_surge=1, max_unavailable=0),),
                    ).validate()


@pytest.fixture
def deployed(apiserver: LocalAPIServer) -> Iterator[tuple[Scenario, client.ApiClient, Path]]:
    """sim/deploy's documents applied for a fresh namespace (the Deployment too: nothing runs it here); yields the
    scenario, an ApiClient acting as the simulator's ServiceAccount and its kubeconfig."""
    ns = f"sim-ic-{uuid.uuid4().hex[:8]}"
    s = scenario(ns)
    apiserver.apply_manifests(manifests(namespace=ns, scenario=s, image="capi-rollout-sim:test"))
    kubeconfig = apiserver.serviceaccount_kubeconfig(ns, NAME)
    api = client_from_kubeconfig(kubeconfig)
    try:
        yield s, api, kubeconfig
    finally:
        api.close()  # type: ignore[no-untyped-call]
        apiserver.delete_namespace(ns)


def services(api: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    """machine name -> its Service (as the admin sees it)."""
    listed = client.CoreV1Api(api).list_namespaced_service(namespace, label_selector=f"{SERVICE_LABEL}=true")
    items: list[dict[str, Any]] = api.sanitize_for_serialization(listed)["items"]  # type: ignore[no-untyped-call]
    return {svc["metadata"]["labels"][MACHINE_LABEL]: svc for svc in items}


def machine_ips(api: client.ApiClient, s: Scenario) -> dict[str, str]:
    out: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "cluster.x-k8s.io", capi_version(s.capi_line), s.namespace, "machines")
    return {m["metadata"]["name"]: next(a["address"] for a in m["status"]["addresses"] if a["type"] == "InternalIP")
            for m in out["items"] if (m.get("status") or {}).get("addresses")}


def talosconfig_text(api: client.ApiClient, s: Scenario) -> str:
    secret = client.CoreV1Api(api).read_namespaced_secret(f"{s.cluster}-talosconfig", s.namespace)
    return base64.b64decode((secret.data or {})["talosconfig"]).decode()


def handshake(config: Any, listen: str, server_hostname: str) -> str:
    """TLS to the pod address as a client that dialled ``server_hostname``, with the engine's mTLS context."""
    host, port = listen.rsplit(":", 1)
    ctx = mtls_client_context(config.ca_pem, config.crt_pem, config.key_pem)
    with socket.create_connection((host, int(port)), timeout=2.0) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
        return str(tls.selected_alpn_protocol())


def test_the_rendered_simulator_manifests_pass_a_server_side_dry_run(apiserver: LocalAPIServer) -> None:
    docs = rest.load_documents([RENDERED])
    assert docs[0]["kind"] == "Namespace"
    apiserver.apply_manifests(docs[:1])  # the namespace for real, so the namespaced documents can live in it
    for doc in docs[1:]:
        answer = apiserver.apply_manifests([doc], dry_run=True)[0]
        assert (answer["kind"], answer["metadata"]["name"]) == (doc["kind"], doc["metadata"]["name"])


def test_in_service_mode_every_node_is_a_service_whose_cluster_ip_is_the_machine_address_and_the_engine_reaches_it(
    deployed: tuple[Scenario, client.ApiClient, Path], admin_api_client: client.ApiClient
) -> None:
    s, sim_api, _ = deployed
    with Simulator(sim_api, s, endpoints="service", pod_ip=pod_ip(), pod_labels=POD_LABELS) as sim:
        svcs = services(admin_api_client, s.namespace)
        ips = machine_ips(admin_api_client, s)
        assert set(svcs) == set(ips) == {m.name for m in sim.machines()}
        pod_labels = manifests(namespace=s.namespace, scenario=s)[-1]["spec"]["template"]["metadata"]["labels"]
        for name, svc in svcs.items():
            node = sim.node(name)
            assert svc["spec"]["selector"].items() <= pod_labels.items()
            assert svc["spec"]["ports"] == [{"name": "talos-api", "protocol": "TCP", "port": TALOS_PORT,
                                             "targetPort": node.bind_port}]
            assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in SERVICE_CIDR
            assert ips[name] == svc["spec"]["clusterIP"] == node.address
            assert node.bind_host == pod_ip()
            owner = svc["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"], owner["uid"]) == ("Cluster", "demo", sim.controllers.cluster_uid)

        config = parse_talosconfig(talosconfig_text(admin_api_client, s))
        cps = sim.machines("cp")
        assert list(config.endpoints) == [svcs[m.name]["spec"]["clusterIP"] for m in cps]
        with SyncTalosClient(config, timeout=3.0) as talos:
            for m in cps:
                node = sim.node(m.name)
                assert talos.version(node.listen) == s.talos_version
                assert handshake(config, node.listen, node.address) == "h2"
                assert handshake(config, node.listen, f"{svcs[m.name]['metadata']['name']}.{s.namespace}.svc") == "h2"
            first = sim.node(cps[0].name)
            boot = first.boot_id
            assert talos.reboot(first.listen, "powercycle").accepted
            sim.wait_until(lambda: first.boot_id != boot and first.up
                           and talos.probe(first.listen).state is ProbeState.RUNNING, timeout=WAIT)
        reboot = sim.timeline.events("talos.reboot")[0]
        assert (reboot.subject, reboot.details["address"]) == (cps[0].name, svcs[cps[0].name]["spec"]["clusterIP"])

        first_ports = {name: svc["spec"]["ports"][0]["targetPort"] for name, svc in svcs.items()}
        sim.trigger_rollout()
        sim.wait_until(lambda: sim.timeline.first("rollout.completed", sim.controllers.tcp_name), timeout=WAIT)
        # replaced machines' Services are gone and the new machines have theirs
        sim.wait_until(lambda: set(services(admin_api_client, s.namespace)) == set(machine_ips(admin_api_client, s))
                       == {m.name for m in sim.machines() if m.node is not None}, timeout=WAIT)
        assert {"demo-cp-0", "demo-cp-1", "demo-cp-2"}.isdisjoint(services(admin_api_client, s.namespace))
        # a replaced node's port is not re-bound by its successor (a late kube-proxy would route its old Service
        # there): the new nodes listen on ports no earlier node used
        now = services(admin_api_client, s.namespace)
        released = {port for name, port in first_ports.items() if name not in now}
        new_ports = {svc["spec"]["ports"][0]["targetPort"] for name, svc in now.items() if name not in first_ports}
        assert len(released) == 3 and len(new_ports) == 3 and new_ports.isdisjoint(released), (released, new_ports)
    assert services(admin_api_client, s.namespace) == {}
    with pytest.raises(ApiException) as gone:
        client.CoreV1Api(admin_api_client).read_namespaced_secret(f"{s.cluster}-talosconfig", s.namespace)
    assert gone.value.status == 404


def test_the_simulator_service_account_can_do_nothing_beyond_its_own_objects(
    deployed: tuple[Scenario, client.ApiClient, Path], apiserver: LocalAPIServer
) -> None:
    s, sim_api, _ = deployed
    core = client.CoreV1Api(sim_api)
    apiserver.create_namespace("default")
    attempts: dict[str, Callable[[], Any]] = {
        "read Secrets": lambda: core.list_namespaced_secret(s.namespace),
        "delete another Secret": lambda: core.delete_namespaced_secret("other", s.namespace),
        "Services elsewhere": lambda: core.list_namespaced_service("default"),
        "read another namespace": lambda: core.read_namespace("default"),
        "create namespaces": lambda: core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=f"x-{uuid.uuid4().hex[:6]}"))),
        "list Pods": lambda: core.list_namespaced_pod(s.namespace),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ApiException) as denied:
            attempt()
        assert denied.value.status == 403, what


def test_python_m_sim_run_in_service_mode_signals_ready_triggers_on_sigusr1_and_cleans_up_on_sigterm(
    deployed: tuple[Scenario, client.ApiClient, Path], admin_api_client: client.ApiClient, tmp_path: Path
) -> None:
    s, _, kubeconfig = deployed
    scenario_file = tmp_path / "scenario.yaml"
    config_map = manifests(namespace=s.namespace, scenario=s)[-2]
    assert config_map["kind"] == "ConfigMap"
    scenario_file.write_text(config_map["data"]["scenario.yaml"])  # what the pod mounts
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "run", "--kubeconfig", str(kubeconfig), "--scenario", str(scenario_file),
         "--namespace", s.namespace, "--endpoints", "service", "--pod-ip", pod_ip(), "--pod-labels",
         labels_arg(POD_LABELS), "--trigger-after", "-1", "--ready-file", str(ready)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or []:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + WAIT
        while not any(text in line for line in seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0 and proc.poll() is None, f"no {text!r} in:\n{''.join(seen)}"
            try:
                seen.append(lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue

    try:
        wait_for("talosconfig endpoints:")
        wait_for("machine.ready")
        assert ready.read_text() == f"demo {s.namespace}\n"
        assert set(services(admin_api_client, s.namespace)) == set(machine_ips(admin_api_client, s))
        assert not any("rollout.triggered" in line for line in seen)
        proc.send_signal(signal.SIGUSR1)
        wait_for("rollout.triggered")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert not ready.exists()
    assert services(admin_api_client, s.namespace) == {}
