"""``python -m e2e.demo`` plays node, kind or local and refuses anything else in one line before it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def demo(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    return subprocess.run([sys.executable, "-m", "e2e.demo", "--results", str(tmp_path / "results")], cwd=REPO,
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["existing", "nodes", "emulator"])
def test_an_engine_the_demo_does_not_play_is_refused_in_one_line_before_anything_starts(
        tmp_path: Path, name: str) -> None:
    done = demo(tmp_path, E2E_CLUSTER=name)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and not (tmp_path / "results").exists()
    (line,) = done.stderr.splitlines()
    assert line == (f"python -m e2e.demo: E2E_CLUSTER={name!r} is not a demo engine: use node (a real node, the "
                    "default of `make demo`), kind (a Docker engine) or local (the fast template check)")


def test_kind_without_a_docker_engine_says_so_in_one_line_and_names_the_real_node(tmp_path: Path) -> None:
    no_docker = tmp_path / "bin"
    no_docker.mkdir()
    done = demo(tmp_path, E2E_CLUSTER="kind", PATH=str(no_docker))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == "" and not (tmp_path / "results").exists()
    (line,) = done.stderr.splitlines()
    assert line.startswith("python -m e2e.demo: E2E_CLUSTER=kind needs a Docker engine (no docker CLI on PATH)")
    assert "`make demo` runs a real node" in line


def _first_lines_until(argv: list[str], env: dict[str, str], marker: str, stream: str) -> str:
    """Run ``argv`` until a line containing ``marker`` appears on ``stream``, then stop it (nothing else starts)."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                return line.rstrip("\n")
    finally:
        if proc.poll() is None:
            proc.send_signal(__import__("signal").SIGINT)
        proc.wait(timeout=60)
    raise AssertionError(f"no {marker!r} line in {stream}: {''.join(seen)}")


def test_the_local_demo_names_itself_the_template_check_not_the_real_engine(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    line = _first_lines_until([sys.executable, "-m", "e2e.demo", "--results", str(tmp_path / "r")],
                              {**clean, "E2E_CLUSTER": "local"}, "1/4 starting", "stdout")
    assert "the fast template check, NOT the real Argo engine" in line, line


def test_the_e2e_suite_on_the_local_backend_names_itself_the_template_check(tmp_path: Path) -> None:
    (tmp_path / "test_banner.py").write_text("def test_banner(e2e_backend_name):\n    pass\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    line = _first_lines_until([sys.executable, "-m", "pytest", "-q", "-p", "e2e.conftest", "-p", "no:cacheprovider",
                               "--rootdir", str(tmp_path), str(tmp_path / "test_banner.py")],
                              {**clean, "E2E_CLUSTER": "local"}, "e2e backend:", "stderr")
    assert line.startswith("e2e backend: local (E2E_CLUSTER=local): the fast template check"), line
    assert "NOT the real Argo engine" in line
