"""The rollout picture: lifecycle events and a ledger in, a self-contained SVG naming every Machine and mark out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from capi_rollout.picture.build import Lifecycle, build, from_cluster, from_timeline
from capi_rollout.picture.svg import render

T0 = 1_780_000_000.0  # 2026-05-28


def _ledger() -> dict[str, Any]:
    return {"cluster": "demo", "namespace": "sim", "phases": {
        "control-plane": {"name": "control-plane", "started": "2026-05-28T20:26:50Z",
                          "finished": "2026-05-28T20:28:20Z", "result": "succeeded", "remediations": [
                              {"at": "2026-05-28T20:27:30Z", "machine": "demo-cp-3", "address": "10.0.0.7",
                               "deleted": True, "rebooted": True, "reboot_mode": "powercycle"}]},
        "workers": {"name": "workers", "started": "2026-05-28T20:28:21Z", "finished": None, "result": None}}}


def _rows() -> list[tuple[float, str, str, dict[str, Any]]]:
    return [
        (T0 - 100, "machine.created", "demo-cp-0", {"role": "cp"}),
        (T0 - 90, "machine.phase", "demo-cp-0", {"phase": "Running"}),
        (T0 - 89, "machine.ready", "demo-cp-0", {}),
        (T0 + 1, "machine.deleting", "demo-cp-0", {"phase": "Running"}),
        (T0 + 8, "machine.deleted", "demo-cp-0", {}),
        (T0 + 9, "machine.created", "demo-cp-3", {"role": "cp"}),
        (T0 + 10, "machine.phase", "demo-cp-3", {"phase": "Provisioning"}),
        (T0 + 20, "machine.phase", "demo-cp-3", {"phase": "Running"}),
        (T0 + 31, "machine.deleting", "demo-cp-3", {}),
        (T0 + 31.5, "talos.reboot", "demo-cp-3", {"address": "10.0.0.7", "mode": "powercycle"}),
        (T0 + 40, "machine.deleted", "demo-cp-3", {}),
        (T0 + 41, "machine.created", "demo-cp-4", {"role": "cp"}),
        (T0 + 60, "machine.ready", "demo-cp-4", {}),
        (T0 - 50, "machine.created", "demo-workers-0", {"role": "worker"}),
    ]


def test_the_svg_names_every_machine_the_phases_the_stall_the_remediation_and_the_reboot() -> None:
    events, reboots = from_timeline(_rows())
    svg = render(build(title="demo: cp-stall", events=events, ledger=_ledger(), reboots=reboots,
                       stall_timeout=240, start=T0))
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for machine in ("demo-cp-0", "demo-cp-3", "demo-cp-4", "demo-workers-0"):
        assert machine in text
    assert "remediation 1: delete demo-cp-3, reboot 10.0.0.7" in text
    assert "reboot 10.0.0.7 (powercycle)" in text
    assert "control plane phase (succeeded)" in text and "workers phase (running)" in text
    assert 'fill="url(#stall)"' in svg and "<script" not in svg and "href" not in svg


def test_spans_follow_the_states_and_machines_before_the_start_begin_at_the_left_edge() -> None:
    events, _ = from_timeline(_rows())
    picture = build(title="t", events=events, start=T0, end=T0 + 100)
    tracks = {t.machine: t for t in picture.tracks}
    assert [s.state for s in tracks["demo-cp-3"].spans] == ["created", "provisioning", "running", "deleting"]
    assert tracks["demo-cp-3"].deleted == T0 + 40
    assert tracks["demo-cp-0"].spans[0].start == T0 and tracks["demo-cp-0"].spans[0].state == "ready"
    assert [t.machine for t in picture.tracks][-1] == "demo-workers-0"  # control plane rows first


def test_a_real_run_reads_machines_and_the_owners_events() -> None:
    machines = [{"metadata": {"name": "cp-new", "creationTimestamp": "2026-05-28T20:27:00Z",
                              "labels": {"cluster.x-k8s.io/control-plane": ""}},
                 "status": {"conditions": [{"type": "Ready", "status": "True",
                                            "lastTransitionTime": "2026-05-28T20:28:00Z"}]}}]
    events = [{"message": 'Created machine "cp-old-2"', "lastTimestamp": "2026-05-28T20:20:00Z"},
              {"message": "Deleted machine cp-old-2", "lastTimestamp": "2026-05-28T20:25:00Z"},
              {"message": "unrelated", "lastTimestamp": "2026-05-28T20:25:00Z"}]
    found = from_cluster(machines, events)
    assert {(e.machine, e.state) for e in found} == {("cp-new", "created"), ("cp-new", "ready"),
                                                     ("cp-old-2", "created"), ("cp-old-2", "deleting")}
    assert all(isinstance(e, Lifecycle) for e in found)
