"""The real node's configuration as data: addresses, no route out, registries closed, images kept, teardown."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from capi_rollout.waiting import wait_until
from e2e.backends.node import node_capi_line
from e2e.node import config, netns
from e2e.node.archive import ImageConfig, layer_from_files, write_archive
from e2e.node.config import Layout


def layout(tmp_path: Path) -> Layout:
    return Layout(state=tmp_path / "node")


def test_the_kubernetes_service_ip_is_the_first_address_of_the_service_range(tmp_path: Path) -> None:
    assert layout(tmp_path).service_ip == "10.96.0.1"
    assert Layout(state=tmp_path, service_cidr="10.50.0.0/24").service_ip == "10.50.0.1"


def test_pods_ask_the_cluster_dns_service_at_the_tenth_address_of_the_service_range(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    kubelet = yaml.safe_load(config.render_kubelet(lay, ca=tmp_path / "ca", serving_cert=tmp_path / "c",
                                                   serving_key=tmp_path / "k"))
    assert lay.dns_ip == "10.96.0.10" and kubelet["clusterDNS"] == ["10.96.0.10"]
    assert kubelet["clusterDomain"] == "cluster.local"


def test_containerd_never_pulls_from_outside_and_tolerates_missing_cap_sys_resource(tmp_path: Path) -> None:
    text = config.render_containerd(layout(tmp_path))
    assert "restrict_oom_score_adj = true" in text
    assert f'config_path = "{tmp_path / "node" / "containerd" / "certs.d"}"' in text
    assert 'sandbox = "registry.k8s.io/pause:3.10.2"' in text
    hosts = config.render_registry_hosts()
    assert 'server = "http://127.0.0.1:9"' in hosts and "127.0.0.1" in hosts.split("[host.")[1]


def test_the_kubelet_keeps_imported_images_and_runs_on_cgroup_v1_under_its_own_root(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    kubelet = yaml.safe_load(config.render_kubelet(lay, ca=tmp_path / "ca", serving_cert=tmp_path / "c",
                                                   serving_key=tmp_path / "k"))
    assert kubelet["imageGCHighThresholdPercent"] == 100  # imported images are never garbage-collected
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["cgroupRoot"] == "/capi-rollout-node"
    assert kubelet["address"] == lay.node_ip and kubelet["authentication"]["anonymous"]["enabled"] is False


def test_pods_get_a_bridge_with_the_pod_range_and_kube_proxy_masquerades_service_traffic(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    cni = json.loads(config.render_cni(lay))
    bridge = cni["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["isGateway"] is True and bridge["hairpinMode"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": lay.pod_cidr}]]
    proxy = yaml.safe_load(config.render_kube_proxy(lay, tmp_path / "kc"))
    assert proxy["mode"] == "iptables" and proxy["iptables"]["masqueradeAll"] is True
    assert proxy["conntrack"]["maxPerCore"] == 0  # the namespace's conntrack sysctls are left alone


def test_the_api_server_serves_on_the_node_ip_and_reaches_the_kubelet_by_it(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    pki = {k: tmp_path / k for k in ("ca_cert", "ca_key", "serving_cert", "serving_key", "admin_cert", "admin_key",
                                     "sa_public_key", "sa_private_key")}
    argv = config.apiserver_argv(Path("/bin/kube-apiserver"), lay, pki, "https://issuer")
    assert f"--advertise-address={lay.node_ip}" in argv
    assert "--kubelet-preferred-address-types=InternalIP" in argv
    assert "--authorization-mode=Node,RBAC" in argv


def test_the_resolver_inside_the_namespace_asks_no_server_outside(tmp_path: Path) -> None:
    nameservers = [line.split()[1] for line in config.render_resolv_conf(layout(tmp_path)).splitlines()
                   if line.startswith("nameserver")]
    assert nameservers == ["127.0.0.1"]


@pytest.mark.parametrize(("route", "leaks"), [
    ({"dst": "10.213.0.0/24", "dev": "node0", "protocol": "kernel", "scope": "link"}, False),
    ({"dst": "10.96.0.0/16", "dev": "node0"}, False),
    ({"type": "local", "dst": "10.213.0.2", "dev": "node0", "table": "local"}, False),
    ({"dst": "default", "dev": "node0"}, True),
    ({"dst": "default", "gateway": "10.213.0.1", "dev": "node0"}, True),
    ({"dst": "192.0.2.0/24", "gateway": "10.213.0.1", "dev": "node0"}, True),
], ids=["connected", "services", "local", "default", "default via", "via gateway"])
def test_a_default_route_or_any_gateway_is_a_way_out(route: dict[str, object], leaks: bool) -> None:
    assert bool(netns.route_out([route])) is leaks


def test_commands_enter_the_namespace_in_a_private_mount_namespace(tmp_path: Path) -> None:
    argv = netns.enter_argv(layout(tmp_path), ["pytest", "e2e"])
    assert argv[:4] == ["unshare", "--mount", "--propagation", "slave"]
    assert "--net=/run/netns/capi-rollout-node" in argv and argv[-2:] == ["pytest", "e2e"]


def test_an_image_archive_is_what_ctr_imports_and_equal_inputs_give_the_same_id(tmp_path: Path) -> None:
    layer = layer_from_files({"/bin/tool": (b"#!/bin/sh\n", 0o755)}, tmp_path / "layer.tar")
    cfg = ImageConfig(entrypoint=["/bin/tool"], env={"PATH": "/bin"}, user="8737")
    first = write_archive(tmp_path / "a.tar", tags=["example.org/tool:v1"], layers=[layer], config=cfg)
    second = write_archive(tmp_path / "b.tar", tags=["example.org/tool:v1"], layers=[layer], config=cfg)
    assert first == second
    with tarfile.open(tmp_path / "a.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        image = json.loads(tar.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
        names = tar.getnames()
    assert manifest[0]["RepoTags"] == ["example.org/tool:v1"]
    assert image["rootfs"]["diff_ids"] == [layer.diff_id] and image["config"]["User"] == "8737"
    assert f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" in names
    with tarfile.open(layer.path) as tar:
        assert {m.name: (m.mode, m.uid) for m in tar.getmembers()} == {"bin": (0o755, 0), "bin/tool": (0o755, 0)}


def test_the_node_plays_one_capi_line_named_by_the_environment() -> None:
    assert node_capi_line({}) == "v1.14"
    assert node_capi_line({"E2E_NODE_CAPI_LINE": "v1.10"}) == "v1.10"


@pytest.mark.skipif(not Path("/run").exists() or __import__("os").geteuid() != 0,
                    reason="making a network namespace needs root on Linux")
def test_the_node_namespace_has_no_route_out_and_teardown_leaves_nothing(tmp_path: Path) -> None:
    import os

    lay = Layout(state=tmp_path / "node", netns=f"capi-rollout-test-{os.getpid()}",
                 cgroup_root=f"capi-rollout-test-{os.getpid()}")
    netns.create(lay)
    try:
        found = netns.routes(lay)
        assert any(r.get("dst") == lay.service_cidr for r in found)
        assert netns.route_out(found) == []
    finally:
        netns.destroy(lay)
    assert not netns.exists(lay) and not lay.state.exists()
    assert netns.destroy(lay) == []  # a second teardown finds nothing


def test_the_controller_environment_is_set_on_the_workflow_controller_container_only() -> None:
    from e2e.backends.argo_install import with_controller_env

    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "workflow-controller"},
                  "spec": {"template": {"spec": {"containers": [
                      {"name": "workflow-controller", "env": [{"name": "DEFAULT_REQUEUE_TIME", "value": "10s"},
                                                              {"name": "LEADER_ELECTION_IDENTITY", "value": "x"}]}]}}}}
    out = with_controller_env(deployment, {"DEFAULT_REQUEUE_TIME": "1s"})
    env = out["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "LEADER_ELECTION_IDENTITY", "value": "x"}, {"name": "DEFAULT_REQUEUE_TIME", "value": "1s"}]
    server = {**deployment, "metadata": {"name": "argo-server"}}
    assert with_controller_env(server, {"DEFAULT_REQUEUE_TIME": "1s"}) == server


def test_the_runner_requests_are_counted_from_the_audit_log_by_client() -> None:
    def event(user: str, agent: str, stage: str = "ResponseComplete") -> str:
        return json.dumps({"stage": stage, "user": {"username": user}, "userAgent": agent})

    runner = config.RUNNER_USER
    lines = [event(runner, "OpenAPI-Generator/37.0.2/python"), event(runner, "OpenAPI-Generator/37.0.2/python"),
             event(runner, "argoexec/v4.0.2 argo-workflows/v4.0.2"), event(runner, "x", stage="ResponseStarted"),
             event("system:serviceaccount:argo:argo", "workflow-controller/v4.0.2"), "not json"]
    assert config.runner_requests(lines) == {"step (python)": 2, "argoexec": 1}
    policy = yaml.safe_load(config.render_audit_policy())
    assert policy["rules"][0] == {"level": "Metadata", "users": [runner]} and policy["rules"][-1] == {"level": "None"}


def test_the_argo_events_images_have_the_upstream_tags_and_the_binaries_where_argo_events_runs_them(
        tmp_path: Path) -> None:
    from e2e.node.images import events_images

    binaries = {name: tmp_path / name for name in ("argo-events", "nats-server", "coredns")}
    for name, binary in binaries.items():
        binary.write_bytes(f"#!{name}\n".encode())
    archives = events_images(tmp_path / "cache", binaries, argo_events_version="v1.9.11", nats_version="v2.10.29",
                              coredns_version="v1.14.6")

    found = {}
    for archive in archives:
        with tarfile.open(archive.path) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            image = json.loads(tar.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
            with tarfile.open(fileobj=tar.extractfile(manifest[0]["Layers"][0])) as layer:
                files = {m.name for m in layer.getmembers() if m.isfile()}
        found[manifest[0]["RepoTags"][0]] = (image["config"]["Entrypoint"], files)
    # The controller starts EventSource/Sensor pods with ARGO_EVENTS_IMAGE; the JetStream StatefulSet runs
    # the startCommand `/nats-server` of the controller configuration's natsImage `nats:2.10.29`.
    assert found["quay.io/argoproj/argo-events:v1.9.11"][0] == ["/bin/argo-events"]
    assert "bin/argo-events" in found["quay.io/argoproj/argo-events:v1.9.11"][1]
    assert found["docker.io/library/nats:2.10.29"][0] == ["/nats-server"]
    assert "nats-server" in found["docker.io/library/nats:2.10.29"][1]
    assert found["registry.k8s.io/coredns/coredns:v1.14.6"] == (["/coredns"], {"coredns", "etc/passwd", "etc/group",
                                                                              "tmp/.keep"})


@pytest.mark.parametrize("target", ["e2e", "demo"])
def test_make_says_a_node_cannot_run_here_before_it_builds_anything(target: str) -> None:
    """As a non-root user (root is mapped to uid 1000 in a user namespace), ``make e2e``/``make demo`` print the
    one line of the node check first and exit non-zero, without starting the long builds of tools/."""
    import os
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "E2E_CLUSTER")}
    argv = ["make", "--no-print-directory", target]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("unshare (util-linux) is needed to run make as a non-root user")
        argv = ["unshare", "--user", "--map-user=1000", "--map-group=1000", *argv]
    done = subprocess.run(argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode != 0, done.stdout
    for build in ("tools/build.sh", "tools/talosctl.sh", "tools/node.sh", "tools/events.sh"):  # the long builds
        assert build not in done.stdout, done.stdout
    first = next(line for line in lines if not line.startswith(".venv/") and not line.startswith("python3 -m"))
    assert first.startswith("cannot run a real node here: a real node needs root"), done.stdout
    assert "Alternative: E2E_CLUSTER=kind" in first and "Docker engine" in first


ROOT_ONLY = pytest.mark.skipif(not Path("/run").exists() or __import__("os").geteuid() != 0,
                               reason="making a network namespace and cgroups needs root on Linux")


def _test_layout(tmp_path: Path, tag: str) -> Layout:
    import os

    name = f"capi-rollout-test-{tag}-{os.getpid()}"
    return Layout(state=tmp_path / "node", netns=name, cgroup_root=name)


def _a_cgroup_controller() -> Path:
    """A v1 controller hierarchy (pids, memory or cpu), or the v2 root."""
    for name in ("pids", "memory", "cpu"):
        if (netns.CGROUP_ROOT / name / "cgroup.procs").exists():
            return netns.CGROUP_ROOT / name
    return netns.CGROUP_ROOT


@ROOT_ONLY
def test_teardown_ends_the_processes_in_the_namespace_and_in_the_node_cgroups_and_removes_both(
        tmp_path: Path) -> None:
    import subprocess

    lay = _test_layout(tmp_path, "destroy")
    group = _a_cgroup_controller() / lay.cgroup_root / "pod-test" / "container"
    netns.create(lay)
    lay.state.mkdir(parents=True)
    in_ns = subprocess.Popen(["nsenter", f"--net=/run/netns/{lay.netns}", "--", "sleep", "600"])
    in_cgroup = subprocess.Popen(["sleep", "600"])
    try:
        group.mkdir(parents=True)
        (group / "cgroup.procs").write_text(f"{in_cgroup.pid}\n")
        deadline = __import__("time").monotonic() + 10
        while in_ns.pid not in netns.namespace_pids(lay):
            assert __import__("time").monotonic() < deadline, "the sleeping process never entered the namespace"
        assert group in netns.node_cgroups(lay)

        done = netns.destroy(lay)

        assert in_ns.wait(timeout=10) == -9 and in_cgroup.wait(timeout=10) == -9, done
        assert not (_a_cgroup_controller() / lay.cgroup_root).exists(), done
        assert netns.node_cgroups(lay) == [] and not netns.exists(lay) and not lay.state.exists(), done
    finally:
        for proc in (in_ns, in_cgroup):
            proc.kill()
            proc.wait()
        netns.destroy(lay)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_LAUNCHER = """
import sys
from pathlib import Path
from e2e.node import __main__ as launcher, netns, setup
from e2e.node.config import Layout

lay = Layout(state=Path(sys.argv[1]), netns=sys.argv[2], cgroup_root=sys.argv[2])
setup.missing = lambda **_: []
setup.build_images = lambda: []
launcher.STOP_GRACE = 1.0
# the command inside: a shell that ignores SIGINT, so only the teardown can end its sleep
netns.enter_argv = lambda layout, argv: ["nsenter", f"--net=/run/netns/{layout.netns}", "--",
                                         "sh", "-c", "trap '' INT; sleep 600"]
sys.exit(launcher._run(lay, ["unused"], keep=False))
"""


@ROOT_ONLY
@pytest.mark.parametrize("signum", [15, 1], ids=["SIGTERM", "SIGHUP"])
def test_a_launcher_stopped_by_a_signal_tears_the_node_down(tmp_path: Path, signum: int) -> None:
    """A CI timeout (SIGTERM) or a closed terminal (SIGHUP) ends ``python -m e2e.node run`` through the same
    teardown as Ctrl-C: nothing of the node is left (processes, namespace, state)."""
    import os
    import subprocess
    import sys

    lay = _test_layout(tmp_path, f"signal{signum}")
    repo = Path(__file__).resolve().parents[2]
    log_file = tmp_path / "launcher.log"
    with log_file.open("w") as log_out:
        launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(lay.state), lay.netns], cwd=repo,
                                    stderr=log_out)
    try:
        def started() -> bool:  # the shell and its sleep run in the namespace
            assert launcher.poll() is None, f"the launcher ended early: {log_file.read_text()}"
            return len(netns.namespace_pids(lay)) >= 2

        wait_until(started, timeout=30, interval=0.1, what="the launcher running its command in the namespace")
        inside = netns.namespace_pids(lay)

        os.kill(launcher.pid, signum)
        launcher.wait(timeout=90)
        log = log_file.read_text()

        assert launcher.returncode == 128 + signum, log
        assert f"stopped by signal {signum}" in log
        assert not netns.exists(lay) and not lay.state.exists(), log
        assert not [pid for pid in inside if _alive(pid)], log
    finally:
        launcher.kill()
        launcher.wait()
        netns.destroy(lay)


class _FakeProbes:
    """``subprocess.run`` for the kernel probes: every command succeeds except those containing ``fail``."""

    def __init__(self, fail: str | None) -> None:
        self.fail = fail
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        failed = self.fail is not None and self.fail in " ".join(argv)
        return subprocess.CompletedProcess(argv, 1 if failed else 0, "", "probe refused" if failed else "")


@pytest.mark.parametrize(("fail", "named"), [
    ("netns add", "the kernel cannot make network namespaces (probe refused)"),
    ("type veth", "this kernel lacks veth pairs (the node's interface) (probe refused)"),
    ("type bridge", "this kernel lacks bridge interfaces (the pod network, CNI bridge plugin) (probe refused)"),
    ("-L -n", "this kernel lacks the iptables nat table"),
    ("conntrack", "this kernel lacks connection tracking (the iptables conntrack match kube-proxy uses)"),
    ("statistic", "this kernel lacks the iptables comment and statistic matches and the MASQUERADE target"),
], ids=["netns", "veth", "bridge", "nat", "conntrack", "kube-proxy matches"])
def test_each_missing_kernel_piece_is_named_in_one_sentence_and_the_probe_namespace_is_deleted(
        fail: str, named: str) -> None:
    from e2e.node import setup

    run = _FakeProbes(fail)
    (problem,) = setup.kernel_problems(run=run, which=lambda _: "/usr/sbin/iptables")
    assert problem.startswith(named), problem
    assert run.calls[-1][:3] == ["ip", "netns", "delete"]
    assert all(c[:4] == ["ip", "netns", "exec", run.calls[0][3]] for c in run.calls if "iptables" in c)


def test_a_kernel_that_does_everything_has_no_problem_and_iptables_waits_for_make_node_tools() -> None:
    from e2e.node import setup

    run = _FakeProbes(None)
    assert setup.kernel_problems(run=run, which=lambda _: "/usr/sbin/iptables") == []
    assert len(run.calls) == 2 + len(setup.KERNEL_PROBES)
    without = _FakeProbes("iptables")
    assert setup.kernel_problems(run=without, which=lambda _: None) == []  # not tried without the command


@ROOT_ONLY
def test_this_kernel_passes_the_probes_and_they_leave_no_namespace() -> None:
    from e2e.node import setup

    before = Path("/run/netns").iterdir() if Path("/run/netns").is_dir() else iter(())
    names = {p.name for p in before}
    assert setup.kernel_problems() == []
    assert {p.name for p in Path("/run/netns").iterdir()} == names
