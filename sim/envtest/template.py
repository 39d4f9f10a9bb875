"""etcd data templates: etcd's data directory saved right after a CRD set was installed, so later servers start
with those CRDs already stored and served instead of spending tens of seconds establishing the large Argo CRDs.

Contract: a template lives in ``<cache>/etcd-templates/<key>/`` with ``data/`` (a stopped etcd's data directory)
and ``crds.json`` (what must be served). The key hashes the Kubernetes and etcd versions and the CRD files'
versioned directories, names and sizes, so any change of pins or CRDs makes a new template. Saving is atomic
(copy to a temporary directory, then rename); concurrent savers keep the first. File operations only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORMAT = 1


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
