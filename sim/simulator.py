"""The in-process simulator: a context manager that makes one Talos workload cluster appear on an API server.

Contract: :class:`Simulator` wires the parts — safety check and namespace (``safety``), the Store
(``capi.kube`` or an injected one), the Ed25519 PKI and fake Talos fleet (``pki``, ``talos``), the fake
controllers (``capi.controller``) and the ``<cluster>-talosconfig`` Secret — and runs the controllers
and their API watches in background threads until :meth:`Simulator.stop`. Everything it starts, it
stops (threads joined with a bound); cleanup removes the simulator's finalizers and objects.

Endpoints: ``endpoints="loopback"`` (the default) binds every fake Talos node to its own loopback address on
port 50000, which is also the Machine's address. ``endpoints="service"`` (a simulator running in a pod) binds
each node to ``pod_ip`` on its own port and creates one Service per node in the scenario namespace (selector =
``pod_labels``, the pod's labels; port 50000 → that port, owner = the Cluster); the Machine's ``InternalIP``
and the talosconfig endpoints are the Services' ClusterIPs, and cleanup deletes the Services too.

    with Simulator(api_client, load("cp-stall-recover-after-reboot")) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: sim.timeline.first("rollout.completed"), timeout=30)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from capi_rollout import waiting
from sim import objects as o
from sim.capi.cluster import SimClock, SimMachine
from sim.capi.controller import Controllers
from sim.capi.kube import KubeStore, Store
from sim.scenario import Scenario
from sim.talos.exposure import Exposer
from sim.timeline import Timeline

ENDPOINT_MODES = ("loopback", "service")


class Simulator:
    def __init__(
        self, api_client: client.ApiClient | None, scenario: Scenario, *, timeline: Timeline | None = None,
        store: Store | None = None, talos: bool = True, talos_port: int = 50000, allow_real_capi: bool = False,
        cleanup: bool = True, endpoints: str = "loopback", pod_ip: str | None = None,
        pod_labels: Mapping[str, str] | None = None, exposer: Exposer | None = None,
    ) -> None:
        if api_client is None and store is None:
            raise ValueError("give an api_client or a store")
        if endpoints not in ENDPOINT_MODES:
            raise ValueError(f"endpoints={endpoints!r}: expected one of {', '.join(ENDPOINT_MODES)}")
        if endpoints == "service" and exposer is None and (api_client is None or not pod_ip or not pod_labels):
            raise ValueError('endpoints="service" needs an api_client, pod_ip and pod_labels (or an exposer)')
        self.scenario = scenario.validate()
        self.api_client = api_client
        self.timeline = timeline or Timeline(scale=scenario.timings.time_scale)
        self.store: Store = store or KubeStore(
            api_client, line=scenario.capi_line, namespace=scenario.namespace  # type: ignore[arg-type]
        )
        self._talos = talos
        self._talos_port = talos_port
        self._allow_real_capi = allow_real_capi
        self._cleanup = cleanup
        self.endpoints = endpoints
        self._pod_ip = pod_ip
        self._pod_labels = dict(pod_labels or {})
        self.exposer: Exposer | None = exposer
        self.clock = SimClock(scenario.timings.time_scale)
        self.pki: Any = None
        self.fleet: Any = None
        self.controllers = Controllers(
            self.store, self.scenario, fleet=None, timeline=self.timeline, clock=self.clock
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.talosconfig = ""
        self.started = False

    # ------------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Simulator:
        s = self.scenario
        if self.api_client is not None and isinstance(self.store, KubeStore):
            from sim.safety import prepare_namespace

            prepare_namespace(self.api_client, s.namespace, line=s.capi_line, allow_real_capi=self._allow_real_capi)
        self.started = True
        try:
            if self._talos:
                from sim.pki import ClusterPKI
                from sim.talos import FakeTalosFleet, RebootOutcome, RebootStages

                self.pki = ClusterPKI.generate(s.cluster)
                if self.endpoints == "service" and self.exposer is None:
                    self.exposer = self._service_exposer()
                t = s.timings
                stages = RebootStages(rebooting=t.wall(t.reboot_rebooting), booting=t.wall(t.reboot_booting),
                                      not_ready=t.wall(t.reboot_not_ready))
                self.fleet = FakeTalosFleet(
                    self.pki, timeline=self.timeline, reboot_downtime=t.wall(t.reboot), reboot_stages=stages,
                    port=self._talos_port, exposer=self.exposer if self.endpoints == "service" else None,
                )
                self.fleet.start()

                def on_reboot(node: Any, mode: str, role: str) -> Any:
                    outcome = self.controllers.on_reboot(node.name, mode, role)
                    return RebootOutcome(outcome) if outcome else None

                self.fleet.on_reboot(on_reboot)
                self.controllers.fleet = self.fleet
            self.controllers.bootstrap()
            self._write_talosconfig()
            self._spawn("sim-controllers", self.controllers.run, self._stop)
            for plural in ("machines", "machinesets", "taloscontrolplanes", "machinedeployments"):
                self._spawn(f"sim-watch-{plural}", self.store.watch, plural, self.controllers.wake, self._stop)
        except BaseException:
            self.stop()
            raise
        return self

    def _service_exposer(self) -> Exposer:
        from sim.talos.services import ServiceExposer

        s = self.scenario
        assert self.api_client is not None and self._pod_ip is not None

        def owner() -> dict[str, Any] | None:
            uid = self.controllers.cluster_uid
            return {"apiVersion": o.api_version(s.capi_line), "kind": "Cluster", "name": s.cluster, "uid": uid,
                    "controller": True, "blockOwnerDeletion": True} if uid else None

        return ServiceExposer(self.api_client, namespace=s.namespace, cluster=s.cluster, pod_ip=self._pod_ip,
                              selector=self._pod_labels, owner=owner)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _write_talosconfig(self) -> None:
        if self.pki is None:
            return
        cp = [m for m in self.controllers.machines.values() if m.role == "cp" and m.node is not None]
        endpoints = [m.node.address for m in sorted(cp, key=lambda m: m.name)]
        secret = self.pki.talosconfig_secret(
            self.scenario.namespace, self.controllers.cluster_uid, endpoints=endpoints,
            cluster_api_version=o.api_version(self.scenario.capi_line),
        )
        self.talosconfig = self.pki.talosconfig(endpoints)
        self.store.create_secret(secret)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the controllers, watches and fake Talos endpoints; then clean up the simulated objects."""
        self._stop.set()
        self.controllers.wake()
        stopper = getattr(self.store, "stop_watches", None)
        if stopper is not None:
            stopper()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None
        if self._cleanup and self.started:
            with contextlib.suppress(Exception):
                self.delete_objects()
        self.started = False

    def delete_objects(self) -> None:
        """Remove the simulator's finalizers and objects (the test API server has no garbage collector)."""
        for plural in ("machines", "machinesets", "machinedeployments", "taloscontrolplanes", "clusters"):
            for obj in self.store.list(plural):
                name = obj["metadata"]["name"]
                if obj["metadata"].get("finalizers"):
                    self.store.patch(plural, name, {"metadata": {"finalizers": None}})
                self.store.delete(plural, name)
        if self.api_client is not None and isinstance(self.store, KubeStore):
            with contextlib.suppress(client.ApiException):
                client.CoreV1Api(self.api_client).delete_namespaced_secret(
                    f"{self.scenario.cluster}-talosconfig", self.scenario.namespace
                )
        delete_all = getattr(self.exposer, "delete_all", None)
        if self.endpoints == "service" and delete_all is not None:
            delete_all()

    # ------------------------------------------------------------------------------------------ use

    def trigger_rollout(self, trigger: str | None = None) -> None:
        """Change the TalosControlPlane and/or MachineDeployment specs as a GitOps change would."""
        self.controllers.trigger_rollout(trigger)

    def wait_until(self, predicate: Callable[[], Any], timeout: float, *, interval: float = 0.02) -> Any:
        """Return ``predicate()``'s first truthy value; TimeoutError (with the timeline) after ``timeout``."""
        try:
            return waiting.wait_until(lambda: predicate() or None, timeout=timeout, interval=interval, what="condition")
        except TimeoutError as exc:
            tail = "\n".join(self.timeline.text().splitlines()[-40:])
            errors = "\n".join(self.controllers.errors[-5:])
            raise TimeoutError(f"{exc}; timeline tail:\n{tail}\nerrors:\n{errors}") from None

    def machine(self, name: str) -> SimMachine | None:
        return self.controllers.machines.get(name)

    def machines(self, role: str | None = None) -> list[SimMachine]:
        return sorted((m for m in list(self.controllers.machines.values()) if role in (None, m.role)),
                      key=lambda m: m.name)

    def node(self, name: str) -> Any:
        return self.fleet.node(name) if self.fleet is not None else None

    def now(self) -> float:
        """Simulated seconds since start."""
        return self.clock.now()
