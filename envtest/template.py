"""etcd data templates: etcd's data directory saved right after a CRD set was installed, so later servers start
with those CRDs already stored and served instead of spending tens of seconds establishing the large Argo CRDs.

Contract: a template lives in ``<cache>/etcd-templates/<key>/`` with ``data/`` (a stopped etcd's data directory)
and ``crds.json`` (what must be served). The key hashes the Kubernetes and etcd versions and the CRD files'
versioned directories, names and sizes, so any change of pins or CRDs makes a new template. Saving is atomic
(copy to a temporary directory, then rename); concurrent savers keep the first. Every use touches the template's
``used`` stamp; :func:`prune` removes templates idle for longer than :data:`MAX_IDLE_SECONDS` (old pins or CRD sets
leave ~80 MB each behind otherwise) and staging copies abandoned by a killed saver. File operations only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
USED_STAMP = "used"
MAX_IDLE_SECONDS = 14 * 24 * 3600.0  # a template nobody started a server from for two weeks
MAX_STAGING_SECONDS = 3600.0  # a save takes seconds; an older staging copy was abandoned


@dataclass(frozen=True)
class CrdRef:
    """A CRD that a server must serve: its name, group, kind and served versions."""

    name: str
    group: str
    kind: str
    versions: tuple[str, ...]

    @classmethod
    def from_crd(cls, crd: Mapping[str, Any]) -> CrdRef:
        spec = crd["spec"]
        served = tuple(v["name"] for v in spec["versions"] if v.get("served"))
        return cls(crd["metadata"]["name"], spec["group"], spec["names"]["kind"], served)


def key(pins: Mapping[str, str], crd_files: Iterable[Path]) -> str:
    """The template key for these binaries and CRD files."""
    digest = hashlib.sha256(f"format={FORMAT}\n".encode())
    for pin in ("KUBERNETES_VERSION", "ETCD_VERSION"):
        digest.update(f"{pin}={pins[pin]}\n".encode())
    for path in crd_files:
        digest.update(f"{path.parent.name}/{path.name}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:24]


def directory(cache: Path, template_key: str) -> Path:
    return cache / "etcd-templates" / template_key


def load(template_dir: Path) -> list[CrdRef] | None:
    """The CRDs a complete template holds, or None when there is no complete template."""
    try:
        raw = json.loads((template_dir / "crds.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (template_dir / "data").is_dir():
        return None
    return [CrdRef(r["name"], r["group"], r["kind"], tuple(r["versions"])) for r in raw]


def save(data_dir: Path, crds: Sequence[CrdRef], template_dir: Path) -> bool:
    """Copy a stopped etcd's data directory into the template; False when another process saved it first."""
    template_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = template_dir.parent / f".{template_dir.name}.{uuid.uuid4().hex}"
    try:
        shutil.copytree(data_dir, staging / "data")
        (staging / "crds.json").write_text(json.dumps([asdict(c) for c in crds], indent=1), encoding="utf-8")
        try:
            staging.rename(template_dir)
        except OSError:
            return False
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def discard(template_dir: Path) -> None:
    """Remove a template that could not be used."""
    shutil.rmtree(template_dir, ignore_errors=True)


def touch(template_dir: Path, *, now: float | None = None) -> None:
    """Record that a server started from (or saved) this template."""
    stamp = template_dir / USED_STAMP
    with contextlib.suppress(OSError):
        stamp.touch()
        if now is not None:
            os.utime(stamp, (now, now))


def last_used(template_dir: Path) -> float:
    """When the template was last used: its stamp, else (a template older than stamps) its directory's mtime."""
    for path in (template_dir / USED_STAMP, template_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def prune(root: Path, *, keep: Iterable[str] = (), now: float | None = None,
          max_idle: float = MAX_IDLE_SECONDS, max_staging: float = MAX_STAGING_SECONDS) -> list[Path]:
    """Remove, under ``root`` (``<cache>/etcd-templates``), every template idle for more than ``max_idle`` seconds
    and every staging copy older than ``max_staging`` seconds, except the keys in ``keep``; returns what went."""
    now = time.time() if now is None else now
    kept = set(keep)
    removed: list[Path] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.is_dir() or entry.name in kept:
            continue
        staging = entry.name.startswith(".")
        age = now - (entry.stat().st_mtime if staging else last_used(entry))
        if age > (max_staging if staging else max_idle):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
