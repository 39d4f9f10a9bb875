"""The pytest plugin tears its server down when a test fails and when the run is interrupted.

An inner pytest session (a subprocess using the real plugin) records the server's work directory, fails one
test and interrupts itself with KeyboardInterrupt in the next; afterwards no process mentions that directory
and the directory is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.envtest import assets

pytestmark = pytest.mark.apiserver

INNER_TESTS = """
from pathlib import Path

RECORD = Path(__file__).with_name("workdir.txt")


def test_fails_while_using_the_server(apiserver, kube_namespace):
    RECORD.write_text(str(apiserver.workdir))
    assert (apiserver.workdir / "admin.kubeconfig").exists()
    assert False, "this failure must not leak the server"


def test_interrupts_the_run(apiserver):
    raise KeyboardInterrupt
"""


def _live_processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found


def test_failed_and_interrupted_sessions_leave_no_processes_or_directories(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["sim.envtest.pytest_plugin"]\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(assets.REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = inner.stdout + inner.stderr
    assert inner.returncode == 2, output  # interrupted
    assert "this failure must not leak the server" in output
    workdir = (tmp_path / "workdir.txt").read_text()
    assert workdir.startswith("/")
    assert not Path(workdir).exists()
    assert _live_processes_mentioning(workdir) == []
