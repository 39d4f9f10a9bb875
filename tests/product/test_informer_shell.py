"""The informer's thread against a scripted transport: what it asks the server for after a drop, a 410, an end.

The transport is the kubernetes client's ``CustomObjectsApi.list_namespaced_custom_object`` (LIST, or WATCH with
``watch=True``); the script answers each call in turn and fails loudly when the informer asks for more.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from capi_rollout.adapters.informer import Informer, Resource, lines

WAIT = 5.0


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv, "uid": f"uid-{name}"}}


def ev(kind: str, o: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": o}).encode() + b"\n"


class Resp:
    """A watch response: chunks, then an error or the end; ``hold`` blocks until shutdown (an idle watch)."""

    def __init__(self, chunks: list[bytes], *, status: int = 200, error: BaseException | None = None,
                 hold: bool = False) -> None:
        self.status, self.reason = status, "scripted"
        self.chunks, self.error, self.hold = chunks, error, hold
        self.closed = threading.Event()

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        yield from self.chunks
        if self.error is not None:
            raise self.error
        if self.hold:
            self.closed.wait(WAIT)
            raise urllib3.exceptions.ProtocolError("shut down")

    def shutdown(self) -> None:
        self.closed.set()

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class Script:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.done = threading.Event()

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                      **kwargs: Any) -> Any:
        call = f"watch@{kwargs['resource_version']}" if kwargs.get("watch") else "list"
        self.calls.append(call)
        if not self.answers:
            raise AssertionError(f"unscripted call {call}")
        answer = self.answers.pop(0)
        if not self.answers:
            self.done.set()
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeKube:
    def __init__(self, script: Script) -> None:
        self.custom = script


def run(answers: list[Any]) -> tuple[Informer, Script]:
    script = Script(answers)
    lock = threading.Condition()
    changes: list[int] = []
    informer = Informer(FakeKube(script), "ns", Resource("g", "v1", "machines"),  # type: ignore[arg-type]
                        on_change=lambda: changes.append(1), lock=lock, initial=0.01, cap=0.02)
    informer.start()
    assert script.done.wait(WAIT), f"script not consumed: {script.calls}"
    with lock:
        assert lock.wait_for(lambda: informer.live, WAIT), f"not live at the end: {informer.failure}"
    informer.stop()
    return informer, script


def test_a_drop_rewatches_from_the_last_version_and_410_relists() -> None:
    idle = Resp([], hold=True)
    informer, script = run([
        {"metadata": {"resourceVersion": "10"}, "items": [obj("a", "9")]},
        Resp([ev("ADDED", obj("b", "11")), ev("BOOKMARK", {"metadata": {"resourceVersion": "15"}})],
             error=urllib3.exceptions.ProtocolError("connection reset")),
        Resp([ev("ERROR", {"kind": "Status", "code": 410, "message": "too old resource version"})]),
        {"metadata": {"resourceVersion": "30"}, "items": [obj("b", "29")]},
        Resp([ev("MODIFIED", obj("b", "31"))]),  # the server ends the watch (timeoutSeconds)
        idle,
    ])
    assert script.calls == ["list", "watch@10", "watch@15", "list", "watch@30", "watch@31"]
    assert {k: v["metadata"]["resourceVersion"] for k, v in informer.reflection.objects.items()} == {"b": "31"}
    assert idle.closed.is_set() and not informer._thread.is_alive()


def test_an_http_410_on_watch_start_relists_and_a_forbidden_list_is_reported_and_retried() -> None:
    informer, script = run([
        ApiException(status=403, reason="Forbidden"),
        {"metadata": {"resourceVersion": "5"}, "items": []},
        ApiException(status=410, reason="Gone"),
        {"metadata": {"resourceVersion": "7"}, "items": [obj("a", "6")]},
        Resp([], hold=True),
    ])
    assert script.calls == ["list", "list", "watch@5", "list", "watch@7"]
    assert list(informer.reflection.objects) == ["a"]
    assert informer.failure is None, "a live watch clears the last failure"


def test_a_failing_informer_says_why_and_is_not_synced() -> None:
    script = Script([ApiException(status=403, reason="Forbidden")] * 3)
    lock = threading.Condition()
    informer = Informer(FakeKube(script), "ns", Resource("g", "v1", "machines"),  # type: ignore[arg-type]
                        on_change=lambda: None, lock=lock, initial=0.01, cap=0.02)
    script.answers.append(Resp([], hold=True))  # then RBAC is fixed
    informer.start()
    with lock:
        assert lock.wait_for(lambda: informer.failure is not None, WAIT)
        assert not informer.synced
    assert "read machines" in (informer.failure or "") and "403" in (informer.failure or "")
    informer.stop()


def test_lines_splits_a_chunked_stream_into_records() -> None:
    assert list(lines([b'{"a":', b'1}\n{"b"', b":2}\n\n", b'{"c":3}'])) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
