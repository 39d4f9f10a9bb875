"""etcd data templates of the local API server: the key follows pins and CRD files, saving is atomic and first-wins,
and pruning removes only templates idle for long and staging copies a killed saver left behind."""

from __future__ import annotations

import os
from pathlib import Path

from envtest import template

DAY = 24 * 3600.0
NOW = 1_800_000_000.0


def _crd_file(root: Path, directory: str, name: str, size: int) -> Path:
    path = root / directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_the_key_changes_with_the_pins_and_the_crd_files(tmp_path: Path) -> None:
    pins = {"KUBERNETES_VERSION": "v1.37.2", "ETCD_VERSION": "v3.7.3"}
    crds = [_crd_file(tmp_path, "cluster-api-v1.14.2", "machines.yaml", 10)]
    base = template.key(pins, crds)
    assert template.key(dict(pins), list(crds)) == base
    assert template.key({**pins, "ETCD_VERSION": "v3.7.4"}, crds) != base
    assert template.key(pins, [_crd_file(tmp_path, "cluster-api-v1.14.3", "machines.yaml", 10)]) != base
    assert template.key(pins, [*crds, _crd_file(tmp_path, "argo", "wf.yaml", 3)]) != base


def test_a_saved_template_loads_and_a_second_saver_keeps_the_first(tmp_path: Path) -> None:
    data = tmp_path / "etcd-data"
    (data / "member").mkdir(parents=True)
    (data / "member" / "snap").write_text("first")
    crds = [template.CrdRef("machines.cluster.x-k8s.io", "cluster.x-k8s.io", "Machine", ("v1beta2",))]
    target = template.directory(tmp_path / "cache", "k1")
    assert template.load(target) is None
    assert template.save(data, crds, target) is True
    (data / "member" / "snap").write_text("second")
    assert template.save(data, crds, target) is False
    assert template.load(target) == crds
    assert (target / "data" / "member" / "snap").read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["k1"], "no staging copy is left behind"


def _template(root: Path, name: str, *, used: float | None) -> Path:
    path = root / name
    (path / "data").mkdir(parents=True)
    (path / "crds.json").write_text("[]")
    if used is not None:
        template.touch(path, now=used)
    return path


def test_prune_removes_templates_idle_for_two_weeks_and_abandoned_staging_copies_only(tmp_path: Path) -> None:
    root = tmp_path / "etcd-templates"
    fresh = _template(root, "fresh", used=NOW - 13 * DAY)
    stale = _template(root, "stale", used=NOW - 15 * DAY)
    current = _template(root, "current", used=NOW - 30 * DAY)
    unstamped = _template(root, "unstamped", used=None)  # from before stamps: its directory's mtime counts
    os.utime(unstamped, (NOW - 20 * DAY, NOW - 20 * DAY))
    saving = root / ".fresh.1234"
    saving.mkdir()
    os.utime(saving, (NOW - 60, NOW - 60))
    abandoned = root / ".stale.5678"
    abandoned.mkdir()
    os.utime(abandoned, (NOW - 2 * 3600, NOW - 2 * 3600))

    removed = template.prune(root, keep=["current"], now=NOW)

    assert sorted(p.name for p in removed) == [".stale.5678", "stale", "unstamped"]
    assert sorted(p.name for p in root.iterdir()) == [".fresh.1234", "current", "fresh"]
    assert fresh.exists() and current.exists() and not stale.exists()


def test_a_use_refreshes_the_stamp_and_pruning_a_missing_root_is_a_no_op(tmp_path: Path) -> None:
    root = tmp_path / "etcd-templates"
    assert template.prune(root, now=NOW) == []
    path = _template(root, "t", used=NOW - 20 * DAY)
    template.touch(path, now=NOW - DAY)
    assert template.last_used(path) == NOW - DAY
    assert template.prune(root, now=NOW) == []
