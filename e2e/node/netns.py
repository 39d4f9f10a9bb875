"""The node's network namespace and everything a node leaves on the host, made and removed from the host side.

Contract:
- :func:`create` makes the namespace ``layout.netns`` with loopback up, a veth pair whose two ends both stay in
  it (``node0`` carries the node IP; no ``dummy`` links on these kernels), and one route for the Service range to
  ``node0``. It adds no default route and no link to the host: a packet for any other address has nowhere to go.
- :func:`routes` lists the namespace's routes; :func:`route_out` says which of them, if any, could carry a packet
  out of it (a default route or any route via a gateway), for the test that asserts there is none.
- :func:`destroy` ends every process of the node (those in the namespace and those in the node's cgroups,
  ``layout.cgroup_root`` under every controller: the kubelet's ``--cgroup-root``), removes those cgroups leaf
  first, deletes the namespace (its iptables rules, bridge and veths go with it) and removes the state
  directory unless ``keep``. It is idempotent and safe after a crash: the launcher runs it before it creates a
  node and after the node ends.
- :func:`enter_argv` is the argv that runs a command inside the namespace in a private mount namespace (mounts the
  node makes stay there and vanish with its last process).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from capi_rollout.waiting import wait_until
from e2e.node.config import Layout

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def exists(layout: Layout) -> bool:
    return Path("/run/netns", layout.netns).exists()


def create(layout: Layout) -> None:
    """Create the namespace and the node's interface (see the module contract)."""
    ns = layout.netns
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", layout.node_link, "type", "veth", "peer", "name", layout.peer_link)
        _ip("-n", ns, "addr", "add", f"{layout.node_ip}/{layout.node_prefix}", "dev", layout.node_link)
        _ip("-n", ns, "link", "set", layout.peer_link, "up")
        _ip("-n", ns, "link", "set", layout.node_link, "up")
        _ip("-n", ns, "route", "add", layout.service_cidr, "dev", layout.node_link)
    except subprocess.CalledProcessError:
        _ip("netns", "delete", ns, check=False)
        raise


def routes(layout: Layout) -> list[dict[str, object]]:
    """Every route of the namespace (all tables, IPv4 and IPv6), as ``ip -json`` gives them."""
    found: list[dict[str, object]] = []
    for family in ("-4", "-6"):
        out = _ip("-n", layout.netns, "-json", family, "route", "show", "table", "all").stdout
        found += json.loads(out or "[]")
    return found


def route_out(found: Iterable[dict[str, object]]) -> list[str]:
    """The routes that could take a packet out of the namespace: a default route or any route via a gateway."""
    leaks = []
    for route in found:
        if route.get("type") in ("local", "broadcast", "multicast", "anycast", "unreachable", "blackhole"):
            continue
        if route.get("dst") == "default" or route.get("gateway"):
            leaks.append(json.dumps(route, sort_keys=True))
    return leaks


def enter_argv(layout: Layout, argv: Sequence[str]) -> list[str]:
    """``argv`` inside the node's network namespace, in a new mount namespace whose mounts do not leak out."""
    return ["unshare", "--mount", "--propagation", "slave",
            "nsenter", f"--net=/run/netns/{layout.netns}", "--", *argv]


def namespace_pids(layout: Layout) -> list[int]:
    if not exists(layout):
        return []
    out = _ip("netns", "pids", layout.netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def node_cgroups(layout: Layout) -> list[Path]:
    """Every cgroup directory of the node under every v1 controller (and the v2 root), deepest first."""
    found: list[Path] = []
    for top in [CGROUP_ROOT, *[p for p in CGROUP_ROOT.iterdir() if p.is_dir()]] if CGROUP_ROOT.exists() else []:
        root = top / layout.cgroup_root
        if root.is_dir():
            found += [Path(d) for d, _, _ in os.walk(root)]
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _cgroup_pids(directories: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for d in directories:
        for name in ("cgroup.procs", "tasks"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (d / name).read_text().split())
    return pids


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _stale_pod_namespaces() -> list[Path]:
    """``/run/netns/cni-*`` files that are no longer mounts: left on the host by a containerd that kept pod
    namespaces there (before ``netns_mounts_under_state_dir``) in the node's private mount namespace."""
    mounted = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    return [p for p in Path("/run/netns").glob("cni-*") if str(p) not in mounted] if Path("/run/netns").is_dir() \
        else []


def destroy(layout: Layout, *, keep_state: bool = False, timeout: float = 30.0) -> list[str]:
    """Remove the node (see the module contract); returns what it removed, for the log."""
    done: list[str] = []
    survivors: list[int] = []

    def gone() -> bool:
        victims = set(namespace_pids(layout)) | _cgroup_pids(node_cgroups(layout))
        victims.discard(os.getpid())
        if not victims:
            return True
        _kill(victims)
        done.append(f"killed {len(victims)} processes")
        survivors[:] = sorted(victims)
        return False

    try:
        wait_until(gone, timeout=timeout, interval=0.2, what="the node's processes gone")
    except TimeoutError:
        raise RuntimeError(f"processes of the node survive SIGKILL: {survivors}") from None
    groups = node_cgroups(layout)
    for group in groups:
        with contextlib.suppress(FileNotFoundError):
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
    if groups:
        done.append(f"removed {len(groups)} cgroups")
    for stale in _stale_pod_namespaces():
        stale.unlink()
        done.append(f"removed stale {stale}")
    if exists(layout):
        _ip("netns", "delete", layout.netns)
        done.append(f"deleted network namespace {layout.netns}")
    if not keep_state and layout.state.exists():
        shutil.rmtree(layout.state, ignore_errors=True)
        done.append(f"removed {layout.state}")
    return done
