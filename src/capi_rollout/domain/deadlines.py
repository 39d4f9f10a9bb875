"""Backstop deadlines for the workflow's leaf templates (``activeDeadlineSeconds``).

Contract: pure functions, no I/O. The template sets the fixed ones; resolve hands the phases theirs as outputs
(:mod:`capi_rollout.step_table`). The engine enforces each phase timeout itself; the pod deadline is only a
backstop for a hung process, so it sits a little above the timeout: the timeout plus the larger of two poll
intervals and :data:`PHASE_DEADLINE_MARGIN_SECONDS`. Steps that do not wait on a rollout get fixed deadlines.
"""

from __future__ import annotations

import math

PHASE_DEADLINE_MARGIN_SECONDS = 300
RESOLVE_DEADLINE_SECONDS = 300
PREFLIGHT_DEADLINE_SECONDS = 600
SUMMARY_DEADLINE_SECONDS = 300


def phase_deadline_seconds(*, timeout: float, poll_interval: float) -> int:
    """Seconds Argo lets a phase pod run: ``timeout + max(2 × poll_interval, margin)``, rounded up.

    >>> phase_deadline_seconds(timeout=2700, poll_interval=30)
    3000
    >>> phase_deadline_seconds(timeout=2700, poll_interval=600)
    3900
    """
    if timeout <= 0 or poll_interval <= 0:
        raise ValueError("timeout and poll_interval must be greater than zero")
    return math.ceil(timeout + max(2 * poll_interval, PHASE_DEADLINE_MARGIN_SECONDS))
