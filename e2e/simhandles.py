"""The simulated cluster an e2e scenario plays on, wherever the simulator runs: one handle, three places.

Contract: a :class:`SimHandle` is one simulated Talos cluster (``sim/``) that a scenario drives only through

* ``scenario``: what it simulates (namespace, cluster name, CAPI line, timings);
* ``api_client``: an admin client of the API server holding the simulated objects (a scenario's preparation,
  e.g. deleting the talosconfig Secret, writes through it);
* ``wait_settled(timeout)``: returns once every Machine of the scenario exists and is ``Running``;
* ``trigger_rollout()``: makes the GitOps change and returns once the simulator recorded it
  (``rollout.triggered``), so a Workflow submitted next sees the changed specs;
* ``timeline()``: every event it recorded so far (:class:`sim.timeline.Timeline`), readable after ``stop``;
* ``stop()``: stops it and removes what it created (idempotent).

Places:

* :class:`InProcessSim`: ``sim.simulator.Simulator`` in the test process (the local backend's default);
* :class:`ProcessSim`: ``python -m sim run --output json`` as a child process against the same API server, the
  code path a simulator pod runs, reporting its timeline as JSON lines on stdout and triggered by ``SIGUSR1``;
* ``e2e.backends.sim_pod.SimDeployment``: the simulator pod in a kind or drill cluster (logs, ``kubectl exec``).

The last two share :class:`RemoteSim`: everything the test knows of them comes from their output and the API
server, never from their memory, so a scenario that passes with :class:`ProcessSim` runs unchanged in a pod.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from capi_rollout.waiting import wait_until
from sim.scenario import Scenario
from sim.scenario_format import to_dict
from sim.simulator import Simulator
from sim.timeline import Timeline

TRIGGERED = "rollout.triggered"


class SimHandle(Protocol):
    scenario: Scenario
    api_client: Any

    def wait_settled(self, timeout: float) -> None: ...

    def trigger_rollout(self) -> None: ...

    def timeline(self) -> Timeline: ...

    def stop(self) -> None: ...


def expected_machines(scenario: Scenario) -> int:
    return scenario.cp_replicas + sum(d.replicas for d in scenario.deployments)


def settled(machines: list[dict[str, Any]], scenario: Scenario) -> tuple[bool, str]:
    """Are all of ``scenario``'s Machines there and ``Running`` (Ready or not: ``when: before`` faults stay)?"""
    expected = expected_machines(scenario)
    running = sum(1 for m in machines if (m.get("status") or {}).get("phase") == "Running")
    if len(machines) == expected and running == expected:
        return True, f"{expected} Machines Running"
    return False, f"{len(machines)} of {expected} Machines exist, {running} Running"


def list_machines(api_client: Any, scenario: Scenario) -> list[dict[str, Any]]:
    from kubernetes import client

    from sim.objects import CAPI_GROUP, capi_version

    found: Any = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        CAPI_GROUP, capi_version(scenario.capi_line), scenario.namespace, "machines")
    items: list[dict[str, Any]] = found["items"]
    return items


class NotYet(Exception):
    """A wait's "not yet" with its reason (:func:`~capi_rollout.waiting.wait_until` reports the last one)."""


def poll(check: Callable[[], tuple[bool, str]], timeout: float, what: str, *, interval: float = 0.1,
         detail: Callable[[], str] = lambda: "") -> None:
    """Return once ``check()`` holds; ``TimeoutError`` naming ``what``, the last reason and ``detail()``."""

    def holds() -> bool:
        ok, why = check()
        if not ok:
            raise NotYet(why)
        return True

    try:
        wait_until(holds, timeout=timeout, interval=interval, what=what, retry_on=(NotYet,))
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{detail()}") from None


class InProcessSim:
    """A :class:`sim.simulator.Simulator` started in this process (its store and fleet answer directly)."""

    def __init__(self, api_client: Any, scenario: Scenario) -> None:
        self.scenario = scenario
        self.api_client = api_client
        self.sim = Simulator(api_client, scenario).start()

    def wait_settled(self, timeout: float) -> None:
        self.sim.wait_until(lambda: settled(self.sim.store.list("machines"), self.scenario)[0], timeout)

    def trigger_rollout(self) -> None:
        self.sim.trigger_rollout()  # synchronous: the specs are changed and recorded on return

    def timeline(self) -> Timeline:
        return self.sim.timeline

    def stop(self) -> None:
        self.sim.stop()


class RemoteSim:
    """A simulator in another process or a pod: known by its JSON-lines output and the API server only.

    Subclasses provide :meth:`output` (everything it printed so far), :meth:`signal_trigger` (deliver
    ``SIGUSR1``), :meth:`alive` and :meth:`shutdown` (stop it and remove its objects).
    """

    scenario: Scenario
    api_client: Any
    poll_interval = 0.1
    _final: Timeline | None = None

    def output(self) -> str:
        raise NotImplementedError

    def signal_trigger(self) -> None:
        raise NotImplementedError

    def alive(self) -> tuple[bool, str]:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def timeline(self) -> Timeline:
        if self._final is not None:
            return self._final
        return Timeline.parse(self.output(), scale=self.scenario.timings.time_scale)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def _alive_and(self, check: Callable[[], tuple[bool, str]]) -> Callable[[], tuple[bool, str]]:
        def combined() -> tuple[bool, str]:
            up, why = self.alive()
            if not up:
                raise RuntimeError(f"the simulator of {self.scenario.namespace} stopped: {why}\n{self.tail()}")
            return check()

        return combined

    def wait_settled(self, timeout: float) -> None:
        poll(self._alive_and(lambda: settled(list_machines(self.api_client, self.scenario), self.scenario)),
             timeout, f"the simulated cluster in {self.scenario.namespace}", detail=self.tail,
             interval=self.poll_interval)

    def trigger_rollout(self, timeout: float = 30.0) -> None:
        self.signal_trigger()

        def recorded() -> tuple[bool, str]:
            return self.timeline().first(TRIGGERED) is not None, f"no {TRIGGERED} event yet"

        poll(self._alive_and(recorded), timeout, "the rollout trigger", detail=self.tail, interval=self.poll_interval)

    def stop(self) -> None:
        """Stop it; the timeline read just before it goes stays readable."""
        if self._final is not None:
            return
        try:
            self.shutdown()
        finally:
            if self._final is None:  # a subclass whose output goes with it keeps its own last reading
                self._final = Timeline.parse(self.output(), scale=self.scenario.timings.time_scale)


class ProcessSim(RemoteSim):
    """``python -m sim run --output json`` as a child process (its own process group) on ``kubeconfig``'s server.

    The scenario is written to ``workdir/scenario.yaml``; the simulator triggers only on ``SIGUSR1`` and stops on
    ``SIGTERM`` (deleting its objects). Its stdout is read by a thread; stderr goes to ``workdir/sim.stderr``.
    """

    def __init__(self, api_client: Any, scenario: Scenario, *, kubeconfig: Path, workdir: Path,
                 python: str = sys.executable, stop_timeout: float = 30.0) -> None:
        self.scenario = scenario
        self.api_client = api_client
        self.stop_timeout = stop_timeout
        workdir.mkdir(parents=True, exist_ok=True)
        scenario_file = workdir / "scenario.yaml"
        scenario_file.write_text(yaml.safe_dump(to_dict(scenario), sort_keys=False))
        self.ready_file = workdir / "sim.ready"
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stderr = (workdir / "sim.stderr").open("wb")
        self.process = subprocess.Popen(
            [python, "-m", "sim", "run", "--kubeconfig", str(kubeconfig), "--scenario", str(scenario_file),
             "--trigger-after", "-1", "--output", "json", "--ready-file", str(self.ready_file)],
            stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, name=f"sim-{scenario.namespace}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._lock:
                self._lines.append(raw.decode(errors="replace"))

    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def alive(self) -> tuple[bool, str]:
        code = self.process.poll()
        if code is None:
            return True, "running"
        err = Path(self._stderr.name).read_text(errors="replace").strip()[-600:]
        return False, f"exit code {code}: {err}"

    def wait_settled(self, timeout: float) -> None:
        poll(self._alive_and(lambda: (self.ready_file.exists(), "no ready file yet")), timeout,
             f"the simulator of {self.scenario.namespace}", detail=self.tail)
        super().wait_settled(timeout)

    def signal_trigger(self) -> None:
        self.process.send_signal(signal.SIGUSR1)

    def shutdown(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(10)
            self._reader.join(10)
        finally:
            self._stderr.close()
