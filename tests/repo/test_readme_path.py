"""The README's path, end to end on the real local API server: the simulator alone (``python -m sim run``), then
``capi-rollout run`` with the scenario's own workflow parameters (``python -m sim params``) — no test harness
between them, only the two commands a user types."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from envtest import LocalAPIServer

BIN = Path(sys.executable).parent


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, f"the simulator stopped: {path.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s: {path.read_text(errors='replace')}"
        time.sleep(0.1)


def test_the_simulator_alone_then_capi_rollout_run_with_the_scenarios_parameters_succeeds(
        apiserver: LocalAPIServer, tmp_path: Path) -> None:
    namespace = f"readme-{uuid.uuid4().hex[:6]}"
    kubeconfig = str(apiserver.kubeconfig_path)
    out = tmp_path / "sim.out"
    with out.open("wb") as sink:
        sim = subprocess.Popen(
            [sys.executable, "-m", "sim", "run", "--kubeconfig", kubeconfig, "--scenario", "happy",
             "--namespace", namespace, "--trigger-after", "0.5"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(out, "rollout.triggered", sim, 60)
        banner = next(line for line in out.read_text().splitlines() if line.startswith("run the rollout:"))
        params = subprocess.run([sys.executable, "-m", "sim", "params", "happy", "--namespace", namespace],
                                check=True, capture_output=True, text=True).stdout.split()
        assert f"--clusterNamespace {namespace}" in banner  # the banner names the namespace it simulates in
        summary = tmp_path / "summary.json"
        run = subprocess.run(
            [str(BIN / "capi-rollout"), "run", *[shlex.split(p)[0] for p in params], "--kubeconfig", kubeconfig,
             "--summary-file", str(summary)],
            capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        result = json.loads(summary.read_text())
        assert result["result"] == "Succeeded", result
        text = out.read_text()
        assert "rollout.completed" in text and "demo-cp" in text
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait(30)
