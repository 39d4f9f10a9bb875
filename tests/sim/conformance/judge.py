"""Real talosctl as the judge of a Talos API endpoint: run it, and say what a real node's answer would not be.

Contract: :func:`talosctl` finds the binary ``make tools`` built for a Talos line (``tools/talosctl.sh``:
``$CAPI_ROLLOUT_CACHE/bin/talosctl-<version>/talosctl``), or None. :class:`Talosctl` runs it with a talosconfig
against one endpoint (``-e`` and ``-n`` the node's address, as an operator does) and returns exit code, stdout
and stderr. The ``check_*`` functions are pure: a :class:`Run` and what real Talos would answer in, a list of
problems out (empty = indistinguishable from Talos for that command). They hold the simulator and a real Talos
node (tests/sim/conformance/test_real_talos.py) to one standard.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from envtest.assets import cache_dir, versions

LINES = {"v1.12": "TALOSCTL_V112_VERSION", "v1.13": "TALOSCTL_V113_VERSION"}


def talosctl_version(line: str) -> str:
    return versions()[LINES[line]]


def talosctl(line: str) -> Path | None:
    """The talosctl ``make tools`` built for ``line`` (``v1.12``/``v1.13``); None when it is not built."""
    path = cache_dir() / "bin" / f"talosctl-{talosctl_version(line)}" / "talosctl"
    return path if path.is_file() else None


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"talosctl {' '.join(self.args)} -> exit {self.rc}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


@dataclass(frozen=True)
class Talosctl:
    binary: Path
    talosconfig: Path

    def run(self, address: str, *args: str, timeout: float = 60.0) -> Run:
        argv = [str(self.binary), "--talosconfig", str(self.talosconfig), "-e", address, "-n", address, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return Run(tuple(args), done.returncode, done.stdout, done.stderr)


def _field(stdout: str, name: str, section: str = "Server:") -> str | None:
    """A ``Name:  value`` line of ``talosctl version`` in ``section``."""
    _, _, rest = stdout.partition(section)
    for line in rest.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key == name:
            return value.strip()
    return None


def check_version(run: Run, *, address: str, tag: str, maintenance: bool = False) -> list[str]:
    """``talosctl version`` against a node running ``tag``: the server block as Talos's Version fills it."""
    problems = []
    if run.rc != 0:
        return [f"exit {run.rc}, expected 0: {run.stderr.strip()}"]
    expected = {"Tag": tag, "OS/Arch": "linux/amd64"}
    # the RBAC feature flag needs a machine config: none in maintenance mode (talosctl prints the line empty)
    expected["Enabled"] = "" if maintenance else "RBAC"
    if not maintenance:
        expected["NODE"] = address  # apid names the node it aggregated (talosctl sends `nodes`)
    for name, want in expected.items():
        if _field(run.stdout, name) != want:
            problems.append(f"Server {name}: {_field(run.stdout, name)!r}, expected {want!r}")
    sha = _field(run.stdout, "SHA") or ""
    if not sha or sha == "undefined":
        problems.append(f"Server SHA: {sha!r}, expected a commit")
    if not (_field(run.stdout, "Go version") or "").startswith("go1."):
        problems.append(f"Server Go version: {_field(run.stdout, 'Go version')!r}")
    return problems


def check_refused(run: Run, *, code: str, message: str) -> list[str]:
    """A command Talos refuses with a gRPC status: exit 1, ``rpc error: code = <code> desc = <message>``."""
    want = f"code = {code} desc = {message}"
    if run.rc == 0:
        return [f"exit 0, expected a refusal ({want})"]
    return [] if want in run.stderr else [f"stderr lacks {want!r}: {run.stderr.strip()}"]


def check_handshake_refused(run: Run) -> list[str]:
    """A client certificate apid refuses: the TLS connection fails, never a gRPC status from the server."""
    if run.rc == 0:
        return ["exit 0, expected the TLS handshake to fail"]
    problems = []
    # grpc-go reports any transport failure as Unavailable (apid: "connection error: ... tls: bad certificate";
    # a TLS 1.3 connection ended by the server: "error reading server preface: EOF" or "broken pipe")
    if "code = Unavailable" not in run.stderr:
        problems.append(f"expected a transport failure (Unavailable): {run.stderr.strip()}")
    for status in ("PermissionDenied", "Unauthenticated", "Unknown"):
        if f"code = {status}" in run.stderr:
            problems.append(f"a gRPC status {status} came back: the handshake should have failed")
    return problems


def _timestamp(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def check_machine_status_yaml(run: Run, *, node: str | None, stage: str, ready: bool) -> list[str]:
    """``talosctl get machinestatus -o yaml``: the resource as Talos's COSI state holds it."""
    if run.rc != 0:
        return [f"exit {run.rc}, expected 0: {run.stderr.strip()}"]
    try:
        doc = yaml.safe_load(run.stdout)
    except yaml.YAMLError as exc:
        return [f"not YAML: {exc}"]
    if not isinstance(doc, dict):
        return [f"not one resource: {run.stdout!r}"]
    problems = []
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    if doc.get("node") != node:
        problems.append(f"node: {doc.get('node')!r}, expected {node!r}")
    wanted = {"namespace": "runtime", "type": "MachineStatuses.runtime.talos.dev", "id": "machine",
              "owner": "runtime.MachineStatusController", "phase": "running"}
    problems += [f"metadata.{k}: {meta.get(k)!r}, expected {v!r}" for k, v in wanted.items() if meta.get(k) != v]
    if not isinstance(meta.get("version"), int) or meta["version"] < 1:
        problems.append(f"metadata.version: {meta.get('version')!r}, expected a positive integer")
    created, updated = _timestamp(meta.get("created")), _timestamp(meta.get("updated"))
    if created is None or created.year < 2000:
        problems.append(f"metadata.created: {meta.get('created')!r}, expected when it was created")
    if updated is None or created is None or updated < created:
        problems.append(f"metadata.updated: {meta.get('updated')!r}, expected ≥ created")
    if spec.get("stage") != stage:
        problems.append(f"spec.stage: {spec.get('stage')!r}, expected {stage!r}")
    status = spec.get("status") or {}
    if status.get("ready") is not ready:
        problems.append(f"spec.status.ready: {status.get('ready')!r}, expected {ready}")
    if "unmetConditions" not in status:
        problems.append("spec.status.unmetConditions missing")
    return problems


def check_reboot_waited(run: Run, *, boot_id_checked: bool = True) -> list[str]:
    """``talosctl reboot`` with its default ``--wait``: the tracker saw the node go, come back ready and (for a
    reader of the boot ID) boot anew, and exited 0."""
    if run.rc != 0:
        return [f"exit {run.rc}, expected 0: {run.stderr.strip()}"]
    problems = []
    for line in ("actor ID: ", "events check condition met", "post check passed"):
        if line not in run.stderr:
            problems.append(f"stderr lacks {line!r}")
    # the post check passes for a reader of the boot ID only once it changed; without that right it is skipped
    if boot_id_checked and "sequence: reboot action: START" not in run.stderr and "unavailable" not in run.stderr:
        problems.append("the tracker saw neither the reboot sequence start nor the node going away")
    return problems
