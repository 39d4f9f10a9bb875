"""``python -m e2e.node``: a real one-node Kubernetes with Argo Workflows in its own network namespace.

Usage::

    python -m e2e.node check                 # what this machine lacks for a node (one line each), exit 1 if any
    python -m e2e.node run [--keep] -- CMD   # build/import images, start the node, run CMD inside, tear down
    python -m e2e.node down                  # remove a node left by a killed run (processes, cgroups, namespace)

``run`` prints each step and its duration. CMD runs inside the namespace with ``KUBECONFIG`` (the admin
kubeconfig), ``E2E_CLUSTER=node``, ``E2E_NODE_STATE`` (the state directory) and ``E2E_NODE_ENGINE`` (one line
naming the engine) set; its exit code is ``run``'s. Whatever CMD did, the node is torn down afterwards (unless
``--keep``) and a second ``run`` always starts clean. Ctrl-C (SIGINT), SIGTERM (a CI timeout, ``timeout``) and
SIGHUP stop CMD and the node and go through the same teardown; ``run`` then exits 128 + the signal's number.
One node runs on a machine at a time: ``run`` and ``down``
hold an exclusive lock (``/var/tmp/capi-rollout-node.lock``); a second checkout waits for it and says so.
Where a node cannot run here, ``run`` and ``check`` say
what is missing and that kind (``E2E_CLUSTER=kind``, with a Docker engine) is the alternative, and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from e2e.node import config, netns, setup
from e2e.node.config import Layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.node", allow_abbrev=False,
                                     description="A real one-node Kubernetes with Argo Workflows, in its own "
                                                 "network namespace.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="say what this machine lacks for a node", allow_abbrev=False)
    check.add_argument("--before-build", action="store_true",
                       help="leave out what `make node-tools` provides (Debian packages, binaries)")
    run = sub.add_parser("run", help="start the node, run a command inside it, tear it down", allow_abbrev=False)
    run.add_argument("--keep", action="store_true", help="keep the node's state directory after the run")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command to run inside (after --)")
    sub.add_parser("down", help="remove a node left behind by a killed run", allow_abbrev=False)
    inside = sub.add_parser("inside", help=argparse.SUPPRESS, allow_abbrev=False)
    inside.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    layout = setup.default_layout()

    if args.command == "check":
        missing = setup.missing(built=not args.before_build)
        if missing:
            print(f"cannot run a real node here: {'; '.join(missing)}. Alternative: {setup.ALTERNATIVE}",
                  file=sys.stderr)
        return 1 if missing else 0
    if args.command == "down":
        with _one_node_at_a_time():
            for line in netns.destroy(layout):
                print(f"[node] {line}", file=sys.stderr)
        return 0
    if args.command == "inside":
        return setup.run_inside(layout, _command(args.cmd))
    with _one_node_at_a_time():
        return _run(layout, _command(args.cmd), keep=args.keep)


LOCK = Path("/var/tmp/capi-rollout-node.lock")


@contextmanager
def _one_node_at_a_time(lock: Path = LOCK) -> Iterator[None]:
    """Hold the machine's node lock: another checkout's node (same namespace, cgroups, state) must end first."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            print(f"[node] another node run holds {lock} ({holder}); waiting for it to end", file=sys.stderr,
                  flush=True)
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            print(f"[node] got the node lock after {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} in {Path.cwd()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _command(cmd: list[str]) -> list[str]:
    cmd = cmd[1:] if cmd[:1] == ["--"] else cmd
    if not cmd:
        raise SystemExit("python -m e2e.node: give the command to run after --")
    return cmd


def _run(layout: Layout, cmd: list[str], *, keep: bool) -> int:
    missing = setup.missing()
    if missing:
        print(f"cannot run a real node here: {'; '.join(missing)}. Alternative: {setup.ALTERNATIVE}",
              file=sys.stderr)
        return 1
    images = setup.build_images()
    for line in netns.destroy(layout):
        print(f"[node] left by an earlier run: {line}", file=sys.stderr)
    layout.state.mkdir(parents=True)
    layout.resolv_conf.write_text(config.render_resolv_conf(layout))
    setup.write_image_list(layout, images)
    child: subprocess.Popen[bytes] | None = None
    stopped = _Stopped()
    previous = {sig: signal.signal(sig, stopped.handler) for sig in STOP_SIGNALS}
    try:
        netns.create(layout)
        child = subprocess.Popen(netns.enter_argv(layout, [sys.executable, "-m", "e2e.node", "inside", "--", *cmd]))
        code = child.wait()
    except KeyboardInterrupt:
        code = 128 + stopped.signum
        print(f"[node] stopped by signal {stopped.signum}: stopping the command and the node", file=sys.stderr,
              flush=True)
        if child is not None:
            child.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=STOP_GRACE)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        for sig in STOP_SIGNALS:  # a second signal during the teardown must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        try:
            for line in netns.destroy(layout, keep_state=keep):
                print(f"[node] teardown: {line}", file=sys.stderr)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code


# Ctrl-C, a CI timeout or `timeout` (SIGTERM), a closed terminal (SIGHUP): the same teardown.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_GRACE = 60.0  # seconds the command and the node get to stop after the signal, before SIGKILL and teardown


class _Stopped:
    """The signal that stopped the run (SIGINT unless another one came)."""

    def __init__(self) -> None:
        self.signum = int(signal.SIGINT)

    def handler(self, signum: int, frame: object) -> None:
        self.signum = signum
        raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

