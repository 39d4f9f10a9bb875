"""The Sensor fires only for a change that makes CAPI roll Machines: its shipped Lua filter, run on Lua 5.1.

The script under test is the text the kustomize-built Sensor carries (not a copy), run by
:mod:`tests.product.lua_filter` the way Argo Events v1.9.11 runs a dependency ``script`` filter. The events are what the
resource EventSource dispatches for an UPDATE (``ResourceEventData``: type, body, oldBody, group, version,
resource) of the shipped homelab MachineDeployment and a TalosControlPlane as the API server returns them
(metadata with uid, resourceVersion, generation, managedFields; a status).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.product.lua_filter import LuaScriptError, script_fires
from tests.product.test_overlay import MANAGEMENT, by_kind, kustomize_build, load

Obj = dict[str, Any]


def _served(obj: Obj, generation: int) -> Obj:
    out = copy.deepcopy(obj)
    out["metadata"].update(uid="0b7c5a0e-3d0e-4a52-9d0e-5b1f3c1e2a11", resourceVersion="48213", generation=generation,
                           creationTimestamp="2025-05-01T10:00:00Z",
                           managedFields=[{"manager": "argocd-controller", "operation": "Apply",
                                           "apiVersion": out["apiVersion"], "fieldsType": "FieldsV1",
                                           "fieldsV1": {"f:spec": {}}, "time": "2025-05-01T10:00:00Z"}])
    return out


def machine_deployment() -> Obj:
    (md,) = load(MANAGEMENT / "homelab" / "machine-deployment.yaml")
    md = _served(md, 4)
    md["status"] = {"replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "observedGeneration": 4,
                    "phase": "Running", "selector": "cluster.x-k8s.io/cluster-name=homelab"}
    return md


def talos_control_plane() -> Obj:
    tcp = {
        "apiVersion": "controlplane.cluster.x-k8s.io/v1alpha3",
        "kind": "TalosControlPlane",
        "metadata": {"name": "homelab-cp", "namespace": "default",
                     "labels": {"cluster.x-k8s.io/cluster-name": "homelab"}},
        "spec": {
            "replicas": 3,
            "version": "v1.34.1",
            "infrastructureTemplate": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
                                       "kind": "ProxmoxMachineTemplate", "name": "homelab-cp"},
            "controlPlaneConfig": {"controlplane": {
                "generateType": "controlplane", "talosVersion": "v1.11",
                "strategicPatches": ["machine:\n  install:\n    disk: /dev/sda\n"],
                "configPatches": [{"op": "add", "path": "/cluster/allowSchedulingOnControlPlanes", "value": False}],
            }},
            "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        },
        "status": {"replicas": 3, "readyReplicas": 3, "ready": True, "initialized": True, "observedGeneration": 6},
    }
    return _served(tcp, 6)


RESOURCES = {"MachineDeployment": ("cluster.x-k8s.io", "v1beta2", "machinedeployments", machine_deployment),
             "TalosControlPlane": ("controlplane.cluster.x-k8s.io", "v1alpha3", "taloscontrolplanes",
                                   talos_control_plane)}


def update_event(kind: str, change: Callable[[Obj], None]) -> dict[str, Any]:
    group, version, resource, make = RESOURCES[kind]
    old = make()
    new = copy.deepcopy(old)
    change(new)
    new["metadata"]["resourceVersion"] = "48290"
    return {"type": "UPDATE", "body": new, "oldBody": old, "group": group, "version": version, "resource": resource}


def _spec_write(mutate: Callable[[Obj], None]) -> Callable[[Obj], None]:
    def change(obj: Obj) -> None:
        mutate(obj)
        obj["metadata"]["generation"] += 1  # the API server bumps generation on every spec write

    return change


def _delete(obj: Obj) -> None:
    obj["metadata"].update(deletionTimestamp="2025-05-02T08:00:00Z", deletionGracePeriodSeconds=0,
                           finalizers=["cluster.x-k8s.io"])
    obj["metadata"]["generation"] += 1  # with finalizers, setting deletionTimestamp bumps generation too


def _md_tmpl(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def _delete_with_version_change(obj: Obj) -> None:
    _delete(obj)
    _md_tmpl(obj).update(version="v1.35.0")


def _tcp_config(obj: Obj) -> Obj:
    cfg: Obj = obj["spec"]["controlPlaneConfig"]["controlplane"]
    return cfg


CASES: list[tuple[str, str, Callable[[Obj], None], bool]] = [
    ("MachineDeployment", "version bump", _spec_write(lambda o: _md_tmpl(o).update(version="v1.35.0")), True),
    ("MachineDeployment", "new infrastructure template",
     _spec_write(lambda o: _md_tmpl(o)["infrastructureRef"].update(name="homelab-workers-v2")), True),
    ("MachineDeployment", "new bootstrap config template",
     _spec_write(lambda o: _md_tmpl(o)["bootstrap"]["configRef"].update(name="homelab-workers-2")), True),
    ("MachineDeployment", "scale (replicas, e.g. an autoscaler)",
     _spec_write(lambda o: o["spec"].update(replicas=5)), False),
    ("MachineDeployment", "delete (deletionTimestamp, finalizers)", _delete, False),
    ("MachineDeployment", "delete together with a version change",
     _delete_with_version_change, False),
    ("MachineDeployment", "status write", lambda o: o["status"].update(readyReplicas=2, phase="ScalingDown"), False),
    ("MachineDeployment", "label added", lambda o: o["metadata"]["labels"].update(team="infra"), False),
    ("TalosControlPlane", "version bump", _spec_write(lambda o: o["spec"].update(version="v1.35.0")), True),
    ("TalosControlPlane", "new infrastructure template",
     _spec_write(lambda o: o["spec"]["infrastructureTemplate"].update(name="homelab-cp-v2")), True),
    ("TalosControlPlane", "a config patch added",
     _spec_write(lambda o: _tcp_config(o)["configPatches"].append(
         {"op": "add", "path": "/machine/kubelet/extraArgs", "value": {"max-pods": "150"}})), True),
    ("TalosControlPlane", "a strategic patch edited",
     _spec_write(lambda o: _tcp_config(o).update(strategicPatches=["machine:\n  install:\n    disk: /dev/sdb\n"])),
     True),
    ("TalosControlPlane", "scale", _spec_write(lambda o: o["spec"].update(replicas=5)), False),
    ("TalosControlPlane", "rollout strategy edited",
     _spec_write(lambda o: o["spec"]["rolloutStrategy"]["rollingUpdate"].update(maxSurge=0)), False),
    ("TalosControlPlane", "delete (deletionTimestamp, finalizers)", _delete, False),
    ("TalosControlPlane", "status write", lambda o: o["status"].update(readyReplicas=2, ready=False), False),
]


@pytest.fixture(scope="module")
def sensor() -> Obj:
    (found,) = by_kind(kustomize_build(MANAGEMENT / "capi-rollout"), "Sensor")
    return found


def shipped_script(sensor: Obj, kind: str) -> str:
    (dep,) = [d for d in sensor["spec"]["dependencies"] if d["eventName"] == kind.lower()]
    assert set(dep["filters"]) == {"script"}, "the rollout decision lives in the script alone"
    script: str = dep["filters"]["script"]
    return script


def test_both_dependencies_ship_the_same_filter(sensor: Obj) -> None:
    scripts = {d["name"]: d["filters"]["script"] for d in sensor["spec"]["dependencies"]}
    assert len(scripts) == 2 and len(set(scripts.values())) == 1, "one filter, in one text"


@pytest.mark.parametrize(("kind", "what", "change", "fires"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_the_filter_fires_only_for_a_rollout_change(sensor: Obj, kind: str, what: str,
                                                    change: Callable[[Obj], None], fires: bool) -> None:
    assert script_fires(shipped_script(sensor, kind), update_event(kind, change)) is fires, what


def test_an_event_of_another_resource_or_without_old_body_never_fires(sensor: Obj) -> None:
    script = shipped_script(sensor, "MachineDeployment")
    event = update_event("MachineDeployment", _spec_write(lambda o: _md_tmpl(o).update(version="v1.35.0")))
    assert not script_fires(script, {**event, "resource": "machinesets"})
    assert not script_fires(script, {**event, "oldBody": None})


def test_the_harness_runs_lua_51_and_reports_script_errors() -> None:
    assert script_fires("return _VERSION == 'Lua 5.1'", {})
    with pytest.raises(LuaScriptError):
        script_fires("return event.a.b", {})
