"""``plan`` and ``report`` find the run to look at: a Workflow's RolloutLedger, else the cluster's newest."""

from __future__ import annotations

from typing import Any

import pytest

from capi_rollout.domain.ledger import Ledger, LedgerError
from capi_rollout.ledger_store import LABELS, find_ledger


def _obj(name: str, created: str, *, cluster: str = "homelab", ns: str = "default", labels: Any = None,
         ledger: str | None = None) -> dict[str, Any]:
    text = ledger if ledger is not None else Ledger(cluster=cluster, namespace=ns).to_json()
    return {"metadata": {"name": name, "namespace": "argo", "creationTimestamp": created,
                         "labels": dict(LABELS) if labels is None else labels},
            "spec": {"clusterName": cluster, "clusterNamespace": ns, "ledger": text}}


class FakeKube:
    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = list(objs)
        self.asked: list[str | None] = []

    def list_ledgers(self, namespace: str | None = None) -> list[dict[str, Any]]:
        self.asked.append(namespace)
        return self.objs


def test_the_newest_ledger_of_the_cluster_wins_and_claims_and_other_clusters_do_not_count() -> None:
    kube = FakeKube(
        _obj("capi-rollout-capi-rollout-old", "2026-01-01T08:00:00Z"),
        _obj("capi-rollout-capi-rollout-new", "2026-01-01T09:00:00Z"),
        _obj("capi-rollout-claim-default-homelab", "2026-01-01T10:00:00Z",
             labels={"app.kubernetes.io/name": "capi-rollout", "app.kubernetes.io/component": "claim"}),
        _obj("capi-rollout-capi-rollout-other", "2026-01-01T11:00:00Z", cluster="other"),
    )
    found = find_ledger(kube, cluster="homelab", cluster_namespace="default")  # type: ignore[arg-type]
    assert found is not None and found[0] == "argo/capi-rollout-capi-rollout-new"
    assert kube.asked == [None]  # all namespaces unless told


def test_a_named_workflow_is_read_by_its_ledger_name_and_must_be_this_clusters() -> None:
    kube = FakeKube(_obj("capi-rollout-capi-rollout-old", "2026-01-01T08:00:00Z"),
                    _obj("capi-rollout-capi-rollout-new", "2026-01-01T09:00:00Z"),
                    _obj("capi-rollout-capi-rollout-theirs", "2026-01-01T09:30:00Z", cluster="other"))
    found = find_ledger(kube, cluster="homelab", cluster_namespace="default",  # type: ignore[arg-type]
                        workflow="capi-rollout-old", namespace="argo")
    assert found is not None and found[0] == "argo/capi-rollout-capi-rollout-old" and kube.asked == ["argo"]
    assert find_ledger(kube, cluster="homelab", cluster_namespace="default",  # type: ignore[arg-type]
                       workflow="capi-rollout-gone") is None
    with pytest.raises(LedgerError, match="records cluster default/other"):
        find_ledger(kube, cluster="homelab", cluster_namespace="default",  # type: ignore[arg-type]
                    workflow="capi-rollout-theirs")


def test_a_garbled_ledger_is_an_error_naming_the_object() -> None:
    kube = FakeKube(_obj("capi-rollout-capi-rollout-bad", "2026-01-01T08:00:00Z", ledger="{not json"))
    with pytest.raises(LedgerError, match="RolloutLedger argo/capi-rollout-capi-rollout-bad: not JSON"):
        find_ledger(kube, cluster="homelab", cluster_namespace="default")  # type: ignore[arg-type]
