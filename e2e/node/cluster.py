"""A real one-node Kubernetes, run from inside the node's network namespace (see :mod:`e2e.node.netns`).

Contract:
- :class:`Node` starts, in order, etcd, kube-apiserver (on the node IP and loopback), containerd (the images of
  :mod:`e2e.node.images` imported into its ``k8s.io`` namespace), kube-controller-manager, kube-scheduler, the
  kubelet and kube-proxy (iptables mode), then waits until the node is Ready, the ``default`` ServiceAccount
  exists and ``kube-root-ca.crt`` is published. Every wait has a deadline and a failure names the component and
  shows the tail of its log. Each step prints its name and duration.
- The admin kubeconfig (``layout.kubeconfig``, a client certificate in ``system:masters``) points at the node IP;
  the kubelet authenticates as ``system:node:<name>`` (Node authorizer), the API server reaches the kubelet
  with the admin client certificate, pods reach the API server through the ``kubernetes`` Service.
- :meth:`Node.stop` ends the components in reverse order; containers die with the namespace's teardown
  (:func:`e2e.node.netns.destroy`, run by the launcher). Children also die with this process (PDEATHSIG).
- Nothing here leaves the network namespace: it must be called from inside it (:func:`inside_namespace`).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.node import config
from e2e.node.config import Layout
from envtest import kubeconfig, pki
from envtest.processes import ChildProcess

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
READY_TIMEOUT = 180.0


def log(message: str) -> None:
    print(f"[node] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class NodeBinaries:
    """Paths of every binary the node runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubelet: Path
    kube_proxy: Path
    kubectl: Path
    containerd: Path
    ctr: Path
    shim_dir: Path

    @classmethod
    def from_dirs(cls, envtest_bin: Path, node_bin: Path) -> NodeBinaries:
        return cls(
            etcd=envtest_bin / "etcd", kube_apiserver=envtest_bin / "kube-apiserver",
            kube_controller_manager=node_bin / "kube-controller-manager", kube_scheduler=node_bin / "kube-scheduler",
            kubelet=node_bin / "kubelet", kube_proxy=node_bin / "kube-proxy", kubectl=node_bin / "kubectl",
            containerd=node_bin / "containerd", ctr=node_bin / "ctr", shim_dir=node_bin,
        )

    def missing(self) -> list[str]:
        return [str(p) for p in (self.etcd, self.kube_apiserver, self.kube_controller_manager, self.kube_scheduler,
                                 self.kubelet, self.kube_proxy, self.kubectl, self.containerd, self.ctr,
                                 self.shim_dir / "containerd-shim-runc-v2") if not os.access(p, os.X_OK)]


def inside_namespace(layout: Layout) -> bool:
    """True when this process's network namespace is the node's (same inode as ``/run/netns/<name>``)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat(f"/run/netns/{layout.netns}").st_ino
    except FileNotFoundError:
        return False


def _timed(what: str, action: Callable[[], object]) -> float:
    started = time.monotonic()
    log(f"{what} ...")
    action()
    took = time.monotonic() - started
    log(f"{what}: {took:.1f}s")
    return took


class Node:
    """The node's components as child processes of this process."""

    def __init__(self, layout: Layout, binaries: NodeBinaries, images: Iterable[Path] = ()) -> None:
        self.layout = layout
        self.binaries = binaries
        self.images = list(images)
        self.processes: dict[str, ChildProcess] = {}
        self.timings: dict[str, float] = {}
        self.pki: dict[str, Path] = {}

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> Node:
        if not inside_namespace(self.layout):
            raise RuntimeError(f"the node must run inside the network namespace {self.layout.netns} "
                               "(start it with `python -m e2e.node run -- ...`)")
        started = time.monotonic()
        try:
            self._prepare()
            self.timings["etcd+apiserver"] = _timed("etcd + kube-apiserver", self._start_control_plane)
            self.timings["containerd"] = _timed("containerd", self._start_containerd)
            self.timings["images"] = _timed(f"import {len(self.images)} images", self._import_images)
            self.timings["controllers"] = _timed("controller manager + scheduler", self._start_controllers)
            self.timings["kubelet"] = _timed("kubelet + kube-proxy, node Ready", self._start_kubelet)
            self.timings["accounts"] = _timed("default ServiceAccount + kube-root-ca.crt", self._wait_accounts)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - started
        log(f"node {self.layout.node_name} Ready at {self.layout.node_ip} in {self.timings['total']:.1f}s")
        return self

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes.pop(name).stop(grace=5.0)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steps -------------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        layout = self.layout
        for sub in ("etcd", "containerd/certs.d/_default", "cni/net.d", "kubelet", "kubelet-pki", "pod-logs",
                    "logs", "pki"):
            layout.path(*sub.split("/")).mkdir(parents=True, exist_ok=True)
        layout.path("containerd", "config.toml").write_text(config.render_containerd(layout))
        layout.path("containerd", "certs.d", "_default", "hosts.toml").write_text(config.render_registry_hosts())
        layout.cni_conf_dir.joinpath("10-capi-rollout.conflist").write_text(config.render_cni(layout))
        layout.resolv_conf.write_text(config.render_resolv_conf(layout))
        layout.path("audit-policy.yaml").write_text(config.render_audit_policy())
        self._make_pki()
        for controller in ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "systemd",
                           "hugetlb", "net_cls", "net_prio", "perf_event"):
            root = Path("/sys/fs/cgroup", controller)
            if root.is_dir():
                (root / layout.cgroup_root).mkdir(exist_ok=True)

    def _make_pki(self) -> None:
        layout = self.layout
        directory = layout.path("pki")
        base = pki.generate(
            directory, ip_sans=(layout.node_ip, layout.service_ip),
            dns_sans=("kubernetes", "kubernetes.default", f"kubernetes.default.svc.{layout.cluster_domain}"))
        self.pki = {k: getattr(base, k) for k in ("ca_cert", "ca_key", "serving_cert", "serving_key", "admin_cert",
                                                  "admin_key", "sa_public_key", "sa_private_key")}
        pki.issue(base, directory / "kubelet-client.crt", directory / "kubelet-client.key",
                  common_name=f"system:node:{layout.node_name}", organization="system:nodes")
        pki.issue(base, directory / "kubelet.crt", directory / "kubelet.key", common_name=layout.node_name,
                  server=True, ip_sans=(layout.node_ip,))
        kubeconfig.write_cert_kubeconfig(layout.kubeconfig, server=layout.apiserver_url, ca_cert=base.ca_cert,
                                         client_cert=base.admin_cert, client_key=base.admin_key)
        kubeconfig.write_cert_kubeconfig(layout.path("kubelet.kubeconfig"), server=layout.apiserver_url,
                                         ca_cert=base.ca_cert, client_cert=directory / "kubelet-client.crt",
                                         client_key=directory / "kubelet-client.key")

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> ChildProcess:
        process = ChildProcess(name, argv, self.layout.path("logs", f"{name}.log"))
        if env:
            process.argv = ["env", *[f"{k}={v}" for k, v in env.items()], *argv]
        process.start()
        self.processes[name] = process
        return process

    def _start_control_plane(self) -> None:
        etcd = self._spawn("etcd", config.etcd_argv(self.binaries.etcd, self.layout))
        etcd.wait_until(lambda: _http_ok("http://127.0.0.1:2379/health"), timeout=60, what="healthy")
        apiserver = self._spawn("kube-apiserver", config.apiserver_argv(
            self.binaries.kube_apiserver, self.layout, self.pki, SERVICE_ACCOUNT_ISSUER))
        context = self.admin_ssl()
        apiserver.wait_until(lambda: _http_ok(f"{self.layout.apiserver_url}/readyz", context), timeout=90,
                             what="ready (/readyz)")

    def _start_containerd(self) -> None:
        path = f"{self.binaries.shim_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        containerd = self._spawn("containerd", [str(self.binaries.containerd), "--config",
                                                str(self.layout.path("containerd", "config.toml"))],
                                 env={"PATH": path})
        containerd.wait_until(lambda: self.layout.containerd_socket.exists() and self._ctr_ok(), timeout=60,
                              what="serving (ctr version)")

    def ctr(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([str(self.binaries.ctr), "--address", str(self.layout.containerd_socket),
                               "--namespace", "k8s.io", *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def _ctr_ok(self) -> bool:
        try:
            self.ctr("version", timeout=10)
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def _import_images(self) -> None:
        for archive in self.images:
            self.ctr("images", "import", "--no-unpack=false", str(archive))

    def _start_controllers(self) -> None:
        kc = self.layout.kubeconfig
        self._spawn("kube-controller-manager", config.controller_manager_argv(
            self.binaries.kube_controller_manager, self.layout, self.pki, kc))
        self._spawn("kube-scheduler", config.scheduler_argv(self.binaries.kube_scheduler, kc))

    def _start_kubelet(self) -> None:
        layout = self.layout
        kubelet_config = layout.path("kubelet-config.yaml")
        kubelet_config.write_text(config.render_kubelet(
            layout, ca=self.pki["ca_cert"], serving_cert=layout.path("pki", "kubelet.crt"),
            serving_key=layout.path("pki", "kubelet.key")))
        path = f"{self.binaries.shim_dir}:/usr/sbin:/usr/bin:/sbin:/bin"
        kubelet = self._spawn("kubelet", config.kubelet_argv(self.binaries.kubelet, layout, kubelet_config,
                                                             layout.path("kubelet.kubeconfig")), env={"PATH": path})
        proxy_config = layout.path("kube-proxy.yaml")
        proxy_config.write_text(config.render_kube_proxy(layout, layout.kubeconfig))
        self._spawn("kube-proxy", [str(self.binaries.kube_proxy), f"--config={proxy_config}", "--v=0"],
                    env={"PATH": path})
        kubelet.wait_until(self._node_ready, timeout=READY_TIMEOUT, what="Ready (node condition)")

    def _wait_accounts(self) -> None:
        manager = self.processes["kube-controller-manager"]
        manager.wait_until(lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None
                           and self._get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt") is not None,
                           timeout=READY_TIMEOUT, what="serving accounts (default ServiceAccount, kube-root-ca.crt)")

    # -- reads -------------------------------------------------------------------------------------------------

    def admin_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki["ca_cert"]))
        context.load_cert_chain(str(self.pki["admin_cert"]), str(self.pki["admin_key"]))
        return context

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.layout.apiserver_url}{path}", timeout=5,
                                        context=self.admin_ssl()) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except (OSError, ValueError):
            return None

    def node_info(self) -> dict[str, object]:
        """The Node's ``status.nodeInfo`` as the running kubelet reports it (kubelet and container runtime versions)."""
        node = self._get(f"/api/v1/nodes/{self.layout.node_name}") or {}
        info = (node.get("status") or {}).get("nodeInfo") or {}
        return dict(info)

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{self.layout.node_name}")
        if node is None:
            return False
        conditions = (node.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except OSError:
        return False
