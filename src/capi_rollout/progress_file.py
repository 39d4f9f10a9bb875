"""Argo's self-reported step progress: ``N/M`` written to the file ``$ARGO_PROGRESS_FILE`` names.

Contract: Argo Workflows (v3.3+, executor progress patching) sets ``ARGO_PROGRESS_FILE`` in a step's main
container (``/var/run/argo/progress``) when progress reporting is enabled; its executor reads the file's last line
every ``ARGO_PROGRESS_FILE_TICK_DURATION`` (3 s), accepts it when it is ``N/M`` with ``0 <= N <= M`` and
``M > 0``, and patches the step's WorkflowTaskResult, so the UI's bar moves. :class:`ProgressFile` writes the
value whole (a temporary file renamed over it) and only when it changed; without the variable (``capi-rollout run``,
Argo with progress disabled) it does nothing. A write that fails is logged once and never fails the rollout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

ENV = "ARGO_PROGRESS_FILE"
log = logging.getLogger("capi_rollout")


class ProgressFile:
    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.last: str | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProgressFile:
        return cls((os.environ if env is None else env).get(ENV) or None)

    def update(self, value: str | None) -> None:
        """Write ``value`` (``N/M``) when it differs from the last one written; None writes nothing."""
        if self.path is None or value is None or value == self.last:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(value + "\n", encoding="utf-8")
            tmp.replace(self.path)
        except OSError as exc:
            if not self._warned:
                log.info("cannot write the Argo progress file %s: %s (progress is not shown)", self.path,
                         exc.strerror or exc)
                self._warned = True
            return
        self.last = value
