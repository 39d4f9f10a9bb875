"""The RBAC and the ledger CRD are rendered from Python (``capi_rollout.workflow.rbac``) and committed;
``render --cluster`` narrows the runner's Secret reads to named clusters with ``resourceNames``.

What the rendered rules allow on a real API server with real tokens is tests/product/test_rbac.py's part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from capi_rollout.cli import main
from capi_rollout.workflow import rbac, render

ROOT = Path(__file__).resolve().parents[2]


def _rules(docs: list[dict[str, Any]], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [r for d in docs if d["kind"] == kind and d["metadata"].get("namespace") == namespace
            for r in d["rules"]]


@pytest.mark.parametrize("relative", list(render.rendered_files()), ids=str)
def test_every_generated_file_is_committed_as_rendered(relative: Path) -> None:
    assert (ROOT / relative).read_text(encoding="utf-8") == render.rendered_files()[relative]


def test_the_yaml_is_the_documents() -> None:
    docs = rbac.runner_documents()
    assert list(yaml.safe_load_all(rbac.to_yaml(docs))) == rbac.bodies(docs)


def test_no_runner_rule_lists_or_watches_secrets_or_touches_configmaps() -> None:
    for docs in (rbac.bodies(rbac.runner_documents()), rbac.bodies(rbac.runner_documents([("default", "a")]))):
        for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
            for rule in role["rules"]:
                if "secrets" in rule["resources"]:
                    assert rule["verbs"] == ["get"], rule
                assert "configmaps" not in rule["resources"], rule


def test_render_cluster_prints_one_narrowed_role_per_cluster_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--cluster", "default/homelab", "--cluster", "fleet/prod-1", "--cluster", "fleet/prod-2",
                 "--cluster", "lab"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert not [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == rbac.CLUSTER_NAMESPACE_ROLE]
    secrets = {ns: next(r for r in _rules(docs, "Role", ns) if "secrets" in r["resources"])
               for ns in ("default", "fleet")}
    assert secrets["default"] == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                                  "resourceNames": ["homelab-talosconfig", "lab-talosconfig"]}
    assert secrets["fleet"]["resourceNames"] == ["prod-1-talosconfig", "prod-2-talosconfig"]
    bindings = {(d["metadata"]["namespace"], d["roleRef"]["kind"], d["roleRef"]["name"])
                for d in docs if d["kind"] == "RoleBinding"}
    assert {("default", "Role", rbac.RUNNER), ("fleet", "Role", rbac.RUNNER), ("argo", "Role", rbac.RUNNER)} == bindings
    # Everything else is the shipped RBAC's: the same CAPI reads, the same argo Role.
    shipped = rbac.bodies(rbac.runner_documents())
    assert _rules(docs, "Role", "argo") == _rules(shipped, "Role", "argo")
    assert _rules(docs, "ClusterRole") == [r for d in shipped if d["kind"] == "ClusterRole"
                                           and d["metadata"]["name"] == rbac.READ_CAPI_ROLE for r in d["rules"]]


@pytest.mark.parametrize("bad", ["", "/x", "ns/", "Fleet/prod", "ns/Prod", "a/b/c", "ns/-x", "n s/x"])
def test_render_cluster_refuses_a_malformed_name_in_one_line(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--cluster", bad]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "expected NAMESPACE/NAME or NAME" in err


def test_render_cluster_cannot_be_combined_with_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--check", "--cluster", "x"]) == 2
    assert "--check" in capsys.readouterr().err


def test_the_sensor_may_create_workflows_and_nothing_else() -> None:
    docs = rbac.bodies(rbac.events_documents())
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "argo"
    assert role["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create"]}]
    assert not [d for d in docs if d["kind"] in ("ClusterRoleBinding",) and rbac.SENSOR_SA in str(d["subjects"])]


def test_the_ledger_crd_is_namespaced_and_holds_the_ledger_as_a_string() -> None:
    crd = rbac.ledger_crd().body
    assert crd["metadata"]["name"] == "rolloutledgers.capi-rollout.io" and crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["ledger"]["type"] == "string"
    assert spec["properties"]["holder"]["required"] == ["workflow", "uid"]  # a cluster's claim
    (rule,) = spec["x-kubernetes-validations"]
    assert rule["rule"] == "has(self.ledger) != has(self.holder)"  # one or the other, never both or neither
