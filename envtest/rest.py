"""Raw Kubernetes REST calls over a ``kubernetes.client.ApiClient``: JSON requests, resource discovery and
server-side apply of arbitrary manifests (CRDs and custom resources included).

Contract: every function takes the ApiClient as a parameter and performs only the HTTP calls it names; errors
surface as ``kubernetes.client.exceptions.ApiException``. Documents are plain dicts (as loaded from YAML).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from capi_rollout.userfiles import manifest_objects

FIELD_MANAGER = "capi-rollout-envtest"
APPLY_PATCH = "application/apply-patch+yaml"
REQUEST_TIMEOUT_SECONDS = 30.0

Manifest = Path | str | dict[str, Any]


def request_json(
    api_client: ApiClient,
    method: str,
    path: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> Any:
    """Send one request and return the decoded JSON body; raise ``ApiException`` on a non-2xx status."""
    request = api_client.param_serialize(
        method,
        path,
        query_params=list(query),
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*request, _request_timeout=timeout)
    cast(Any, response).read()
    text = response.data.decode("utf-8") if response.data else ""
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=text, data=None)
    return json.loads(text) if text else None


@dataclass(frozen=True)
class ResourceInfo:
    """Where a kind lives in the REST API."""

    group_version: str
    plural: str
    namespaced: bool

    def collection_path(self, namespace: str | None) -> str:
        prefix = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural}.{self.group_version} is namespaced but no namespace was given")
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"


class ResourceMapper:
    """Maps (apiVersion, kind) to a REST resource by discovery; a miss re-reads the group version once."""

    def __init__(self, api_client: ApiClient) -> None:
        self._api_client = api_client
        self._cache: dict[str, dict[str, ResourceInfo]] = {}

    def _discover(self, group_version: str) -> dict[str, ResourceInfo]:
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            listing = request_json(self._api_client, "GET", path)
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        found = {
            item["kind"]: ResourceInfo(group_version, item["name"], bool(item["namespaced"]))
            for item in listing.get("resources", [])
            if "/" not in item["name"]
        }
        self._cache[group_version] = found
        return found

    def resolve(self, api_version: str, kind: str) -> ResourceInfo:
        known = self._cache.get(api_version)
        if known is None or kind not in known:
            known = self._discover(api_version)
        if kind not in known:
            raise LookupError(f"the server serves no kind {kind!r} in {api_version!r}")
        return known[kind]


def load_documents(manifests: Iterable[Manifest]) -> list[dict[str, Any]]:
    """Documents from YAML/JSON files (multi-document, ``kind: *List`` flattened), paths as strings, or dicts;
    empty documents dropped. Files are read by the product's one manifest reader
    (:func:`capi_rollout.userfiles.manifest_objects`): a document that is not a mapping is an ``InputError``."""
    documents: list[dict[str, Any]] = []
    for item in manifests:
        if isinstance(item, dict):
            documents.append(item)
            continue
        path = Path(item)
        documents.extend(document for _, document in manifest_objects(path.read_text(encoding="utf-8"), str(path)))
    return documents


def apply_document(
    api_client: ApiClient,
    document: dict[str, Any],
    *,
    mapper: ResourceMapper,
    namespace: str | None = None,
    dry_run: bool = False,
    field_manager: str = FIELD_MANAGER,
) -> dict[str, Any]:
    """Server-side apply one document (forcing conflicts, strict field validation); returns the server's answer.

    ``namespace`` fills in a namespaced document that names none.
    """
    info = mapper.resolve(document["apiVersion"], document["kind"])
    name = document["metadata"]["name"]
    target_namespace = (document["metadata"].get("namespace") or namespace) if info.namespaced else None
    query = [("fieldManager", field_manager), ("force", "true"), ("fieldValidation", "Strict")]
    if dry_run:
        query.append(("dryRun", "All"))
    result: dict[str, Any] = request_json(
        api_client,
        "PATCH",
        f"{info.collection_path(target_namespace)}/{name}",
        query=query,
        body=document,
        content_type=APPLY_PATCH,
    )
    return result
