"""The expr-lang subset that decides Argo retry expressions: expr-lang's precedence, types and refusals."""

from __future__ import annotations

import pytest

from capi_rollout.workflow.argo_expr import ExprError, compile_check, evaluate

VARS = {"retries": "0", "lastRetry.status": "Failed", "lastRetry.exitCode": "143",
        "lastRetry.message": "main: Error (exit code 143)", "lastRetry.duration": "12.5"}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('lastRetry.status == "Failed"', True),
        ("lastRetry.status != 'Failed'", False),
        ('lastRetry.exitCode in ["137", "143"]', True),
        ('lastRetry.exitCode not in ["137", "143"]', False),
        ('lastRetry.message contains "exit code 143"', True),
        ('lastRetry.message startsWith "main:" and lastRetry.message endsWith "143)"', True),
        ('!(lastRetry.message contains "deadline")', True),
        ('not true || false', False),  # `not` binds tighter than `or`
        ('lastRetry.status == "Error" || lastRetry.status == "Failed" && lastRetry.exitCode == "1"', False),
        ('(lastRetry.status == "Error" || lastRetry.status == "Failed") && lastRetry.exitCode == "1"', False),
        ('true || lastRetry.status == "x" && false', True),  # `and` binds tighter than `or`
    ],
)
def test_expr_lang_semantics(expression: str, expected: bool) -> None:
    assert evaluate(expression, VARS) is expected


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ('lastRetry.code == "1"', "unknown name lastRetry.code"),
        ("lastRetry.exitCode == 143", "unsupported character"),  # numbers are not in the subset
        ('upper(lastRetry.status) == "FAILED"', "function upper() is not supported"),
        ('lastRetry.message matches "x"', "unexpected"),
        ('lastRetry.status', "does not evaluate to a bool"),
        ('lastRetry.status == true', "mismatched types"),
        ('lastRetry.status == "a" == true', "chained comparison"),
        ('lastRetry.status in "Failed"', "invalid operation"),
        ('(lastRetry.status == "a"', "expected )"),
    ],
)
def test_what_argo_would_not_compile_or_the_subset_does_not_cover_is_refused(expression: str, why: str) -> None:
    with pytest.raises(ExprError, match=why.replace("(", r"\(").replace(")", r"\)")):
        compile_check(expression)


def test_a_type_error_in_a_short_circuited_branch_is_still_refused() -> None:
    with pytest.raises(ExprError):
        evaluate('true || lastRetry.status == false', VARS)
