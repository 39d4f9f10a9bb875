"""Where a cluster's claim lives: a RolloutLedger named after the cluster, in the Workflows' namespace.

Contract: :class:`ClusterClaim` reads and writes one object, ``capi-rollout-claim-<cluster namespace>-<cluster>``
of kind RolloutLedger (``capi-rollout.io/v1alpha1``, the kind the runner already keeps its ledger in, so the
claim needs no grant that reaches another component's objects), whose ``spec.holder`` names the Workflow rolling
the cluster. It is owned by that Workflow (garbage-collected with it). Creating it is atomic (a lost race answers
409: read again) and taking it over carries the resourceVersion read (409 likewise). It reads the holder's
Workflow by name to learn whether it still runs. Which of these to do is
:func:`capi_rollout.domain.claim.decide_claim`'s choice; this module only stores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from capi_rollout.adapters.kube import KubeError
from capi_rollout.domain.claim import Holder
from capi_rollout.ports import KubePort

LABELS = {"app.kubernetes.io/name": "capi-rollout", "app.kubernetes.io/component": "claim"}


class ClaimUnusable(ValueError):
    """The object at the claim's name was not written by capi-rollout, or names no holder."""


def claim_name(cluster_namespace: str, cluster: str) -> str:
    """``capi-rollout-claim-<namespace>-<cluster>`` made a valid object name."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", f"{cluster_namespace}-{cluster}".lower()).strip("-.") or "cluster"
    return f"capi-rollout-claim-{cleaned}"[:253]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class ClusterClaim:
    def __init__(self, kube: KubePort, *, namespace: str, cluster_namespace: str, cluster: str, me: Holder,
                 owner: Mapping[str, str]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.cluster_namespace = cluster_namespace
        self.cluster = cluster
        self.name = claim_name(cluster_namespace, cluster)
        self.me = me
        self.owner = owner

    @property
    def where(self) -> str:
        return f"RolloutLedger {self.namespace}/{self.name}"

    def read(self) -> tuple[Holder | None, str | None]:
        """The holder named by the claim and the claim's resourceVersion, (None, None) when there is none."""
        found = self.kube.read_ledger(self.namespace, self.name)
        if found is None:
            return None, None
        metadata = _mapping(found.get("metadata"))
        labels = _mapping(metadata.get("labels"))
        holder = _mapping(_mapping(found.get("spec")).get("holder"))
        if any(labels.get(k) != v for k, v in LABELS.items()) or not holder.get("workflow") or not holder.get("uid"):
            raise ClaimUnusable(f"{self.where}: not a claim capi-rollout wrote (labels or spec.holder missing); "
                                "delete it if no rollout of this cluster runs")
        return (Holder(str(holder["workflow"]), str(holder["uid"]), str(holder.get("since") or "")),
                str(metadata.get("resourceVersion", "")))

    def holder_phase(self, holder: Holder) -> str | None:
        """The holder Workflow's ``status.phase`` ("" before it has one); None when it is gone or renamed."""
        wf = self.kube.get_workflow(self.namespace, holder.workflow)
        if wf is None or _mapping(wf.get("metadata")).get("uid") != holder.uid:
            return None
        return str(_mapping(wf.get("status")).get("phase") or "")

    def write(self, resource_version: str | None) -> bool:
        """Create (``resource_version`` None) or take over the claim for this run; False when another run wrote
        it first (read again and decide again)."""
        spec = {"clusterName": self.cluster, "clusterNamespace": self.cluster_namespace,
                "holder": {"workflow": self.me.workflow, "uid": self.me.uid, "since": self.me.since}}
        try:
            self.kube.write_ledger(self.namespace, self.name, spec, resource_version=resource_version,
                                   labels=LABELS, owner=self.owner)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True
