"""resolve reads the talosconfig Secret by name and trusts it only when its cluster-name label names the cluster.

The runner may not list Secrets (RBAC: ``get`` only, optionally narrowed with ``resourceNames``), so resolve gets
``<clusterName>-talosconfig`` by name; the label check keeps the rule that the Secret belongs to the cluster.
"""

from __future__ import annotations

from typing import Any

import pytest

from capi_rollout.domain.resolve import ResolveError, resolve_targets, talosconfig_secret_name

LABEL = "cluster.x-k8s.io/cluster-name"


def _secret(labels: dict[str, str] | None, data: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "homelab-talosconfig", "namespace": "default"}
    if labels is not None:
        meta["labels"] = labels
    return {"metadata": meta, "data": {"talosconfig": "Y29udGV4dDogaG9tZWxhYgo="} if data is None else data}


def _resolve(secret: dict[str, Any] | None) -> Any:
    cluster = {"metadata": {"name": "homelab", "namespace": "default"},
               "spec": {"controlPlaneRef": {"kind": "TalosControlPlane", "name": "homelab-cp"}}}
    return resolve_targets(cluster_name="homelab", namespace="default", capi_version="v1beta2", cluster=cluster,
                           control_planes=[{"metadata": {"name": "homelab-cp"}}],
                           deployments=[{"metadata": {"name": "homelab-workers"}}], talosconfig=secret)


def test_the_secret_name_is_the_bootstrap_providers() -> None:
    assert talosconfig_secret_name("homelab") == "homelab-talosconfig"


def test_a_secret_labelled_for_the_cluster_resolves() -> None:
    assert _resolve(_secret({LABEL: "homelab"})).talosconfig_secret == "homelab-talosconfig"


@pytest.mark.parametrize(("secret", "message"), [
    (None, "Secret default/homelab-talosconfig not found (the Talos bootstrap provider writes it"),
    (_secret(None), f"Secret default/homelab-talosconfig has no label {LABEL}"),
    (_secret({"app": "x"}), f"Secret default/homelab-talosconfig has no label {LABEL}"),
    (_secret({LABEL: "other"}), f"Secret default/homelab-talosconfig carries {LABEL}=other, not homelab"),
    (_secret({LABEL: ""}), f"Secret default/homelab-talosconfig carries {LABEL}=, not homelab"),
    (_secret({LABEL: "homelab"}, data={}), "Secret default/homelab-talosconfig has no data key 'talosconfig'"),
])
def test_a_missing_unlabelled_or_foreign_secret_is_refused_with_the_reason(secret: Any, message: str) -> None:
    with pytest.raises(ResolveError) as err:
        _resolve(secret)
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_a_foreign_secret_says_it_is_not_used() -> None:
    with pytest.raises(ResolveError) as err:
        _resolve(_secret({LABEL: "other"}))
    assert "refusing to use it" in str(err.value)
