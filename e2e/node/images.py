"""The images the real node runs, built here from pinned sources and imported into its containerd.

Contract:
- ``pause`` (the sandbox): the Kubernetes module's ``build/pause/linux/pause.c``, built by ``tools/build.sh node``.
- ``argoexec`` and ``workflow-controller``: the binaries ``tools/build.sh node`` built from the pinned Argo module,
  laid out as upstream's Dockerfile does on distroless/static (``/bin/<binary>``, user 8737 for the controller,
  ``/etc/nsswitch.conf`` and ``/etc/ssh/ssh_known_hosts`` from the module, ``/etc/passwd``/``group``, ``/tmp``);
  tagged with the upstream names (``quay.io/argoproj/<name>:<version>``) so the upstream manifests run unchanged.
- ``argo-events`` (the Argo Events controller-manager, EventSource and Sensor image) and ``nats`` (the JetStream
  EventBus server): the binaries ``tools/events.sh`` built from the pinned modules, laid out as upstream's images
  have them (``/bin/argo-events``; ``/nats-server`` at the root, the ``startCommand`` Argo Events runs) under the
  upstream tags (``quay.io/argoproj/argo-events:<version>``, ``nats:<version>``), and ``coredns`` (``/coredns`` at
  the root as upstream's image has it, ``registry.k8s.io/coredns/coredns:<version>``; user root, where the
  addon manifest gives it NET_BIND_SERVICE and drops every other capability: upstream's nonroot image relies on a
  file capability, which these archives do not carry): :func:`events_images`.
- The step image and the simulator image: the project's Dockerfile's inputs on Debian bookworm's own Python 3.11
  (a ``debootstrap --variant=minbase --include=python3`` root file system, a ``python`` link as in the official
  image), then ``pip install --no-index`` of the wheels both Dockerfiles install: every pin of
  ``requirements/runtime.txt`` (``pip wheel --require-hashes --no-deps -r``; it holds the ``[sim]`` extra's too)
  and this checkout's package (``--no-deps``), checked to be exactly the lock (:func:`lock_difference`); user
  65532, ``HOME=/tmp``, ``ENTRYPOINT capi-rollout`` / ``python -m sim``. The root file system is cached per Debian
  suite under ``$CAPI_ROLLOUT_CACHE/images``; an image is keyed by the lock and its wheels' content, so it is
  rebuilt when the lock or the checkout's package changes.
- :func:`build_all` returns ``docker save`` archives (:mod:`e2e.node.archive`) to import with ``ctr``.
- The cache keeps the :data:`KEEP_IMAGES` most recently used archives of each image name (a use touches the
  archive) and deletes older ones: every change of the checkout makes two new ~300 MB Python images, which would
  otherwise pile up without end (:func:`keep_recent`).
Each build step prints what it builds and how long it took.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from e2e.node.archive import ImageConfig, Layer, layer_from_files, layer_from_tree, write_archive

DEBIAN_SUITE = "bookworm"
ROOTFS_PACKAGES = ("python3",)
NONROOT_UID = 65532
ARGO_UID = 8737
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"
DISTROLESS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEEP_IMAGES = 3  # archives kept per image name: a few checkouts (worktrees, a CI clone) share one cache
_ARCHIVE = re.compile(r"(?P<name>.+)-[0-9a-f]{16}\.image\.tar")

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
    f"argo:x:{ARGO_UID}:{ARGO_UID}:argo:/tmp:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnobody:x:65534:\nnonroot:x:{NONROOT_UID}:\nargo:x:{ARGO_UID}:\n"


def log(message: str) -> None:
    print(f"[node images] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ImageArchive:
    tag: str
    path: Path


def _timed(what: str, action: Callable[[], Path]) -> Path:
    started = time.monotonic()
    log(f"building {what} ...")
    out = action()
    log(f"built {what} in {time.monotonic() - started:.1f}s")
    return out


def debian_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """The Debian mirror this machine's apt uses (deb822 ``URIs:`` of the main archive)."""
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split(":", 1)[1].strip().split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    raise RuntimeError("no Debian mirror in /etc/apt: the step image needs debootstrap from Debian's archive")


def rootfs(cache: Path) -> Path:
    """A minimal Debian root file system with Python 3 (cached; built once with debootstrap)."""
    key = hashlib.sha256(f"{DEBIAN_SUITE}:{','.join(ROOTFS_PACKAGES)}".encode()).hexdigest()[:12]
    target = cache / "images" / f"rootfs-{DEBIAN_SUITE}-{key}"
    if (target / ".complete").exists():
        return target
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: run `make node-deps` (apt-get install debootstrap)")
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)

    def build() -> Path:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
                        DEBIAN_SUITE, str(staging), debian_mirror()], check=True, stdout=subprocess.DEVNULL)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (staging / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        (staging / "usr/bin/python").unlink(missing_ok=True)
        (staging / "usr/bin/python").symlink_to("python3")
        (staging / ".complete").touch()
        return staging

    _timed(f"Debian {DEBIAN_SUITE} root file system with {', '.join(ROOTFS_PACKAGES)} (debootstrap)", build)
    staging.rename(target)
    return target


def _layer(cache: Path, name: str, make: Callable[[Path], Layer]) -> Layer:
    out = cache / "images" / "layers" / f"{name}.tar"
    out.parent.mkdir(parents=True, exist_ok=True)
    return make(out)


def base_files(argo_module: Path | None = None) -> dict[str, tuple[bytes, int]]:
    files = {"/etc/passwd": (PASSWD.encode(), 0o644), "/etc/group": (GROUP.encode(), 0o644)}
    if argo_module is not None:
        files["/etc/nsswitch.conf"] = ((argo_module / "hack/nsswitch.conf").read_bytes(), 0o644)
        files["/etc/ssh/ssh_known_hosts"] = ((argo_module / "hack/ssh_known_hosts").read_bytes(), 0o644)
    return files


def binary_image(cache: Path, *, tag: str, binary: Path, entrypoint: str, user: str = "",
                 argo_module: Path | None = None, at_root: bool = False) -> ImageArchive:
    """A distroless-like image: ``/bin/<entrypoint>`` (``/<entrypoint>`` with ``at_root``, as the pause image
    has it) plus passwd/group (and Argo's etc files), distroless's ``PATH``."""
    files = base_files(argo_module)
    path = f"/{entrypoint}" if at_root else f"/bin/{entrypoint}"
    files[path] = (binary.read_bytes(), 0o755)
    files["/tmp/.keep"] = (b"", 0o644)
    key = hashlib.sha256(b"".join(k.encode() + v[0] for k, v in sorted(files.items()))
                         + f"{user}:{DISTROLESS_PATH}".encode()).hexdigest()[:16]
    out = cache / "images" / f"{entrypoint}-{key}.image.tar"
    if not out.exists():
        layer = _layer(cache, f"{entrypoint}-{key}", lambda p: layer_from_files(files, p))
        write_archive(out, tags=[tag], layers=[layer],
                      config=ImageConfig(entrypoint=[path], user=user, workdir="/", env={"PATH": DISTROLESS_PATH}))
        layer.path.unlink()
    keep_recent(out)
    return ImageArchive(tag, out)


def keep_recent(used: Path, keep: int = KEEP_IMAGES) -> list[Path]:
    """Mark the archive ``used`` as just used and delete all but the ``keep`` most recently used archives of the
    same image name (``<name>-<16 hex key>.image.tar``) beside it; returns what was deleted."""
    match = _ARCHIVE.fullmatch(used.name)
    if match is None:
        raise ValueError(f"{used.name}: not an image archive name (<name>-<16 hex>.image.tar)")
    os.utime(used)
    same = []
    for path in used.parent.iterdir():
        other = _ARCHIVE.fullmatch(path.name)
        if other is not None and other["name"] == match["name"] and path != used:
            try:
                same.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # another checkout pruned it meanwhile
                continue
    same.sort(reverse=True)
    deleted = []
    for _, path in same[max(keep - 1, 0):]:
        path.unlink(missing_ok=True)
        deleted.append(path)
    if deleted:
        log(f"cache: deleted {len(deleted)} older {match['name']} image archive(s), kept the {keep} last used")
    return deleted


LOCK = Path("requirements/runtime.txt")  # both images' dependencies, as both Dockerfiles install them
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, str]:
    """``{name: version}`` of a pip-compile lock (``name==version \\`` lines; hashes and comments skipped)."""
    return {_normalize(m[1]): m[2] for m in map(_PIN.match, text.splitlines()) if m}


def wheel_pins(wheel_dir: Path) -> dict[str, str]:
    """``{name: version}`` of the wheels in ``wheel_dir`` (from their file names)."""
    return {_normalize(w.name.split("-")[0]): w.name.split("-")[1] for w in wheel_dir.glob("*.whl")}


def lock_difference(wheels: Mapping[str, str], lock: Mapping[str, str], project: str = "capi-rollout") -> list[str]:
    """How a wheel set differs from the lock plus the project's own wheel (empty: it is exactly the lock)."""
    problems = [f"{name}: {wheels.get(name, 'missing')} instead of the lock's {version}"
                for name, version in sorted(lock.items()) if wheels.get(name) != version]
    problems += [f"{name} {version} is not in the lock" for name, version in sorted(wheels.items())
                 if name not in lock and name != project]
    if project not in wheels:
        problems.append(f"no {project} wheel")
    return problems


def wheels(repo: Path, python: str, out: Path) -> Path:
    """The wheels the Dockerfiles install: every pin of :data:`LOCK`, each checked against its hash, and this
    checkout's package built without dependencies (nor build isolation: hatchling comes from the dev lock). Raises
    if the set is not exactly the lock plus the package."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pip = [python, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out)]
    subprocess.run([*pip, "--require-hashes", "-r", str(LOCK)], cwd=repo, check=True)
    subprocess.run([*pip, "--no-build-isolation", "."], cwd=repo, check=True)
    problems = lock_difference(wheel_pins(out), lock_pins((repo / LOCK).read_text()))
    if problems:
        raise RuntimeError(f"the step image's wheels are not {LOCK}: {'; '.join(problems)}")
    return out


def image_key(lock: bytes, wheel_dir: Path) -> str:
    """A Python image's cache key: the lock's bytes and every wheel's name and content."""
    digest = hashlib.sha256(lock)
    for wheel in sorted(wheel_dir.iterdir()):
        digest.update(wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest())
    return digest.hexdigest()[:16]


def python_image(cache: Path, *, repo: Path, python: str, tag: str,
                 entrypoint: list[str], cmd: list[str]) -> ImageArchive:
    base = rootfs(cache)
    work = cache / "images" / "work" / tag.replace("/", "_").replace(":", "_")
    built = wheels(repo, python, work / "wheels")
    key = image_key((repo / LOCK).read_bytes(), built)
    out = cache / "images" / f"{tag.rsplit('/', 1)[-1].replace(':', '-')}-{key}.image.tar"
    if out.exists():
        keep_recent(out)
        return ImageArchive(tag, out)

    def build() -> Path:
        base_layer = cache / "images" / "layers" / f"{base.name}.tar"
        if not base_layer.exists():
            base_layer.parent.mkdir(parents=True, exist_ok=True)
            layer_from_tree(base, base_layer)
        base_l = Layer(base_layer, _diff_id(base_layer))
        tree = work / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        site = tree / "usr/local/lib/python3.11/dist-packages"
        site.mkdir(parents=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *map(str, sorted(built.iterdir()))], check=True)
        (tree / "usr/local/bin").mkdir(parents=True)
        (tree / "usr/local/bin/capi-rollout").write_text(
            "#!/usr/bin/python3\nimport sys\nfrom capi_rollout.cli import main\nsys.exit(main())\n")
        (tree / "usr/local/bin/capi-rollout").chmod(0o755)
        etc = tree / "etc"
        etc.mkdir()
        (etc / "passwd").write_text((base / "etc/passwd").read_text()
                                    + f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}::/nonexistent:/usr/sbin/nologin\n")
        (etc / "group").write_text((base / "etc/group").read_text() + f"nonroot:x:{NONROOT_UID}:\n")
        for extra in site.glob("bin"):
            shutil.rmtree(extra)
        app = layer_from_tree(tree, work / "app.tar")
        write_archive(out, tags=[tag], layers=[base_l, app], config=ImageConfig(
            entrypoint=entrypoint, cmd=cmd, user=f"{NONROOT_UID}:{NONROOT_UID}", workdir="/tmp",
            env={"PATH": DISTROLESS_PATH,
                 "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": "/tmp"}))
        shutil.rmtree(work, ignore_errors=True)
        keep_recent(out)
        return out

    return ImageArchive(tag, _timed(f"image {tag} (Debian {DEBIAN_SUITE} python3 + this checkout's wheels)", build))


def _diff_id(path: Path) -> str:
    stamp = path.with_suffix(".diffid")
    if stamp.exists() and stamp.stat().st_mtime >= path.stat().st_mtime:
        return stamp.read_text()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    value = "sha256:" + digest.hexdigest()
    stamp.write_text(value)
    return value


def events_images(cache: Path, binaries: Mapping[str, Path], *, argo_events_version: str, nats_version: str,
                  coredns_version: str) -> list[ImageArchive]:
    """The Argo Events and CoreDNS images (see the module contract); nats' tag has no ``v``."""
    return [
        binary_image(cache, tag=f"quay.io/argoproj/argo-events:{argo_events_version}", binary=binaries["argo-events"],
                     entrypoint="argo-events"),
        binary_image(cache, tag=f"docker.io/library/nats:{nats_version.removeprefix('v')}",
                     binary=binaries["nats-server"], entrypoint="nats-server", at_root=True),
        binary_image(cache, tag=f"registry.k8s.io/coredns/coredns:{coredns_version}", binary=binaries["coredns"],
                     entrypoint="coredns", at_root=True),
    ]


def build_all(cache: Path, binaries: Mapping[str, Path], *, repo: Path, argo_module: Path, argo_version: str,
              step_image: str, sim_image: str, python: str = sys.executable) -> list[ImageArchive]:
    """Every image the node needs, as archives to import (cached; rebuilt only when an input changed)."""
    os.makedirs(cache / "images", exist_ok=True)
    return [
        binary_image(cache, tag=PAUSE_IMAGE, binary=binaries["pause"], entrypoint="pause", at_root=True),
        binary_image(cache, tag=f"quay.io/argoproj/argoexec:{argo_version}", binary=binaries["argoexec"],
                     entrypoint="argoexec", argo_module=argo_module),
        binary_image(cache, tag=f"quay.io/argoproj/workflow-controller:{argo_version}",
                     binary=binaries["workflow-controller"], entrypoint="workflow-controller",
                     user=str(ARGO_UID), argo_module=argo_module),
        python_image(cache, repo=repo, python=python, tag=step_image, entrypoint=["capi-rollout"], cmd=["--help"]),
        python_image(cache, repo=repo, python=python, tag=sim_image, entrypoint=["python", "-m", "sim"],
                     cmd=["scenarios"]),
    ]
