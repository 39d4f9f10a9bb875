"""Machines replaced / to replace (Argo's N/M) and the file Argo's executor reads it from."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from capi_rollout.domain.replacement import Replacement, replacement_progress, sentence
from capi_rollout.domain.state import ClusterState
from capi_rollout.progress_file import ProgressFile
from tests import builders as b

STARTED = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)


def _state(*machines: dict[str, object]) -> ClusterState:
    return ClusterState.from_objects(cluster=b.cluster(), control_plane=b.tcp(up_to_date=False),
                                     deployments=[b.md()], machines=list(machines))


def test_only_serving_machines_created_since_the_phase_started_count_as_replaced() -> None:
    state = _state(b.machine("old", cp=True), b.machine("new-ready", cp=True, created="2026-01-01T00:12:00Z"),
                   b.machine("new-booting", cp=True, ready=False, created="2026-01-01T00:13:00Z"),
                   b.machine("new-deleting", cp=True, created="2026-01-01T00:14:00Z",
                             deleting="2026-01-01T00:15:00Z"))
    got = replacement_progress("control-plane", state, since=STARTED, complete=False)
    assert got == Replacement("control-plane", 1, 3) and got.argo == "1/3"
    assert replacement_progress("control-plane", state, since=STARTED, complete=True).argo == "3/3"
    assert sentence(got, remediations=1) == "control plane: 1/3 replaced, 1 remediation"


def test_capis_up_to_date_condition_counts_and_no_machine_deployment_means_nothing_to_replace() -> None:
    up = b.machine("w-0")
    up["status"]["conditions"].append({"type": "UpToDate", "status": "True"})
    state = ClusterState.from_objects(cluster=b.cluster(), control_plane=b.tcp(), deployments=[b.md()],
                                      machines=[up, b.machine("w-1")])
    assert replacement_progress("workers", state, since=STARTED, complete=False).argo == "1/2"
    none = ClusterState.from_objects(cluster=b.cluster(), control_plane=b.tcp(), deployments=[], machines=[])
    nothing = replacement_progress("workers", none, since=STARTED, complete=True)
    assert nothing.argo is None and sentence(nothing, remediations=0) == "workers: nothing to replace, 0 remediations"


def test_the_progress_file_is_written_whole_on_change_only_and_never_without_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "progress"
    progress = ProgressFile.from_env({"ARGO_PROGRESS_FILE": str(path)})
    progress.update("0/3")
    assert path.read_text() == "0/3\n"
    path.write_text("touched\n")
    progress.update("0/3")  # unchanged: not written again
    assert path.read_text() == "touched\n"
    progress.update(None)
    progress.update("1/3")
    assert path.read_text() == "1/3\n" and list(tmp_path.iterdir()) == [path]
    ProgressFile.from_env({}).update("2/3")  # no variable (capi-rollout run): nothing anywhere
    ProgressFile(str(tmp_path / "absent" / "progress")).update("1/3")  # an unwritable path never fails the step
