"""The rollout's parameters: parsing and validation, before anything else runs.

Contract: pure functions, no I/O. ``parse_params`` takes the raw strings a user, a CLI flag or an Argo
parameter supplies and returns a frozen :class:`Params`, or raises :class:`ParamError` whose message
names every bad parameter at once ("maxRemediations: must be a whole number ≥ 0, got '-1'").
Durations use Go's ``time.ParseDuration`` grammar, as Argo does (``30s``, ``45m``, ``1h30m``, ``1.5h``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# Parameter name -> default (None = required). The single source for the CLI, the workflow and README.
DEFAULTS: dict[str, str | None] = {
    "clusterName": None,
    "clusterNamespace": "default",
    "pollInterval": "30s",
    "controlPlaneTimeout": "45m",
    "workersTimeout": "60m",
    "maxRemediations": "2",
    "rebootMode": "powercycle",
    "stallTimeout": "10m",
    "dryRun": "false",
}

DESCRIPTIONS: dict[str, str] = {
    "clusterName": "Name of the CAPI Cluster to roll (label cluster.x-k8s.io/cluster-name). Required.",
    "clusterNamespace": "Namespace of the Cluster, its TalosControlPlane, MachineDeployments and Secret.",
    "pollInterval": "Longest wait between two evaluations; watches usually wake the loop sooner.",
    "controlPlaneTimeout": "The control plane phase fails if the rollout is not complete within this.",
    "workersTimeout": "The workers phase fails if every MachineDeployment is not complete within this.",
    "maxRemediations": "Remediations allowed per phase (delete Machine + reboot node); 0 disables them.",
    "rebootMode": "Talos reboot mode used during remediation: powercycle, default or force.",
    "stallTimeout": "How long a phase may make no progress before it counts as stalled.",
    "dryRun": "true: evaluate and log 'would delete / would reboot', write nothing.",
}

# Sane bounds (inclusive), the single source for validation, the CLI help, the template and README.
DURATION_BOUNDS: dict[str, tuple[float, float]] = {
    "pollInterval": (0.1, 3600.0),
    "controlPlaneTimeout": (1.0, 7 * 24 * 3600.0),
    "workersTimeout": (1.0, 7 * 24 * 3600.0),
    "stallTimeout": (1.0, 24 * 3600.0),
}
MAX_REMEDIATIONS = 50

REBOOT_MODES = ("powercycle", "default", "force")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}


class ParamError(ValueError):
    """One or more parameters are invalid; the message names each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid parameters: " + "; ".join(problems))


def parse_duration(text: str) -> float:
    """Parse a Go duration (``1h30m``, ``45s``, ``1.5h``, ``0``) into seconds; ValueError if malformed."""
    s = text.strip()
    if s in ("0", "+0"):
        return 0.0
    if s.startswith("-"):
        raise ValueError(f"negative durations are not allowed, got {_clip(text)!r}")
    s = s.removeprefix("+")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"not a duration like 30s, 45m or 1h30m: {_clip(text)!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError("empty duration")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the way people read them: ``4m10s``, ``1h0m5s``, ``850ms``."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    total = round(seconds)
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


@dataclass(frozen=True, kw_only=True)
class Params:
    """Validated rollout parameters; durations in seconds."""

    cluster_name: str
    cluster_namespace: str = "default"
    poll_interval: float = 30.0
    control_plane_timeout: float = 45 * 60.0
    workers_timeout: float = 60 * 60.0
    max_remediations: int = 2
    reboot_mode: str = "powercycle"
    stall_timeout: float = 10 * 60.0
    dry_run: bool = False

    def as_arguments(self) -> dict[str, str]:
        """The parameters back in their Argo/CLI spelling (``{"clusterName": ..., "pollInterval": "30s"}``)."""
        out: dict[str, str] = {}
        for f in fields(self):
            name = _to_camel(f.name)
            value: Any = getattr(self, f.name)
            if isinstance(value, bool):
                out[name] = "true" if value else "false"
            elif isinstance(value, float):
                out[name] = format_duration(value)
            else:
                out[name] = str(value)
        return out


def _to_camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _clip(text: str, limit: int = 40) -> str:
    """A value short enough to quote in a one-line message."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def describe_bounds(name: str) -> str:
    """The bounds of a parameter in words (``between 100ms and 1h0m0s``), or "" when it has none."""
    if name in DURATION_BOUNDS:
        low, high = DURATION_BOUNDS[name]
        return f"between {format_duration(low)} and {format_duration(high)}"
    if name == "maxRemediations":
        return f"0 to {MAX_REMEDIATIONS}"
    return ""


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ValueError(f"must be true or false, got {_clip(text)!r}")


def parse_params(raw: Mapping[str, str | None]) -> Params:
    """Validate raw parameter strings (Argo spelling) into :class:`Params`.

    Unknown names are rejected too, so a typo ("maxRemediation") is never silently ignored.
    """
    problems: list[str] = []
    for name in raw:
        if name not in DEFAULTS:
            problems.append(f"{name}: unknown parameter (known: {', '.join(DEFAULTS)})")

    # Values are taken verbatim: what the runner acts on is the very string Argo puts in the mutex name
    # (``capi-rollout-<clusterNamespace>-<clusterName>``), so nothing is stripped or defaulted here.
    given: dict[str, str] = {}
    for name, given_value in raw.items():
        if name not in DEFAULTS or given_value is None:
            continue
        text = str(given_value)
        if text.strip() == "":
            default = DEFAULTS[name]
            problems.append(f"{name}: must not be empty" + (f" (omit it for the default {default})" if default else ""))
        elif text != text.strip():
            problems.append(f"{name}: must not start or end with spaces, got {_clip(text)!r}")
        else:
            given[name] = text

    def get(name: str) -> str:
        return given.get(name, DEFAULTS[name] or "")

    cluster_name = get("clusterName")
    if "clusterName" not in raw or raw.get("clusterName") is None:
        problems.append("clusterName: required (the name of the CAPI Cluster to roll)")
    elif not cluster_name:
        pass  # already reported (empty or padded)
    elif len(cluster_name) > 63 or not _DNS1123_LABEL.match(cluster_name):
        problems.append(f"clusterName: must be a DNS-1123 label (lowercase, digits, '-'), got {_clip(cluster_name)!r}")
    namespace = get("clusterNamespace")
    if "clusterNamespace" in given and (len(namespace) > 63 or not _DNS1123_LABEL.match(namespace)):
        problems.append(f"clusterNamespace: must be a DNS-1123 label, got {_clip(namespace)!r}")

    durations: dict[str, float] = {}
    for name in ("pollInterval", "controlPlaneTimeout", "workersTimeout", "stallTimeout"):
        try:
            value = parse_duration(get(name))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        low, high = DURATION_BOUNDS[name]
        if value <= 0:
            problems.append(f"{name}: must be greater than zero, got {get(name)!r}")
        elif not low <= value <= high:
            problems.append(f"{name}: must be between {format_duration(low)} and {format_duration(high)}, "
                            f"got {_clip(get(name))!r}")
        durations[name] = value

    max_rem = 0
    text = get("maxRemediations")
    if not re.fullmatch(r"\d+", text):
        problems.append(f"maxRemediations: must be a whole number ≥ 0, got {_clip(text)!r}")
    elif len(text.lstrip("0")) > 6 or int(text) > MAX_REMEDIATIONS:
        problems.append(f"maxRemediations: must be at most {MAX_REMEDIATIONS}, got {_clip(text)!r}")
    else:
        max_rem = int(text)

    mode = get("rebootMode").lower()
    if mode not in REBOOT_MODES:
        problems.append(f"rebootMode: must be one of {', '.join(REBOOT_MODES)}, got {_clip(get('rebootMode'))!r}")

    dry_run = False
    try:
        dry_run = _parse_bool(get("dryRun"))
    except ValueError as exc:
        problems.append(f"dryRun: {exc}")

    if not problems and durations["pollInterval"] > min(
        durations["stallTimeout"], durations["controlPlaneTimeout"], durations["workersTimeout"]
    ):
        problems.append("pollInterval: must not exceed stallTimeout and the phase timeouts")
    if problems:
        raise ParamError(problems)
    return Params(
        cluster_name=cluster_name,
        cluster_namespace=namespace,
        poll_interval=durations["pollInterval"],
        control_plane_timeout=durations["controlPlaneTimeout"],
        workers_timeout=durations["workersTimeout"],
        max_remediations=max_rem,
        reboot_mode=mode,
        stall_timeout=durations["stallTimeout"],
        dry_run=dry_run,
    )


def is_dns_subdomain(name: str) -> bool:
    """True for a valid Kubernetes object name (DNS-1123 subdomain)."""
    return len(name) <= 253 and bool(_DNS1123_SUBDOMAIN.match(name))


# Every description names its bounds, so the CLI help, the template's parameter descriptions and README agree.
for _name in DESCRIPTIONS:
    if _bounds := describe_bounds(_name):
        DESCRIPTIONS[_name] += f" Allowed: {_bounds}."
