"""What one resource's LIST and the WATCH events after it say the objects are (an informer's store, without I/O).

Contract: pure, no I/O, no clock. :func:`from_list` turns a LIST response body into a :class:`Reflection`
(objects by name, the list's ``resourceVersion`` to watch from); :func:`apply_event` folds one WATCH event
into it and says what happened:

* ``ADDED`` / ``MODIFIED`` put the event's object under its name, ``DELETED`` removes the name → ``changed``;
* ``BOOKMARK`` only advances the ``resourceVersion`` → ``bookmark``;
* ``ERROR`` with code 410 (Gone: the ``resourceVersion`` is too old to watch from) clears the
  ``resourceVersion`` → ``relist`` (the caller LISTs again and replaces everything);
* any other ``ERROR`` raises :class:`WatchError` (the caller re-watches from the same ``resourceVersion``).

A Reflection is never changed in place: every event yields a new one whose ``objects`` is a new mapping, and
the object dicts themselves are the ones the server sent (replaced on each event, never mutated). That keeps
snapshots handed to other threads consistent, and lets :class:`~capi_rollout.domain.state.MachineViews` reuse
views by ``resourceVersion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

Obj = Mapping[str, Any]
Outcome = Literal["changed", "bookmark", "relist"]

GONE = 410


class WatchError(RuntimeError):
    """The watch stream carried an ERROR event other than 410 Gone."""

    def __init__(self, code: int | None, message: str) -> None:
        self.code = code
        super().__init__(f"watch error{f' (HTTP {code})' if code else ''}: {message}")


@dataclass(frozen=True)
class Reflection:
    """Objects by name as of ``resource_version``; ``resource_version`` None means "LIST before watching"."""

    objects: Mapping[str, Obj] = field(default_factory=lambda: MappingProxyType({}))
    resource_version: str | None = None

    @property
    def items(self) -> list[Obj]:
        """The objects sorted by name."""
        return [self.objects[k] for k in sorted(self.objects)]


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _version(obj: Obj) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


def from_list(body: Obj) -> Reflection:
    """A LIST response (``{"metadata": {"resourceVersion"}, "items": [...]}``) as a Reflection."""
    items = body.get("items") or []
    return Reflection(objects=MappingProxyType({_name(o): o for o in items}), resource_version=_version(body))


def apply_event(current: Reflection, event: Obj) -> tuple[Reflection, Outcome]:
    """Fold one watch event (``{"type", "object"}``) into ``current``; see the module docstring."""
    kind = event.get("type")
    obj: Obj = event.get("object") or {}
    if kind == "ERROR":
        code = obj.get("code")
        if code == GONE:
            return replace(current, resource_version=None), "relist"
        raise WatchError(code if isinstance(code, int) else None, str(obj.get("message") or obj))
    version = _version(obj) or current.resource_version
    if kind == "BOOKMARK":
        return replace(current, resource_version=version), "bookmark"
    objects = dict(current.objects)
    if kind in ("ADDED", "MODIFIED"):
        objects[_name(obj)] = obj
    elif kind == "DELETED":
        objects.pop(_name(obj), None)
    else:
        raise WatchError(None, f"unknown watch event type {kind!r}")
    return Reflection(objects=MappingProxyType(objects), resource_version=version), "changed"


__all__ = ["GONE", "Outcome", "Reflection", "WatchError", "apply_event", "from_list"]
