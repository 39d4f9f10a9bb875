"""Declarative simulator scenarios: the cluster to fake, its timings, the faults to inject, the rollout trigger.

Contract: pure data, no I/O. A scenario is a frozen :class:`Scenario`; :meth:`Scenario.validate` raises
:class:`ScenarioError` naming every problem at once. Its YAML/JSON form (reading, writing, the bundled files) is
:mod:`sim.scenario_format`.

Every duration is in *simulated* seconds; ``timings.time_scale`` says how many simulated seconds pass per
wall second (60 = a 45-minute story runs in 45 s). Fault targets name either a Machine (``machine:``,
for the machines that exist before the rollout) or a role plus the ordinal of a machine created *after*
the rollout started (``role: cp, ordinal: 0`` is the first new control-plane Machine).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

CAPI_LINES = ("v1.14", "v1.10")
TRIGGERS = ("tcp-version", "md-template", "both")
FAULT_KINDS = (
    "stall-provisioning",  # the Machine never gets past Provisioning (no nodeRef)
    "node-not-ready",  # the Machine reaches Running with a nodeRef, its Node stays NotReady
    "stall-deletion",  # a deleted Machine keeps its finalizer (drain blocked)
    "maintenance",  # the node's Talos API is in maintenance mode
    "talos-unreachable",  # the node's Talos API does not answer at all
    "slow",  # every phase of the target (or of every machine) takes `factor` times longer
    "flap",  # the node alternates Ready / NotReady every `period / 2` seconds for `duration` seconds
)
RECOVERIES = ("after-reboot", "after-replacement", "after-n-reboots", "never")
WHENS = ("before", "mid", "after-reboot", "at")
ORDERS = ("both-at-once", "control-plane-first")
_PARAM_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9]*$")
ROLES = ("cp", "worker")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SEMVER = re.compile(r"^v\d+\.\d+\.\d+([-0-9a-zA-Z_.+]*)?$")


class ScenarioError(ValueError):
    """The scenario is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid scenario: " + "; ".join(problems))


@dataclass(frozen=True, kw_only=True)
class Timings:
    """Phase durations in simulated seconds, a jitter fraction with its seed, and the time scale."""

    pending: float = 5.0  # Pending -> Provisioning
    provisioning: float = 60.0  # Provisioning -> Provisioned (infrastructure ready, addresses known)
    boot: float = 90.0  # Provisioned -> Running (Talos booted, nodeRef set)
    node_ready: float = 20.0  # Running -> Node Ready
    deletion: float = 30.0  # deletionTimestamp -> finalizer removed (drain + etcd leave)
    reboot: float = 60.0  # a Talos reboot keeps the node down this long
    # around that downtime, Talos's stages (sim.talos.RebootStages): API up in stage rebooting, back in booting,
    # then running not ready, then ready
    reboot_rebooting: float = 0.0
    reboot_booting: float = 0.0
    reboot_not_ready: float = 0.0
    jitter: float = 0.0  # each duration is multiplied by a factor in [1 - jitter, 1 + jitter]
    seed: int = 1
    time_scale: float = 1.0  # simulated seconds per wall second

    def wall(self, sim_seconds: float) -> float:
        """Wall seconds that ``sim_seconds`` of simulated time take."""
        return sim_seconds / self.time_scale


@dataclass(frozen=True, kw_only=True)
class DeploymentSpec:
    """One MachineDeployment of the simulated cluster."""

    name: str
    replicas: int = 2
    max_surge: int | str = 1
    max_unavailable: int | str = 0
    strategy: str = "RollingUpdate"


@dataclass(frozen=True, kw_only=True)
class Target:
    """Which machine a fault hits: a named Machine, or role + ordinal of a machine created after the trigger.

    ``role`` alone (no ordinal, no machine) means every machine of that role; nothing at all means every
    machine (only sensible for ``slow``). ``deployment`` narrows a worker target to one MachineDeployment.
    """

    machine: str | None = None
    role: str | None = None
    ordinal: int | None = None
    deployment: str | None = None

    def describe(self) -> str:
        if self.machine:
            return f"machine {self.machine}"
        if self.role is None:
            return "every machine"
        who = f"{self.role}" + (f" of {self.deployment}" if self.deployment else "")
        return f"new {who} #{self.ordinal}" if self.ordinal is not None else f"every {who} machine"


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One injected fault.

    ``when``: ``before`` (active from the start, for existing machines), ``mid`` (active once the
    target exists after the trigger; the default), ``after-reboot`` (the target's next reboot lands
    it in the faulty state, e.g. maintenance) or ``at`` (``at`` simulated seconds after the trigger, or once
    the target exists if later: e.g. a Ready node entering maintenance mode at a chosen moment).
    ``flap``: Ready for ``period / 2``, NotReady for ``period / 2``, repeated for ``duration`` seconds.
    ``recover``: ``after-reboot`` (the first Talos reboot
    heals it), ``after-n-reboots`` (the ``reboots``-th does), ``after-replacement`` (the machine stays
    broken, its replacement is healthy) or ``never`` (replacements of the target inherit the fault).
    """

    kind: str
    target: Target = field(default_factory=Target)
    when: str = "mid"
    recover: str = "after-replacement"
    reboots: int = 1
    factor: float = 1.0
    at: float = 0.0  # when: at — simulated seconds after the trigger
    period: float = 0.0  # flap: one Ready + NotReady cycle, simulated seconds
    duration: float = 0.0  # flap: how long it flaps, simulated seconds

    def describe(self) -> str:
        extra = f" x{self.factor:g}" if self.kind == "slow" else ""
        if self.kind == "flap":
            extra = f" every {self.period:g}s for {self.duration:g}s"
        if self.when == "at":
            return f"{self.kind}{extra} on {self.target.describe()} (at trigger+{self.at:g}s, recover {self.recover})"
        rec = f"after-{self.reboots}-reboots" if self.recover == "after-n-reboots" else self.recover
        return f"{self.kind}{extra} on {self.target.describe()} (when {self.when}, recover {rec})"


@dataclass(frozen=True, kw_only=True)
class Action:
    """A change somebody makes to a Machine at a chosen moment: ``at`` simulated seconds after the trigger (or
    once the target exists, if later), set (or, with a null value, remove) ``annotations`` and ``labels`` —
    e.g. ``cluster.x-k8s.io/skip-remediation`` on the machine a user does not want touched."""

    at: float = 0.0
    target: Target = field(default_factory=Target)
    annotations: Mapping[str, str | None] = field(default_factory=dict)
    labels: Mapping[str, str | None] = field(default_factory=dict)

    def describe(self) -> str:
        keys = [*self.annotations, *self.labels]
        return f"at trigger+{self.at:g}s on {self.target.describe()}: {', '.join(keys)}"


@dataclass(frozen=True, kw_only=True)
class ControllerSpec:
    """How the fake CAPI controllers roll.

    ``order``: ``both-at-once`` (plain CAPI without ClusterClass: TCP and MachineDeployments roll independently)
    or ``control-plane-first`` (as a managed topology does: a MachineDeployment's rollout is held until the
    control plane is rolled out and stable). ``machineset_preflight``: CAPI's MachineSet preflight checks
    (feature gate MachineSetPreflightChecks): a MachineSet creates no new Machine while the control plane is
    not stable (provisioning or upgrading: ``spec.version`` differs from ``status.version`` or it is rolling)
    or while the Machine's Kubernetes minor would be newer than the control plane's (KubernetesVersionSkew).
    """

    order: str = "both-at-once"
    machineset_preflight: bool = False


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A whole simulated cluster story."""

    name: str = "default"
    description: str = ""
    cluster: str = "demo"
    namespace: str = "default"
    capi_line: str = "v1.14"
    cp_replicas: int = 3
    cp_max_surge: int = 0
    kubernetes_version: str = "v1.33.0"
    target_kubernetes_version: str = "v1.33.1"
    talos_version: str = "v1.12.0"
    target_talos_version: str = "v1.12.1"
    deployments: tuple[DeploymentSpec, ...] = (DeploymentSpec(name="workers"),)
    timings: Timings = field(default_factory=Timings)
    faults: tuple[Fault, ...] = ()
    trigger: str = "tcp-version"
    actions: tuple[Action, ...] = ()
    controllers: ControllerSpec = field(default_factory=ControllerSpec)
    # The rollout workflow's parameters for this story (names as in docs/workflow.md, values as strings;
    # durations are wall-clock, as the engine runs in real time: at time_scale 60, "10s" = 10 simulated minutes).
    workflow_parameters: Mapping[str, str] = field(default_factory=dict)

    def with_timings(self, **changes: Any) -> Scenario:
        """A copy with some timings changed (tests scale durations down this way)."""
        return replace(self, timings=replace(self.timings, **changes))

    def validate(self) -> Scenario:
        problems = _problems(self)
        if problems:
            raise ScenarioError(problems)
        return self


def _problems(s: Scenario) -> list[str]:
    p: list[str] = []
    for label, value in (("cluster", s.cluster), ("namespace", s.namespace)):
        if not (0 < len(value) <= (40 if label == "cluster" else 63) and _DNS_LABEL.match(value)):
            p.append(f"{label}: must be a short DNS-1123 label, got {value!r}")
    if s.capi_line not in CAPI_LINES:
        p.append(f"capi_line: must be one of {', '.join(CAPI_LINES)}, got {s.capi_line!r}")
    if s.cp_replicas < 1:
        p.append(f"control_plane.replicas: must be ≥ 1, got {s.cp_replicas}")
    if s.cp_max_surge not in (0, 1):
        p.append(f"control_plane.max_surge: must be 0 or 1, got {s.cp_max_surge}")
    for label, v in (
        ("kubernetes_version", s.kubernetes_version),
        ("target_kubernetes_version", s.target_kubernetes_version),
        ("talos_version", s.talos_version),
        ("target_talos_version", s.target_talos_version),
    ):
        if not _SEMVER.match(v):
            p.append(f"{label}: must look like v1.2.3, got {v!r}")
    if s.trigger not in TRIGGERS:
        p.append(f"trigger: must be one of {', '.join(TRIGGERS)}, got {s.trigger!r}")
    names = [d.name for d in s.deployments]
    if len(set(names)) != len(names):
        p.append(f"deployments: names must be unique, got {names}")
    for d in s.deployments:
        if not _DNS_LABEL.match(d.name):
            p.append(f"deployments.{d.name}: name must be a DNS-1123 label")
        if d.replicas < 0:
            p.append(f"deployments.{d.name}.replicas: must be ≥ 0")
        if d.strategy not in ("RollingUpdate", "OnDelete"):
            p.append(f"deployments.{d.name}.strategy: RollingUpdate or OnDelete, got {d.strategy!r}")
        for knob in ("max_surge", "max_unavailable"):
            value = getattr(d, knob)
            if not _int_or_percent_ok(value):
                p.append(f"deployments.{d.name}.{knob}: a whole number ≥ 0 or a percentage, got {value!r}")
        if _int_or_percent_ok(d.max_surge) and _int_or_percent_ok(d.max_unavailable):
            from sim.capi.rollout import resolve_surge_unavailable

            surge, unavailable = resolve_surge_unavailable(d.max_surge, d.max_unavailable, d.replicas)
            if surge == 0 and unavailable == 0 and d.replicas > 0:
                p.append(f"deployments.{d.name}: max_surge and max_unavailable may not both be 0")
    t = s.timings
    for f in fields(t):
        value = getattr(t, f.name)
        if f.name in ("seed",):
            continue
        if value < 0 or (f.name == "time_scale" and value <= 0):
            p.append(f"timings.{f.name}: must be positive, got {value}")
    if not 0 <= t.jitter < 1:
        p.append(f"timings.jitter: must be in [0, 1), got {t.jitter}")
    for i, fault in enumerate(s.faults):
        p.extend(f"faults[{i}]: {msg}" for msg in _fault_problems(fault, s))
    for i, action in enumerate(s.actions):
        p.extend(f"actions[{i}]: {msg}" for msg in _action_problems(action, s))
    if s.controllers.order not in ORDERS:
        p.append(f"controllers.order: must be one of {', '.join(ORDERS)}, got {s.controllers.order!r}")
    if not isinstance(s.controllers.machineset_preflight, bool):
        p.append(f"controllers.machineset_preflight: must be true or false, got {s.controllers.machineset_preflight!r}")
    for key, value in s.workflow_parameters.items():
        if not (isinstance(key, str) and _PARAM_NAME.match(key)):
            p.append(f"workflow.parameters: {key!r} is not a parameter name (camelCase, e.g. stallTimeout)")
        if not isinstance(value, str):
            p.append(f"workflow.parameters.{key}: must be a string (quote it), got {value!r}")
    return p


def _target_problems(t: Target, s: Scenario) -> list[str]:
    p: list[str] = []
    if t.role is not None and t.role not in ROLES:
        p.append(f"target.role: must be cp or worker, got {t.role!r}")
    if t.machine and (t.role or t.ordinal is not None):
        p.append("target: name a machine OR a role with an ordinal, not both")
    if t.ordinal is not None and (t.role is None or t.ordinal < 0):
        p.append("target.ordinal: needs a role and must be ≥ 0")
    if t.deployment is not None and t.deployment not in {d.name for d in s.deployments}:
        p.append(f"target.deployment: no MachineDeployment named {t.deployment!r}")
    return p


def _action_problems(a: Action, s: Scenario) -> list[str]:
    p = _target_problems(a.target, s)
    if a.at < 0:
        p.append(f"at: must be ≥ 0 (simulated seconds after the trigger), got {a.at}")
    if a.target.machine is None and a.target.ordinal is None:
        p.append("target: an action needs a machine, or a role with an ordinal")
    if not a.annotations and not a.labels:
        p.append("an action needs annotations or labels to set")
    for what, values in (("annotations", a.annotations), ("labels", a.labels)):
        if not isinstance(values, Mapping):
            p.append(f"{what}: must be a mapping of key: value (null removes the key)")
            continue
        for k, v in values.items():
            if not isinstance(k, str) or not k or (v is not None and not isinstance(v, str)):
                p.append(f"{what}.{k}: keys are strings, values strings or null, got {v!r}")
    return p


def _fault_problems(f: Fault, s: Scenario) -> list[str]:
    p: list[str] = []
    if f.kind not in FAULT_KINDS:
        p.append(f"kind: must be one of {', '.join(FAULT_KINDS)}, got {f.kind!r}")
    if f.when not in WHENS:
        p.append(f"when: must be one of {', '.join(WHENS)}, got {f.when!r}")
    if f.recover not in RECOVERIES:
        p.append(f"recover: must be one of {', '.join(RECOVERIES)}, got {f.recover!r}")
    if f.reboots < 1:
        p.append(f"reboots: must be ≥ 1, got {f.reboots}")
    if f.kind == "slow" and f.factor <= 0:
        p.append(f"factor: must be > 0, got {f.factor}")
    if f.kind == "flap" and not 0 < f.period <= f.duration:
        p.append(f"flap: needs 0 < period ≤ duration (simulated seconds), got period {f.period}, "
                 f"duration {f.duration}")
    if f.kind != "flap" and (f.period or f.duration):
        p.append("period/duration: only for a flap fault")
    if f.when == "at" and f.at < 0:
        p.append(f"at: must be ≥ 0 (simulated seconds after the trigger), got {f.at}")
    if f.when != "at" and f.at:
        p.append("at: only with when: at")
    t = f.target
    if f.when == "at" and t.machine is None and t.ordinal is None:
        p.append("when: 'at' needs a machine, or a role with an ordinal")
    p.extend(_target_problems(t, s))
    if t.machine is None and t.role is None and f.kind != "slow":
        p.append(f"target: a {f.kind} fault needs a machine or a role")
    if f.when == "before" and t.machine is None and t.ordinal is not None:
        p.append("when: 'before' applies to existing machines; target them with machine:")
    return p


def _int_or_percent_ok(value: int | str) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return bool(re.fullmatch(r"\d+%", value.strip()))
