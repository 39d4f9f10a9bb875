"""What the operator sees of a simulated rollout on the real local API server: Argo's progress file advancing,
``plan`` naming the next remediation and its time mid-rollout, and the rollout picture naming every Machine.

The simulator (``cp-stall-recover-after-reboot``: the first new control-plane Machine stays NotReady until Talos
reboots it) runs in this process at the e2e harness's time scale; the runner is the one the workflow steps run.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capi_rollout.adapters.kube import Kube
from capi_rollout.cli import main
from capi_rollout.domain.params import parse_params
from capi_rollout.ledger_store import KubeLedgerStore
from capi_rollout.progress_file import ENV
from capi_rollout.rollout_loop import RolloutLoop
from capi_rollout.run import run_all
from e2e.harness import LEDGER_CRD_PATH, parameters, scaled
from envtest import LocalAPIServer
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


def test_the_progress_file_counts_replaced_machines_up_to_all_of_them_and_report_draws_the_run(
        apiserver: LocalAPIServer, stalled_cp: Simulator, kube_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    apiserver.install_crds([LEDGER_CRD_PATH])
    sim = stalled_cp
    progress = tmp_path / "progress"
    monkeypatch.setenv(ENV, str(progress))
    params = parse_params(parameters(sim.scenario))
    kube = Kube(apiserver.api_client())
    store = KubeLedgerStore(kube, namespace=kube_namespace, run_id="capi-rollout-r4nd0")
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

    # capi-rollout report: the same run from its RolloutLedger, the Machines and the Events of the cluster
    report = tmp_path / "report"
    report.mkdir()
    assert main(["report", "--kubeconfig", str(apiserver.kubeconfig_path), "--cluster-name", "demo",
                 "--cluster-namespace", sim.scenario.namespace, "--stall-timeout", "4s", "--poll-interval", "1s",
                 "--output-dir", str(report)]) == 0
    assert "control plane: 3/3 replaced, 1 remediation" in capsys.readouterr().out
    svg = (report / "rollout.svg").read_text()
    words = " ".join("".join(t.itertext()) for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text"))
    (rem,) = summary["phases"]["control-plane"]["remediations"]
    assert f"remediation 1: delete {rem['machine']}, reboot {rem['address']}" in words
    for m in [*sim.store.list("machines")]:  # every Machine the cluster still has, and the remediated one
        assert m["metadata"]["name"] in words
    assert rem["machine"] in words
    assert json.loads((report / "summary.json").read_text())["headline"] == summary["headline"]


class _Stopped(Exception):
    """Ends the runner's thread: its clock raises this once the test has seen what it came for."""


def test_plan_mid_rollout_names_the_next_remediation_and_its_time(
        apiserver: LocalAPIServer, stalled_cp: Simulator, kube_namespace: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    apiserver.install_crds([LEDGER_CRD_PATH])
    sim = stalled_cp
    ns = sim.scenario.namespace
    params = parse_params(parameters(sim.scenario, stallTimeout="30s"))  # a stall the test can look at
    kube = Kube(apiserver.api_client())
    store = KubeLedgerStore(kube, namespace=kube_namespace, run_id="capi-rollout-x7k2p")
    stop = threading.Event()

    def clock() -> datetime:
        if stop.is_set():
            raise _Stopped
        return datetime.now(UTC)

    runner = RolloutLoop(params=params, kube=kube, store=store, clock=clock, out=lambda _: None)

    def play() -> None:
        with contextlib.suppress(_Stopped):
            run_all(params, kube=kube, loop=runner)

    reader = KubeLedgerStore(kube, namespace=kube_namespace, run_id="capi-rollout-x7k2p")

    def stalled() -> bool:
        ledger = reader.load()
        record = ledger.phase("control-plane") if ledger else None
        stuck = sim.machine("demo-cp-3")
        return (record is not None and stuck is not None and stuck.node is not None
                and (datetime.now(UTC) - record.last_progress).total_seconds() > 2)

    sim.trigger_rollout()
    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    try:
        sim.wait_until(stalled, WAIT, interval=0.2)
        argv = ["plan", "--kubeconfig", str(apiserver.kubeconfig_path), "--cluster-name", "demo",
                "--cluster-namespace", ns, "--stall-timeout", "30s", "--poll-interval", "1s"]
        assert main([*argv, "-o", "json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert main([*argv, "--workflow", "capi-rollout-x7k2p", "--ledger-namespace", kube_namespace,
                     "-o", "table"]) == 0
        table = capsys.readouterr().out
    finally:
        stop.set()
        thread.join(WAIT)
    record = reader.load().phase("control-plane")  # type: ignore[union-attr]
    assert record is not None and not record.remediations  # the plan came before the remediation
    address = sim.node("demo-cp-3").address
    assert out["ledger"] == f"{kube_namespace}/capi-rollout-capi-rollout-x7k2p"
    nxt = out["next"]
    assert (nxt["kind"], nxt["machine"], nxt["delete"], nxt["reboot"]) == ("remediate", "demo-cp-3", True, address)
    assert datetime.fromisoformat(nxt["at"].replace("Z", "+00:00")) == record.last_progress + timedelta(seconds=30)
    when = record.last_progress + timedelta(seconds=30)
    at = when.strftime("%H:%M:%S" if when.second else "%H:%M")  # a whole minute is said without its seconds
    assert nxt["sentence"].startswith("control plane: stalled for ")
    assert nxt["sentence"].endswith(f"of 30s: at {at} it will delete Machine demo-cp-3 and reboot {address}")
    assert f"next: {nxt['sentence']}" in table and "capi-rollout-x7k2p" in table
