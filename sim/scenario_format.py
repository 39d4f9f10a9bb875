"""The scenario file format: the YAML/JSON shape documented in ``sim/README.md`` to and from :class:`Scenario`.

Contract: :func:`from_dict` builds and validates a scenario from plain data (unknown keys are errors) and raises
:class:`~sim.scenario.ScenarioError` naming every problem at once; :func:`to_dict` is its inverse
(``from_dict(to_dict(s)) == s``); :func:`load` is the only I/O (reads one YAML file, or a bundled scenario by
name); :func:`bundled` lists the scenarios shipped under ``sim/scenarios/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import yaml

from sim.scenario import Action, ControllerSpec, DeploymentSpec, Fault, Scenario, ScenarioError, Target, Timings


def from_dict(data: Mapping[str, Any]) -> Scenario:
    """Build and validate a :class:`Scenario` from plain data; unknown keys are errors."""
    problems: list[str] = []
    known = {
        "name", "description", "cluster", "namespace", "capi_line", "control_plane", "deployments",
        "timings", "faults", "trigger", "actions", "controllers", "workflow",
    }
    for key in data:
        if key not in known:
            problems.append(f"{key}: unknown key (known: {', '.join(sorted(known))})")
    cp = dict(data.get("control_plane") or {})
    cp_known = {
        "replicas", "max_surge", "kubernetes_version", "target_kubernetes_version", "talos_version",
        "target_talos_version",
    }
    for key in cp:
        if key not in cp_known:
            problems.append(f"control_plane.{key}: unknown key (known: {', '.join(sorted(cp_known))})")
    kwargs: dict[str, Any] = {
        k: data[k] for k in ("name", "description", "cluster", "namespace", "capi_line", "trigger") if k in data
    }
    if "capi_line" in kwargs:
        kwargs["capi_line"] = str(kwargs["capi_line"])
    if "replicas" in cp:
        kwargs["cp_replicas"] = cp["replicas"]
    if "max_surge" in cp:
        kwargs["cp_max_surge"] = cp["max_surge"]
    for key in ("kubernetes_version", "target_kubernetes_version", "talos_version", "target_talos_version"):
        if key in cp:
            kwargs[key] = str(cp[key])
    if "deployments" in data:
        deployments = []
        for i, raw in enumerate(data["deployments"] or []):
            try:
                deployments.append(DeploymentSpec(**_checked(raw, DeploymentSpec, f"deployments[{i}]")))
            except (TypeError, ScenarioError) as exc:
                problems.extend(_messages(exc))
        kwargs["deployments"] = tuple(deployments)
    if "timings" in data:
        try:
            kwargs["timings"] = Timings(**_checked(data["timings"] or {}, Timings, "timings"))
        except (TypeError, ScenarioError) as exc:
            problems.extend(_messages(exc))
    faults = []
    for i, raw in enumerate(data.get("faults") or []):
        try:
            faults.append(_fault_from_dict(raw, f"faults[{i}]"))
        except (TypeError, ScenarioError) as exc:
            problems.extend(_messages(exc))
    kwargs["faults"] = tuple(faults)
    actions = []
    for i, raw in enumerate(data.get("actions") or []):
        try:
            values = _checked(raw, Action, f"actions[{i}]")
            target = _checked(values.pop("target", None) or {}, Target, f"actions[{i}].target")
            actions.append(Action(target=Target(**target), **values))
        except (TypeError, ScenarioError) as exc:
            problems.extend(_messages(exc))
    kwargs["actions"] = tuple(actions)
    if "controllers" in data:
        try:
            kwargs["controllers"] = ControllerSpec(**_checked(data["controllers"] or {}, ControllerSpec, "controllers"))
        except (TypeError, ScenarioError) as exc:
            problems.extend(_messages(exc))
    if "workflow" in data:
        workflow = data["workflow"] or {}
        if not isinstance(workflow, Mapping) or set(workflow) - {"parameters"}:
            problems.append("workflow: a mapping with one key, parameters")
        else:
            params = workflow.get("parameters") or {}
            if not isinstance(params, Mapping):
                problems.append("workflow.parameters: must be a mapping of name: value")
            else:
                kwargs["workflow_parameters"] = dict(params)
    if problems:
        raise ScenarioError(problems)
    try:
        scenario = Scenario(**kwargs)
    except TypeError as exc:
        raise ScenarioError([str(exc)]) from exc
    return scenario.validate()


def _fault_from_dict(raw: Mapping[str, Any], where: str) -> Fault:
    values = _checked(raw, Fault, where)
    target = values.pop("target", None) or {}
    recover = values.get("recover")
    # `recover: {after-n-reboots: 2}` is accepted as a spelling of recover + reboots.
    if isinstance(recover, Mapping):
        (key, n), *_ = recover.items()
        values["recover"], values["reboots"] = str(key), int(n)
    return Fault(target=Target(**_checked(target, Target, f"{where}.target")), **values)


def _checked(raw: Any, cls: type, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ScenarioError([f"{where}: must be a mapping, got {type(raw).__name__}"])
    allowed = {f.name for f in fields(cls)}
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ScenarioError([f"{where}.{k}: unknown key (known: {', '.join(sorted(allowed))})" for k in unknown])
    return dict(raw)


def _messages(exc: Exception) -> list[str]:
    return exc.problems if isinstance(exc, ScenarioError) else [str(exc)]


def load(path: str | Path) -> Scenario:
    """Read one scenario YAML file; a bare name is looked up among the bundled ``sim/scenarios/*.yaml``."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = BUNDLED_DIR / f"{path}.yaml"
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, Mapping):
        raise ScenarioError([f"{p}: the document must be a mapping"])
    data = dict(data)
    data.setdefault("name", p.stem)
    return from_dict(data)


BUNDLED_DIR = Path(__file__).parent / "scenarios"


def bundled() -> list[str]:
    """Names of the scenarios shipped under ``sim/scenarios/``."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def to_dict(scenario: Scenario) -> dict[str, Any]:
    """The YAML shape :func:`from_dict` reads (``from_dict(to_dict(s)) == s``): to ship a scenario elsewhere,
    e.g. into the simulator's pod as a ConfigMap."""
    s = scenario
    faults = []
    for f in s.faults:
        target = {k: v for k, v in asdict(f.target).items() if v is not None}
        fault: dict[str, Any] = {"kind": f.kind, "when": f.when, "recover": f.recover, "reboots": f.reboots,
                                 "factor": f.factor}
        fault |= {k: getattr(f, k) for k in ("at", "period", "duration") if getattr(f, k)}
        if target:
            fault["target"] = target
        faults.append(fault)
    return {
        "name": s.name, "description": s.description, "cluster": s.cluster, "namespace": s.namespace,
        "capi_line": s.capi_line,
        "control_plane": {"replicas": s.cp_replicas, "max_surge": s.cp_max_surge,
                          "kubernetes_version": s.kubernetes_version,
                          "target_kubernetes_version": s.target_kubernetes_version,
                          "talos_version": s.talos_version, "target_talos_version": s.target_talos_version},
        "deployments": [asdict(d) for d in s.deployments],
        "timings": asdict(s.timings),
        "faults": faults,
        "trigger": s.trigger,
        "actions": [{"at": a.at, "target": {k: v for k, v in asdict(a.target).items() if v is not None},
                     "annotations": dict(a.annotations), "labels": dict(a.labels)} for a in s.actions],
        "controllers": asdict(s.controllers),
        "workflow": {"parameters": dict(s.workflow_parameters)},
    }
