"""The GitOps tree: every overlay builds, RBAC is least-privilege and documented, Events wiring resolves."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from capi_rollout import kustomize
from capi_rollout.domain.params import DEFAULTS
from capi_rollout.userfiles import manifest_objects
from capi_rollout.workflow import template
from tests.product.lua_filter import script_fires

ROOT = Path(__file__).resolve().parents[2]
MANAGEMENT = ROOT / "overlay" / "management"
OVERLAYS = sorted(p.parent for p in MANAGEMENT.glob("*/kustomization.yaml"))
CAPI_GROUPS = {"cluster.x-k8s.io", "controlplane.cluster.x-k8s.io", "bootstrap.cluster.x-k8s.io"}


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build` (the product's one runner of it) with the binary `make tools` builds, else what it finds
    (`kubectl kustomize`); both offline."""
    env = dict(os.environ)
    try:
        from envtest.assets import kustomize as built

        env["KUSTOMIZE"] = str(built())
    except Exception:
        if kustomize.command(env) is None:
            pytest.fail("no kustomize: run `make tools` (or install kubectl)")
    return [obj for _, obj in manifest_objects(kustomize.build(directory, env), f"{directory} (kustomize build)")]


def load(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj in manifest_objects(path.read_text(), str(path))]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_the_expected_overlays_exist() -> None:
    assert [p.name for p in OVERLAYS] == ["argo-workflows", "capi-rollout", "homelab"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_overlay_builds_offline_and_keeps_every_file(overlay: Path) -> None:
    built = kustomize_build(overlay)
    on_disk = [d for f in sorted(overlay.glob("*.yaml")) if f.name not in ("kustomization.yaml", "kustomizeconfig.yaml")
               for d in load(f)]
    key = lambda d: (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, built)) == sorted(map(key, on_disk))


def test_an_images_override_in_an_overlay_rewrites_every_step_image_of_the_template(tmp_path: Path) -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(MANAGEMENT / "argo-workflows", tmp_path)],
        "images": [{"name": "ghcr.io/capi-rollout/capi-rollout", "newName": "registry.example.internal/capi-rollout",
                    "digest": digest}]}))
    (wft,) = by_kind(kustomize_build(tmp_path), "WorkflowTemplate")
    images = [t["script"]["image"] for t in wft["spec"]["templates"] if "script" in t]
    assert images and set(images) == {f"registry.example.internal/capi-rollout@{digest}"}


def test_the_argo_workflows_overlay_ships_the_template_and_its_service_account() -> None:
    built = kustomize_build(MANAGEMENT / "argo-workflows")
    (wt,) = by_kind(built, "WorkflowTemplate")
    assert wt == template.manifest()
    (sa,) = by_kind(built, "ServiceAccount")
    assert (sa["metadata"]["name"], sa["metadata"]["namespace"]) == (wt["spec"]["serviceAccountName"], "argo")


# --- RBAC ---------------------------------------------------------------------------------------------------


def rbac_docs() -> list[dict[str, Any]]:
    return load(MANAGEMENT / "argo-workflows" / "capi-rollout-rbac.yaml")


def rules_bound_to(docs: list[dict[str, Any]], sa: str, binding_kind: str) -> list[dict[str, Any]]:
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    rules: list[dict[str, Any]] = []
    for b in by_kind(docs, binding_kind):
        if any(s["name"] == sa for s in b["subjects"]):
            rules += roles[(b["roleRef"]["kind"], b["roleRef"]["name"])]["rules"]
    return rules


def test_the_runner_never_writes_capi_objects_except_deleting_machines() -> None:
    docs = rbac_docs()
    for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            if CAPI_GROUPS & set(rule["apiGroups"]):
                writes = set(rule["verbs"]) - {"get", "list", "watch"}
                assert writes <= {"delete"}, rule
                if writes:
                    assert rule["resources"] == ["machines"], rule


def test_reads_cover_every_capi_kind_the_rollout_looks_at() -> None:
    rules = rules_bound_to(rbac_docs(), "capi-rollout-runner", "ClusterRoleBinding")
    readable = {
        (g, r)
        for rule in rules
        if {"get", "list", "watch"} <= set(rule["verbs"])
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    for kind in ("clusters", "machinedeployments", "machines", "machinehealthchecks"):
        assert ("cluster.x-k8s.io", kind) in readable
    assert ("cluster.x-k8s.io", "machinesets") not in readable, "never followed, so never granted"
    assert ("controlplane.cluster.x-k8s.io", "taloscontrolplanes") in readable


def test_secrets_and_machine_deletion_are_granted_only_per_cluster_namespace() -> None:
    docs = rbac_docs()
    cluster_wide = rules_bound_to(docs, "capi-rollout-runner", "ClusterRoleBinding")
    assert not [r for r in cluster_wide if "secrets" in r["resources"] or "delete" in r["verbs"]]
    namespaced = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert [b["metadata"]["namespace"] for b in namespaced] == [DEFAULTS["clusterNamespace"]]
    rules = rules_bound_to(docs, "capi-rollout-runner", "RoleBinding")
    secrets = next(r for r in rules if "secrets" in r["resources"])
    assert secrets["verbs"] == ["get"]  # the talosconfig Secret by name; never list (admin kubeconfigs live there)


def test_the_argo_namespace_role_covers_the_ledger_and_the_v4_executor() -> None:
    (role,) = by_kind(rbac_docs(), "Role")
    assert role["metadata"]["namespace"] == "argo"
    verbs = {(r, tuple(rule["verbs"])) for rule in role["rules"] for r in rule["resources"]}
    assert ("workflowtaskresults", ("create", "patch")) in verbs
    ledgers = next(v for r, v in verbs if r == "rolloutledgers")
    assert set(ledgers) == {"get", "create", "update"}  # what the ledger store calls
    assert not [r for r, _ in verbs if r == "configmaps"], "a ConfigMap grant reaches workflow-controller-configmap"


@pytest.mark.parametrize(
    "path", [MANAGEMENT / "argo-workflows" / "capi-rollout-rbac.yaml", MANAGEMENT / "capi-rollout" / "rbac.yaml"]
)
def test_every_rbac_rule_says_why_in_a_comment(path: Path) -> None:
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            assert lines[i - 1].strip().startswith("#"), f"{path.name}:{i + 1}: rule without a reason"


# --- Argo Events --------------------------------------------------------------------------------------------


def events_docs() -> list[dict[str, Any]]:
    return kustomize_build(MANAGEMENT / "capi-rollout")


def gjson_get(data: Any, path: str) -> Any:
    """The subset of gjson paths the Sensor uses: dot-separated keys, ``\\.`` for a literal dot."""
    for key in re.split(r"(?<!\\)\.", path):
        key = key.replace("\\.", ".")
        if not isinstance(data, dict) or key not in data:
            raise KeyError(path)
        data = data[key]
    return data


_RESOURCES = {"TalosControlPlane": "taloscontrolplanes", "MachineDeployment": "machinedeployments"}


def resource_event(kind: str, version: str, old_version: str) -> dict[str, Any]:
    """What a resource EventSource dispatches for an UPDATE (pkg/eventsources/events ResourceEventData)."""

    def obj(v: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"version": v}
        return {
            "kind": kind,
            "metadata": {
                "name": "homelab-workers",
                "namespace": "clusters",
                "labels": {"cluster.x-k8s.io/cluster-name": "homelab"},
            },
            "spec": spec if kind == "TalosControlPlane" else {"template": {"spec": spec}},
        }

    return {"type": "UPDATE", "body": obj(version), "oldBody": obj(old_version), "resource": _RESOURCES[kind]}


def sensor_fires(dep: dict[str, Any], event: dict[str, Any]) -> bool:
    return script_fires(dep["filters"]["script"], event)  # decisions in detail: test_sensor_filter.py


def test_the_event_source_watches_labelled_control_planes_and_machine_deployments_on_update() -> None:
    (es,) = by_kind(events_docs(), "EventSource")
    resources = es["spec"]["resource"]
    assert {(r["group"], r["resource"]) for r in resources.values()} == {
        ("controlplane.cluster.x-k8s.io", "taloscontrolplanes"),
        ("cluster.x-k8s.io", "machinedeployments"),
    }
    for r in resources.values():
        assert r["eventTypes"] == ["UPDATE"]
        assert r["filter"]["labels"] == [{"key": "cluster.x-k8s.io/cluster-name", "operation": "exists", "value": ""}]
        assert r["namespace"] == ""  # every namespace


@pytest.mark.parametrize("kind", ["TalosControlPlane", "MachineDeployment"])
def test_a_spec_change_creates_a_workflow_for_that_cluster_and_a_status_write_does_not(kind: str) -> None:
    docs = events_docs()
    (sensor,) = by_kind(docs, "Sensor")
    (es,) = by_kind(docs, "EventSource")
    deps = {d["name"]: d for d in sensor["spec"]["dependencies"]}
    event_name = kind.lower()
    assert event_name in es["spec"]["resource"]
    (dep,) = [d for d in deps.values() if d["eventName"] == event_name and d["eventSourceName"] == "capi-rollout"]
    (trigger,) = [t["template"] for t in sensor["spec"]["triggers"] if t["template"]["conditions"] == dep["name"]]

    assert not sensor_fires(dep, resource_event(kind, "v1.34.1", "v1.34.1")), "a status write must not trigger"
    event = resource_event(kind, "v1.35.0", "v1.34.1")
    assert sensor_fires(dep, event)
    # A create that fails (API server restarting, webhook timeout) is retried, not dropped.
    (full,) = [t for t in sensor["spec"]["triggers"] if t["template"] is trigger]
    assert full["retryStrategy"]["steps"] >= 3 and full["retryStrategy"]["duration"]

    k8s = trigger["k8s"]
    assert k8s["operation"] == "create" and "argoWorkflow" not in trigger
    wf = k8s["source"]["resource"]
    assert wf["kind"] == "Workflow" and wf["metadata"]["namespace"] == "argo"
    assert wf["metadata"]["generateName"] == "capi-rollout-"
    assert wf["spec"] == {**wf["spec"], "workflowTemplateRef": {"name": template.NAME}}
    params = wf["spec"]["arguments"]["parameters"]
    for p in k8s["parameters"]:
        assert p["src"]["dependencyName"] == dep["name"]
        index = int(re.fullmatch(r"spec\.arguments\.parameters\.(\d+)\.value", p["dest"]).group(1))  # type: ignore[union-attr]
        params[index]["value"] = gjson_get(event, p["src"]["dataKey"])
    assert params == [{"name": "clusterName", "value": "homelab"}, {"name": "clusterNamespace", "value": "clusters"}]
    assert {p["name"] for p in params} <= {a["name"] for a in template.manifest()["spec"]["arguments"]["parameters"]}


def test_events_rbac_matches_the_service_accounts_and_is_minimal() -> None:
    docs = events_docs()
    (es,) = by_kind(docs, "EventSource")
    (sensor,) = by_kind(docs, "Sensor")
    es_rules = rules_bound_to(docs, es["spec"]["template"]["serviceAccountName"], "ClusterRoleBinding")
    assert sorted((r["resources"][0], tuple(r["verbs"])) for r in es_rules) == [
        ("machinedeployments", ("list", "watch")),
        ("taloscontrolplanes", ("list", "watch")),
    ]
    sensor_sa = sensor["spec"]["template"]["serviceAccountName"]
    sensor_rules = rules_bound_to(docs, sensor_sa, "RoleBinding")
    assert {"resources": ["workflows"], "apiGroups": ["argoproj.io"], "verbs": ["create"]} in sensor_rules
    assert all(set(r["verbs"]) <= {"create", "get"} for r in sensor_rules)
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b["subjects"][0]["name"] == sensor_sa]
    assert binding["metadata"]["namespace"] == "argo"


# --- Argo CD and the homelab cluster ------------------------------------------------------------------------


def test_the_argo_cd_application_syncs_the_events_overlay_safely() -> None:
    (app,) = load(ROOT / "apps" / "management" / "capi-rollout.yaml")
    assert app["kind"] == "Application"
    assert (ROOT / app["spec"]["source"]["path"] / "kustomization.yaml").is_file()
    sync = app["spec"]["syncPolicy"]
    assert sync["automated"] == {"prune": True, "selfHeal": True}
    assert "ServerSideApply=true" in sync["syncOptions"]


def test_the_homelab_machine_deployment_replaces_one_machine_at_a_time_without_surge() -> None:
    (md,) = kustomize_build(MANAGEMENT / "homelab")
    assert md["apiVersion"] == "cluster.x-k8s.io/v1beta2"
    assert md["spec"]["rollout"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    labels = md["spec"]["selector"]["matchLabels"]
    assert labels.items() <= md["spec"]["template"]["metadata"]["labels"].items()
    assert md["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"] == md["spec"]["clusterName"]
