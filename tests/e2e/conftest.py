"""The local Argo interpreter's options for one test: its own results directory and mutexes, short grace."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.argo_local import InterpreterOptions, MutexRegistry


@pytest.fixture
def opts(tmp_path: Path) -> InterpreterOptions:
    return InterpreterOptions(results_dir=tmp_path / "results", mutexes=MutexRegistry(), kill_grace=0.2,
                           safety_timeout=60)
