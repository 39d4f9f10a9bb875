"""The e2e harness: one simulated Talos cluster, the rendered WorkflowTemplate run against it, and what happened.

Contract: a :class:`Stage` is one cluster (one CAPI line) with the runner RBAC and the rendered WorkflowTemplate
installed, a backend that runs the template there, and a way to start simulators there (a :class:`Venue`):

* :meth:`Stage.local`: the real local API server and the strict local executor; the simulator in the test process
  (``simulator="in-process"``) or as a child process (``"process"``, ``python -m sim run --output json``: the code
  path of the simulator pod);
* :meth:`Stage.on_cluster`: a kind or drill cluster (``e2e.backends``) whose Argo runs the template; the
  simulator runs there as a pod (``ClusterBackend.deploy_simulator``).

Scenarios touch the simulator only through :class:`e2e.simhandles.SimHandle`, so every one of them plays the same
way in all three places. :meth:`Stage.run` plays one scenario:

1. start the simulator in a fresh namespace and wait until its cluster is settled (every machine Running);
2. bind the runner's per-cluster-namespace ClusterRole there (a RoleBinding, as users do);
3. apply the scenario's own preparation (``prepare(sim)``, e.g. remove the talosconfig Secret);
4. trigger the rollout the way a GitOps change would (``sim.trigger_rollout()``), unless told not to;
5. submit the real template through the backend and wait for its end (bounded by ``timeout``);
6. stop the simulator, read its timeline, the run's RolloutLedger and the exit handler's summary.

The :class:`~e2e.outcome.Outcome` (:mod:`e2e.outcome`) answers the questions scenarios ask and writes, under
``results/e2e/<test>/``, what a failing run needs to be read without rerunning it.

Durations are scaled (:data:`FAST_TIMINGS`, :data:`SCALED_PARAMETERS`): a machine boots in about half a second of
wall time, the stall timeout is 4 s, the phase timeouts are far above a normal rollout.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client

from capi_rollout.waiting import wait_until
from e2e.argo_local import KillStep, WorkflowRun
from e2e.backends.base import Backend
from e2e.backends.local import LocalBackend
from e2e.outcome import Outcome, stall_timeout
from e2e.simhandles import InProcessSim, ProcessSim, SimHandle
from envtest import LocalAPIServer, rest
from sim.scenario import Scenario, Timings
from sim.scenario_format import load

if TYPE_CHECKING:
    from e2e.backends.existing import ClusterBackend

REPO_ROOT = Path(__file__).resolve().parent.parent
OVERLAY = REPO_ROOT / "overlay" / "management" / "argo-workflows"
TEMPLATE_PATH = OVERLAY / "capi-rollout-workflowtemplate.yaml"
RBAC_PATH = OVERLAY / "capi-rollout-rbac.yaml"
LEDGER_CRD_PATH = OVERLAY / "capi-rollout-ledger-crd.yaml"  # the RolloutLedger kind the runner keeps its ledger in
RUNNER_NAMESPACE, RUNNER = "argo", "capi-rollout-runner"


def overlay_build() -> str:
    """``kustomize build`` of :data:`OVERLAY` with the pinned kustomize of ``make tools`` (``$KUSTOMIZE`` wins)."""
    from capi_rollout import kustomize
    from envtest import assets

    return kustomize.build(OVERLAY, env={"KUSTOMIZE": str(assets.kustomize()), **os.environ})
PER_CLUSTER_ROLE = "capi-rollout-cluster-namespace"

# Simulated seconds at 60x: a machine boots in 33 simulated seconds (~0.55 s wall), a deletion takes ~0.1 s,
# a Talos reboot keeps the node down ~0.5 s. Jitter is seeded, so every run is the same story.
FAST_TIMINGS = Timings(pending=3, provisioning=12, boot=12, node_ready=6, deletion=6, reboot=30,
                       jitter=0.1, seed=7, time_scale=60)

# Wall-clock parameters for the engine against FAST_TIMINGS: the stall timeout is ~7x a machine's whole boot
# (and ~20x its longest single phase), the phase timeouts ~20x a whole normal rollout.
SCALED_PARAMETERS: dict[str, str] = {
    "pollInterval": "1s",
    "stallTimeout": "4s",
    "controlPlaneTimeout": "60s",
    "workersTimeout": "60s",
    "maxRemediations": "2",
    "rebootMode": "powercycle",
    "dryRun": "false",
}

# Retry backoffs of the template (15s, 30s) are scaled by this in the local executor (declared in the run).
BACKOFF_SCALE = 0.02


def scaled(scenario: str | Scenario, *, namespace: str | None = None, safe_workers: bool = True,
           **changes: Any) -> Scenario:
    """A bundled (or given) scenario in a fresh namespace with :data:`FAST_TIMINGS`.

    ``safe_workers`` gives every MachineDeployment the one strategy the engine accepts (maxSurge 0,
    maxUnavailable 1, as the bundled scenarios already have; a test-built one may surge, which preflight refuses).
    ``changes`` replace Scenario fields (``faults=...``, ``talos_version=...``); ``timings=`` may be a dict of
    FAST_TIMINGS changes.
    """
    s = load(scenario) if isinstance(scenario, str) else scenario
    ns = namespace or f"e2e-{s.name}"[:50].rstrip("-") + "-" + uuid.uuid4().hex[:6]
    timings = changes.pop("timings", {})
    s = replace(s, namespace=ns, timings=replace(FAST_TIMINGS, **timings), **changes)
    if safe_workers:
        s = replace(s, deployments=tuple(replace(d, max_surge=0, max_unavailable=1) for d in s.deployments))
    return s.validate()


DURATION_PARAMETERS = ("pollInterval", "stallTimeout", "controlPlaneTimeout", "workersTimeout")


def parameters(scenario: Scenario, **overrides: str) -> dict[str, str]:
    """The workflow's parameters for ``scenario``'s cluster: :data:`SCALED_PARAMETERS`, then the scenario's own
    ``workflow.parameters`` (its durations only if it kept its own timings: under :data:`FAST_TIMINGS` the scaled
    durations fit, the scenario's do not), then ``overrides``."""
    own = dict(scenario.workflow_parameters)
    if scenario.timings == FAST_TIMINGS:
        own = {k: v for k, v in own.items() if k not in DURATION_PARAMETERS}
    return {"clusterName": scenario.cluster, "clusterNamespace": scenario.namespace, **SCALED_PARAMETERS, **own,
            **overrides}


def per_cluster_binding(namespace: str) -> dict[str, Any]:
    """The RBAC manifest's own RoleBinding of the per-cluster-namespace ClusterRole, moved to ``namespace``."""
    template = next(
        d for d in rest.load_documents([RBAC_PATH])
        if d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "ClusterRole"
        and d["roleRef"]["name"] == PER_CLUSTER_ROLE
    )
    binding = copy.deepcopy(template)
    binding["metadata"]["namespace"] = namespace
    return binding


# ------------------------------------------------------------------------------------------------ stage


SIMULATORS = ("in-process", "process")


def simulator_for(line: str, env: Mapping[str, str]) -> str:
    """Where the local backend runs the simulator: ``E2E_SIMULATOR`` if set, else in this process for the v1.14
    line and as a child process (the code path of the simulator pod) for the v1.10 line, so every local run also
    proves the scenarios play with a simulator known only by its output and the API server."""
    chosen = env.get("E2E_SIMULATOR", "").strip()
    if chosen:
        if chosen not in SIMULATORS:
            raise ValueError(f"E2E_SIMULATOR={chosen!r}: expected one of {', '.join(SIMULATORS)}")
        return chosen
    return "in-process" if line == "v1.14" else "process"


@dataclass
class Venue:
    """Where a :class:`Stage` plays: the backend running the template, an admin client of the cluster, how a
    simulator starts there and how manifests are applied there."""

    backend: Backend
    api: Any
    apply: Callable[[list[dict[str, Any]]], None]
    start_simulator: Callable[[Scenario], SimHandle]
    runner_namespace: str
    settle_timeout: float = 30.0
    local_steps: bool = False  # the workflow's steps are child processes of this test (abort() kills them)


class Stage:
    """One cluster with the runner RBAC and the WorkflowTemplate installed; plays scenarios on it."""

    def __init__(self, venue: Venue, scenario_dir: Path) -> None:
        self.venue = venue
        self.backend = venue.backend
        self.api = venue.api
        self.scenario_dir = Path(scenario_dir)  # <dir>/<scenario>/

    @classmethod
    def local(cls, server: LocalAPIServer, results_dir: Path, *, echo: Callable[[str], None] | None = None,
              backoff_scale: float = BACKOFF_SCALE, python: str = sys.executable, scenario_dir: Path | None = None,
              simulator: str = "in-process") -> Stage:
        """The local API server with the strict local executor; runs under ``<results_dir>/<workflow>/``."""
        if simulator not in SIMULATORS:
            raise ValueError(f"simulator={simulator!r}: expected one of {', '.join(SIMULATORS)}")
        results_dir = Path(results_dir)
        backend = LocalBackend(server, results_dir, namespace=RUNNER_NAMESPACE, python=python, echo=echo,
                                     backoff_scale=backoff_scale, safety_timeout=300.0)
        backend.install([LEDGER_CRD_PATH, RBAC_PATH, TEMPLATE_PATH])
        api = server.api_client()

        def start_simulator(scenario: Scenario) -> SimHandle:
            if simulator == "in-process":
                return InProcessSim(api, scenario)
            return ProcessSim(api, scenario, kubeconfig=server.kubeconfig_path, python=python,
                              workdir=results_dir / "simulators" / scenario.namespace)

        def apply(docs: list[dict[str, Any]]) -> None:
            server.apply_manifests(docs)

        venue = Venue(backend=backend, api=api, apply=apply, start_simulator=start_simulator,
                      runner_namespace=RUNNER_NAMESPACE, local_steps=True)
        return cls(venue, Path(scenario_dir) if scenario_dir else results_dir / "e2e")

    @classmethod
    def on_cluster(cls, backend: ClusterBackend, *, scenario_dir: Path | None = None, settle_timeout: float = 120.0,
                   template: Mapping[str, Any] | None = None) -> Stage:
        """A kind or drill cluster: ``backend`` runs the template with its Argo; simulators run there as pods.
        ``template``: the WorkflowTemplate to play (a drill's copy of the deployed one), else the overlay as users
        apply it: ``kustomize build`` of ``overlay/management/argo-workflows`` (the pinned kustomize)."""
        backend.install([LEDGER_CRD_PATH, RBAC_PATH, template] if template is not None else [overlay_build()])

        def start_simulator(scenario: Scenario) -> SimHandle:
            return backend.deploy_simulator(scenario, namespace=scenario.namespace)

        def apply(docs: list[dict[str, Any]]) -> None:
            backend.apply([backend.localize(d) for d in docs])

        venue = Venue(backend=backend, api=backend.api, apply=apply, start_simulator=start_simulator,
                      runner_namespace=backend.namespace, settle_timeout=settle_timeout)
        return cls(venue, Path(scenario_dir) if scenario_dir else backend.results_dir / "e2e")

    def close(self) -> None:
        if self.venue.local_steps:  # a cluster backend's client is the backend's to close
            with contextlib.suppress(Exception):
                self.api.close()

    def abort(self, timeout: float = 30.0) -> None:
        """Stop every run still executing (after Ctrl-C): SIGKILL the step process groups until neither an
        executor thread nor a step process is left (the executor would go on to retries and the exit handler).
        On a cluster, runs stay with its Argo (their namespace is thrown away with the backend)."""
        if not self.venue.local_steps:
            return
        threads = list(getattr(self.backend, "_threads", {}).values())

        def stopped() -> bool:
            pids = step_processes()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            alive = [t for t in threads if t.is_alive()]
            for t in alive:
                t.join(timeout=0.1)
            return not pids and not alive

        # A killed step is reaped by its executor thread or stays a zombie (no cmdline); what is left after
        # ``timeout`` is left.
        with contextlib.suppress(TimeoutError):
            wait_until(stopped, timeout=timeout, interval=0.05, what="the local runs stopped")

    def bind_runner(self, namespace: str) -> None:
        """The runner's RoleBinding in a cluster namespace, its subject in this stage's runner namespace."""
        binding = per_cluster_binding(namespace)
        for subject in binding.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = self.venue.runner_namespace
        self.venue.apply([binding])

    def ledger(self, run: WorkflowRun) -> dict[str, Any] | None:
        from capi_rollout.adapters.kube import LEDGER_GROUP, LEDGER_PLURAL, LEDGER_VERSION
        from capi_rollout.ledger_store import ledger_name

        try:
            obj: Any = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                LEDGER_GROUP, LEDGER_VERSION, run.namespace, LEDGER_PLURAL, ledger_name(run.name))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        text = (obj.get("spec") or {}).get("ledger")
        return json.loads(text) if text else None

    def start_simulator(self, scenario: Scenario, *, settle_timeout: float | None = None) -> SimHandle:
        sim = self.venue.start_simulator(scenario)
        try:
            sim.wait_settled(settle_timeout or self.venue.settle_timeout)
            self.bind_runner(scenario.namespace)
        except BaseException:
            sim.stop()
            raise
        return sim

    def run_concurrently(self, cases: Sequence[Mapping[str, Any]], *, at_once: int = 4) -> list[Outcome]:
        """Play independent scenarios, ``at_once`` at a time (each ``dict`` holds :meth:`run`'s arguments);
        outcomes in order. Steps are CPU-bound (interpreter start-up): more than a few at once only thrashes.

        Only for refusals that need no rollout (``trigger=False``, enforced): a rollout's scaled timings (a 4 s
        stall timeout, machines booting in half a second) assume no other rollout competes for the CPU.
        """
        if any(case.get("trigger", True) for case in cases):
            raise ValueError("concurrent cases must not trigger a rollout (trigger=False)")
        with ThreadPoolExecutor(max_workers=max(1, min(at_once, len(cases))), thread_name_prefix="e2e-case") as pool:
            futures = [pool.submit(self._run_case, case) for case in cases]
            return [f.result() for f in futures]

    def _run_case(self, case: Mapping[str, Any]) -> Outcome:
        return self.run(**case)

    def run(
        self,
        name: str,
        scenario: Scenario,
        params: Mapping[str, str],
        *,
        faults: Sequence[KillStep] = (),
        trigger: bool = True,
        prepare: Callable[[SimHandle], None] | None = None,
        during: Callable[[SimHandle, WorkflowRun], None] | None = None,
        timeout: float = 180.0,
    ) -> Outcome:
        """Play ``scenario`` with the workflow ``params`` (see the module docstring); results are written."""
        sim = self.start_simulator(scenario)
        try:
            if prepare is not None:
                prepare(sim)
            if trigger:
                sim.trigger_rollout()
            submitted = time.time()
            run = self.backend.submit(params, faults=faults)
            if during is not None:
                during(sim, run)
            try:
                run = self.backend.wait(run, timeout)
            finally:  # also a run that did not end leaves its results
                finished = time.time()
                sim.stop()
                outcome = Outcome(name=name, scenario=scenario, run=run, timeline=sim.timeline(),
                                  ledger=self.ledger(run), submitted_wall=submitted, finished_wall=finished,
                                  stall_timeout=stall_timeout(params))
                outcome.write(self.scenario_dir / _safe(name))
        finally:
            sim.stop()
        return outcome


def step_processes() -> list[int]:
    """This process's children that are workflow steps (each leads its own process group, as a pod would)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == me and b"capi_rollout.workflow" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.[]" else "-" for c in name)[:150]
