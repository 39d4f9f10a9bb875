"""Every GitOps manifest under overlay/ and apps/ is accepted by a real API server with the real upstream CRDs.

Each YAML document (kustomize's own kustomization.yaml and kustomizeconfig.yaml excluded) is server-side applied
with ``dryRun=All``: the WorkflowTemplate against the full Argo Workflows v4 CRD schema, Argo Events and Argo CD
objects against theirs, and CAPI objects against both CAPI lines wherever the line serves the document's
apiVersion (1.10 serves only v1beta1; 1.14 serves v1beta2 and v1beta1). The namespaces the documents live in
are created first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from envtest import LocalAPIServer, assets, rest

pytestmark = pytest.mark.apiserver

MANIFEST_ROOTS = [assets.REPO_ROOT / "overlay", assets.REPO_ROOT / "apps"]
CAPI_GROUP_SUFFIX = "cluster.x-k8s.io"


def manifest_documents() -> list[tuple[str, dict[str, Any]]]:
    """(id, document) for every document of every manifest file, in a stable order."""
    found = []
    for root in MANIFEST_ROOTS:
        for path in sorted(root.rglob("*.yaml")) + sorted(root.rglob("*.yml")):
            if path.name in ("kustomization.yaml", "kustomization.yml", "kustomizeconfig.yaml"):  # kustomize's own
                continue
            for index, document in enumerate(rest.load_documents([path])):
                name = document.get("metadata", {}).get("name", "?")
                relative = path.relative_to(assets.REPO_ROOT)
                found.append((f"{relative}#{index}:{document.get('kind')}/{name}", document))
    return found


DOCUMENTS = manifest_documents()


def _is_capi(document: dict[str, Any]) -> bool:
    return str(document["apiVersion"]).split("/")[0].endswith(CAPI_GROUP_SUFFIX)


def _dry_run(server: LocalAPIServer, document: dict[str, Any]) -> dict[str, Any]:
    namespace = document.get("metadata", {}).get("namespace")
    info = server.mapper.resolve(document["apiVersion"], document["kind"])
    if info.namespaced:
        namespace = namespace or "default"
        server.create_namespace(namespace)
    if document.get("kind") == "Namespace":
        # Applying a Namespace for real is harmless and lets later documents live in it.
        return server.apply_manifests([document])[0]
    return server.apply_manifests([document], namespace=namespace, dry_run=True)[0]


def test_the_tree_has_manifests_to_check() -> None:
    kinds = {document["kind"] for _, document in DOCUMENTS}
    assert "WorkflowTemplate" in kinds, sorted(kinds)


@pytest.mark.parametrize("document", [d for _, d in DOCUMENTS], ids=[i for i, _ in DOCUMENTS])
def test_manifest_is_accepted_by_server_side_dry_run(
    document: dict[str, Any], apiserver: LocalAPIServer, request: pytest.FixtureRequest
) -> None:
    answer = _dry_run(apiserver, document)
    assert answer["kind"] == document["kind"]
    assert answer["metadata"]["name"] == document["metadata"]["name"]
    if not _is_capi(document):
        return
    v110: LocalAPIServer = request.getfixturevalue("apiserver_v110")
    try:
        v110.mapper.resolve(document["apiVersion"], document["kind"])
    except LookupError:
        assert document["apiVersion"] == "cluster.x-k8s.io/v1beta2", "only v1beta2 may be missing on CAPI 1.10"
        return
    answer = _dry_run(v110, document)
    assert answer["kind"] == document["kind"]


def test_a_document_the_crd_schema_forbids_is_refused(apiserver: LocalAPIServer) -> None:
    """The dry run is a real check: the MachineDeployment schema refuses a misplaced strategy field."""
    document = next(
        (d for _, d in DOCUMENTS if d["kind"] == "MachineDeployment" and d["apiVersion"].endswith("/v1beta2")), None
    )
    assert document is not None, "no v1beta2 MachineDeployment manifest in the tree"
    broken = {**document, "spec": {**document["spec"], "strategy": {"type": "RollingUpdate"}}}
    with pytest.raises(ApiException) as refused:
        _dry_run(apiserver, broken)
    assert ".spec.strategy: field not declared in schema" in str(refused.value.body)


def test_manifest_ids_are_unique() -> None:
    ids = [i for i, _ in DOCUMENTS]
    assert len(ids) == len(set(ids))
    assert all(Path(assets.REPO_ROOT, i.split("#")[0]).is_file() for i in ids)
