"""An informer's store without a server: a LIST plus WATCH events give the objects, 410 asks for a relist."""

from __future__ import annotations

from typing import Any

import pytest

from capi_rollout.adapters.reflection import Reflection, WatchError, apply_event, from_list


def obj(name: str, rv: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv, "uid": f"uid-{name}"}, **extra}


def listed() -> Reflection:
    return from_list({"metadata": {"resourceVersion": "100"}, "items": [obj("b", "90"), obj("a", "80")]})


def test_a_list_gives_the_objects_by_name_and_the_version_to_watch_from() -> None:
    r = listed()
    assert r.resource_version == "100"
    assert [o["metadata"]["name"] for o in r.items] == ["a", "b"]


def test_added_modified_and_deleted_events_replace_the_objects_and_advance_the_version() -> None:
    r, out = apply_event(listed(), {"type": "ADDED", "object": obj("c", "101")})
    assert out == "changed" and r.resource_version == "101" and sorted(r.objects) == ["a", "b", "c"]
    r, out = apply_event(r, {"type": "MODIFIED", "object": obj("a", "102", status={"phase": "Deleting"})})
    assert out == "changed" and r.objects["a"]["status"] == {"phase": "Deleting"}
    r, out = apply_event(r, {"type": "DELETED", "object": obj("b", "103")})
    assert out == "changed" and sorted(r.objects) == ["a", "c"] and r.resource_version == "103"


def test_an_event_never_changes_an_earlier_reflection_or_its_objects() -> None:
    before = listed()
    a_before = before.objects["a"]
    after, _ = apply_event(before, {"type": "MODIFIED", "object": obj("a", "101", spec={"x": 1})})
    after, _ = apply_event(after, {"type": "DELETED", "object": obj("b", "102")})
    assert before.objects["a"] is a_before and "spec" not in a_before
    assert sorted(before.objects) == ["a", "b"] and before.resource_version == "100"
    assert after.objects["a"] is not a_before
    with pytest.raises(TypeError):
        after.objects["z"] = obj("z", "1")  # type: ignore[index]


def test_a_deleted_event_for_an_unknown_name_is_harmless() -> None:
    r, out = apply_event(listed(), {"type": "DELETED", "object": obj("zz", "101")})
    assert out == "changed" and sorted(r.objects) == ["a", "b"] and r.resource_version == "101"


def test_a_bookmark_advances_the_version_and_leaves_the_objects_alone() -> None:
    before = listed()
    r, out = apply_event(before, {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "250"}}})
    assert out == "bookmark" and r.resource_version == "250" and r.objects == before.objects


def test_410_gone_asks_for_a_relist_and_the_relist_replaces_everything() -> None:
    r, _ = apply_event(listed(), {"type": "ADDED", "object": obj("c", "101")})
    r, out = apply_event(r, {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}})
    assert out == "relist" and r.resource_version is None
    relisted = from_list({"metadata": {"resourceVersion": "300"}, "items": [obj("c", "290")]})
    assert sorted(relisted.objects) == ["c"] and relisted.resource_version == "300"


def test_other_watch_errors_raise_with_the_servers_message() -> None:
    with pytest.raises(WatchError, match=r"HTTP 500.*etcd is sad"):
        apply_event(listed(), {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd is sad"}})
    with pytest.raises(WatchError, match="unknown watch event type"):
        apply_event(listed(), {"type": "SURPRISE", "object": obj("a", "1")})
