"""Child processes for the local API server: free loopback ports, start in a new process group, bounded
readiness polling, and teardown of the whole group.

Contract: every wait has a deadline; a child that exits early is reported with the tail of its log; stopping
sends SIGTERM to the process group, then SIGKILL after a grace period, and always reaps the child. Children get
SIGKILL from the kernel when the test process dies (PR_SET_PDEATHSIG, set from one long-lived spawner thread),
so even a killed test run leaks no server.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from capi_rollout import waiting

LOOPBACK = "127.0.0.1"
POLL_INTERVAL_SECONDS = 0.05


class ProcessFailedError(RuntimeError):
    """A child process exited or did not become ready in time."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file ("" if it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    """A pre-exec hook: the child gets SIGKILL when the thread that started it dies, even by SIGKILL (Linux)."""

    def hook() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class _Spawner:
    """Starts children from one daemon thread that lives as long as the process.

    PR_SET_PDEATHSIG follows the *thread* that forked the child: spawning from a caller's short-lived thread
    (e.g. ``threading.Thread(target=server.restart_apiserver)``) would kill the child when that thread ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.Queue[tuple[list[str], dict[str, Any], Future[subprocess.Popen[bytes]]]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="envtest-spawner", daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((list(argv), kwargs, done))
        return done.result(timeout=_SPAWN_TIMEOUT_SECONDS)

    def _serve(self) -> None:
        while True:
            argv, kwargs, done = self._requests.get()
            try:
                done.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as error:
                done.set_exception(error)


_SPAWN_TIMEOUT_SECONDS = 30.0
_SPAWNER = _Spawner()


class ChildProcess:
    """One long-running child with its output in a log file, in its own process group."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._popen = _SPAWNER.popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with(os.getpid()),
            )

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def wait_until(self, ready: Callable[[], bool], *, timeout: float, what: str) -> float:
        """Poll ``ready`` until it holds; return the seconds it took. Raise if the child exits or time runs out."""
        started = time.monotonic()

        def check() -> bool:
            if not self.running():
                code = self._popen.returncode if self._popen else None
                raise ProcessFailedError(f"{self.name} exited with {code} before {what}:\n{log_tail(self.log_path)}")
            return bool(ready())

        try:
            waiting.wait_until(check, timeout=timeout, interval=POLL_INTERVAL_SECONDS, what=f"{self.name} {what}")
        except TimeoutError:
            raise ProcessFailedError(
                f"{self.name} not {what} within {timeout:.1f}s:\n{log_tail(self.log_path)}") from None
        return time.monotonic() - started

    def stop(self, *, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group, wait up to ``grace`` seconds, then SIGKILL it; always reap."""
        popen, self._popen = self._popen, None
        if popen is None:
            return
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, sig)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(timeout=grace)
