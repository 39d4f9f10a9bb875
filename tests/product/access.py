"""What an identity may do, asked of the real API server: a SelfSubjectAccessReview, and the HTTP status of a
real call (200, or the status of the refusal)."""

from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from envtest import rest


def allowed(client: ApiClient, verb: str, group: str, resource: str, namespace: str, **extra: str) -> bool:
    review = rest.request_json(
        client,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "namespace": namespace,
                    **extra,
                }
            },
        },
    )
    return bool(review["status"].get("allowed"))


def http_status(call: Any) -> int:
    """The HTTP status of a call: 200 when it succeeds, the error status when the server refuses it."""
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200
