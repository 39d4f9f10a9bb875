"""Run one step attempt as a subprocess, as a pod's main container would run, and report how it ended.

Contract: the only module of the executor that starts or signals processes. :func:`run_attempt` starts the
argv in its own session (a process group standing in for the pod), streams stdout and stderr line by line to
``echo`` (prefixed with the node's display name, so progress is visible live) and to the attempt's log file,
keeps stdout for ``outputs.result``, and ends the group in one of three ways:

* it exits by itself -> ``Exited``;
* ``deadline`` seconds pass (the template's ``activeDeadlineSeconds``; the kubelet's DeadlineExceeded) -> the
  group gets SIGTERM, then SIGKILL after ``grace`` seconds -> ``DeadlineExceeded``;
* ``kill_after`` seconds pass (fault injection: the pod is deleted or evicted) -> ``kill_signal`` to the group
  (SIGKILL at once by default; SIGTERM is followed by SIGKILL after ``grace``, like a kubelet) -> ``Killed``.

Every wait is bounded by those two limits and by ``safety_timeout`` (the executor's own cap for steps with no
deadline, reported as ``SafetyTimeout``). Exit codes of signalled processes are reported the way a container
runtime reports them: 128 + signal number.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

Echo = Callable[[str], None]

EXITED, DEADLINE_EXCEEDED, KILLED, SAFETY_TIMEOUT = "Exited", "DeadlineExceeded", "Killed", "SafetyTimeout"


@dataclass(frozen=True)
class AttemptOutcome:
    how: str
    exit_code: int
    stdout: str
    started: float
    finished: float


def _pump(stream: IO[bytes], prefix: str, echo: Echo | None, log: IO[str], log_lock: threading.Lock,
          keep: list[str] | None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        if keep is not None:
            keep.append(line)
        with log_lock:
            log.write(line)
            log.flush()
        if echo is not None:
            echo(f"{prefix} {line.rstrip()}")
    stream.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def run_attempt(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    prefix: str,
    echo: Echo | None,
    deadline: float | None,
    kill_after: float | None,
    safety_timeout: float,
    grace: float = 1.0,
    kill_signal: int = signal.SIGKILL,
) -> AttemptOutcome:
    """Run ``argv`` to its end (see the module docstring); never returns before the process group is gone."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"# argv: {list(argv)}\n")
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        lock = threading.Lock()
        kept: list[str] = []
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, prefix, echo, log, lock, kept), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, prefix, echo, log, lock, None), daemon=True),
        ]
        for p in pumps:
            p.start()
        limits = [(safety_timeout, SAFETY_TIMEOUT)]
        if deadline is not None:
            limits.append((deadline, DEADLINE_EXCEEDED))
        if kill_after is not None:
            limits.append((kill_after, KILLED))
        limit, how = min(limits, key=lambda x: x[0])
        try:
            proc.wait(timeout=max(0.0, limit - (time.monotonic() - t0)))
            how = EXITED
        except subprocess.TimeoutExpired:
            if how == KILLED and kill_signal == signal.SIGKILL:
                _signal_group(proc, signal.SIGKILL)
            else:
                _signal_group(proc, kill_signal if how == KILLED else signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
        # The group may hold children that outlived the leader; a pod's end takes them all.
        _signal_group(proc, signal.SIGKILL)
        for p in pumps:
            p.join(timeout=5)
        rc = proc.returncode
        exit_code = 128 - rc if rc < 0 else rc
        with lock:
            log.write(f"# end: {how}, exit code {exit_code}\n")
    return AttemptOutcome(how=how, exit_code=exit_code, stdout="".join(kept), started=started, finished=time.time())
