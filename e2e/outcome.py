"""What one e2e scenario produced, the questions scenarios ask of it, and the results it leaves behind.

Contract: an :class:`Outcome` (made by :meth:`e2e.harness.Stage.run`) holds the completed run, the simulator's
timeline, the run's RolloutLedger and the submission's wall times. It answers what the engine deleted, which
reboots the fake Talos saw, the remediations in the ledger, the summary, each step's log; :meth:`Outcome.write`
leaves under one directory the ``argo get``-like run text, the merged timeline (simulator events + the workflow's
steps + the ledger's phases and remediations, on the simulator's clock), the summary and ledger JSON, the steps'
logs and ``rollout.svg`` (a timeline per Machine with the phases, stalls, remediations and reboots), so a failing
run is readable without rerunning it. No cluster access: everything was read before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capi_rollout.domain.params import parse_duration
from capi_rollout.picture.build import build as build_picture
from capi_rollout.picture.build import from_timeline
from capi_rollout.picture.svg import render as render_svg
from e2e.argo_local import WorkflowRun
from e2e.argo_local.model import POD
from sim.scenario import Scenario
from sim.timeline import Event, Timeline


@dataclass
class Outcome:
    """Everything one scenario produced; the queries scenarios assert on."""

    name: str
    scenario: Scenario
    run: WorkflowRun
    timeline: Timeline
    ledger: dict[str, Any] | None
    submitted_wall: float
    finished_wall: float
    notes: list[str] = field(default_factory=list)
    stall_timeout: float | None = None  # the run's stallTimeout (seconds): the stall drawn before a remediation

    # --- the workflow
    @property
    def summary(self) -> dict[str, Any] | None:
        text = self.run.exit_outputs.get("summary")
        return json.loads(text) if text else None

    def step_ran(self, step: str) -> bool:
        return bool(self.run.attempts(step))

    def step_log(self, step: str, attempt: int = -1) -> str:
        """The log of one attempt of ``step`` (the last by default)."""
        attempts = self.run.attempts(step)
        if not attempts or attempts[attempt].log_path is None:
            return ""
        return Path(str(attempts[attempt].log_path)).read_text()

    def logs(self) -> str:
        return "\n".join(Path(n.log_path).read_text() for n in self.run.nodes.values()
                         if n.type == POD and n.log_path and Path(n.log_path).exists())

    # --- the ledger
    def phase(self, name: str) -> dict[str, Any] | None:
        return ((self.ledger or {}).get("phases") or {}).get(name)

    def remediations(self, phase: str | None = None) -> list[dict[str, Any]]:
        names = [phase] if phase else ["control-plane", "workers"]
        return [r for n in names for r in ((self.phase(n) or {}).get("remediations") or [])]

    # --- the simulated cluster
    def engine_deletions(self) -> list[str]:
        """Machines deleted by someone other than the fake CAPI controllers: the engine (in order)."""
        by_controller = {e.subject for e in self.timeline.events("controller.delete")}
        return [e.subject for e in self.timeline.events("machine.deleting") if e.subject not in by_controller]

    def reboots(self) -> list[Event]:
        return self.timeline.events("talos.reboot")

    def sim_seconds(self, wall: float) -> float:
        return _sim_seconds(self.timeline, wall)

    # --- results
    def merged_events(self) -> list[tuple[float, str]]:
        """(wall time, line) of the simulator's events, the workflow's steps and the ledger, in time order."""
        rows: list[tuple[float, str]] = [(e.wall, e.line()) for e in self.timeline.events()]

        def line(wall: float, kind: str, subject: str, details: str = "") -> tuple[float, str]:
            text = f"{self.sim_seconds(wall):9.1f}s  {kind:<22} {subject}" + (f"  {details}" if details else "")
            return wall, text

        rows.append(line(self.submitted_wall, "workflow.submitted", self.run.name))
        for n in list(self.run.nodes.values()):
            if n.type != POD:
                continue
            if n.started is not None:
                rows.append(line(n.started, "step.started", n.display_name))
            if n.finished is not None:
                rows.append(line(n.finished, f"step.{n.phase.lower()}", n.display_name, n.message))
        for name in ("control-plane", "workers"):
            rec = self.phase(name)
            if not rec:
                continue
            rows.append(line(_wall(rec["started"]), "engine.phase-started", name))
            if rec.get("finished"):
                rows.append(line(_wall(rec["finished"]), f"engine.phase-{rec.get('result')}", name,
                                 str(rec.get("message", ""))[:160]))
            for r in rec.get("remediations") or []:
                rows.append(line(_wall(r["at"]), "engine.remediation", r["machine"],
                                 f"deleted={r['deleted']} rebooted={r['rebooted']} mode={r['reboot_mode']} "
                                 f"dry_run={r.get('dry_run', False)} outcome={r['outcome']}"))
        if self.run.finished is not None:
            rows.append(line(self.run.finished, f"workflow.{self.run.phase.lower()}", self.run.name, self.run.message))
        return sorted(rows, key=lambda r: r[0])

    def timeline_text(self) -> str:
        head = (f"# {self.name}: scenario {self.scenario.name} ({self.scenario.capi_line}, namespace "
                f"{self.scenario.namespace}, time scale {self.scenario.timings.time_scale:g}x; times are simulated "
                f"seconds)\n")
        return head + "\n".join(text for _, text in self.merged_events()) + "\n"

    def picture(self) -> str:
        """The rollout as an SVG timeline per Machine (from the trigger on): the simulator's lifecycle events and
        reboots, the ledger's phases, stalls and remediations (:mod:`capi_rollout.picture`)."""
        rows = [(e.wall, e.kind, e.subject, e.details) for e in self.timeline.events()]
        events, reboots = from_timeline(rows)
        trigger = self.timeline.first("rollout.triggered")
        start = (trigger.wall if trigger else self.submitted_wall) - 0.5
        headline = (self.summary or {}).get("headline") or f"workflow {self.run.phase}"
        title = (f"{self.name}: scenario {self.scenario.name} ({self.scenario.capi_line}; wall clock, the "
                 f"simulation runs {self.scenario.timings.time_scale:g}x)")
        return render_svg(build_picture(title=title, subtitle=headline, events=events, ledger=self.ledger,
                                        reboots=reboots, stall_timeout=self.stall_timeout, start=start,
                                        end=self.finished_wall))

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "rollout.svg").write_text(self.picture())
        (directory / "run.txt").write_text(self.run.text())
        (directory / "timeline.txt").write_text(self.timeline_text())
        (directory / "summary.json").write_text(json.dumps(self.summary, indent=2, sort_keys=True) + "\n")
        (directory / "ledger.json").write_text(json.dumps(self.ledger, indent=2, sort_keys=True) + "\n")
        (directory / "steps.log").write_text(self.logs())
        return directory


def stall_timeout(params: Mapping[str, str]) -> float | None:
    try:
        return parse_duration(params["stallTimeout"]) if "stallTimeout" in params else None
    except ValueError:
        return None


def _wall(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _sim_seconds(timeline: Timeline, wall: float) -> float:
    events = timeline.events()
    if not events:
        return 0.0
    first = events[0]
    return (wall - (first.wall - first.sim_seconds / timeline.scale)) * timeline.scale
