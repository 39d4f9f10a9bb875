"""The one-node cluster's addresses and configuration files, rendered without I/O.

Contract: :class:`Layout` names every address, port and path of the node; the ``render_*`` functions turn a
layout into the exact text of each component's configuration (containerd, CNI, kubelet, kube-proxy, the
network namespace's ``resolv.conf``) and the argv of each process. Nothing here touches the machine, so the
choices (no route out, the node IP on an interface inside the namespace, registries pointed at a closed loopback
port, images never garbage-collected) are unit-tested as data.

Addresses: the node's own interface ``node0`` (the inner end of a veth pair whose both ends stay in the
namespace) carries ``node_ip``; pods get ``pod_cidr`` on the bridge ``cni0``; Services use ``service_cidr``,
routed to ``node0`` so kube-proxy's DNAT applies. The namespace has no default route: a packet to any other
address has nowhere to go.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

# A loopback port nobody listens on: every registry "pull" ends there at once, nothing is fetched from outside.
CLOSED_REGISTRY = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Layout:
    """Where everything of one node lives."""

    state: Path
    netns: str = "capi-rollout-node"
    node_name: str = "capi-rollout-node"
    node_ip: str = "10.213.0.2"
    node_prefix: int = 24
    node_link: str = "node0"
    peer_link: str = "node0-peer"
    pod_cidr: str = "10.214.0.0/24"
    service_cidr: str = "10.96.0.0/16"
    apiserver_port: int = 6443
    pause_image: str = "registry.k8s.io/pause:3.10.2"
    cluster_domain: str = "cluster.local"
    # The kubelet's --cgroup-root under every controller: everything the node runs, found again at teardown.
    cgroup_root: str = "capi-rollout-node"

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.node_ip}:{self.apiserver_port}"

    @property
    def service_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP (the first address of the range)."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def dns_ip(self) -> str:
        """The cluster DNS Service's ClusterIP (the tenth address of the range, as kubeadm picks it): the kubelet's
        ``clusterDNS``. CoreDNS behind it is installed only by what needs names (the Argo Events tests)."""
        return str(ipaddress.ip_network(self.service_cidr).network_address + 10)

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd" / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni" / "net.d"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    @property
    def resolv_conf(self) -> Path:
        return self.state / "resolv.conf"

    def path(self, *parts: str) -> Path:
        return self.state.joinpath(*parts)


def render_containerd(layout: Layout, *, cni_bin_dir: str = "/usr/lib/cni") -> str:
    """containerd 2.x (config version 3): CRI with runc (cgroupfs), the CNI bridge, a pinned pause image,
    ``restrict_oom_score_adj`` (these VMs lack CAP_SYS_RESOURCE), every registry pointed at a closed port."""
    base = layout.path("containerd")
    return f"""version = 3
root = "{base / 'root'}"
state = "{base / 'state'}"

[grpc]
  address = "{layout.containerd_socket}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_apparmor = true
  # Pod network namespaces under the node's state, not the host's /run/netns (gone with the node).
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin_dir}"]
    conf_dir = "{layout.cni_conf_dir}"

[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{layout.pause_image}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{base / 'certs.d'}"
"""


def render_registry_hosts() -> str:
    """``certs.d/_default/hosts.toml``: any registry resolves to a closed loopback port (never the internet)."""
    return f'server = "{CLOSED_REGISTRY}"\n\n[host."{CLOSED_REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'


def render_cni(layout: Layout) -> str:
    """A bridge network with host-local IPAM; the bridge is the pods' gateway; hairpin so a pod reaches itself
    through its own Service."""
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": "capi-rollout",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": layout.pod_cidr}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2) + "\n"


def render_kubelet(layout: Layout, *, ca: Path, serving_cert: Path, serving_key: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{layout.cgroup_root}",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": layout.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "AlwaysAllow"},
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "clusterDomain": layout.cluster_domain,
        "clusterDNS": [layout.dns_ip],
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.path("pod-logs")),
        "failSwapOn": False,
        "serializeImagePulls": False,
        # The images are imported, never pulled: nothing may garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%"},
        "maxPods": 60,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "registerNode": True,
        "staticPodPath": "",
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
    }
    return yaml.safe_dump(config, sort_keys=True)


def render_kube_proxy(layout: Layout, kubeconfig: Path) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": layout.node_name,
        "clusterCIDR": layout.pod_cidr,
        "bindAddress": layout.node_ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Leave the conntrack sysctls alone (several are read-only in a network namespace).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        # Pods on one bridge reach each other's Services: masquerade so replies come back through the node.
        "iptables": {"masqueradeAll": True},
    }
    return yaml.safe_dump(config, sort_keys=True)


def render_resolv_conf(layout: Layout) -> str:
    """No DNS server outside the namespace is ever asked; names resolve from the kubeconfig's IPs."""
    return f"search default.svc.{layout.cluster_domain} svc.{layout.cluster_domain}\nnameserver 127.0.0.1\n"


def etcd_argv(binary: Path, layout: Layout) -> list[str]:
    return [str(binary), "--name=node", f"--data-dir={layout.path('etcd')}",
            "--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=node=http://127.0.0.1:2380", "--unsafe-no-fsync=true", "--log-level=warn"]


def apiserver_argv(binary: Path, layout: Layout, pki: dict[str, Path], issuer: str) -> list[str]:
    return [
        str(binary), "--etcd-servers=http://127.0.0.1:2379",
        "--bind-address=0.0.0.0", f"--advertise-address={layout.node_ip}",
        f"--secure-port={layout.apiserver_port}", f"--cert-dir={layout.path('apiserver-certs')}",
        f"--tls-cert-file={pki['serving_cert']}", f"--tls-private-key-file={pki['serving_key']}",
        f"--client-ca-file={pki['ca_cert']}",
        f"--kubelet-client-certificate={pki['admin_cert']}", f"--kubelet-client-key={pki['admin_key']}",
        f"--service-account-issuer={issuer}", f"--api-audiences={issuer}",
        f"--service-account-key-file={pki['sa_public_key']}",
        f"--service-account-signing-key-file={pki['sa_private_key']}",
        "--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={layout.service_cidr}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true", "--profiling=false", "--v=0",
        f"--audit-policy-file={layout.path('audit-policy.yaml')}", f"--audit-log-path={layout.path('audit.log')}",
        "--audit-log-format=json", "--audit-log-maxsize=200",
    ]


RUNNER_USER = "system:serviceaccount:argo:capi-rollout-runner"


def render_audit_policy() -> str:
    """Record (metadata only) every request the runner's ServiceAccount makes, nothing else: the step's own
    requests and its pods' argoexec, told apart by user agent."""
    return yaml.safe_dump({
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata", "users": [RUNNER_USER]}, {"level": "None"}],
    }, sort_keys=True)


def runner_requests(audit_lines: list[str]) -> dict[str, int]:
    """Requests of the runner's ServiceAccount by client (``python`` for the step, ``argoexec`` for Argo's
    executor in the same pod), from the API server's JSON audit log."""
    counts: dict[str, int] = {}
    for line in audit_lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("stage") != "ResponseComplete" or (event.get("user") or {}).get("username") != RUNNER_USER:
            continue
        agent = str(event.get("userAgent") or "")
        client = "argoexec" if agent.startswith("argoexec") else "step (python)" if "Python" in agent or \
            "OpenAPI" in agent or "capi-rollout" in agent else agent.split("/")[0] or "unknown"
        counts[client] = counts.get(client, 0) + 1
    return counts


def controller_manager_argv(binary: Path, layout: Layout, pki: dict[str, Path], kubeconfig: Path) -> list[str]:
    return [
        str(binary), f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1", "--secure-port=10257",
        "--leader-elect=false", "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki['sa_private_key']}", f"--root-ca-file={pki['ca_cert']}",
        f"--cluster-signing-cert-file={pki['ca_cert']}", f"--cluster-signing-key-file={pki['ca_key']}",
        f"--service-cluster-ip-range={layout.service_cidr}", "--allocate-node-cidrs=false",
        "--controllers=*,-bootstrap-signer-controller,-token-cleaner-controller", "--v=0",
    ]


def scheduler_argv(binary: Path, kubeconfig: Path) -> list[str]:
    return [str(binary), f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1", "--secure-port=10259",
            "--leader-elect=false", "--v=0"]


def kubelet_argv(binary: Path, layout: Layout, config: Path, kubeconfig: Path) -> list[str]:
    return [str(binary), f"--config={config}", f"--kubeconfig={kubeconfig}", f"--node-ip={layout.node_ip}",
            f"--hostname-override={layout.node_name}", f"--root-dir={layout.path('kubelet')}",
            f"--cert-dir={layout.path('kubelet-pki')}", "--v=0"]
