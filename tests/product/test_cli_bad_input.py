"""One error boundary: every kind of bad input to ``plan``, ``lint``, ``run`` and ``render`` ends in ONE line on
stderr naming the input and the problem, exit 2, no traceback, and nothing written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from capi_rollout.cli import main
from tests import builders as b

ROOT = Path(__file__).resolve().parents[2]


def alias_bomb() -> str:
    """A MachineDeployment whose maxSurge is nine levels of nine aliases: 9**9 ≈ 387 million leaves."""
    lines = ["apiVersion: cluster.x-k8s.io/v1beta2", "kind: MachineDeployment",
             "metadata: {name: workers, namespace: default, labels: {cluster.x-k8s.io/cluster-name: homelab}}",
             "x:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    lines += ["spec:", "  replicas: 3", "  rollout:", "    strategy:", "      type: RollingUpdate",
              "      rollingUpdate: {maxSurge: *a8, maxUnavailable: 1}"]
    return "\n".join(lines) + "\n"


def sparse_file(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        fh.truncate(size)


def snapshot_docs() -> list[dict[str, Any]]:
    return [b.cluster(), b.tcp(), b.md(), b.machine("cp-0", cp=True)]


def good_snapshot() -> str:
    return yaml.safe_dump_all(snapshot_docs())


def with_doc(index: int, change: Callable[[dict[str, Any]], None]) -> str:
    docs = snapshot_docs()
    change(docs[index])
    return yaml.safe_dump_all(docs)


def ledger(**overrides: object) -> str:
    base: dict[str, object] = {"cluster": "homelab", "namespace": "default", "phases": {}}
    return json.dumps({**base, **overrides})


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]  # {good} = a valid snapshot, {f} = the file written from `content`, {tmp} = the directory
    content: str | bytes | None = None
    expect: str = ""  # a piece of the one line
    setup: Callable[[Path], None] | None = None


BAD_YAML_MD = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: MachineDeployment\nmetadata: {name: w}\n"
PLAN = ["plan", "--clusterName", "homelab", "--now", "2026-01-01T01:00:00Z"]

CASES = [
    # plan -f: the file itself
    Case("snapshot missing", [*PLAN, "-f", "{tmp}/absent.yaml"], expect="no such file"),
    Case("snapshot is a directory", [*PLAN, "-f", "{tmp}"], expect="is a directory"),
    Case("snapshot binary", [*PLAN, "-f", "{f}"], b"\x7fELF\x02\x01\x01\x00\x00\x00", expect="binary data"),
    Case("snapshot not UTF-8", [*PLAN, "-f", "{f}"], "kind: Cluster # caf\xe9\n".encode("latin-1"),
         expect="not UTF-8"),
    Case("snapshot symlink loop", [*PLAN, "-f", "{tmp}/loop"], expect="cannot read",
         setup=lambda t: os.symlink(t / "loop", t / "loop")),
    Case("snapshot below a file", [*PLAN, "-f", "{tmp}/good.yaml/x"], expect="cannot read"),
    Case("snapshot larger than 16 MiB", [*PLAN, "-f", "{tmp}/big.yaml"], expect="larger than 16 MiB",
         setup=lambda t: sparse_file(t / "big.yaml", 17 * 1024 * 1024)),
    Case("snapshot empty", [*PLAN, "-f", "{f}"], "", expect="no Kubernetes objects"),
    Case("snapshot malformed YAML", [*PLAN, "-f", "{f}"], "a: [unclosed\n", expect="not valid YAML: line"),
    Case("snapshot malformed JSON", [*PLAN, "-f", "{f}"], '{"kind": "List", "items": [}', expect="not valid YAML"),
    Case("snapshot alias bomb", [*PLAN, "-f", "{f}"], alias_bomb(), expect="alias bomb"),
    Case("snapshot recursive alias", [*PLAN, "-f", "{f}"], "a: &a [*a]\n", expect="recursive alias"),
    Case("snapshot nested too deep", [*PLAN, "-f", "{f}"], "[" * 20000, expect="nested too deeply"),
    Case("snapshot 5000-digit integer", [*PLAN, "-f", "{f}"], "replicas: " + "9" * 5000, expect="cannot be read"),
    Case("snapshot python tag", [*PLAN, "-f", "{f}"], "a: !!python/object/apply:os.system [id]\n",
         expect="could not determine a constructor"),
    Case("snapshot document a list", [*PLAN, "-f", "{f}"], "- a\n- b\n", expect="not a Kubernetes object"),
    Case("snapshot kind a number", [*PLAN, "-f", "{f}"], with_doc(0, lambda d: d.update(kind=5)),
         expect="has no kind string"),
    Case("snapshot metadata a list", [*PLAN, "-f", "{f}"], with_doc(1, lambda d: d.update(metadata=[])),
         expect="metadata must be a mapping"),
    Case("snapshot labels a string", [*PLAN, "-f", "{f}"],
         with_doc(2, lambda d: d["metadata"].update(labels="homelab")),
         expect="metadata.labels must map strings to strings"),
    Case("snapshot spec a string", [*PLAN, "-f", "{f}"], with_doc(1, lambda d: d.update(spec="3 replicas")),
         expect="spec must be a mapping"),
    Case("snapshot replicas a string", [*PLAN, "-f", "{f}"],
         with_doc(1, lambda d: d["spec"].update(replicas="three")),
         expect="spec.replicas must be a whole number"),
    Case("snapshot conditions a mapping", [*PLAN, "-f", "{f}"],
         with_doc(1, lambda d: d.setdefault("status", {}).update(conditions={"Ready": True})),
         expect="status.conditions must be a list of mappings"),
    Case("snapshot List without items", [*PLAN, "-f", "{f}"], '{"apiVersion": "v1", "kind": "List", "items": 3}',
         expect="without an items list"),
    # plan --ledger
    Case("ledger missing", [*PLAN, "-f", "{good}", "--ledger", "{tmp}/none.json"], expect="ledger"),
    Case("ledger a directory", [*PLAN, "-f", "{good}", "--ledger", "{tmp}"], expect="is a directory"),
    Case("ledger not JSON", [*PLAN, "-f", "{good}", "--ledger", "{f}"], "{cluster: homelab", expect="not JSON"),
    Case("ledger an array", [*PLAN, "-f", "{good}", "--ledger", "{f}"], "[1, 2]", expect="must be a JSON object"),
    Case("ledger of another cluster", [*PLAN, "-f", "{good}", "--ledger", "{f}"],
         ledger(cluster="other"), expect="records cluster default/other, not default/homelab"),
    Case("ledger phases a list", [*PLAN, "-f", "{good}", "--ledger", "{f}"], ledger(phases=[1]),
         expect="field 'phases' must be dict"),
    Case("ledger remediation garbage", [*PLAN, "-f", "{good}", "--ledger", "{f}"],
         ledger(phases={"control-plane": {"name": "control-plane", "started": "2026-01-01T00:00:00Z",
                                          "remediations": [{"at": "yesterday"}]}}),
         expect="remediations[0]"),
    Case("ledger unknown result", [*PLAN, "-f", "{good}", "--ledger", "{f}"],
         ledger(phases={"workers": {"name": "workers", "started": "2026-01-01T00:00:00Z", "result": "maybe"}}),
         expect="field 'result' must be succeeded, failed or null"),
    Case("ledger nested too deep", [*PLAN, "-f", "{good}", "--ledger", "{f}"], "[" * 100000,
         expect="nested too deeply"),
    # parameters and flags
    Case("dryRun empty", [*PLAN, "-f", "{good}", "--dryRun", ""], expect="dryRun: must not be empty"),
    Case("clusterName empty", ["plan", "-f", "{good}", "--clusterName", ""], expect="clusterName: must not be empty"),
    Case("namespace padded", [*PLAN, "-f", "{good}", "--clusterNamespace", " default"],
         expect="clusterNamespace: must not start or end with spaces"),
    Case("namespace not a DNS label", [*PLAN, "-f", "{good}", "--clusterNamespace", "My_NS"],
         expect="clusterNamespace: must be a DNS-1123 label"),
    Case("duration overflow", [*PLAN, "-f", "{good}", "--pollInterval", "9" * 400 + "h"],
         expect="pollInterval: must be between"),
    Case("count overflow", [*PLAN, "-f", "{good}", "--maxRemediations", "9" * 5000],
         expect="maxRemediations: must be at most 50"),
    Case("now not a time", [*PLAN, "-f", "{good}", "--now", "tomorrow"], expect="not an RFC 3339 time"),
    Case("abbreviated flag (plan)", ["plan", "-f", "{good}", "--cluster", "homelab"],
         expect="unrecognized arguments: --cluster"),
    Case("abbreviated flag (run)", ["run", "--clusterName", "homelab", "--ledger", "argo"],
         expect="unrecognized arguments: --ledger"),
    Case("unknown phase", [*PLAN, "-f", "{good}", "--phase", "etcd"], expect="invalid choice"),
    # kubeconfig (plan live, run)
    Case("kubeconfig missing", ["plan", "--clusterName", "homelab", "--kubeconfig", "{tmp}/nope"],
         expect="kubeconfig"),
    Case("kubeconfig a directory", ["run", "--clusterName", "homelab", "--kubeconfig", "{tmp}"],
         expect="is a directory"),
    Case("kubeconfig malformed", ["run", "--clusterName", "homelab", "--kubeconfig", "{f}"], "clusters: [",
         expect="not valid YAML"),
    Case("kubeconfig alias bomb", ["plan", "--clusterName", "homelab", "--kubeconfig", "{f}"], alias_bomb(),
         expect="alias bomb"),
    Case("kubeconfig a list", ["run", "--clusterName", "homelab", "--kubeconfig", "{f}"], "- a\n",
         expect="not a kubeconfig"),
    Case("kubeconfig clusters a string", ["run", "--clusterName", "homelab", "--kubeconfig", "{f}"],
         "clusters: nope\n", expect="clusters must be a list of mappings"),
    Case("kubeconfig without a context", ["run", "--clusterName", "homelab", "--kubeconfig", "{f}"],
         "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n", expect="not usable"),
    Case("run bad ledger namespace", ["run", "--clusterName", "homelab", "--ledger-namespace", "Argo NS"],
         expect="--ledger-namespace must be a namespace name"),
    Case("run summary file a directory", ["run", "--clusterName", "homelab", "--summary-file", "{tmp}"],
         expect="is a directory"),
    Case("run summary file without a directory", ["run", "--clusterName", "homelab", "--summary-file",
                                                  "{tmp}/no/such/dir/s.json"], expect="does not exist"),
    # lint
    Case("lint missing path", ["lint", "{tmp}/absent"], expect="no such file"),
    Case("lint binary", ["lint", "{f}"], b"\x00\x01\x02", expect="binary data"),
    Case("lint not UTF-8", ["lint", "{f}"], b"kind: \xff\xfe\n", expect="not UTF-8"),
    Case("lint alias bomb", ["lint", "{f}"], alias_bomb(), expect="alias bomb"),
    Case("lint malformed", ["lint", "{f}"], "a: [", expect="not valid YAML"),
    Case("lint wrong shape", ["lint", "{f}"], BAD_YAML_MD + "spec: {rollout: [1]}\n",
         expect="spec.rollout must be a mapping"),
    Case("lint nothing to check", ["lint", "{f}"], "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
         expect="no TalosControlPlane or MachineDeployment found"),
    Case("plan workflow with a snapshot", [*PLAN, "-f", "{good}", "--workflow", "capi-rollout-abcde"],
         expect="--workflow and --ledger-namespace read a live cluster's RolloutLedger"),
    Case("plan bad ledger namespace", [*PLAN, "--ledger-namespace", "Argo NS", "--kubeconfig", "{tmp}/nope"],
         expect="--ledger-namespace must be a namespace name"),
    Case("plan unknown output", [*PLAN, "-f", "{good}", "-o", "yaml"], expect="invalid choice: 'yaml'"),
    # report
    Case("report output dir missing", ["report", "--cluster-name", "homelab", "--output-dir", "{tmp}/absent"],
         expect="--output-dir"),
    Case("report without a cluster", ["report", "--output-dir", "{tmp}"], expect="clusterName"),
    Case("render digest malformed", ["render", "--image-digest", "sha256:nothex"], expect="is not sha256"),
    # render
    Case("render root missing", ["render", "--root", "{tmp}/absent"], expect="not the capi-rollout repository"),
    Case("render root not the repo", ["render", "--root", "{tmp}"], expect="not the capi-rollout repository"),
    Case("render root a file", ["render", "--check", "--root", "{good}"], expect="not the capi-rollout repository"),
]


def tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in path.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_no_traceback_nothing_written(
        case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config to fall back on
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yaml").write_text(good_snapshot())
    f = tmp_path / "input"
    if isinstance(case.content, bytes):
        f.write_bytes(case.content)
    elif case.content is not None:
        f.write_text(case.content)
    if case.setup is not None:
        case.setup(tmp_path)
    argv = [a.replace("{good}", str(tmp_path / "good.yaml")).replace("{f}", str(f)).replace("{tmp}", str(tmp_path))
            for a in case.argv]
    before = tree(tmp_path)
    code = run_cli(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Traceback" not in out
    assert case.expect in lines[0], lines[0]
    assert out == ""
    assert tree(tmp_path) == before, "something was written"


def run_cli(argv: list[str]) -> int | str | None:
    """The exit code of ``capi-rollout argv`` (argparse's own errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_the_table_covers_at_least_thirty_kinds_of_bad_input() -> None:
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


def test_a_bug_is_one_line_too_and_debug_shows_the_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import capi_rollout.commands as commands

    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(commands, "plan_snapshot", boom)
    snap = tmp_path / "s.yaml"
    snap.write_text(good_snapshot())
    assert main([*PLAN, "-f", str(snap)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (ZeroDivisionError: a bug)" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main([*PLAN, "-f", str(snap), "--debug"])


def test_debug_shows_the_traceback_of_an_input_error(tmp_path: Path) -> None:
    from capi_rollout.userfiles import InputError

    with pytest.raises(InputError, match="no such file"):
        main(["--debug", *PLAN, "-f", str(tmp_path / "absent")])


def test_ctrl_c_is_one_line_exit_2_and_no_traceback(tmp_path: Path) -> None:
    """A real SIGINT to a real process reading a snapshot from a pipe that never ends."""
    # A shell's background job (`cmd &`, nohup) ignores SIGINT, and children inherit that: give the child the
    # default disposition a terminal user has, or Python would not install its handler at all.
    proc = subprocess.Popen([sys.executable, "-m", "capi_rollout", *PLAN, "-f", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdin is not None
    proc.stdin.write("kind: Cluster\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _reads_stdin(proc.pid):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:  # stdin stays open until it exited: a snapshot that ends would let it finish without the interrupt
        proc.wait(timeout=60)
    finally:
        proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 2, err
    assert err.splitlines() == ["capi-rollout plan: interrupted (Ctrl-C); nothing was written"], err
    assert out == "" and list(tmp_path.iterdir()) == []


def _reads_stdin(pid: int) -> bool:
    """True once the process is blocked in a read (its Python started and imported what it needs)."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().split()
    except OSError:
        return False
    return stat[2] == "S" and wchan not in ("", "0") and "pipe" in wchan
