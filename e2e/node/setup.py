"""What a real node needs on this machine, where its pieces are, and the part of ``run`` inside the namespace.

Contract:
- :func:`missing` lists, one sentence each, what this machine lacks for a node (not Linux, not root, a kernel
  without network namespaces, veth pairs, bridges, the iptables nat table, conntrack or kube-proxy's iptables
  matches, tried in a throwaway namespace: :func:`kernel_problems`; a missing command such as ``runc`` or the CNI
  plugins, binaries not yet built by ``make node-tools``); empty means a node can run. It changes nothing on the
  machine (the probe namespace is deleted).
- :func:`node_bin_dir` is where ``tools/build.sh node`` puts the node's binaries for the pins,
  :func:`events_bin_dir` where ``tools/events.sh`` puts Argo Events' and CoreDNS (imported on every node;
  installed only by the tests that need them, :meth:`e2e.backends.node.NodeBackend.install_argo_events`).
- :func:`build_images` builds (or finds cached) every image archive; it runs outside the namespace, where PyPI is
  reachable for the step image's wheels.
- :func:`run_inside` runs in the namespace: the node's ``resolv.conf`` over ``/etc/resolv.conf`` (in the private
  mount namespace only), the :class:`~e2e.node.cluster.Node` started, its engine line printed from what the running
  node reports (:func:`running_versions`; exit 1 if that is not what tools/versions.env pins), the command run
  with the node's environment, the node stopped whatever happened.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from e2e.node import config
from e2e.node import images as images_module
from e2e.node.cluster import Node, NodeBinaries
from e2e.node.config import Layout
from envtest import assets

ALTERNATIVE = "E2E_CLUSTER=kind make e2e on a machine with a Docker engine (kind), or E2E_CLUSTER=local for the " \
              "local emulator's template check"
COMMANDS = {"ip": "iproute2", "unshare": "util-linux", "nsenter": "util-linux", "runc": "runc",
            "iptables": "iptables", "tar": "tar", "debootstrap": "debootstrap"}
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CNI_BIN_DIR = Path("/usr/lib/cni")
IMAGE_LIST = "images.txt"


def default_layout(env: dict[str, str] | None = None) -> Layout:
    env = dict(os.environ) if env is None else env
    state = Path(env.get("E2E_NODE_STATE") or "/var/tmp/capi-rollout-node")
    return Layout(state=state)


def node_bin_dir(pins: dict[str, str], cache: Path) -> Path:
    name = (f"node-kubernetes-{pins['KUBERNETES_VERSION']}-containerd-{pins['CONTAINERD_VERSION']}"
            f"-argo-{pins['ARGO_WORKFLOWS_VERSION']}")
    return cache / "bin" / name


def events_bin_dir(pins: dict[str, str], cache: Path) -> Path:
    """Where ``tools/events.sh`` puts argo-events and nats-server for the pins."""
    return cache / "bin" / (f"events-argo-events-{pins['ARGO_EVENTS_VERSION']}-nats-{pins['NATS_SERVER_VERSION']}"
                            f"-coredns-{pins['COREDNS_VERSION']}")


EVENTS_BINARIES = ("argo-events", "nats-server", "coredns")


def binaries() -> NodeBinaries:
    pins = assets.versions()
    cache = assets.cache_dir()
    return NodeBinaries.from_dirs(assets.bin_dir(pins, cache), node_bin_dir(pins, cache))


def missing(*, built: bool = True) -> list[str]:
    """What this machine lacks for a real node (see the module contract); ``built=False`` leaves out what
    ``make node-tools`` provides (the Debian packages and the binaries), to decide whether to build them."""
    if platform.system() != "Linux":
        return [f"a real node needs Linux (this is {platform.system()})"]
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("a real node needs root (network namespaces, mounts, cgroups)")
    for command, package in COMMANDS.items() if built else ():
        if shutil.which(command) is None:
            problems.append(f"the command {command} is missing (Debian package {package}; `make node-tools` "
                            "installs it)")
    absent = [p for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()] if built else []
    if absent:
        problems.append(f"CNI plugins {', '.join(absent)} are missing from {CNI_BIN_DIR} (Debian package "
                        "containernetworking-plugins; `make node-tools` installs it)")
    if not Path("/proc/self/ns/net").exists():
        problems.append("the kernel has no network namespaces")
    if not Path("/sys/fs/cgroup").is_dir():
        problems.append("no cgroup file system at /sys/fs/cgroup")
    if not problems and shutil.which("ip") is not None:
        problems += kernel_problems()
    events_dir = events_bin_dir(assets.versions(), assets.cache_dir())
    absent_binaries = [*binaries().missing(), *(str(events_dir / b) for b in EVENTS_BINARIES
                                                 if not os.access(events_dir / b, os.X_OK))] if built else []
    if absent_binaries:
        problems.append(f"{len(absent_binaries)} node binaries are not built (e.g. {absent_binaries[0]}): run "
                        "`make node-tools`")
    return problems


# What the node's kernel must do, each tried in a throwaway namespace: (what is missing if it fails, argv; ``{ns}``
# is the probe namespace). The iptables ones need the command (`make node-tools` installs it) and run inside.
KERNEL_PROBES: tuple[tuple[str, list[str]], ...] = (
    ("veth pairs (the node's interface)",
     ["ip", "-n", "{ns}", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"]),
    ("bridge interfaces (the pod network, CNI bridge plugin)",
     ["ip", "-n", "{ns}", "link", "add", "probe-br0", "type", "bridge"]),
    ("the iptables nat table (kube-proxy's Services, the bridge plugin's masquerade)",
     ["iptables", "-w", "5", "-t", "nat", "-L", "-n"]),
    ("connection tracking (the iptables conntrack match kube-proxy uses)",
     ["iptables", "-w", "5", "-t", "filter", "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j",
      "DROP"]),
    ("the iptables comment and statistic matches and the MASQUERADE target (kube-proxy)",
     ["iptables", "-w", "5", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "probe", "-m",
      "statistic", "--mode", "random", "--probability", "0.5", "-j", "MASQUERADE"]),
)


def kernel_problems(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
                    which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """What the kernel cannot do for a node (:data:`KERNEL_PROBES`, tried in a throwaway network namespace that is
    always deleted), one sentence each; empty if it can do everything."""
    probe = f"capi-rollout-probe-{os.getpid()}"
    try:
        done = run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if done.returncode != 0:
            return [f"the kernel cannot make network namespaces ({done.stderr.strip()})"]
        problems = []
        for what, template in KERNEL_PROBES:
            argv = [a.replace("{ns}", probe) for a in template]
            if argv[0] == "iptables":
                if which("iptables") is None:
                    continue
                argv = ["ip", "netns", "exec", probe, *argv]
            done = run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                problems.append(f"this kernel lacks {what} ({done.stderr.strip()[:200]})")
        return problems
    finally:
        run(["ip", "netns", "delete", probe], capture_output=True, text=True)


def argo_module_dir() -> Path:
    """The pinned Argo Workflows module tree (unpacked in the Go module cache by ``tools/build.sh node``)."""
    version = assets.versions()["ARGO_WORKFLOWS_VERSION"]
    return assets.cache_dir() / "go" / "mod" / "github.com" / "argoproj" / "argo-workflows" / f"v4@{version}"


def build_images() -> list[Path]:
    from capi_rollout.workflow.image import IMAGE as STEP_IMAGE
    from sim.deploy import SIM_IMAGE

    pins = assets.versions()
    bin_dir = node_bin_dir(pins, assets.cache_dir())
    built = images_module.build_all(
        assets.cache_dir(),
        {"pause": bin_dir / "pause", "argoexec": bin_dir / "argoexec",
         "workflow-controller": bin_dir / "workflow-controller"},
        repo=assets.REPO_ROOT, argo_module=argo_module_dir(), argo_version=pins["ARGO_WORKFLOWS_VERSION"],
        step_image=STEP_IMAGE, sim_image=SIM_IMAGE, python=sys.executable)
    events_dir = events_bin_dir(pins, assets.cache_dir())
    built += images_module.events_images(assets.cache_dir(), {b: events_dir / b for b in EVENTS_BINARIES},
                                         argo_events_version=pins["ARGO_EVENTS_VERSION"],
                                         nats_version=pins["NATS_SERVER_VERSION"],
                                         coredns_version=pins["COREDNS_VERSION"])
    return [archive.path for archive in built]


def write_image_list(layout: Layout, archives: list[Path]) -> None:
    layout.path(IMAGE_LIST).write_text("".join(f"{p}\n" for p in archives))


def engine_line(versions: Mapping[str, str]) -> str:
    """The one line naming the engine, from the versions the running node reports (:func:`running_versions`)."""
    return (f"engine: Argo Workflows {versions['workflow-controller']} workflow-controller + argoexec "
            f"{versions['argoexec']} on kubelet {versions['kubelet']}, containerd {versions['containerd']} (a real "
            "node in the network namespace the harness made)")


def _version(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    return match[1] if match else f"unknown ({' '.join(text.split())[:80]!r})"


def parse_versions(node_info: Mapping[str, object], controller: str, argoexec: str) -> dict[str, str]:
    """Versions as the node's status reports them (``kubeletVersion``, ``containerRuntimeVersion``) and as the Argo
    binaries of the images say (``workflow-controller version``, ``argoexec version``), build metadata dropped."""
    runtime = str(node_info.get("containerRuntimeVersion", ""))
    containerd = runtime.removeprefix("containerd://")
    return {
        "kubelet": str(node_info.get("kubeletVersion", "unknown")),
        "containerd": (containerd if containerd.startswith("v") else f"v{containerd}")
        if runtime.startswith("containerd://") else f"unknown ({runtime!r})",
        "workflow-controller": _version(controller, r"^workflow-controller: (v[^\s+]+)"),
        "argoexec": _version(argoexec, r"^argoexec: (v[^\s+]+)"),
    }


def version_mismatches(versions: Mapping[str, str], pins: Mapping[str, str]) -> list[str]:
    """Where the running engine is not what tools/versions.env pins (empty: it is)."""
    wanted = {"kubelet": pins["KUBERNETES_VERSION"], "containerd": pins["CONTAINERD_VERSION"],
              "workflow-controller": pins["ARGO_WORKFLOWS_VERSION"], "argoexec": pins["ARGO_WORKFLOWS_VERSION"]}
    return [f"{name} reports {versions.get(name)}, tools/versions.env pins {want}" for name, want in wanted.items()
            if versions.get(name) != want]


def running_versions(node: Node) -> dict[str, str]:
    """What the running node reports: its Node's ``status.nodeInfo`` (the kubelet's own report, with the runtime
    version containerd gave it over CRI), and the Argo binaries the images were built from."""
    bin_dir = node_bin_dir(assets.versions(), assets.cache_dir())

    def say(binary: str) -> str:
        done = subprocess.run([str(bin_dir / binary), "version"], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    return parse_versions(node.node_info(), say("workflow-controller"), say("argoexec"))


def run_inside(layout: Layout, cmd: list[str]) -> int:
    """Inside the namespace: start the node, run ``cmd`` with its environment, stop the node."""
    subprocess.run(["mount", "--bind", str(layout.resolv_conf), "/etc/resolv.conf"], check=True)
    archives = [Path(line) for line in layout.path(IMAGE_LIST).read_text().split()]
    node = Node(layout, binaries(), archives)
    try:
        node.start()
    except BaseException as error:
        print(f"[node] the node did not start: {error}", file=sys.stderr)
        return 1
    versions = running_versions(node)
    mismatches = version_mismatches(versions, assets.versions())
    if mismatches:
        print(f"[node] the running engine is not the pinned one: {'; '.join(mismatches)}", file=sys.stderr)
        node.stop()
        return 1
    line = engine_line(versions)
    env = dict(os.environ, KUBECONFIG=str(layout.kubeconfig), E2E_CLUSTER="node", E2E_NODE_STATE=str(layout.state),
               E2E_NODE_ENGINE=line, E2E_NODE_KUBECTL=str(node.binaries.kubectl))
    print(line, file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        _report_runner_requests(layout, time.monotonic() - started)
        node.stop()


def _report_runner_requests(layout: Layout, seconds: float) -> None:
    """One line: the runner ServiceAccount's API requests during the command, from the API server's audit log."""
    log = layout.path("audit.log")
    if not log.exists() or seconds <= 0:
        return
    counts = config.runner_requests(log.read_text(encoding="utf-8", errors="replace").splitlines())
    total = sum(counts.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"[node] runner ServiceAccount API requests: {total} in {seconds / 60:.1f} min "
          f"({total / (seconds / 60):.0f}/min; {detail or 'none'})", file=sys.stderr, flush=True)
