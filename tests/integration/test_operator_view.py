"""What the operator sees of a simulated rollout on the real local API server: Argo's progress file advancing,
``plan`` naming the next remediation and its time mid-rollout, and the rollout picture naming every Machine.

The simulator (``cp-stall-recover-after-reboot``: the first new control-plane Machine stays NotReady until Talos
reboots it) runs in this process at the e2e harness's time scale; the runner is the one the workflow steps run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capi_rollout.adapters.kube import Kube
from capi_rollout.ledger_store import MemoryLedgerStore
from capi_rollout.params import parse_params
from capi_rollout.progress_file import ENV
from capi_rollout.runner import run_all
from e2e.harness import parameters, scaled
from sim.envtest import LocalAPIServer
from sim.simulator import Simulator

WAIT = 30.0


@pytest.fixture
def stalled_cp(apiserver: LocalAPIServer) -> Iterator[Simulator]:
    api = apiserver.api_client()
    # slower than the e2e harness (20x, not 60x): the runner confirms a reboot for up to 4 s, and CAPI must not
    # finish the whole control plane meanwhile, or the bar would only ever show the start and the end
    sim = Simulator(api, scaled("cp-stall-recover-after-reboot", timings={"time_scale": 20})).start()
    try:
        sim.wait_until(lambda: sum(1 for m in sim.store.list("machines")
                                   if (m.get("status") or {}).get("phase") == "Running") == 5, WAIT)
        yield sim
    finally:
        sim.stop()
        api.close()  # type: ignore[no-untyped-call]


class Sampler:
    """Reads the progress file every few milliseconds, as Argo's executor does every 3 s, and keeps each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()  # one last read after the run ended
            try:
                value = self.path.read_text().strip()
            except FileNotFoundError:
                value = ""
            if value and (not self.seen or self.seen[-1] != value):
                self.seen.append(value)
            if stopping:
                return
            time.sleep(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_the_progress_file_counts_replaced_machines_up_to_all_of_them(
        apiserver: LocalAPIServer, stalled_cp: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = stalled_cp
    progress = tmp_path / "progress"
    monkeypatch.setenv(ENV, str(progress))
    params = parse_params(parameters(sim.scenario))
    kube = Kube(apiserver.api_client())
    store = MemoryLedgerStore()
    sim.trigger_rollout()
    with Sampler(progress) as sampler:
        result = run_all(params, kube=kube, store=store, out=lambda _: None)
    assert result.ok, result.message
    cp = [v for v in sampler.seen if v.endswith("/3")]
    assert cp[-1] == "3/3" and len(cp) >= 3, sampler.seen  # it moved at least twice on the way
    numbers = [int(v.split("/")[0]) for v in cp]
    assert numbers[0] < 3 and numbers == sorted(numbers), sampler.seen
    assert sampler.seen[-1] == "2/2", sampler.seen  # then the workers' phase (nothing rolled: all up to date)
    summary = json.loads(result.outputs["summary"])
    assert summary["headline"] == ("control plane: 3/3 replaced, 1 remediation; "
                                   "workers: 2/2 replaced, 0 remediations"), summary
