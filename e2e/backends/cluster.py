"""The one way the cluster backends talk to a cluster: REST over the kubeconfig's client; kubectl for user commands.

Contract: a :class:`ClusterClient` is a kubeconfig. Every object read and write goes over REST through one
``kubernetes.client.ApiClient`` (:attr:`ClusterClient.api`, made on first use; also what scenarios get as their
admin client), with kinds resolved by discovery (``envtest.rest``):

* :meth:`~ClusterClient.apply`: server-side apply, in order, as ``kubectl apply --server-side --force-conflicts``
  would (field manager ``capi-rollout-e2e``; a namespaced document without namespace goes to ``namespace``);
* :meth:`~ClusterClient.create`, :meth:`~ClusterClient.get`, :meth:`~ClusterClient.list`: plain dicts;
* :meth:`~ClusterClient.delete` (absent is fine), :meth:`~ClusterClient.evict`, :meth:`~ClusterClient.log`.

Errors are ``kubernetes.client.exceptions.ApiException``, and ``LookupError`` for a kind the server does not serve.
:meth:`~ClusterClient.kubectl` runs the commands a user types to install or to poke a process, and nothing else:
``kubectl apply --server-side -f`` of the Argo CRDs (as Argo's install does), ``kubectl wait --for=...``,
``kubectl rollout status`` and ``kubectl exec`` (``RuntimeError`` when it fails).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

FIELD_MANAGER = "capi-rollout-e2e"
ObjectRef = tuple[str, str, str | None, str]  # apiVersion, kind, namespace (None: cluster-scoped), name


class ClusterClient:
    """One cluster, by its kubeconfig."""

    def __init__(self, kubeconfig: Path, *, kubectl: Sequence[str] = ("kubectl",)) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.kubectl_argv = list(kubectl)
        self._api: Any = None
        self._mapper: Any = None

    @property
    def api(self) -> Any:
        """The ``kubernetes.client.ApiClient`` of the kubeconfig (made on first use)."""
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(str(self.kubeconfig))
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
            self._mapper = None

    # -- REST -------------------------------------------------------------------------------------------------

    def _path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
        from envtest import rest

        if self._mapper is None:
            self._mapper = rest.ResourceMapper(self.api)
        collection = str(self._mapper.resolve(api_version, kind).collection_path(namespace))
        return f"{collection}/{name}" if name is not None else collection

    def _json(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: Any = None) -> Any:
        from envtest import rest

        return rest.request_json(self.api, method, path, query=query, body=body)

    def apply(self, docs: Iterable[Mapping[str, Any]], *, namespace: str | None = None) -> None:
        from envtest import rest

        if self._mapper is None:
            self._mapper = rest.ResourceMapper(self.api)
        for doc in docs:
            rest.apply_document(self.api, dict(doc), mapper=self._mapper, namespace=namespace,
                                field_manager=FIELD_MANAGER)

    def create(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        namespace = (doc.get("metadata") or {}).get("namespace")
        path = self._path(str(doc["apiVersion"]), str(doc["kind"]), namespace)
        return cast(dict[str, Any], self._json("POST", path, body=dict(doc)))

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", self._path(api_version, kind, namespace, name)))

    def list(self, api_version: str, kind: str, namespace: str | None = None, *, labels: str | None = None,
             fields: str | None = None) -> list[dict[str, Any]]:
        query = [*((("labelSelector", labels),) if labels else ()), *((("fieldSelector", fields),) if fields else ())]
        found = self._json("GET", self._path(api_version, kind, namespace), query=query)
        return cast(list[dict[str, Any]], found.get("items") or [])

    def delete(self, ref: ObjectRef, *, grace_seconds: int | None = None) -> None:
        """Delete one object (background propagation); absent is fine."""
        from kubernetes.client.exceptions import ApiException

        api_version, kind, namespace, name = ref
        query = [("propagationPolicy", "Background")]
        if grace_seconds is not None:
            query.append(("gracePeriodSeconds", str(grace_seconds)))
        try:
            self._json("DELETE", self._path(api_version, kind, namespace, name), query=query)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def evict(self, namespace: str, pod: str) -> None:
        """Evict a pod through the Eviction API (graceful, as a drain does)."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}
        self._json("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction", body=body)

    def log(self, namespace: str, pod: str, *, container: str, tail: int | None = None) -> str:
        """A container's log (``tail``: its last lines only)."""
        from kubernetes.client.exceptions import ApiException

        query = [("container", container), *((("tailLines", str(tail)),) if tail is not None else ())]
        request = self.api.param_serialize("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                                           query_params=query, header_params={"Accept": "*/*"},
                                           auth_settings=["BearerToken"])
        response = self.api.call_api(*request, _request_timeout=60)
        response.read()
        text: str = response.data.decode("utf-8", errors="replace") if response.data else ""
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return text

    # -- user commands -----------------------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        done = subprocess.run([*self.kubectl_argv, *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout
