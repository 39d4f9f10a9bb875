"""In-memory fakes at the project's own adapter boundary, for fast sequence tests of the runner.

* :class:`FakeKube` implements the :class:`~capi_rollout.ports.KubePort` methods the rollout loop calls over
  dicts; any other attribute access fails loudly ("must not be called").
* :class:`FakeControlPlaneController` / :class:`FakeDeploymentController` replace Machines like CACPPT and the
  MachineDeployment controller do with maxSurge 0 (one at a time), on a fake clock, with seeded jitter and
  per-ordinal faults: a faulty new Machine never becomes Ready until it is deleted.
* :class:`FakeWatch` stands in for the change watcher: each wait advances the fake clock by the timeout and
  lets the controllers act once.
* :class:`FakeCache` is a FakeWatch that is also an object cache (``synced``, ``snapshot``, ``wait_until``): its
  snapshot is what FakeKube held at the last wait (so the runner's own writes are not in it until a wait or a
  delivered ``wait_until``); ``delivers_writes=False`` makes it never show them (a lagging watch), and
  ``freeze_after_waits=n`` stops it from changing at all after n waits while it still says it is synced (a
  watch connection that died silently).
* :class:`FakeTalos` answers probes and records reboots.
* :class:`FakeRunStep` stands in for ``capi_rollout.run.run_step`` behind the step shell
  (``capi_rollout.workflow.steps`` / ``entry``), with the environment (:data:`STEP_ENV`) and parameters
  (:data:`STEP_PARAMS`) a pod gets.

They fake what the runner observes and nothing more; the real API server tests cover the real adapter.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from capi_rollout.adapters.informer import Snapshot
from capi_rollout.adapters.kube import KubeError
from capi_rollout.domain.params import DEFAULTS
from capi_rollout.workflow import steps
from tests import builders as b


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKube:
    def __init__(self, *, version: str = "v1beta2") -> None:
        self.version = version
        self.cluster: dict[str, Any] | None = b.cluster(v=version)
        self.tcps: list[dict[str, Any]] = []
        self.mds: list[dict[str, Any]] = []
        self.machines: dict[str, dict[str, Any]] = {}
        self.secrets: list[dict[str, Any]] = [{"metadata": {"name": "homelab-talosconfig", "namespace": b.NS,
                                                            "labels": {"cluster.x-k8s.io/cluster-name": "homelab"}},
                                               "data": {"talosconfig": "Y29udGV4dDogaG9tZWxhYgo="}}]
        self.secret_gets: list[str] = []
        self.ledgers: dict[str, tuple[dict[str, str], int]] = {}  # name -> (spec, resourceVersion)
        self.ledger_meta: dict[str, dict[str, Any]] = {}  # name -> labels and ownerReferences as written
        self.events: list[tuple[str, str]] = []
        self.deleted: list[str] = []
        self.log: list[str] = []
        self.machine_lists = 0

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"FakeKube.{name} must not be called")

    def capi_version(self) -> str:
        return self.version

    def get_cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.cluster) if self.cluster and self.cluster["metadata"]["name"] == name else None

    def list_control_planes(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.tcps)

    def list_machine_deployments(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.mds)

    def list_machines(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.machine_lists += 1
        return copy.deepcopy(list(self.machines.values()))

    def list_health_checks(self, namespace: str) -> list[dict[str, Any]]:
        return []

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.secret_gets.append(name)
        return next((copy.deepcopy(s) for s in self.secrets if s["metadata"]["name"] == name), None)

    def delete_machine(self, namespace: str, name: str, uid: str) -> bool:
        m = self.machines.get(name)
        if m is None or m["metadata"]["uid"] != uid:
            return False
        self.deleted.append(name)
        m["metadata"].setdefault("deletionTimestamp", "pending")
        return True

    def record_event(self, *, involved: Mapping[str, Any], reason: str, message: str, warning: bool = False,
                     now: datetime | None = None) -> None:
        self.events.append((involved["metadata"]["name"], reason))

    def read_ledger(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.ledgers.get(name)
        if found is None:
            return None
        meta = copy.deepcopy(self.ledger_meta.get(name, {}))
        return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": str(found[1]), **meta},
                "spec": dict(found[0])}

    def write_ledger(self, namespace: str, name: str, spec: Mapping[str, str], *, resource_version: str | None,
                     labels: Mapping[str, str], owner: Mapping[str, str] | None) -> str:
        current = self.ledgers.get(name)
        if (current is None) != (resource_version is None) or (current and str(current[1]) != resource_version):
            conflict = KubeError(f"write RolloutLedger {namespace}/{name}",
                                 detail="the object has been modified (409)")
            conflict.status = 409  # what the real API server answers to a stale resourceVersion
            raise conflict
        version = (current[1] if current else 0) + 1
        self.ledgers[name] = (dict(spec), version)
        meta: dict[str, Any] = {"labels": dict(labels)}
        if owner and owner.get("uid"):
            meta["ownerReferences"] = [{**owner, "blockOwnerDeletion": False}]
        self.ledger_meta[name] = meta
        return str(version)


@dataclass
class FakeTalos:
    stages: dict[str, str] = field(default_factory=dict)
    reboots: list[tuple[str, str]] = field(default_factory=list)
    reboot_identities: list[str | None] = field(default_factory=list)  # the node name each reboot required
    client_validity: Any = None  # None: unknown (no check); else .not_before/.not_after
    tags: dict[str, str] = field(default_factory=dict)  # address -> Talos version tag (default v1.12.0)
    dropped: set[str] = field(default_factory=set)  # addresses whose accepted reboot never happens
    version_reads: list[str] = field(default_factory=list)

    @dataclass(frozen=True)
    class Probe:
        address: str
        state: str
        detail: str = ""

    @dataclass(frozen=True)
    class Reboot:
        accepted: bool
        detail: str = ""
        boot_id: str | None = "boot-0"

    @dataclass(frozen=True)
    class Observation:
        observed: bool
        detail: str

    def probe_many(self, addresses: Sequence[str]) -> dict[str, FakeTalos.Probe]:
        return {a: FakeTalos.Probe(a, self.stages.get(a, "running")) for a in addresses}

    def versions(self, addresses: Sequence[str]) -> dict[str, str]:
        self.version_reads.extend(addresses)
        return {a: self.tags.get(a, "v1.12.0") for a in addresses}

    def reboot(self, address: str, mode: str, *, node_name: str | None = None) -> FakeTalos.Reboot:
        self.reboots.append((address, mode))
        self.reboot_identities.append(node_name)
        return FakeTalos.Reboot(self.stages.get(address, "running") != "maintenance")

    def confirm_reboot(self, address: str, boot_id_before: str | None, *, within: float, interval: float,
                       on_wait: Any = None, removing: bool = False) -> FakeTalos.Observation:
        if address in self.dropped:
            return FakeTalos.Observation(False, f"reboot requested but not observed within {within:g}s: the boot id "
                                         "is still boot-0 and the API never went away")
        return FakeTalos.Observation(True, "boot id changed (boot-0 → boot-1)")


class FakeControlPlaneController:
    """CACPPT with maxSurge 0: delete one old Machine, create its replacement, wait until it is Ready."""

    def __init__(self, kube: FakeKube, clock: Clock, *, replicas: int = 3, boot_seconds: float = 120,
                 faulty: Mapping[int, str] | None = None, seed: int = 1) -> None:
        self.kube, self.clock, self.replicas = kube, clock, replicas
        self.boot_seconds = boot_seconds
        # ordinal of a new Machine (0-based) -> "provisioning" (never gets a node) or "not-ready" (node NotReady)
        self.faulty = dict(faulty or {})
        self.rng = random.Random(seed)
        self.created = 0
        self.generation = 2
        kube.tcps = [b.tcp(replicas=replicas, generation=2, observed=1, up_to_date=False, ready=replicas)]
        for i in range(replicas):
            m = b.machine(f"cp-old-{i}", cp=True, address=f"10.0.0.{10 + i}")
            m["spec"]["version"] = "v1"
            kube.machines[m["metadata"]["name"]] = m
        self.boot_at: dict[str, tuple[datetime, bool]] = {}

    def tick(self) -> None:
        now = self.clock()
        ms = self.kube.machines
        for name, m in list(ms.items()):
            if m["metadata"].get("deletionTimestamp"):
                self.kube.log.append(f"{ts(now)} controller: Machine {name} deleted")
                del ms[name]
        for name, (at, ready) in list(self.boot_at.items()):
            if name in ms and now >= at:
                ms[name] = b.machine(name, cp=True, address=f"10.0.1.{name.rsplit('-', 1)[1]}", ready=ready,
                                     created=ms[name]["metadata"]["creationTimestamp"])
                ms[name]["spec"]["version"] = "v2"
                state = "Ready" if ready else "booted, NotReady"
                self.kube.log.append(f"{ts(now)} controller: Machine {name} {state}")
                del self.boot_at[name]
        cps = list(ms.values())
        busy = any(m["spec"].get("version") == "v2" and not _ready(m) for m in cps)
        old = sorted(m["metadata"]["name"] for m in cps if m["spec"].get("version") == "v1")
        if len(cps) < self.replicas:
            self._create(now)
        elif old and not busy:
            ms[old[0]]["metadata"]["deletionTimestamp"] = ts(now)
            self.kube.log.append(f"{ts(now)} controller: deleting old Machine {old[0]}")
        self._status()

    def _create(self, now: datetime) -> None:
        ordinal = self.created
        self.created += 1
        name = f"cp-new-{ordinal}"
        m = b.machine(name, cp=True, node=False, phase="Provisioning", ready=False, created=ts(now))
        m["spec"]["version"] = "v2"
        self.kube.machines[name] = m
        fault = self.faulty.get(ordinal)
        self.kube.log.append(f"{ts(now)} controller: created Machine {name}" + (f" (fault: {fault})" if fault else ""))
        if fault != "provisioning":
            jitter = self.rng.uniform(0, self.boot_seconds / 4)
            self.boot_at[name] = (now + timedelta(seconds=self.boot_seconds + jitter), fault != "not-ready")

    def _status(self) -> None:
        cps = list(self.kube.machines.values())
        ready = sum(1 for m in cps if _ready(m) and not m["metadata"].get("deletionTimestamp"))
        done = all(m["spec"].get("version") == "v2" for m in cps) and len(cps) == ready == self.replicas
        self.kube.tcps = [b.tcp(replicas=self.replicas, generation=2, observed=2, up_to_date=done, ready=ready)]


def _ready(m: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in m["status"].get("conditions", []))


class FakeWatch:
    """Each wait advances the fake clock by the timeout and lets the controllers act once."""

    def __init__(self, clock: Clock, controllers: Sequence[Any], *, max_waits: int = 500,
                 crash_after_waits: int | None = None) -> None:
        self.clock, self.controllers = clock, controllers
        self.waits = 0
        self.max_waits = max_waits
        self.crash_after_waits = crash_after_waits

    def wait(self, timeout: float) -> bool:
        self.waits += 1
        if self.waits > self.max_waits:
            raise AssertionError("iteration cap reached: the runner never finished")
        if self.crash_after_waits is not None and self.waits > self.crash_after_waits:
            raise KeyboardInterrupt("step killed")
        self.clock.advance(timeout)
        for c in self.controllers:
            c.tick()
        return True

    @contextmanager
    def __call__(self, kube: Any, namespace: str, cluster: str) -> Iterator[FakeWatch]:
        yield self


# --- the workflow step shell ------------------------------------------------------------------------------------

STEP_ENV = {
    steps.ENV_RUN_ID: "capi-rollout-abc12",
    steps.ENV_RUN_UID: "0d6c2f5e-1111-2222-3333-444455556666",
    steps.ENV_LEDGER_NAMESPACE: "argo",
}
STEP_PARAMS = {name: (default if default is not None else "homelab") for name, default in DEFAULTS.items()}


@dataclass(frozen=True)
class FakeResult:
    ok: bool
    message: str
    outputs: dict[str, str]


@dataclass
class FakeRunStep:
    result: FakeResult
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def __call__(self, *args: Any, **kwargs: Any) -> FakeResult:
        self.calls.append((args, kwargs))
        return self.result


class FakeCache(FakeWatch):
    """A FakeWatch that is also an object cache; see the module docstring."""

    def __init__(self, clock: Clock, controllers: Sequence[Any], kube: FakeKube, *, delivers_writes: bool = True,
                 synced: bool = True, freeze_after_waits: int | None = None, max_waits: int = 500) -> None:
        super().__init__(clock, controllers, max_waits=max_waits)
        self.freeze_after_waits = freeze_after_waits
        self.kube, self.delivers_writes, self.synced = kube, delivers_writes, synced
        self.failure: str | None = None if synced else "watch machines: connection refused"
        self.barriers: list[bool] = []
        self._snap = self._read()

    def _read(self) -> Snapshot:
        if self.freeze_after_waits is not None and self.waits > self.freeze_after_waits:
            return self._snap
        k = self.kube
        return Snapshot(clusters=[copy.deepcopy(k.cluster)] if k.cluster else [], control_planes=copy.deepcopy(k.tcps),
                        deployments=copy.deepcopy(k.mds),
                        machines=copy.deepcopy([k.machines[n] for n in sorted(k.machines)]))

    def wait(self, timeout: float) -> bool:
        changed = super().wait(timeout)
        self._snap = self._read()
        return changed

    def snapshot(self) -> Snapshot:
        return self._snap

    def wait_until(self, predicate: Callable[[Snapshot], bool], timeout: float) -> bool:
        if self.delivers_writes:
            self._snap = self._read()
        else:
            self.clock.advance(timeout)
        held = self.synced and predicate(self._snap)
        self.barriers.append(held)
        return held

    @contextmanager
    def __call__(self, kube: Any, namespace: str, cluster: str) -> Iterator[FakeCache]:
        yield self
