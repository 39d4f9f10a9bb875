"""What the local executor implements, what it accepts without enforcing, and everything else it refuses.

Contract: pure functions over the WorkflowTemplate dict, no I/O.

* :func:`check_supported` walks the whole template against explicit allow-lists and raises
  :class:`UnsupportedConstruct` naming every offending field path at once. A construct the executor does not
  implement can therefore never be silently run differently from Argo.
* :func:`merge_arguments` merges submitted parameters over ``spec.arguments.parameters`` the way Argo does for a
  Workflow with a ``workflowTemplateRef`` (``util.MergeParameters``) and validates them like Argo's
  ``validateArgumentsValues``, raising :class:`InvalidSpec` with Argo's message.
* :func:`check_references` resolves every ``{{tag}}`` statically, as Argo's validation does before any pod
  runs; an unknown reference raises :class:`InvalidSpec`.

The three lists per object are: IMPLEMENTED (the executor does what Argo does), ACCEPTED (Kubernetes-level
or controller-level settings the local backend cannot enforce: they are accepted, not applied, and listed in
the run's notes) and everything else, refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from capi_rollout.workflow import argo_expr
from e2e.argo_local.substitute import all_tags

# --- allow-lists ------------------------------------------------------------------------------------------

TOP_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec"})
METADATA_KEYS = frozenset({"name", "namespace", "labels", "annotations", "generateName"})

SPEC_IMPLEMENTED = frozenset(
    {"entrypoint", "arguments", "templates", "onExit", "hooks", "synchronization", "serviceAccountName"}
)
# Recorded and ignored: the local executor exports no Prometheus metrics.
SPEC_RECORDED = frozenset({"metrics"})
# Kubernetes pod-level or controller-bookkeeping settings: accepted, not enforced locally.
SPEC_ACCEPTED = frozenset(
    {
        "securityContext",
        "podSpecPatch",
        "volumes",
        "podMetadata",
        "nodeSelector",
        "tolerations",
        "affinity",
        "imagePullSecrets",
        "priorityClassName",
        "schedulerName",
        "automountServiceAccountToken",
        "podGC",
        "ttlStrategy",
        "workflowMetadata",
        "archiveLogs",
        "podDisruptionBudget",
        "dnsPolicy",
        "dnsConfig",
    }
)

TEMPLATE_IMPLEMENTED = frozenset(
    {
        "name",
        "steps",
        "script",
        "container",
        "inputs",
        "outputs",
        "activeDeadlineSeconds",
        "retryStrategy",
        "synchronization",
        "serviceAccountName",
    }
)
TEMPLATE_RECORDED = frozenset({"metrics"})
TEMPLATE_ACCEPTED = frozenset(
    {
        "metadata",
        "securityContext",
        "podSpecPatch",
        "volumes",
        "nodeSelector",
        "tolerations",
        "affinity",
        "automountServiceAccountToken",
        "priorityClassName",
        "schedulerName",
    }
)

CONTAINER_IMPLEMENTED = frozenset({"name", "image", "command", "args", "env"})
SCRIPT_IMPLEMENTED = CONTAINER_IMPLEMENTED | {"source"}
CONTAINER_ACCEPTED = frozenset({"imagePullPolicy", "resources", "securityContext", "volumeMounts"})
ENV_KEYS = frozenset({"name", "value", "valueFrom"})
# env valueFrom.fieldRef paths the executor implements (the pod's own metadata).
FIELD_REFS = frozenset({"metadata.namespace", "metadata.name"})

STEP_KEYS = frozenset({"name", "template", "arguments"})
ARG_PARAM_KEYS = frozenset({"name", "value"})
SPEC_ARG_PARAM_KEYS = frozenset({"name", "value", "description", "enum"})
INPUT_PARAM_KEYS = frozenset({"name", "value", "default", "enum", "description"})
OUTPUT_PARAM_KEYS = frozenset({"name", "valueFrom", "description"})
OUTPUT_VALUE_FROM_KEYS = frozenset({"path", "default"})
RETRY_KEYS = frozenset({"limit", "retryPolicy", "backoff", "expression"})
RETRY_POLICIES = frozenset({"Always", "OnFailure", "OnError"})
BACKOFF_KEYS = frozenset({"duration", "factor", "cap"})
MUTEX_KEYS = frozenset({"name", "namespace"})

# Tags the executor provides in every template (Argo globals it implements).
GLOBAL_TAGS = frozenset(
    {
        "workflow.name",
        "workflow.namespace",
        "workflow.uid",
        "workflow.serviceAccountName",
        "workflow.mainEntrypoint",
        "workflow.parameters",
        "workflow.status",
    }
)
EXIT_ONLY_TAGS = frozenset({"workflow.failures"})
POD_TAGS = frozenset({"pod.name", "retries"})


class UnsupportedConstruct(ValueError):
    """The template uses constructs the local executor does not implement; ``problems`` names each path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the local Argo executor refuses this template:\n  " + "\n  ".join(problems))


class InvalidSpec(ValueError):
    """Argo itself would reject the workflow (the Workflow ends Failed with ``invalid spec: ...``)."""


@dataclass(frozen=True)
class Acceptance:
    """Accepted-but-not-enforced fields found in the template, for the run's notes."""

    accepted: tuple[str, ...]
    recorded: tuple[str, ...]


def _check_keys(
    obj: Any, path: str, allowed: Iterable[str], problems: list[str], accepted: list[str], ok: Iterable[str] = ()
) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        problems.append(f"{path}: expected a mapping, got {type(obj).__name__}")
        return {}
    allowed_set, ok_set = frozenset(allowed), frozenset(ok)
    for key in obj:
        if key in allowed_set:
            continue
        if key in ok_set:
            accepted.append(f"{path}.{key}")
            continue
        problems.append(f"{path}.{key}: not implemented by the local executor (refused)")
    return dict(obj)


def check_supported(wft: Mapping[str, Any]) -> Acceptance:
    """Raise :class:`UnsupportedConstruct` unless every field of ``wft`` is implemented or accepted."""
    problems: list[str] = []
    accepted: list[str] = []
    recorded: list[str] = []
    _check_keys(wft, "", TOP_KEYS, problems, accepted)
    if wft.get("kind") not in ("WorkflowTemplate", "Workflow"):
        problems.append(f".kind: expected WorkflowTemplate, got {wft.get('kind')!r}")
    _check_keys(wft.get("metadata", {}), ".metadata", METADATA_KEYS, problems, accepted)
    spec = _check_keys(
        wft.get("spec", {}), ".spec", SPEC_IMPLEMENTED | SPEC_RECORDED, problems, accepted, SPEC_ACCEPTED
    )
    recorded.extend(f".spec.{k}" for k in spec if k in SPEC_RECORDED)
    if "entrypoint" not in spec:
        problems.append(".spec.entrypoint: required")
    args = _check_keys(spec.get("arguments", {}), ".spec.arguments", {"parameters"}, problems, accepted)
    for i, p in enumerate(args.get("parameters", []) or []):
        _check_keys(p, f".spec.arguments.parameters[{i}]", SPEC_ARG_PARAM_KEYS, problems, accepted)
    hooks = _check_keys(spec.get("hooks", {}), ".spec.hooks", {"exit"}, problems, accepted)
    if "exit" in hooks:
        _check_keys(hooks["exit"], ".spec.hooks.exit", {"template"}, problems, accepted)
    if "onExit" in spec and "exit" in hooks:
        problems.append(".spec.hooks.exit: both onExit and hooks.exit are set (Argo runs one of them): refused")
    _check_sync(spec.get("synchronization"), ".spec.synchronization", problems, accepted)

    names = [t.get("name") for t in spec.get("templates", []) or [] if isinstance(t, Mapping)]
    for i, tmpl in enumerate(spec.get("templates", []) or []):
        _check_template(tmpl, f".spec.templates[{i}]", set(n for n in names if n), problems, accepted, recorded)
    for ref, where in ((spec.get("entrypoint"), ".spec.entrypoint"), (spec.get("onExit"), ".spec.onExit")):
        if ref is not None and ref not in names:
            problems.append(f"{where}: template {ref!r} not found")
    if "exit" in hooks and hooks["exit"].get("template") not in names:
        problems.append(f".spec.hooks.exit.template: template {hooks['exit'].get('template')!r} not found")
    for tag, where in all_tags(spec, ".spec"):
        if tag.startswith("="):
            problems.append(f"{where}: expression tag {{{{{tag}}}}}: not implemented by the local executor (refused)")
    if problems:
        raise UnsupportedConstruct(problems)
    return Acceptance(tuple(accepted), tuple(recorded))


def _check_sync(sync: Any, path: str, problems: list[str], accepted: list[str]) -> None:
    if sync is None:
        return
    s = _check_keys(sync, path, {"mutexes"}, problems, accepted)
    for j, m in enumerate(s.get("mutexes", []) or []):
        mx = _check_keys(m, f"{path}.mutexes[{j}]", MUTEX_KEYS, problems, accepted)
        if not mx.get("name"):
            problems.append(f"{path}.mutexes[{j}].name: required")


def _check_template(
    tmpl: Any, path: str, names: set[str], problems: list[str], accepted: list[str], recorded: list[str]
) -> None:
    t = _check_keys(tmpl, path, TEMPLATE_IMPLEMENTED | TEMPLATE_RECORDED, problems, accepted, TEMPLATE_ACCEPTED)
    recorded.extend(f"{path}.{k}" for k in t if k in TEMPLATE_RECORDED)
    kinds = [k for k in ("steps", "script", "container") if k in t]
    if len(kinds) != 1:
        problems.append(f"{path}: a template needs exactly one of steps, script, container (found {kinds or 'none'})")
    for key in ("activeDeadlineSeconds", "retryStrategy"):
        if key in t and "steps" in t:
            problems.append(f"{path}.{key}: only implemented on leaf (script/container) templates")
    inputs = _check_keys(t.get("inputs", {}), f"{path}.inputs", {"parameters"}, problems, accepted)
    for i, p in enumerate(inputs.get("parameters", []) or []):
        _check_keys(p, f"{path}.inputs.parameters[{i}]", INPUT_PARAM_KEYS, problems, accepted)
    outputs = _check_keys(t.get("outputs", {}), f"{path}.outputs", {"parameters"}, problems, accepted)
    for i, p in enumerate(outputs.get("parameters", []) or []):
        pp = _check_keys(p, f"{path}.outputs.parameters[{i}]", OUTPUT_PARAM_KEYS, problems, accepted)
        vf = _check_keys(pp.get("valueFrom", {}), f"{path}.outputs.parameters[{i}].valueFrom",
                         OUTPUT_VALUE_FROM_KEYS, problems, accepted)
        if not vf.get("path"):
            problems.append(f"{path}.outputs.parameters[{i}].valueFrom.path: required (the only source implemented)")
    if "outputs" in t and "steps" in t and outputs.get("parameters"):
        problems.append(f"{path}.outputs: outputs of a steps template are not implemented")
    if "retryStrategy" in t:
        r = _check_keys(t["retryStrategy"], f"{path}.retryStrategy", RETRY_KEYS, problems, accepted)
        if "limit" not in r:
            problems.append(f"{path}.retryStrategy.limit: required locally (Argo retries without end when unset; "
                            "the local executor keeps every loop bounded)")
        policy = r.get("retryPolicy")
        if policy is not None and policy not in RETRY_POLICIES:
            problems.append(
                f"{path}.retryStrategy.retryPolicy: {policy!r} not implemented (only {sorted(RETRY_POLICIES)})"
            )
        if "backoff" in r:
            _check_keys(r["backoff"], f"{path}.retryStrategy.backoff", BACKOFF_KEYS, problems, accepted)
        if r.get("expression"):
            try:
                argo_expr.compile_check(str(r["expression"]))
            except argo_expr.ExprError as exc:
                problems.append(f"{path}.retryStrategy.expression: {exc} (outside the expr-lang subset the local "
                                "executor evaluates, or not compilable by Argo)")
    _check_sync(t.get("synchronization"), f"{path}.synchronization", problems, accepted)
    for kind, allowed in (("script", SCRIPT_IMPLEMENTED), ("container", CONTAINER_IMPLEMENTED)):
        if kind not in t:
            continue
        c = _check_keys(t[kind], f"{path}.{kind}", allowed, problems, accepted, CONTAINER_ACCEPTED)
        if not c.get("command"):
            problems.append(f"{path}.{kind}.command: required locally (the image's ENTRYPOINT is not known here)")
        for j, e in enumerate(c.get("env", []) or []):
            ev = _check_keys(e, f"{path}.{kind}.env[{j}]", ENV_KEYS, problems, accepted)
            if "valueFrom" in ev:
                vf = _check_keys(ev["valueFrom"], f"{path}.{kind}.env[{j}].valueFrom", {"fieldRef"}, problems, accepted)
                fr = _check_keys(vf.get("fieldRef", {}), f"{path}.{kind}.env[{j}].valueFrom.fieldRef",
                                 {"fieldPath", "apiVersion"}, problems, accepted)
                if fr.get("fieldPath") not in FIELD_REFS:
                    problems.append(f"{path}.{kind}.env[{j}].valueFrom.fieldRef.fieldPath: "
                                    f"{fr.get('fieldPath')!r} not implemented (only {sorted(FIELD_REFS)})")
    for g, group in enumerate(t.get("steps", []) or []):
        if not isinstance(group, list):
            problems.append(f"{path}.steps[{g}]: expected a list of steps")
            continue
        if len(group) != 1:
            problems.append(f"{path}.steps[{g}]: {len(group)} parallel steps in one group: not implemented "
                            "(the local executor runs one step per group)")
        for s, step in enumerate(group):
            sp = f"{path}.steps[{g}][{s}]"
            st = _check_keys(step, sp, STEP_KEYS, problems, accepted)
            if not st.get("name"):
                problems.append(f"{sp}.name: required")
            if st.get("template") not in names:
                problems.append(f"{sp}.template: template {st.get('template')!r} not found")
            a = _check_keys(st.get("arguments", {}), f"{sp}.arguments", {"parameters"}, problems, accepted)
            for k, p in enumerate(a.get("parameters", []) or []):
                _check_keys(p, f"{sp}.arguments.parameters[{k}]", ARG_PARAM_KEYS, problems, accepted)


# --- arguments --------------------------------------------------------------------------------------------


def merge_arguments(spec: Mapping[str, Any], submitted: Mapping[str, str]) -> dict[str, str]:
    """Workflow parameters after Argo's merge and validation, as for a Workflow with a ``workflowTemplateRef``
    (``util.MergeParameters`` in ``ValidateWorkflow``, Argo v4.0.2): the Workflow's own parameters (the submitted
    ones, name and value only) come first and win whole; the template's other parameters follow. So the template's
    ``enum`` is checked only for a parameter left at the template's value, never for a submitted one."""
    declared = list((spec.get("arguments") or {}).get("parameters") or [])
    merged: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in submitted.items()]
    merged.extend(dict(p) for p in declared if p["name"] not in submitted)
    prefix = "spec.arguments."
    for p in merged:
        name = p["name"]
        if p.get("value") is None:
            raise InvalidSpec(f"{prefix}{name}.value or {prefix}{name}.valueFrom is required")
        enum = p.get("enum")
        if enum is not None:
            if len(enum) == 0:
                raise InvalidSpec(f"{prefix}{name}.enum should contain at least one value")
            if str(p["value"]) not in [str(e) for e in enum]:
                raise InvalidSpec(f"{prefix}{name}.value should be present in {prefix}{name}.enum list")
    return {p["name"]: str(p["value"]) for p in merged}


# --- static references ------------------------------------------------------------------------------------

_STEP_REF = re.compile(r"^steps\.([^.]+)\.outputs\.(result|parameters\.(.+))$")


def templates_by_name(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in spec.get("templates", [])}


def exit_template(spec: Mapping[str, Any]) -> str | None:
    if spec.get("onExit"):
        return str(spec["onExit"])
    hooks = spec.get("hooks") or {}
    if "exit" in hooks:
        return str(hooks["exit"]["template"])
    return None


def _reachable(spec: Mapping[str, Any], root: str) -> set[str]:
    tmpls = templates_by_name(spec)
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for group in tmpls[name].get("steps", []) or []:
            todo.extend(step["template"] for step in group)
    return seen


def check_references(spec: Mapping[str, Any], parameters: Mapping[str, str]) -> None:
    """Raise :class:`InvalidSpec` for any ``{{tag}}`` that cannot resolve where it is written."""
    tmpls = templates_by_name(spec)
    exit_name = exit_template(spec)
    exit_reach = _reachable(spec, exit_name) if exit_name else set()
    globals_ok = set(GLOBAL_TAGS) | {f"workflow.parameters.{k}" for k in parameters}
    for where, mutexes in (("spec.synchronization", (spec.get("synchronization") or {}).get("mutexes") or []),):
        for tag, path in all_tags(mutexes, where):
            if tag not in globals_ok:
                raise InvalidSpec(f"{path}: failed to resolve {{{{{tag}}}}}")
    for name, tmpl in tmpls.items():
        ok = set(globals_ok)
        if name in exit_reach:
            ok |= EXIT_ONLY_TAGS
        inputs = [p["name"] for p in (tmpl.get("inputs") or {}).get("parameters") or []]
        ok |= {f"inputs.parameters.{n}" for n in inputs} | {"inputs.parameters"}
        if "steps" not in tmpl:
            ok |= POD_TAGS
            # metrics are recorded, never evaluated (their tags may use outputs.*, status, duration): not checked.
            body = {k: v for k, v in tmpl.items() if k not in ("name", "metrics")}
            for tag, path in all_tags(body, f"templates.{name}"):
                if tag not in ok:
                    raise InvalidSpec(f"{path}: failed to resolve {{{{{tag}}}}}")
            continue
        earlier: dict[str, dict[str, Any]] = {}
        for g, group in enumerate(tmpl.get("steps") or []):
            for step in group:
                where = f"templates.{name}.steps[{g}].{step['name']}"
                for tag, path in all_tags(step.get("arguments") or {}, where):
                    if tag in ok or _step_ref_ok(tag, earlier):
                        continue
                    raise InvalidSpec(f"{path}: failed to resolve {{{{{tag}}}}}")
            for step in group:
                earlier[step["name"]] = tmpls[step["template"]]


def _step_ref_ok(tag: str, earlier: Mapping[str, Mapping[str, Any]]) -> bool:
    m = _STEP_REF.match(tag)
    if not m or m.group(1) not in earlier:
        return False
    tmpl = earlier[m.group(1)]
    if m.group(2) == "result":
        return "steps" not in tmpl
    declared = [p["name"] for p in (tmpl.get("outputs") or {}).get("parameters") or []]
    return m.group(3) in declared
