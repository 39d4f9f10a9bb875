"""capi-rollout lint: the engine's strategy rules applied to GitOps manifests, offline."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from capi_rollout import lint

ROOT = Path(__file__).resolve().parents[2]
HOMELAB = ROOT / "overlay" / "management" / "homelab"

MD_V1BETA2 = """\
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {name: workers, namespace: default}
spec:
  clusterName: c1
  replicas: 3
  rollout:
    strategy:
      type: RollingUpdate
      rollingUpdate: {maxSurge: MAX_SURGE, maxUnavailable: 1}
"""

MD_V1BETA1_DEFAULTS = """\
apiVersion: cluster.x-k8s.io/v1beta1
kind: MachineDeployment
metadata: {name: old-workers, namespace: default}
spec:
  clusterName: c1
  replicas: 2
"""

TCP_NO_SURGE = """\
apiVersion: controlplane.cluster.x-k8s.io/v1alpha3
kind: TalosControlPlane
metadata: {name: c1-cp, namespace: default}
spec:
  replicas: 3
  rolloutStrategy: {type: RollingUpdate}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_the_homelab_overlay_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint.main([str(HOMELAB)]) == 0
    assert "1 rollout object(s), no problems" in capsys.readouterr().out


def test_a_surging_machine_deployment_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path / "md.yaml", MD_V1BETA2.replace("MAX_SURGE", "1"))
    assert lint.main([str(f)]) == 1
    out = capsys.readouterr().out
    assert f"{f}: MachineDeployment default/workers: spec.rollout.strategy.rollingUpdate.maxSurge" in out


def test_the_v1beta1_shape_with_capi_defaults_is_reported_twice(tmp_path: Path) -> None:
    findings, checked = lint.lint([write(tmp_path / "md.yaml", MD_V1BETA1_DEFAULTS)])
    assert checked == 1
    assert [f.message.split(": ")[1].split(" ")[0] for f in findings] == [
        "spec.strategy.rollingUpdate.maxSurge",
        "spec.strategy.rollingUpdate.maxUnavailable",
    ]


def test_a_control_plane_without_max_surge_is_reported(tmp_path: Path) -> None:
    findings, _ = lint.lint([write(tmp_path / "cp.yaml", TCP_NO_SURGE)])
    assert len(findings) == 1 and "maxSurge is not set" in findings[0].message


def test_a_paused_object_is_reported(tmp_path: Path) -> None:
    paused = MD_V1BETA2.replace("MAX_SURGE", "0").replace(
        "metadata: {name: workers, namespace: default}",
        "metadata: {name: workers, namespace: default, annotations: {cluster.x-k8s.io/paused: ''}}",
    )
    cluster = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata: {name: c1}\nspec: {paused: true}\n"
    findings, _ = lint.lint([write(tmp_path / "all.yaml", paused + "---\n" + cluster)])
    assert [("paused" in f.message) for f in findings] == [True, True]


def test_objects_that_are_not_capi_are_ignored_and_finding_no_rollout_object_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {paused: true}\n"
    assert lint.lint([write(tmp_path / "d.yaml", other)]) == ([], 0)
    assert lint.main([str(tmp_path / "d.yaml")]) == 2  # nothing checked is not a pass (a wrong path, most likely)
    assert "no TalosControlPlane or MachineDeployment found" in capsys.readouterr().err


def test_a_v1_list_and_a_plain_directory_are_read(tmp_path: Path) -> None:
    items = MD_V1BETA2.replace("MAX_SURGE", "2")
    as_list = "apiVersion: v1\nkind: List\nitems:\n" + textwrap.indent(items, "  ").replace(
        "  apiVersion", "- apiVersion", 1
    )
    write(tmp_path / "dir" / "a" / "list.yaml", as_list)
    write(tmp_path / "dir" / "cp.yml", TCP_NO_SURGE)
    write(tmp_path / "dir" / "notes.txt", "not yaml: [")
    findings, checked = lint.lint([tmp_path / "dir"])
    assert checked == 2 and len(findings) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [("a: [unclosed", "not valid YAML"), ("- just\n- a list\n", "not a mapping")],
)
def test_unreadable_input_exits_2(
    tmp_path: Path, content: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lint.main([str(write(tmp_path / "bad.yaml", content))]) == 2
    assert expected in capsys.readouterr().err


def test_a_missing_path_exits_2(tmp_path: Path) -> None:
    assert lint.main([str(tmp_path / "absent")]) == 2


def test_a_kustomization_without_any_kustomize_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "k" / "kustomization.yaml", "resources: [md.yaml]\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("KUSTOMIZE", raising=False)
    with pytest.raises(lint.LintInputError, match="no kustomize"):
        lint.lint([tmp_path / "k"])


def kustomize_env() -> dict[str, str]:
    """A real kustomize: the one `make tools` builds, else kubectl's."""
    try:
        from envtest.assets import kustomize

        return {"KUSTOMIZE": str(kustomize())}
    except Exception:  # not built yet: fall back to kubectl kustomize
        if shutil.which("kubectl") is None:
            pytest.fail("no kustomize: run `make tools` (or install kubectl)")
        return {"PATH": str(Path(shutil.which("kubectl") or "").parent)}


def test_a_kustomize_patch_is_applied_before_the_rules_run(tmp_path: Path) -> None:
    write(tmp_path / "k" / "md.yaml", MD_V1BETA2.replace("MAX_SURGE", "0"))
    write(
        tmp_path / "k" / "kustomization.yaml",
        """\
        resources: [md.yaml]
        patches:
          - target: {kind: MachineDeployment, name: workers}
            patch: |-
              - op: replace
                path: /spec/rollout/strategy/rollingUpdate/maxSurge
                value: 1
        """,
    )
    env = kustomize_env()
    assert lint.lint([tmp_path / "k" / "md.yaml"], env) == ([], 1)
    findings, checked = lint.lint([tmp_path / "k"], env)
    assert checked == 1
    assert len(findings) == 1 and "maxSurge 1 resolves to 1" in findings[0].message
    assert findings[0].source.endswith("(kustomize build)")
