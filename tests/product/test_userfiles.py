"""The one bounded reader of user YAML/JSON: alias bombs, recursion and oversized input are refused quickly."""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import cast

import pytest
import yaml

from capi_rollout import lint
from capi_rollout.adapters.talos.config import TalosConfigError, parse_talosconfig
from capi_rollout.cli import build_parser
from capi_rollout.userfiles import MAX_ALIASES, load_json, load_yaml, load_yaml_all
from tests.product.test_cli_bad_input import alias_bomb


def test_a_small_alias_bomb_in_max_surge_is_refused_in_little_time_and_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Before: yaml.safe_load kept the shared references, then the strategy check's str(maxSurge) grew past 2 GiB.
    bomb = alias_bomb()
    assert len(bomb.encode()) < 800
    path = tmp_path / "md.yaml"
    path.write_text(bomb)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(lint.LintInputError, match="alias bomb"):
            lint.lint([path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5 and peak < 50 * 1024 * 1024


def test_merge_key_bombs_and_too_many_aliases_are_refused() -> None:
    merge = "a: &a {x: 1, y: 2}\n" + "".join(
        f"b{i}: &b{i} {{<<: [" + ", ".join([f"*{'a' if i == 0 else f'b{i - 1}'}"] * 9) + "]}\n" for i in range(9))
    with pytest.raises(yaml.YAMLError, match="alias"):
        load_yaml_all(merge)
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(yaml.YAMLError, match=f"more than {MAX_ALIASES} YAML aliases"):
        load_yaml_all(many)


def test_ordinary_aliases_and_timestamps_read_as_kubernetes_json_does() -> None:
    doc = load_yaml("base: &b {replicas: 3}\nmd: *b\ncreated: 2026-01-01T00:00:00Z\n")
    assert doc == {"base": {"replicas": 3}, "md": {"replicas": 3}, "created": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize("text", ["[" * 50000, "1" * 5000])
def test_json_too_deep_or_too_long_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not usable JSON"):
        load_json(text)


def test_a_talosconfig_alias_bomb_is_a_talosconfig_error() -> None:
    levels = "".join(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9))
    text = "context: a\nx:\n  l0: &l0 [a, a, a, a, a, a, a, a, a]\n" + levels + "contexts:\n  a: {endpoints: *l8}\n"
    with pytest.raises(TalosConfigError, match="not YAML"):
        parse_talosconfig(text)


def test_no_parser_or_subparser_accepts_an_abbreviated_flag() -> None:
    parser = build_parser()
    subparsers = cast("dict[str, argparse.ArgumentParser]",  # a subparsers action's choices: name -> parser
                      next(a for a in parser._actions if a.dest == "command").choices)
    assert parser.allow_abbrev is False
    assert subparsers and all(p.allow_abbrev is False for p in subparsers.values())
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--clusterName", "c", "--ledger", "argo"])


def test_manifest_objects_drops_empty_documents_flattens_lists_and_says_where() -> None:
    from capi_rollout.userfiles import manifest_objects

    text = "---\n---\nkind: A\n---\nkind: ConfigMapList\nitems: [{kind: B}, {kind: C}]\n---\nkind: List\nitems: []\n"
    assert manifest_objects(text, "f.yaml") == [
        ("document 2", {"kind": "A"}),
        ("document 3 item 1", {"kind": "B"}),
        ("document 3 item 2", {"kind": "C"}),
    ]


@pytest.mark.parametrize(("text", "expect"), [
    ("- a\n", "f.yaml: document 1 is a list, not a Kubernetes object (not a mapping)"),
    ("kind: List\nitems: [3]\n", "f.yaml: document 1 item 1 is a number, not a Kubernetes object (not a mapping)"),
    ("kind: List\n", "f.yaml: document 1 is a List without an items list"),
    ("a: [", "f.yaml: not valid YAML"),
])
def test_manifest_objects_refuses_what_is_not_an_object_in_one_line(text: str, expect: str) -> None:
    from capi_rollout.userfiles import InputError, manifest_objects

    with pytest.raises(InputError) as err:
        manifest_objects(text, "f.yaml")
    assert str(err.value).startswith(expect) and "\n" not in str(err.value)
