"""The pytest plugin tears its server down when a test fails and when the run is interrupted.

An inner pytest session (a subprocess using the real plugin) records the server's work directory, fails one
test and interrupts itself with KeyboardInterrupt in the next; afterwards no process mentions that directory
and the directory is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envtest import assets
from tests.apiserver.procs import live_processes_mentioning

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


def test_failed_and_interrupted_sessions_leave_no_processes_or_directories(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["envtest.pytest_plugin"]\n')
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
    assert live_processes_mentioning(workdir) == []


BLOCKING_TEST = """
import os
import shutil
import signal
from pathlib import Path

HERE = Path(__file__).parent


def test_blocks_until_killed(apiserver):
    (HERE / "workdir.tmp").write_text(str(apiserver.workdir))
    (HERE / "workdir.tmp").rename(HERE / "workdir.txt")
    with open(HERE / "never-written.fifo") as fifo:  # blocks: nobody opens the FIFO for writing
        fifo.read()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_session_leaves_no_server_processes(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "test_inner.py").write_text(BLOCKING_TEST)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["envtest.pytest_plugin"]\n')
    os.mkfifo(tmp_path / "never-written.fifo")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(assets.REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record = tmp_path / "workdir.txt"
    deadline = time.monotonic() + 120
    try:
        while not record.exists():
            assert inner.poll() is None, "the inner session ended before its server was up"
            assert time.monotonic() < deadline, "the inner session's server did not come up"
            time.sleep(0.05)
        workdir = record.read_text()
        assert live_processes_mentioning(workdir), "the inner server should be running now"
        inner.send_signal(sig)
        inner.wait(timeout=60)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    # PR_SET_PDEATHSIG: the kernel kills the children the moment their parent dies; reaping takes an instant.
    deadline = time.monotonic() + 10
    while live_processes_mentioning(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_processes_mentioning(workdir) == []
    if sig == signal.SIGTERM:
        assert not Path(workdir).exists(), "SIGTERM tears down like Ctrl-C: the work directory is removed"
    else:
        shutil.rmtree(workdir, ignore_errors=True)  # nothing can clean up after SIGKILL but the caller
