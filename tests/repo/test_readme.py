"""The README tells the truth: every parameter with its default, the two commands, the CI command."""

from __future__ import annotations

import re
from pathlib import Path

from capi_rollout.domain.params import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_parameter_is_documented_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", README, flags=re.MULTILINE))
    for name, default in DEFAULTS.items():
        assert name in rows, f"README lacks parameter {name}"
        shown = rows[name].strip()
        assert shown == ("(required)" if default is None else f"`{default}`"), f"{name}: README says {shown}"


def test_the_two_commands_are_there_and_ci_runs_the_test_command() -> None:
    assert "make demo" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w+)`", README)):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), f"Makefile lacks target {target}"


# Words the product says when it waits or fails: each must be in the product's source AND in the README's tables,
# so a reason added without a row, or reworded in one place only, fails here.
REASONS = [
    "spec.controlPlaneRef is a ", "not a TalosControlPlane", "spec.rolloutStrategy.type is ",
    "is not an integer or a percentage", "is not set (CAPI default ", "maxSurge is not set, which defaults to 1",
    "no progress since ", "and no unhealthy Machine to remediate", "carries the annotation ", " in flight: Machine ",
    "the etcd quorum guard would refuse to remediate", "remediation budget spent (", "remediation budget exhausted (",
    "phase timed out after ", "no reboot of ",
    "the Machine has no nodeRef and no Hostname address",
    "is the cluster's only etcd member", "below the quorum of ", "aborted before acting: another attempt of this step",
    "not sent: reboot mode force needs Talos v1.12 or later", "reboot requested but not observed within ",
    "Pod was active on the node longer than the specified deadline", "is in Talos maintenance mode",
    "tool cannot trust (", "the talosconfig client certificate expired at ",
    "another rollout of ", "the workers phase starts only after the control plane phase has succeeded",
    "cannot use the run's ledger", ": refusing to use it",
]


def test_every_reason_to_wait_or_fail_has_a_row_in_the_readme() -> None:
    tables = "\n".join(line for line in README.splitlines() if line.startswith("| "))
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "capi_rollout").rglob("*.py"))
    for words in REASONS:
        assert words in source, f"the product no longer says {words!r}"
        assert words in tables, f"README's failure tables lack a row for {words!r}"
