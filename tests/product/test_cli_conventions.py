"""One set of command-line conventions: kebab-case flags (workflow parameters also in camelCase), no
abbreviations, help for every argument, a one-sentence description and the exit codes in every --help."""

from __future__ import annotations

import argparse

import pytest

from capi_rollout.cli import build_parser, flag_name, main
from capi_rollout.domain.params import DEFAULTS
from capi_rollout.workflow.image import IMAGE
from capi_rollout.workflow.render import pin_image, render_text


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_a_one_sentence_description_exit_codes_and_help_for_every_argument() -> None:
    subs = _subparsers()
    assert sorted(subs) == ["lint", "plan", "render", "report", "run"]
    for name, parser in subs.items():
        assert parser.description and parser.description.count(". ") == 0 and parser.description.endswith("."), name
        assert parser.epilog and parser.epilog.startswith("exit codes: 0 "), name
        for action in parser._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


def test_every_flag_is_kebab_case_and_parameters_keep_their_camel_case_spelling() -> None:
    for name, parser in _subparsers().items():
        for action in parser._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if action.dest in DEFAULTS:
                assert longs[0] == f"--{flag_name(action.dest)}" and f"--{action.dest}" in longs, (name, longs)
            else:
                assert all(o == o.lower() for o in longs), (name, longs)
    assert flag_name("controlPlaneTimeout") == "control-plane-timeout"


@pytest.mark.parametrize("spelling", ["--cluster-name", "--clusterName"])
def test_both_spellings_of_a_parameter_reach_the_same_value(spelling: str) -> None:
    args = build_parser().parse_args(["plan", spelling, "homelab", "--stall-timeout", "5m"])
    assert args.clusterName == "homelab" and args.stallTimeout == "5m"


def test_render_pins_every_step_image_by_digest_and_refuses_a_malformed_digest(capsys: pytest.CaptureFixture[str],
                                                                             ) -> None:
    digest = "sha256:" + "ab" * 32
    pinned = render_text(digest)
    assert f"image: {IMAGE}\n" not in pinned and pinned.count(f"image: {IMAGE}@{digest}\n") >= 3
    assert pinned.replace(f"@{digest}", "") == render_text()
    with pytest.raises(ValueError, match="not sha256"):
        pin_image(render_text(), "sha256:ABC")
    assert main(["render", "--check", "--image-digest", "latest"]) == 2
    assert "--image-digest 'latest' is not sha256" in capsys.readouterr().err
