"""The local Argo interpreter's deadlines, retries and faults, on toy WorkflowTemplates: Argo v4's retry
semantics (limit, policy, expression, backoff) and the product's retry rule against every way a pod is lost.

Each step is a real subprocess of the venv's python; durations are one-second Argo deadlines at most.
"""

from __future__ import annotations

import time

import pytest

from capi_rollout.workflow import template
from e2e.argo_local import InterpreterOptions, KillStep, UnsupportedConstruct, WorkflowRun, check_supported
from e2e.argo_local.pod import DEADLINE_MESSAGE, EVICTED_MESSAGE
from tests.e2e.argo_toys import py, run, steps, wft

# --- deadlines, retries, faults -------------------------------------------------------------------------


def test_active_deadline_seconds_kills_a_sleeping_step_with_argos_message(opts: InterpreterOptions) -> None:
    t = wft([py("main", "import time; print('start', flush=True); time.sleep(30)", activeDeadlineSeconds=1)])
    started = time.monotonic()
    r = run(t, opts)
    took = time.monotonic() - started
    assert (r.phase, r.message) == ("Failed", "Pod was active on the node longer than the specified deadline")
    assert 1.0 <= took < 5.0
    assert r.node("toy-1").exit_code == 128 + 15


def test_retry_limit_counts_retries_after_the_first_attempt(opts: InterpreterOptions) -> None:
    t = wft([steps("main", ("flaky", "fail", {})), py("fail", "raise SystemExit(1)", retryStrategy={"limit": "2"})])
    r = run(t, opts)
    assert [n.display_name for n in r.attempts("flaky")] == ["flaky(0)", "flaky(1)", "flaky(2)"]
    retry = r.node("flaky")
    assert (retry.type, retry.phase, retry.message) == ("Retry", "Failed", "No more retries left")
    assert r.phase == "Failed"


def test_a_retry_that_succeeds_stops_retrying_and_passes_outputs(opts: InterpreterOptions) -> None:
    t = wft([py("main", "import sys; print('attempt {{retries}}'); sys.exit(0 if {{retries}} >= 1 else 1)",
                retryStrategy={"limit": 3, "retryPolicy": "Always"})])
    r = run(t, opts)
    assert r.phase == "Succeeded", r.text()
    assert [n.phase for n in r.attempts("toy-1")] == ["Failed", "Succeeded"]
    assert r.node("toy-1").result == "attempt 1"


def test_a_killed_attempt_is_an_error_retried_by_always_but_not_by_on_failure(opts: InterpreterOptions) -> None:
    body = "import time; print('working', flush=True); time.sleep({{retries}} == 0 and 30 or 0)"
    for policy, expected in (("Always", ["Error", "Succeeded"]), ("OnFailure", ["Error"])):
        t = wft([steps("main", ("wait", "w", {})), py("w", body, retryStrategy={"limit": 2, "retryPolicy": policy})])
        opts.faults = [KillStep("wait", after=0.5, attempt=0)]
        started = time.monotonic()
        r = run(t, opts, name=f"toy-{policy.lower()}")
        assert time.monotonic() - started < 10
        attempts = r.attempts("wait")
        assert [n.phase for n in attempts] == expected, r.text()
        assert attempts[0].message == "pod deleted" and attempts[0].exit_code is None  # the pod object is gone
        assert r.phase == ("Succeeded" if policy == "Always" else "Failed")


# The product's retry strategy, on a step that exits with the code it is given on attempt 0 (or sleeps to be lost).
PRODUCT_RETRY = {"limit": 2, "retryPolicy": "Always", "expression": template.RETRY_EXPRESSION}
LOSABLE = "import sys, time; print('attempt {{retries}}', flush=True); c = {{inputs.parameters.code}}\n" \
          "if {{retries}} == 0 and c < 0: time.sleep(30)\nsys.exit(c if {{retries}} == 0 and c >= 0 else 0)"


def product_retry_run(opts: InterpreterOptions, code: int, how: str | None = None, name: str = "toy-r") -> WorkflowRun:
    t = wft([steps("main", ("phase", "p", {"code": str(code)})),
             py("p", LOSABLE, inputs={"parameters": [{"name": "code"}]}, retryStrategy=PRODUCT_RETRY)])
    opts.faults = [KillStep("phase", after=0.5, attempt=0, how=how)] if how else []
    return run(t, opts, name=name)


@pytest.mark.parametrize(
    ("how", "phase", "exit_code", "message"),
    [
        ("force", "Error", None, "pod deleted"),
        ("graceful", "Failed", 143, "main: Error (exit code 143)"),
        ("evict", "Failed", 137, EVICTED_MESSAGE),
    ],
)
def test_the_product_retry_survives_a_pod_lost_every_way_once(opts: InterpreterOptions, how: str, phase: str,
                                                              exit_code: int | None, message: str) -> None:
    r = product_retry_run(opts, -1, how, name=f"toy-{how}")
    first, second = r.attempts("phase")
    assert (first.phase, first.exit_code, first.message) == (phase, exit_code, message), r.text()
    assert second.phase == "Succeeded" and r.phase == "Succeeded", r.text()
    assert any("retryStrategy.expression is true" in e for e in r.events)


@pytest.mark.parametrize("code", [1, 2])
def test_the_product_retry_never_repeats_a_steps_own_failure(opts: InterpreterOptions, code: int) -> None:
    r = product_retry_run(opts, code, name=f"toy-exit{code}")
    (only,) = r.attempts("phase")
    assert (only.phase, only.exit_code) == ("Failed", code)
    assert (r.node("phase").phase, r.node("phase").message) == ("Failed", "retryStrategy.expression evaluated to false")
    assert r.phase == "Failed"


def test_the_product_retry_never_repeats_a_deadline_kill(opts: InterpreterOptions) -> None:
    t = wft([py("main", "import time; time.sleep(30)", activeDeadlineSeconds=1, retryStrategy=PRODUCT_RETRY)])
    r = run(t, opts)
    (only,) = r.attempts("toy-1")
    assert (only.phase, only.exit_code, only.message) == ("Failed", 143, DEADLINE_MESSAGE)
    assert r.node("toy-1").message == "retryStrategy.expression evaluated to false"


def test_a_graceful_deletion_on_every_attempt_spends_exactly_the_budget(opts: InterpreterOptions) -> None:
    t = wft([steps("main", ("phase", "p", {"code": "-1"})),
             py("p", LOSABLE.replace("{{retries}} == 0 and c < 0", "c < 0"),
                inputs={"parameters": [{"name": "code"}]}, retryStrategy=PRODUCT_RETRY)])
    opts.faults = [KillStep("phase", after=0.3, attempt=i, how="graceful") for i in range(4)]
    r = run(t, opts)
    assert [a.exit_code for a in r.attempts("phase")] == [143, 143, 143]
    assert (r.node("phase").phase, r.node("phase").message) == ("Failed", "No more retries left")


def test_a_fault_placed_by_the_ledger_is_refused_here_not_played_by_the_clock(opts: InterpreterOptions) -> None:
    t = wft([steps("main", ("wait", "w", {})), py("w", "print('never run')")])
    opts.faults = [KillStep("wait", after=0.0, attempt=0, after_remediations=1)]
    r = run(t, opts, name="toy-ledger-fault")
    [attempt] = r.attempts("wait")
    assert attempt.phase == "Error" and "KillStep.after_remediations (1) needs a cluster backend" in attempt.message
    assert r.phase != "Succeeded"


def test_backoff_is_waited_even_when_the_attempt_is_not_retried(opts: InterpreterOptions) -> None:
    # operator.go processNodeRetries: the backoff deadline is checked before the policy and the expression.
    strategy = {**PRODUCT_RETRY, "backoff": {"duration": "1", "factor": 2}}
    t = wft([py("main", "raise SystemExit(1)", retryStrategy=strategy)])
    started = time.monotonic()
    r = run(t, opts)
    assert len(r.attempts("toy-1")) == 1 and r.node("toy-1").message == "retryStrategy.expression evaluated to false"
    assert time.monotonic() - started >= 1.0


def test_an_expression_outside_the_subset_is_refused_before_anything_runs() -> None:
    t = wft([py("main", "pass", retryStrategy={"limit": 1, "expression": "asInt(lastRetry.exitCode) > 1"})])
    with pytest.raises(UnsupportedConstruct, match=r"templates\[0\]\.retryStrategy\.expression"):
        check_supported(t)


def test_backoff_waits_between_attempts(opts: InterpreterOptions) -> None:
    t = wft([py("main", "raise SystemExit(1)", retryStrategy={"limit": 1, "backoff": {"duration": "1", "factor": 2}})])
    r = run(t, opts)
    a0, a1 = r.attempts("toy-1")
    assert a1.started is not None and a0.finished is not None and a1.started - a0.finished >= 1.0


