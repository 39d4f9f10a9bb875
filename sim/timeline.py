"""A timeline of everything the simulator saw or did, readable as text and queryable from tests.

Contract: thread-safe, append-only, no I/O except :meth:`Timeline.write`. Every event has a wall-clock
timestamp, the simulated time (seconds since the timeline started, scaled), a ``kind`` (e.g.
``machine.created``, ``machine.phase``, ``machine.deleted``, ``talos.reboot``, ``talos.maintenance``),
a ``subject`` (a Machine or node name) and free-form details.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Event:
    wall: float
    sim_seconds: float
    kind: str
    subject: str
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.details.items()))
        return f"{self.sim_seconds:9.1f}s  {self.kind:<22} {self.subject}" + (f"  {extra}" if extra else "")

    def to_json(self) -> str:
        """One line of JSON: how a simulator in another process (``python -m sim run --output json``) or a pod
        reports its timeline to the test that drives it. Details that are not JSON types become strings."""
        return json.dumps({"wall": self.wall, "sim": self.sim_seconds, "kind": self.kind, "subject": self.subject,
                           "details": self.details}, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, line: str) -> Event:
        """The inverse of :meth:`to_json`; ``ValueError`` for anything else."""
        data = json.loads(line)
        if not isinstance(data, dict) or not {"wall", "sim", "kind", "subject"} <= data.keys():
            raise ValueError(f"not a timeline event: {line[:120]!r}")
        return cls(float(data["wall"]), float(data["sim"]), str(data["kind"]), str(data["subject"]),
                   dict(data.get("details") or {}))


class Timeline:
    """Append-only event log. ``scale`` converts wall seconds to simulated seconds (60 = 1 s is 1 min)."""

    def __init__(self, *, scale: float = 1.0, clock: Any = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._clock = clock
        self._start = clock()
        self.scale = scale

    @classmethod
    def of(cls, events: list[Event], *, scale: float = 1.0) -> Timeline:
        """A timeline holding ``events`` (read back from another process's output); it records nothing new."""
        timeline = cls(scale=scale)
        timeline._events = list(events)
        return timeline

    @classmethod
    def parse(cls, text: str, *, scale: float = 1.0) -> Timeline:
        """The events among ``text``'s lines (the JSON ones, see :meth:`Event.to_json`); other lines are skipped:
        a simulator's output also holds its start-up banner and any warning."""
        events = []
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    events.append(Event.from_json(line))
                except ValueError:
                    continue
        return cls.of(events, scale=scale)

    def record(self, kind: str, subject: str, **details: Any) -> Event:
        now = self._clock()
        event = Event(time.time(), (now - self._start) * self.scale, kind, subject, dict(details))
        with self._lock:
            self._events.append(event)
        return event

    def events(self, kind: str | None = None, subject: str | None = None) -> list[Event]:
        with self._lock:
            snapshot = list(self._events)
        return [
            e
            for e in snapshot
            if (kind is None or e.kind == kind or e.kind.startswith(kind + "."))
            and (subject is None or e.subject == subject)
        ]

    def first(self, kind: str, subject: str | None = None) -> Event | None:
        found = self.events(kind, subject)
        return found[0] if found else None

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())

    def text(self) -> str:
        return "\n".join(e.line() for e in self.events()) + "\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.text())
