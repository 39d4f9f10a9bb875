"""Container images without a Docker engine: layers as plain tar files, written as a ``docker save`` archive.

Contract:
- :func:`layer_from_tree` packs a directory into an uncompressed layer tar with GNU tar, reproducibly (sorted
  names, mtime 0, owner root, numeric ids), and returns its path and diff id (``sha256:`` of the tar).
- :func:`layer_from_files` packs a few ``{path in image: (bytes, mode)}`` entries the same way, in Python.
- :func:`write_archive` writes the ``docker save`` layout (``manifest.json`` with ``RepoTags``, the image config,
  one ``<diff id>/layer.tar`` per layer) that ``ctr -n k8s.io images import`` reads. The config names linux/amd64,
  the entrypoint, command, environment, working directory and user; ``created`` is the epoch, so equal inputs
  give an equal image id. Nothing here talks to a registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Layer:
    path: Path
    diff_id: str


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def layer_from_tree(tree: Path, out: Path) -> Layer:
    """``tree`` packed as an image layer at ``out`` (GNU tar, reproducible, owned by root)."""
    tmp = out.with_suffix(".tmp")
    subprocess.run(
        ["tar", "--create", "--file", str(tmp), "--directory", str(tree), "--sort=name", "--mtime=@0",
         "--owner=0", "--group=0", "--numeric-owner", "--xattrs", "."],
        check=True, capture_output=True,
    )
    tmp.replace(out)
    return Layer(out, _sha256_file(out))


def layer_from_files(files: Mapping[str, tuple[bytes, int]], out: Path) -> Layer:
    """A layer holding exactly ``files`` (image path -> (content, mode)) and their parent directories."""
    directories = sorted({str(Path(p).parent) for p in files} - {"/", "."})
    parents: set[str] = set()
    for d in directories:
        parts = Path(d.lstrip("/")).parts
        parents.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in sorted(parents):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name in sorted(files):
            data, mode = files[name]
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(buf.getvalue())
    return Layer(out, _sha256_file(out))


def image_config(layers: Sequence[Layer], config: ImageConfig) -> bytes:
    body: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": {
            "Entrypoint": list(config.entrypoint) or None,
            "Cmd": list(config.cmd) or None,
            "Env": [f"{k}={v}" for k, v in config.env.items()],
            "WorkingDir": config.workdir,
            "User": config.user,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": EPOCH, "created_by": f"capi-rollout e2e.node layer {i}"} for i in range(len(layers))],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def write_archive(out: Path, *, tags: Sequence[str], layers: Sequence[Layer], config: ImageConfig) -> str:
    """Write a ``docker save`` archive of the image; returns its image id (``sha256:`` of the config)."""
    blob = image_config(layers, config)
    image_id = hashlib.sha256(blob).hexdigest()
    manifest = [{
        "Config": f"{image_id}.json",
        "RepoTags": list(tags),
        "Layers": [f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" for layer in layers],
    }]
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        add_bytes(f"{image_id}.json", blob)
        for layer in layers:
            tar.add(str(layer.path), arcname=f"{layer.diff_id.removeprefix('sha256:')}/layer.tar")
        add_bytes("manifest.json", json.dumps(manifest).encode())
    tmp.replace(out)
    return "sha256:" + image_id
