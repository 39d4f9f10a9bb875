"""Parameters: defaults, Go durations, and one message naming every bad value."""

import pytest

from capi_rollout.params import DEFAULTS, ParamError, format_duration, parse_duration, parse_params


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("45m", 2700), ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5), ("0", 0), ("2h0m3s", 7203)],
)
def test_go_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "5 m", "-1m", "1d", "m", "1h-2m"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults_match_the_documented_ones() -> None:
    p = parse_params({"clusterName": "homelab"})
    assert (p.cluster_namespace, p.poll_interval, p.control_plane_timeout, p.workers_timeout) == (
        "default", 30, 2700, 3600)
    assert (p.max_remediations, p.reboot_mode, p.stall_timeout, p.dry_run) == (2, "powercycle", 600, False)
    assert p.as_arguments() == {**DEFAULTS, "clusterName": "homelab", "controlPlaneTimeout": "45m0s",
                                "workersTimeout": "1h0m0s", "stallTimeout": "10m0s", "pollInterval": "30s"}


def test_every_bad_parameter_is_named_in_one_error() -> None:
    with pytest.raises(ParamError) as err:
        parse_params({"clusterName": "", "pollInterval": "soon", "maxRemediations": "-1", "rebootMode": "hard",
                      "dryRun": "maybe", "clusterNamespace": "Bad_NS", "maxRemediation": "3"})
    names = [p.split(":")[0] for p in err.value.problems]
    assert sorted(names) == sorted(["clusterName", "pollInterval", "maxRemediations", "rebootMode", "dryRun",
                                    "clusterNamespace", "maxRemediation"])
    assert "unknown parameter" in str(err.value)


def test_empty_strings_take_the_defaults_as_argo_passes_them() -> None:
    p = parse_params({"clusterName": "c1", "stallTimeout": "", "dryRun": "true", "rebootMode": "FORCE"})
    assert p.stall_timeout == 600 and p.dry_run and p.reboot_mode == "force"


def test_a_poll_interval_longer_than_the_stall_timeout_is_refused() -> None:
    with pytest.raises(ParamError, match="pollInterval"):
        parse_params({"clusterName": "c1", "pollInterval": "20m", "stallTimeout": "10m"})


def test_zero_timeouts_are_refused() -> None:
    with pytest.raises(ParamError, match="controlPlaneTimeout: must be greater than zero"):
        parse_params({"clusterName": "c1", "controlPlaneTimeout": "0"})


@pytest.mark.parametrize(("seconds", "text"), [(250, "4m10s"), (3605, "1h0m5s"), (0.85, "850ms"), (0, "0s")])
def test_durations_are_formatted_for_people(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
