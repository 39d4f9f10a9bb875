"""The event log of one simulated Talos boot, as ``machine.MachineService/Events`` streams it.

Contract: plain data and a lock, no I/O. Talos keeps its events in memory, so a reboot starts an empty log.
Each :class:`LoggedEvent` carries an xid (the 20-character id Talos's ``runtime.Event`` uses, time-ordered), the
actor id of the API call that caused it (empty for the node's own changes) and a payload from the upstream protos
(``MachineStatusEvent``, ``SequenceEvent``, ``PhaseEvent``, ``TaskEvent``) packed as ``google.protobuf.Any`` with
Talos's type URL prefix ``talos/runtime/``. :func:`tail` implements ``EventsRequest``'s tail_events (``-1`` all,
``0`` none, ``n`` the last n), tail_id, tail_seconds and with_actor_id. Like machined's buffer
(``NewEvents(1000, 10)``) the log keeps the last :data:`CAPACITY` events; a stream that falls further behind
continues from the oldest kept.
"""

from __future__ import annotations

import base64
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

from sim.talos.api import machine_pb2

TYPE_URL_PREFIX = "talos/runtime/"
CAPACITY = 1000
_COUNTER = itertools.count(int.from_bytes(os.urandom(3), "big"))
_MACHINE = os.urandom(3)


def xid(now: float | None = None) -> str:
    """A new xid (github.com/rs/xid): 4-byte seconds, 3-byte machine, 2-byte pid, 3-byte counter, base32hex."""
    seconds = int(time.time() if now is None else now)
    raw = (seconds.to_bytes(4, "big") + _MACHINE + (os.getpid() & 0xFFFF).to_bytes(2, "big")
           + (next(_COUNTER) & 0xFFFFFF).to_bytes(3, "big"))
    return base64.b32hexencode(raw).decode().lower().rstrip("=")


@dataclass(frozen=True)
class LoggedEvent:
    id: str
    actor_id: str
    at: float  # wall clock (time.time), for tail_seconds
    payload: Message

    def to_proto(self) -> machine_pb2.Event:
        data = any_pb2.Any(type_url=TYPE_URL_PREFIX + self.payload.DESCRIPTOR.full_name,
                           value=self.payload.SerializeToString())
        return machine_pb2.Event(data=data, id=self.id, actor_id=self.actor_id)


def empty_event(actor_id: str) -> machine_pb2.Event:
    """The first message of every Events stream (machined's ``sendEmptyEvent``): no payload, a fresh id."""
    return machine_pb2.Event(data=any_pb2.Any(), id=xid(), actor_id=actor_id)


class EventLog:
    """The events of one boot, in order."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events: list[LoggedEvent] = []
        self._dropped = 0  # events before the kept window (positions count from the boot's first event)

    def append(self, payload: Message, actor_id: str = "") -> LoggedEvent:
        now = self._clock()
        event = LoggedEvent(xid(now), actor_id, now, payload)
        with self._lock:
            self._events.append(event)
            if len(self._events) > CAPACITY:
                del self._events[0]
                self._dropped += 1
        return event

    def since(self, position: int) -> tuple[list[LoggedEvent], int]:
        """Events from ``position`` (counted since the boot) on, and the next position."""
        with self._lock:
            start = max(0, position - self._dropped)
            return self._events[start:], self._dropped + len(self._events)

    def tail(self, request: machine_pb2.EventsRequest) -> tuple[list[LoggedEvent], int]:
        """The past events a new stream starts with, and the position live events continue from."""
        with self._lock:
            events, end = list(self._events), self._dropped + len(self._events)
        if request.tail_id:
            ids = [e.id for e in events]
            events = events[ids.index(request.tail_id) + 1:] if request.tail_id in ids else []
        elif request.tail_seconds:
            cutoff = self._clock() - request.tail_seconds
            events = [e for e in events if e.at >= cutoff]
        elif request.tail_events >= 0:
            events = events[len(events) - request.tail_events:] if request.tail_events else []
        return [e for e in events if matches(e, request)], end


def matches(event: LoggedEvent, request: machine_pb2.EventsRequest) -> bool:
    return not request.with_actor_id or event.actor_id == request.with_actor_id
