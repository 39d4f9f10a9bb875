"""The process every step pod runs: ``python -m capi_rollout.workflow.entry <step> <staged inputs file>``.

Contract: a thin I/O shell (argv, one file, environment, exit code) around :func:`capi_rollout.workflow.steps.run`;
it replaces Hera's runner (``python -m hera.workflows.runner``) in the pods and imports no Hera: importing
``hera.workflows`` costs more than a second of every pod start, and the template is only *built* with Hera.

* The WorkflowTemplate's script templates say ``command: [python]``,
  ``args: [-m, capi_rollout.workflow.entry, <step>]`` and ``source: '{{inputs.parameters}}'``; Argo stages the
  substituted source at ``/argo/staging/script`` and appends that path, so argv is ``<step> <path>``.
* The file holds Argo's ``{{inputs.parameters}}``: a JSON list of the template's resolved input parameters,
  ``[{"name": ..., "value": ..., "default"?: ..., ...}, ...]``. :func:`read_inputs` keeps ``name -> value`` and,
  like Hera's runner, treats an empty file or ``null`` as no inputs and leaves out an entry without a value.
* Outputs go to ``$hera__outputs_directory/parameters/<name>`` (default ``/tmp/hera-outputs``), the convention
  the template and the local executor already share.
* Exit codes: 0 the step succeeded; 1 the step ran and failed (its reason on stderr); 2 the process was started
  wrongly — bad argv, an unreadable or garbled inputs file, or a pod environment the template did not set — with
  a one-line reason and the usage on stderr. An unexpected exception propagates (traceback, exit 1).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from capi_rollout.step_table import STEPS
from capi_rollout.workflow import steps

PROG = "python -m capi_rollout.workflow.entry"
USAGE = f"usage: {PROG} {{{','.join(STEPS)}}} <staged inputs file>"
EXIT_OK, EXIT_STEP_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """The process was started with arguments or an inputs file the template never produces."""


def read_inputs(text: str) -> dict[str, str]:
    """``name -> value`` from the text of Argo's ``{{inputs.parameters}}``; :class:`UsageError` when garbled."""
    if not text.strip():
        return {}
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"not JSON ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, list):
        raise UsageError(f"not a JSON list of parameters but a JSON {type(loaded).__name__}")
    inputs: dict[str, str] = {}
    for i, item in enumerate(loaded):
        if not isinstance(item, dict):
            raise UsageError(f"entry {i} is not an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise UsageError(f"entry {i} has no name")
        if "value" not in item:
            continue
        value = item["value"]
        if not isinstance(value, str):
            raise UsageError(f"the value of {name!r} is not a string")
        if name in inputs:
            raise UsageError(f"{name!r} is given twice")
        inputs[name] = value
    return inputs


def outputs_directory(env: Mapping[str, str]) -> Path:
    """Where the step writes its output parameters (``$hera__outputs_directory``, else Hera's default)."""
    return Path(env.get(steps.OUTPUTS_DIRECTORY_ENV) or steps.DEFAULT_OUTPUTS_DIRECTORY)


def parse_argv(argv: Sequence[str]) -> tuple[str, Path]:
    """``(step, inputs file)`` from the arguments after the module name; :class:`UsageError` otherwise."""
    if len(argv) != 2:
        raise UsageError(f"expected a step and the staged inputs file, got {len(argv)} argument(s)")
    step, path = argv
    if step not in STEPS:
        raise UsageError(f"unknown step {step!r} (known: {', '.join(STEPS)})")
    return step, Path(path)


def _load(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the staged inputs {path}: {exc}") from None
    try:
        return read_inputs(text)
    except UsageError as exc:
        raise UsageError(f"the staged inputs {path} are {exc}") from None


def _usage_error(message: str) -> int:
    print(f"capi_rollout.workflow.entry: {message}\n{USAGE}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def main(argv: Sequence[str], *, env: Mapping[str, str], run_step: steps.RunStep | None = None) -> int:
    """Run the step ``argv`` names with the inputs file it points at; returns the exit code (see the docstring)."""
    if list(argv) in (["-h"], ["--help"]):
        print(USAGE, flush=True)
        return EXIT_OK
    try:
        step, path = parse_argv(argv)
        inputs = _load(path)
    except UsageError as exc:
        return _usage_error(str(exc))
    try:
        return steps.run(step, inputs, env=env, outputs_dir=outputs_directory(env), run_step=run_step)
    except steps.StepContextError as exc:
        return _usage_error(f"{step}: {exc}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], env=os.environ))
