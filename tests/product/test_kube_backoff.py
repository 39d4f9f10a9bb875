"""The adapter's retry policy: transient API failures are retried with capped backoff, real errors are not."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from capi_rollout.adapters.kube import Backoff, KubeError


def test_conflicts_and_precondition_failures_are_not_retried() -> None:
    sleeps: list[float] = []
    calls = []

    def conflict() -> None:
        calls.append(1)
        raise ApiException(status=409, reason="Conflict")

    with pytest.raises(KubeError, match="HTTP 409"):
        Backoff(sleep=sleeps.append).run("delete Machine x", conflict)
    assert calls == [1] and sleeps == []


def test_transient_errors_are_retried_with_capped_backoff() -> None:
    sleeps: list[float] = []
    outcomes: list[BaseException | str] = [ApiException(status=503), ApiException(status=429),
                                           ConnectionResetError("reset"), "ok"]

    def flaky() -> str:
        item = outcomes.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    assert Backoff(initial=1.0, cap=1.5, sleep=sleeps.append).run("list", flaky) == "ok"
    assert sleeps == [1.0, 1.5, 1.5]
