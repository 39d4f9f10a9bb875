"""A cluster stage installs the overlay as users apply it: through its kustomization, not file by file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import harness
from e2e.backends.base import load_manifests


class RecordingBackend:
    """Our own backend's surface that :meth:`harness.Stage.on_cluster` uses; records what it installs."""

    api = None
    namespace = "argo"

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir
        self.installed: list[dict[str, Any]] = []

    def install(self, manifests: list[Any]) -> None:
        self.installed += load_manifests(manifests)

    def apply(self, docs: list[dict[str, Any]]) -> None:
        raise AssertionError("not used by on_cluster")

    def localize(self, doc: dict[str, Any]) -> dict[str, Any]:
        return doc


def test_a_cluster_stage_applies_the_overlay_through_its_kustomization(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overlay = tmp_path / "argo-workflows"
    shutil.copytree(harness.OVERLAY, overlay)
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["images"] = [{"name": "ghcr.io/capi-rollout/capi-rollout", "newName": "registry.example/cr",
                                "newTag": "pinned"}]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    monkeypatch.setattr(harness, "OVERLAY", overlay)
    backend = RecordingBackend(tmp_path)

    harness.Stage.on_cluster(backend, scenario_dir=tmp_path)  # type: ignore[arg-type]

    kinds = sorted(d["kind"] for d in backend.installed)
    assert kinds == sorted(d["kind"] for d in yaml.safe_load_all(harness.overlay_build()))
    assert {"CustomResourceDefinition", "ServiceAccount", "Role", "WorkflowTemplate"} <= set(kinds)
    (template,) = [d for d in backend.installed if d["kind"] == "WorkflowTemplate"]
    images = {t["script"]["image"] for t in template["spec"]["templates"] if "script" in t}
    assert images == {"registry.example/cr:pinned"}  # the kustomization's images: override reached the cluster


def test_a_drill_plays_the_deployed_template_copy_with_the_overlay_rbac_and_ledger_crd(tmp_path: Path) -> None:
    backend = RecordingBackend(tmp_path)
    copy = {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "deployed"},
            "spec": {"templates": []}}
    harness.Stage.on_cluster(backend, scenario_dir=tmp_path, template=copy)  # type: ignore[arg-type]
    assert [d["metadata"]["name"] for d in backend.installed if d["kind"] == "WorkflowTemplate"] == ["deployed"]
    assert any(d["kind"] == "CustomResourceDefinition" for d in backend.installed)
