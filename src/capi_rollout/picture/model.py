"""What a rollout picture shows: lifecycle spans per Machine, marks (stalls, remediations, reboots), phase bands.

Contract: plain frozen data. Times are seconds since the epoch (floats), so every source (a simulator's wall
clock, the ledger's RFC 3339 times, Kubernetes Events) shares one axis.
"""

from __future__ import annotations

from dataclasses import dataclass

STATES = ("created", "provisioning", "running", "ready", "deleting")  # a Machine's life; "deleted" ends it
MARKS = ("stall", "remediation", "reboot")


@dataclass(frozen=True)
class Span:
    state: str
    start: float
    end: float


@dataclass(frozen=True)
class Track:
    machine: str
    role: str  # "control plane", "worker" or ""
    spans: tuple[Span, ...]
    deleted: float | None = None  # when it was gone (the end of its last span)


@dataclass(frozen=True)
class Mark:
    kind: str  # one of MARKS
    at: float
    label: str
    machine: str | None = None  # the row it belongs to; None: the whole picture
    since: float | None = None  # a stall's start (it ends at ``at``)


@dataclass(frozen=True)
class Band:
    name: str  # "control plane", "workers"
    start: float
    end: float
    result: str  # succeeded, failed, running


@dataclass(frozen=True)
class Picture:
    title: str
    start: float
    end: float
    tracks: tuple[Track, ...]
    marks: tuple[Mark, ...] = ()
    bands: tuple[Band, ...] = ()
    subtitle: str = ""  # one more line under the title (e.g. the run's headline)
