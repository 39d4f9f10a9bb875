"""``make demo`` leaves the picture of the rollout beside its summary: ``python -m e2e.demo`` on the local backend
(a real local API server, the rendered template through the local executor, each step a real process)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from e2e import demo

pytestmark = pytest.mark.apiserver

SVG = "{http://www.w3.org/2000/svg}"


def test_the_demo_writes_a_picture_naming_every_machine_the_phases_and_the_remediation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2E_CLUSTER", "local")
    assert demo.main(["--results", str(tmp_path)]) == 0
    run = tmp_path / "demo"
    svg = (run / "rollout.svg").read_text()
    words = " ".join("".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text"))
    machines = set(re.findall(r"machine\.created\s+(\S+)", (run / "timeline.txt").read_text()))
    assert len(machines) == 9, machines  # 3 + 2 at the start, 4 control-plane replacements
    for machine in machines:
        assert machine in words
    summary = json.loads((run / "summary.json").read_text())
    (rem,) = summary["phases"]["control-plane"]["remediations"]
    assert f"remediation 1: delete {rem['machine']}, reboot {rem['address']}" in words
    assert f"reboot {rem['address']} (powercycle)" in words  # the reboot the fake Talos saw
    assert "control plane phase (succeeded)" in words and "workers phase (succeeded)" in words
    assert summary["headline"] in words
