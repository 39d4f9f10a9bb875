"""The real node's step and simulator images hold exactly the lock the Dockerfiles install, keyed by it."""

from __future__ import annotations

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
