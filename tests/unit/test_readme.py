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
