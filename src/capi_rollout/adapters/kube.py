"""The Kubernetes adapter: the only code that talks to the management cluster's API server.

Contract:

* :func:`connect` builds an API client from a kubeconfig path, ``$KUBECONFIG``/``~/.kube/config`` or the
  in-cluster service account, in that order of preference.
* :class:`Kube` reads CAPI objects as plain dicts (the API server's JSON), choosing the CAPI API version the
  server serves: ``v1beta2`` when served (CAPI ≥ 1.11), else ``v1beta1`` (CAPI 1.10). Core objects (Secrets,
  Events), the ledger and discovery go as raw JSON too (:meth:`Kube.request`): the client's typed core API
  costs a step pod over a second of imports and buys nothing here.
* Its only writes are: delete one Machine (with a UID precondition), create an Event, and create/replace the
  run's ``RolloutLedger`` (``capi-rollout.io``). It never patches or updates CAPI objects. It reads one Secret by
  name and never lists Secrets.
* Transient failures (connection errors, 429, 5xx) are retried with capped exponential
  backoff for up to ``retry_for`` seconds; each retry is logged with how long it will keep trying. A failed
  verification of the API server's TLS certificate is not transient: it raises :class:`KubeError` at once,
  with the x509 reason. Other API errors raise :class:`KubeError` with the verb, the resource and the
  server's message.
* Watching lives in :mod:`capi_rollout.adapters.informer` (an informer-style cache of one cluster's objects,
  which also wakes the runner's loop on a change); this module makes only one-off requests.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

CAPI_GROUP = "cluster.x-k8s.io"
TCP_GROUP, TCP_VERSION = "controlplane.cluster.x-k8s.io", "v1alpha3"
SUPPORTED_CAPI_VERSIONS = ("v1beta2", "v1beta1")
# The remediation ledger's own kind (its CRD: overlay/management/argo-workflows/capi-rollout-ledger-crd.yaml).
LEDGER_GROUP, LEDGER_VERSION = "capi-rollout.io", "v1alpha1"
LEDGER_KIND, LEDGER_PLURAL = "RolloutLedger", "rolloutledgers"
LEDGER_API_VERSION = f"{LEDGER_GROUP}/{LEDGER_VERSION}"
REQUEST_TIMEOUT_SECONDS = 30.0

T = TypeVar("T")


class KubeError(RuntimeError):
    """A non-transient API error; the message names the verb, the resource and the server's reason."""

    def __init__(self, what: str, exc: ApiException | None = None, detail: str = "") -> None:
        self.status = exc.status if exc is not None else None
        reason = detail
        if exc is not None:
            try:
                reason = json.loads(exc.body or "{}").get("message") or exc.reason or ""
            except (ValueError, AttributeError):
                reason = str(exc.reason or "")
        super().__init__(f"{what}: {reason}" + (f" (HTTP {exc.status})" if exc is not None else ""))


def connect(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig``, else ``$KUBECONFIG``/default kubeconfig, else in-cluster."""
    cfg = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        config.load_kube_config(config_file=path, client_configuration=cfg)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(client_configuration=cfg)
    cfg.retries = False  # we retry ourselves, with backoff, and log it
    return client.ApiClient(cfg)


_VERIFY_FAILED = re.compile(r"certificate verify failed:?\s*([^()\n]*)", re.IGNORECASE)


def tls_verification_failure(exc: BaseException) -> str | None:
    """The x509 reason ("self-signed certificate", "Hostname mismatch ...") when ``exc`` is a failed verification of
    the API server's certificate, else None. The Kubernetes client turns ``urllib3``'s SSLError into an
    ``ApiException`` with status 0 and the text only, so both the exception chain and the text are read."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or current).strip()
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            current = reason  # urllib3's MaxRetryError / SSLError keep the cause here
            continue
        current = current.__cause__ or current.__context__
    text = str(exc.reason) if isinstance(exc, ApiException) else str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower():
        m = _VERIFY_FAILED.search(text)
        return (m.group(1).strip() if m else "") or "certificate verify failed"
    return None


def _transient(exc: BaseException) -> bool:
    if tls_verification_failure(exc) is not None:
        return False  # an untrusted server stays untrusted: retrying cannot help
    if isinstance(exc, ApiException):
        return exc.status in (0, 408, 429, 500, 502, 503, 504) or exc.status is None
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError))


@dataclass
class Backoff:
    """Capped exponential backoff; ``sleep`` is injectable so tests run on a fake clock."""

    initial: float = 0.2
    cap: float = 5.0
    retry_for: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def run(self, what: str, fn: Callable[[], T]) -> T:
        deadline = self.clock() + self.retry_for
        delay = self.initial
        while True:
            try:
                return fn()
            except Exception as exc:
                if (x509 := tls_verification_failure(exc)) is not None:
                    raise KubeError(what, detail=(
                        f"the API server's TLS certificate failed verification ({x509}); not retried: check the "
                        "server address and certificate-authority in the kubeconfig")) from exc
                if not _transient(exc) or self.clock() + delay > deadline:
                    if isinstance(exc, ApiException) and not (exc.status == 0 and _transient(exc)):
                        raise KubeError(what, exc) from exc
                    if _transient(exc):
                        detail = f"API server unreachable for {_seconds(self.retry_for)}: {_short(exc)}"
                        raise KubeError(what, detail=detail) from exc
                    raise
                left = max(deadline - self.clock(), 0.0)
                log.warning("%s: transient error (%s); retrying in %.1fs, for up to %s more before giving up",
                            what, _short(exc), delay, _seconds(left))
                self.sleep(delay)
                delay = min(delay * 2, self.cap)


def _seconds(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:120]}"


class Kube:
    """Typed access to the objects of one cluster namespace, with retries."""

    def __init__(self, api: client.ApiClient, *, backoff: Backoff | None = None) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.backoff = backoff or Backoff()
        self._capi_version: str | None = None

    def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: Any = None,
                timeout: float = REQUEST_TIMEOUT_SECONDS) -> Any:
        """One raw request with a JSON body; the decoded JSON answer. ``ApiException`` on a non-2xx status (as
        the typed client raises), so callers and :class:`Backoff` treat both alike."""
        prepared = self.api.param_serialize(
            method, path, query_params=list(query), body=body, auth_settings=["BearerToken"],
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
        )
        response: Any = self.api.call_api(*prepared, _request_timeout=timeout)
        response.read()
        text = response.data.decode("utf-8") if response.data else ""
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return json.loads(text) if text else None

    # --- discovery -------------------------------------------------------------------------------------
    def capi_version(self) -> str:
        """``v1beta2`` when the server serves it, else ``v1beta1``; KubeError when CAPI is not installed."""
        if self._capi_version is None:
            def discover() -> list[str]:
                groups = self.request("GET", "/apis").get("groups") or []
                for g in groups:
                    if g.get("name") == CAPI_GROUP:
                        return [str(v.get("version")) for v in g.get("versions") or []]
                return []

            served = self.backoff.run("discover the cluster.x-k8s.io API group", discover)
            chosen = next((v for v in SUPPORTED_CAPI_VERSIONS if v in served), None)
            if chosen is None:
                raise KubeError(
                    "discover the cluster.x-k8s.io API group",
                    detail=f"CAPI is not installed or serves none of {', '.join(SUPPORTED_CAPI_VERSIONS)} "
                    f"(served: {', '.join(served) or 'nothing'})",
                )
            self._capi_version = chosen
        return self._capi_version

    # --- reads -----------------------------------------------------------------------------------------
    def _list(self, group: str, version: str, plural: str, namespace: str,
              selector: str | None) -> list[dict[str, Any]]:
        def call() -> list[dict[str, Any]]:
            out: Any = self.custom.list_namespaced_custom_object(group, version, namespace, plural,
                                                            label_selector=selector or "")
            return list(out.get("items") or [])

        return self.backoff.run(f"list {plural}.{group} in {namespace}", call)

    def get_cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                obj: Any = self.custom.get_namespaced_custom_object(
                    CAPI_GROUP, self.capi_version(), namespace, "clusters", name)
                return dict(obj)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return self.backoff.run(f"get Cluster {namespace}/{name}", call)

    def list_control_planes(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._list(TCP_GROUP, TCP_VERSION, "taloscontrolplanes", namespace, selector)

    def list_machine_deployments(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._list(CAPI_GROUP, self.capi_version(), "machinedeployments", namespace, selector)

    def list_machines(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._list(CAPI_GROUP, self.capi_version(), "machines", namespace, selector)

    def list_health_checks(self, namespace: str) -> list[dict[str, Any]]:
        return self._list(CAPI_GROUP, self.capi_version(), "machinehealthchecks", namespace, None)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One Secret by name, None when it does not exist. Never a list: the runner may read only the Secret
        it names (RBAC grants ``get``, optionally narrowed by ``resourceNames``), not every Secret of a
        namespace (admin kubeconfigs among them)."""
        def call() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = self.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return found

        return self.backoff.run(f"get Secret {namespace}/{name}", call)

    # --- writes ----------------------------------------------------------------------------------------
    def delete_machine(self, namespace: str, name: str, uid: str) -> bool:
        """Delete one Machine if it is still the one we chose (UID precondition); False if already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}

        def call() -> bool:
            try:
                path = f"/apis/{CAPI_GROUP}/{self.capi_version()}/namespaces/{namespace}/machines/{name}"
                self.request("DELETE", path, body=body)
                return True
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise

        return self.backoff.run(f"delete Machine {namespace}/{name}", call)

    def record_event(self, *, involved: Mapping[str, Any], reason: str, message: str, warning: bool = False,
                     now: datetime | None = None) -> None:
        """A core/v1 Event on ``involved`` (an object dict), from component ``capi-rollout``."""
        md = involved.get("metadata") or {}
        ts = (now or datetime.now(UTC)).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{md.get('name', 'capi-rollout')}.", "namespace": md["namespace"]},
            "involvedObject": {k: v for k, v in (("apiVersion", involved.get("apiVersion")),
                                                 ("kind", involved.get("kind")), ("name", md.get("name")),
                                                 ("namespace", md.get("namespace")), ("uid", md.get("uid"))) if v},
            "reason": reason, "message": message[:1000], "type": "Warning" if warning else "Normal",
            "source": {"component": "capi-rollout"}, "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
            "reportingComponent": "capi-rollout",
            "reportingInstance": os.environ.get("HOSTNAME", "capi-rollout"),
        }
        self.backoff.run(f"create Event {reason} in {md['namespace']}",
                         lambda: self.request("POST", f"/api/v1/namespaces/{md['namespace']}/events", body=event))

    def read_ledger(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The whole RolloutLedger (metadata with labels and ownerReferences, spec), or None when it does not
        exist."""
        return self._get_or_none(f"{_ledgers(namespace)}/{name}", f"get {LEDGER_KIND} {namespace}/{name}")

    def _get_or_none(self, path: str, what: str) -> dict[str, Any] | None:
        """GET one object with retries; None when it does not exist (404)."""
        def call() -> dict[str, Any] | None:
            try:
                obj = self.request("GET", path)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return dict(obj) if isinstance(obj, dict) else {}

        return self.backoff.run(what, call)

    def list_events(self, namespace: str) -> list[dict[str, Any]]:
        """The core/v1 Events of ``namespace`` (what the API server still keeps: ``--event-ttl``, 1 h by default)."""
        def call() -> list[dict[str, Any]]:
            found = self.request("GET", f"/api/v1/namespaces/{namespace}/events")
            items = found.get("items") if isinstance(found, dict) else None
            return [dict(i) for i in items or [] if isinstance(i, dict)]

        return self.backoff.run(f"list Events in {namespace}", call)

    def list_ledgers(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every RolloutLedger in ``namespace`` (all namespaces when None), each a whole object."""
        path = _ledgers(namespace) if namespace else f"/apis/{LEDGER_GROUP}/{LEDGER_VERSION}/{LEDGER_PLURAL}"

        def call() -> list[dict[str, Any]]:
            found = self.request("GET", path)
            items = found.get("items") if isinstance(found, dict) else None
            return [dict(i) for i in items or [] if isinstance(i, dict)]

        return self.backoff.run(f"list {LEDGER_KIND} in {namespace or 'all namespaces'}", call)

    def write_ledger(self, namespace: str, name: str, spec: Mapping[str, Any], *, resource_version: str | None,
                     labels: Mapping[str, str], owner: Mapping[str, str] | None) -> str:
        """Create (resource_version None) or replace a RolloutLedger with optimistic concurrency; returns the new
        version. ``owner`` (the Workflow, same namespace) becomes its ownerReference: deleted with it."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
        if owner and owner.get("uid"):
            metadata["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                            "name": owner["name"], "uid": owner["uid"], "blockOwnerDeletion": False}]
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        body = {"apiVersion": LEDGER_API_VERSION, "kind": LEDGER_KIND, "metadata": metadata, "spec": dict(spec)}

        def call() -> str:
            if resource_version is None:
                obj = self.request("POST", _ledgers(namespace), body=body)
            else:
                obj = self.request("PUT", f"{_ledgers(namespace)}/{name}", body=body)
            return str((obj.get("metadata") or {}).get("resourceVersion", ""))

        what = f"write {LEDGER_KIND} {namespace}/{name}"
        # 409 on a replace is a real conflict (another writer): do not retry it blindly.
        try:
            return call()
        except ApiException as exc:
            if exc.status == 409:
                raise KubeError(what, exc) from exc
            if exc.status == 404 and resource_version is None:
                raise KubeError(what, exc, detail=f"is the {LEDGER_KIND} CRD installed? "
                                "(overlay/management/argo-workflows/capi-rollout-ledger-crd.yaml)") from exc
            return self.backoff.run(what, call)
        except (urllib3.exceptions.HTTPError, OSError):
            return self.backoff.run(what, call)

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Argo Workflow ``namespace/name`` (read by name, never listed), or None when it does not exist."""
        return self._get_or_none(f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows/{name}",
                                 f"get Workflow {namespace}/{name}")


def _ledgers(namespace: str) -> str:
    return f"/apis/{LEDGER_GROUP}/{LEDGER_VERSION}/namespaces/{namespace}/{LEDGER_PLURAL}"
