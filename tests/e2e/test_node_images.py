"""The real node's step and simulator images hold exactly the lock the Dockerfiles install, keyed by it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.node import images

REPO = Path(__file__).resolve().parents[2]
LOCK = (REPO / images.LOCK).read_text()


def wheel_dir(tmp_path: Path, pins: dict[str, str]) -> Path:
    out = tmp_path / "wheels"
    out.mkdir(exist_ok=True)
    for name, version in pins.items():
        (out / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(f"{name} {version}".encode())
    return out


def test_the_lock_is_read_as_name_and_version_of_every_pin() -> None:
    pins = images.lock_pins(LOCK)
    assert pins["kubernetes"] and pins["pydantic-core"] and pins["typing-extensions"]
    assert len(pins) == sum(1 for line in LOCK.splitlines() if "==" in line and not line.startswith((" ", "#")))
    assert images.lock_pins("Foo_Bar==1.2 \\\n    --hash=sha256:00\n    # via x\n") == {"foo-bar": "1.2"}


def test_exactly_the_lock_plus_the_package_passes(tmp_path: Path) -> None:
    lock = images.lock_pins(LOCK)
    built = images.wheel_pins(wheel_dir(tmp_path, {**lock, "capi-rollout": "0.1.0"}))
    assert built == {**lock, "capi-rollout": "0.1.0"}
    assert images.lock_difference(built, lock) == []


@pytest.mark.parametrize(("change", "named"), [
    ({"kubernetes": "99.0.0"}, "kubernetes: 99.0.0 instead of the lock's"),
    ({"left-pad": "1.0"}, "left-pad 1.0 is not in the lock"),
    ({"pyyaml": None}, "pyyaml: missing instead of the lock's"),
    ({"capi-rollout": None}, "no capi-rollout wheel"),
], ids=["other version", "extra package", "missing package", "no project wheel"])
def test_any_difference_from_the_lock_is_named(change: dict[str, str | None], named: str) -> None:
    lock = images.lock_pins(LOCK)
    built = {**lock, "capi-rollout": "0.1.0"}
    for name, version in change.items():
        if version is None:
            del built[name]
        else:
            built[name] = version
    problems = images.lock_difference(built, lock)
    assert len(problems) == 1 and problems[0].startswith(named), problems


def test_an_image_is_keyed_by_the_lock_and_its_wheels(tmp_path: Path) -> None:
    wheels = wheel_dir(tmp_path, {"capi-rollout": "0.1.0", "pyyaml": "6.0.4"})
    key = images.image_key(LOCK.encode(), wheels)
    assert images.image_key(LOCK.encode(), wheels) == key
    assert images.image_key(LOCK.encode() + b"# relocked\n", wheels) != key
    (wheels / "capi_rollout-0.1.0-py3-none-any.whl").write_bytes(b"changed")
    assert images.image_key(LOCK.encode(), wheels) != key


# --- the engine line: what the running node says, checked against the pins -------------------------------------

PINS = {"KUBERNETES_VERSION": "v1.37.2", "CONTAINERD_VERSION": "v2.4.2", "ARGO_WORKFLOWS_VERSION": "v4.0.2"}
CONTROLLER_SAYS = ('time=2026-12-01T20:57:13.179Z level=INFO msg="index config"\nworkflow-controller: v4.0.2+unknown\n'
                   "  BuildDate: 1970-01-01T00:00:00Z\n")
ARGOEXEC_SAYS = "argoexec: v4.0.2+unknown\n  GoVersion: go1.26.8\n"
NODE_INFO = {"kubeletVersion": "v1.37.2", "containerRuntimeVersion": "containerd://2.4.2"}


def test_the_engine_line_names_what_the_running_node_reports() -> None:
    from e2e.node import setup

    versions = setup.parse_versions(NODE_INFO, CONTROLLER_SAYS, ARGOEXEC_SAYS)
    assert versions == {"kubelet": "v1.37.2", "containerd": "v2.4.2", "workflow-controller": "v4.0.2",
                        "argoexec": "v4.0.2"}
    assert setup.version_mismatches(versions, PINS) == []
    assert setup.engine_line(versions).startswith(
        "engine: Argo Workflows v4.0.2 workflow-controller + argoexec v4.0.2 on kubelet v1.37.2, containerd v2.4.2")


@pytest.mark.parametrize(("node_info", "controller", "named"), [
    ({**NODE_INFO, "kubeletVersion": "v1.36.0"}, CONTROLLER_SAYS, "kubelet reports v1.36.0, tools/versions.env pins "
                                                                  "v1.37.2"),
    ({**NODE_INFO, "containerRuntimeVersion": "containerd://1.6.20"}, CONTROLLER_SAYS, "containerd reports v1.6.20"),
    ({**NODE_INFO, "containerRuntimeVersion": "cri-o://1.30"}, CONTROLLER_SAYS, "containerd reports unknown"),
    (NODE_INFO, "workflow-controller: v4.0.5+abc\n", "workflow-controller reports v4.0.5"),
    (NODE_INFO, "panic: no such command\n", "workflow-controller reports unknown ('panic: no such command')"),
], ids=["kubelet", "containerd", "other runtime", "controller", "controller unreadable"])
def test_a_running_engine_that_is_not_the_pinned_one_is_named(
        node_info: dict[str, str], controller: str, named: str) -> None:
    from e2e.node import setup

    problems = setup.version_mismatches(setup.parse_versions(node_info, controller, ARGOEXEC_SAYS), PINS)
    assert len(problems) == 1 and problems[0].startswith(named), problems


def test_the_built_argo_binaries_say_the_pinned_version() -> None:
    """The binaries the node's Argo images are made of (``make node-tools``), asked as the launcher asks them."""
    import subprocess

    from e2e.node import setup
    from envtest import assets

    bin_dir = setup.node_bin_dir(assets.versions(), assets.cache_dir())
    if not (bin_dir / "workflow-controller").exists():
        pytest.skip(f"{bin_dir} is not built (`make node-tools`)")
    said = {b: subprocess.run([str(bin_dir / b), "version"], capture_output=True, text=True, timeout=60)
            for b in ("workflow-controller", "argoexec")}
    versions = setup.parse_versions(NODE_INFO, *(d.stdout + d.stderr for d in said.values()))
    assert versions["workflow-controller"] == versions["argoexec"] == assets.versions()["ARGO_WORKFLOWS_VERSION"]


# --- the image cache: the last used archives of each image stay, older ones go -----------------------------


def _archive(directory: Path, name: str, n: int, mtime: float) -> Path:
    path = directory / f"{name}-{n:016x}.image.tar"
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_the_cache_keeps_the_last_used_archives_of_each_image_and_deletes_older_ones(tmp_path: Path) -> None:
    step = [_archive(tmp_path, "capi-rollout-0.1.0", n, 1000.0 + n) for n in range(5)]
    sim = [_archive(tmp_path, "capi-rollout-sim-0.1.0", n, 1000.0 + n) for n in range(5)]
    other = tmp_path / "rootfs-bookworm-0fb46148b8d6.tar"
    other.write_bytes(b"x")

    deleted = images.keep_recent(step[1], keep=3)  # reusing an old one makes it the most recent

    assert sorted(deleted) == sorted([step[0], step[2]])
    assert [p.exists() for p in step] == [False, True, False, True, True]
    assert all(p.exists() for p in sim) and other.exists()  # another name, and files that are not archives


def test_keeping_one_archive_deletes_every_other_of_that_name(tmp_path: Path) -> None:
    step = [_archive(tmp_path, "argoexec", n, 1000.0 + n) for n in range(3)]
    assert sorted(images.keep_recent(step[2], keep=1)) == sorted(step[:2])
    with pytest.raises(ValueError, match="not an image archive name"):
        images.keep_recent(tmp_path / "rootfs-bookworm-0fb46148b8d6.tar")
