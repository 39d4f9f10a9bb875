"""The scenario format of issue 13: flaps, timed faults and actions, controller order and MachineSet preflight,
workflow parameters — parsing, validation, the pure planners — and the bundled scenarios passing the product's
own preflight strategy rules with their own workflow parameters."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

import pytest
import yaml

from capi_rollout.domain.params import parse_params
from capi_rollout.domain.strategy import check_control_plane_strategy, check_machine_deployment_strategy
from sim.__main__ import main as sim_main
from sim.__main__ import workflow_arguments
from sim.capi import faults, rollout
from sim.capi.memstore import MemoryStore
from sim.scenario import Fault, ScenarioError, Target
from sim.scenario_format import bundled, from_dict, load, to_dict
from sim.simulator import Simulator


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as exc:
        from_dict(data)
    return str(exc.value)


# ------------------------------------------------------------------------------------------ parsing


def test_the_new_keys_parse_and_round_trip() -> None:
    s = from_dict({
        "faults": [{"kind": "flap", "target": {"machine": "demo-cp-1"}, "period": 30, "duration": 300},
                   {"kind": "maintenance", "when": "at", "at": 90, "target": {"role": "worker", "ordinal": 0}}],
        "actions": [{"at": 10, "target": {"machine": "demo-cp-2"},
                     "annotations": {"cluster.x-k8s.io/skip-remediation": ""}, "labels": {"a": None}}],
        "controllers": {"order": "control-plane-first", "machineset_preflight": True},
        "workflow": {"parameters": {"stallTimeout": "5s", "maxRemediations": "1"}},
    })
    assert s.faults[0].period == 30 and s.faults[1].when == "at" and s.faults[1].at == 90
    assert s.actions[0].annotations == {"cluster.x-k8s.io/skip-remediation": ""} and s.actions[0].labels == {"a": None}
    assert s.controllers.order == "control-plane-first" and s.controllers.machineset_preflight
    assert s.workflow_parameters == {"stallTimeout": "5s", "maxRemediations": "1"}
    assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(s)))) == s


@pytest.mark.parametrize(("data", "phrase"), [
    ({"faults": [{"kind": "flap", "target": {"machine": "m"}}]}, "flap: needs 0 < period ≤ duration"),
    ({"faults": [{"kind": "flap", "target": {"machine": "m"}, "period": 60, "duration": 30}]}, "period ≤ duration"),
    ({"faults": [{"kind": "node-not-ready", "target": {"machine": "m"}, "period": 5}]}, "only for a flap"),
    ({"faults": [{"kind": "maintenance", "target": {"machine": "m"}, "at": 5}]}, "at: only with when: at"),
    ({"faults": [{"kind": "maintenance", "when": "at", "at": -1, "target": {"machine": "m"}}]}, "must be ≥ 0"),
    ({"faults": [{"kind": "maintenance", "when": "at", "target": {"role": "cp"}}]}, "when: 'at' needs a machine"),
    ({"actions": [{"at": 1, "target": {"machine": "m"}}]}, "needs annotations or labels"),
    ({"actions": [{"target": {"role": "cp"}, "labels": {"a": "b"}}]}, "needs a machine, or a role with an ordinal"),
    ({"actions": [{"target": {"machine": "m"}, "labels": {"a": 1}}]}, "values strings or null"),
    ({"actions": [{"target": {"machine": "m"}, "labels": {"a": "b"}, "when": "x"}]}, "actions[0].when: unknown key"),
    ({"controllers": {"order": "workers-first"}}, "controllers.order: must be one of"),
    ({"controllers": {"preflight": True}}, "controllers.preflight: unknown key"),
    ({"workflow": {"parameters": {"stallTimeout": 5}}}, "workflow.parameters.stallTimeout: must be a string"),
    ({"workflow": {"params": {}}}, "workflow: a mapping with one key, parameters"),
])
def test_bad_new_keys_are_named(data: dict[str, Any], phrase: str) -> None:
    assert phrase in problems(data)


# ------------------------------------------------------------------------------------------ planners


def test_a_flap_is_ready_then_not_ready_each_half_period_and_ends_after_its_duration() -> None:
    f = Fault(kind="flap", target=Target(machine="m"), period=40, duration=130)
    windows = [(w.start, w.end) for w in faults.flap_windows(f, 100.0)]
    assert windows == [(120.0, 140.0), (160.0, 180.0), (200.0, 220.0)]
    # A reboot that heals it (recover: after-reboot) cuts it short.
    assert [(w.start, w.end) for w in faults.flap_windows(f, 100.0, 170.0)] == [(120.0, 140.0), (160.0, 170.0)]


def test_a_flap_becomes_not_ready_windows_in_the_machine_facts() -> None:
    f = Fault(kind="flap", target=Target(machine="m"), period=10, duration=20, when="mid")
    facts = faults.facts(created_at=0.0, jitter=1.0, armed=[faults.Armed(f, 50.0)], reboots=[], reboot_duration=5)
    assert [(w.start, w.end) for w in facts.unready] == [(55.0, 60.0), (65.0, 70.0)]


def test_machineset_preflight_blocks_while_the_control_plane_upgrades_or_the_skew_is_wrong() -> None:
    assert not rollout.control_plane_stable(spec_version="v1.34.0", status_version="v1.33.0", rolling=False)
    assert not rollout.control_plane_stable(spec_version="v1.34.0", status_version="v1.34.0", rolling=True)
    assert not rollout.control_plane_stable(spec_version="v1.34.0", status_version=None, rolling=False)
    assert rollout.control_plane_stable(spec_version="v1.34.0", status_version="v1.34.0", rolling=False)
    blocked = rollout.machineset_preflight(cp_stable=False, cp_version="v1.33.0", machine_version="v1.33.0")
    assert blocked is not None and blocked.startswith("ControlPlaneIsStable")
    skew = rollout.machineset_preflight(cp_stable=True, cp_version="v1.33.0", machine_version="v1.34.0")
    assert skew is not None and skew.startswith("KubernetesVersionSkew")
    assert rollout.machineset_preflight(cp_stable=True, cp_version="v1.34.0", machine_version="v1.34.0") is None


# ------------------------------------------------------------------------------------------ bundled stories


@pytest.mark.parametrize("name", bundled())
def test_every_bundled_scenario_passes_the_products_strategy_preflight(name: str) -> None:
    s = load(name)
    sim = Simulator(None, s, store=MemoryStore(s.namespace), talos=False)
    with sim:
        tcps = sim.store.list("taloscontrolplanes")
        mds = sim.store.list("machinedeployments")
    assert tcps and mds
    found = [p for t in tcps for p in check_control_plane_strategy(t)]
    found += [p for md in mds for p in check_machine_deployment_strategy(md)]
    assert found == []


@pytest.mark.parametrize("name", bundled())
def test_every_bundled_scenarios_workflow_parameters_are_valid_for_the_product(name: str) -> None:
    s = load(name)
    words = shlex.split(" ".join(workflow_arguments(s)))  # as a shell hands them to capi-rollout run
    raw = {flag.removeprefix("--"): value for flag, value in zip(words[::2], words[1::2], strict=True)}
    params = parse_params(raw)
    assert params.cluster_name == s.cluster and params.cluster_namespace == s.namespace


def test_sim_params_prints_flags_for_capi_rollout_run_and_for_argo(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["params", "happy", "--namespace", "drill-1"]) == 0
    flags = capsys.readouterr().out.split()
    assert flags[:4] == ["--clusterName", "demo", "--clusterNamespace", "drill-1"]
    assert flags[flags.index("--stallTimeout") + 1] == load("happy").workflow_parameters["stallTimeout"]
    assert sim_main(["params", "happy", "--format", "argo"]) == 0
    argo = capsys.readouterr().out.split()
    assert argo[:4] == ["-p", "clusterName=demo", "-p", "clusterNamespace=sim-demo"]
    assert sim_main(["params", "no-such-scenario"]) == 2


def test_the_e2e_harness_plays_a_scenarios_own_parameters_with_its_scaled_durations() -> None:
    from e2e.harness import SCALED_PARAMETERS, parameters, scaled

    s = dataclasses.replace(load("skip-remediation"), workflow_parameters={"maxRemediations": "1",
                                                                          "stallTimeout": "1h"})
    played = parameters(scaled(s))
    assert played["maxRemediations"] == "1"  # the story's own
    assert played["stallTimeout"] == SCALED_PARAMETERS["stallTimeout"]  # its durations fit its own timings only
    assert parameters(s)["stallTimeout"] == "1h"  # unscaled: the scenario's own durations
    assert parameters(scaled(s), maxRemediations="0")["maxRemediations"] == "0"
