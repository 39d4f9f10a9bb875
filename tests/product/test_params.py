"""Parameters: defaults, Go durations, and one message naming every bad value."""

import pytest

from capi_rollout.domain.params import DEFAULTS, ParamError, format_duration, parse_duration, parse_params
from capi_rollout.workflow.template import MUTEX_NAME


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


def test_an_omitted_parameter_takes_its_default_and_case_does_not_matter_for_modes() -> None:
    p = parse_params({"clusterName": "c1", "dryRun": "true", "rebootMode": "FORCE"})
    assert p.stall_timeout == 600 and p.dry_run and p.reboot_mode == "force"


@pytest.mark.parametrize("name", [n for n in DEFAULTS if n != "clusterName"])
@pytest.mark.parametrize("empty", ["", " ", "\t"])
def test_an_empty_value_is_refused_never_taken_for_the_default(name: str, empty: str) -> None:
    # dryRun='' used to mean dryRun=false: a real run the user did not ask for.
    with pytest.raises(ParamError, match=f"{name}: must not be empty"):
        parse_params({"clusterName": "c1", name: empty})


@pytest.mark.parametrize(("raw", "problem"), [
    ({"clusterName": "c1", "pollInterval": "9" * 400 + "h"}, "pollInterval: must be between 100ms and 1h0m0s"),
    ({"clusterName": "c1", "controlPlaneTimeout": "2562047h"}, "controlPlaneTimeout: must be between 1s and 168h"),
    ({"clusterName": "c1", "workersTimeout": "169h"}, "workersTimeout: must be between 1s and 168h"),
    ({"clusterName": "c1", "stallTimeout": "25h"}, "stallTimeout: must be between 1s and 24h"),
    ({"clusterName": "c1", "pollInterval": "1ms"}, "pollInterval: must be between 100ms"),
    ({"clusterName": "c1", "maxRemediations": "9" * 5000}, "maxRemediations: must be at most 50"),
    ({"clusterName": "c1", "maxRemediations": "51"}, "maxRemediations: must be at most 50"),
])
def test_values_beyond_sane_bounds_are_refused_in_one_short_line(raw: dict[str, str], problem: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_params(raw)
    assert problem in str(err.value) and len(str(err.value)) < 200 and "\n" not in str(err.value)


def test_values_at_the_bounds_are_accepted() -> None:
    p = parse_params({"clusterName": "c1", "pollInterval": "100ms", "stallTimeout": "24h",
                      "controlPlaneTimeout": "168h", "workersTimeout": "168h", "maxRemediations": "50"})
    assert (p.poll_interval, p.max_remediations, p.control_plane_timeout) == (0.1, 50, 168 * 3600)


@pytest.mark.parametrize(("namespace", "name"), [
    (" default", "homelab"), ("default ", "homelab"), ("default", " homelab"), ("", "homelab"), ("default", ""),
    ("de fault", "homelab"), ("Default", "homelab"), ("default", "home.lab"), ("default", "x" * 64),
    ("default", "homelab\n"), ("a/b", "homelab"), ("default", "{{workflow.name}}"),
])
def test_the_cluster_acted_on_is_exactly_the_mutex_key_or_the_run_is_refused(namespace: str, name: str) -> None:
    """Argo's mutex is ``capi-rollout-{{clusterNamespace}}-{{clusterName}}`` of the raw strings: a value the runner
    would read differently (stripped, defaulted) would let two runs act on one cluster at once."""
    mutex = MUTEX_NAME.replace("{{workflow.parameters.clusterNamespace}}", namespace).replace(
        "{{workflow.parameters.clusterName}}", name)
    try:
        p = parse_params({"clusterName": name, "clusterNamespace": namespace})
    except ParamError:
        return
    assert f"capi-rollout-{p.cluster_namespace}-{p.cluster_name}" == mutex  # pragma: no cover - must not happen
    raise AssertionError(f"accepted {namespace!r}/{name!r}")


def test_valid_cluster_names_map_one_to_one_onto_the_mutex() -> None:
    for namespace, name in (("default", "homelab"), ("team-a", "c1"), ("a" * 63, "b" * 63)):
        p = parse_params({"clusterName": name, "clusterNamespace": namespace})
        assert (p.cluster_namespace, p.cluster_name) == (namespace, name)
        assert MUTEX_NAME.replace("{{workflow.parameters.clusterNamespace}}", p.cluster_namespace).replace(
            "{{workflow.parameters.clusterName}}", p.cluster_name) == f"capi-rollout-{namespace}-{name}"


def test_a_poll_interval_longer_than_the_stall_timeout_is_refused() -> None:
    with pytest.raises(ParamError, match="pollInterval"):
        parse_params({"clusterName": "c1", "pollInterval": "20m", "stallTimeout": "10m"})


def test_zero_timeouts_are_refused() -> None:
    with pytest.raises(ParamError, match="controlPlaneTimeout: must be greater than zero"):
        parse_params({"clusterName": "c1", "controlPlaneTimeout": "0"})


@pytest.mark.parametrize(("seconds", "text"), [(250, "4m10s"), (3605, "1h0m5s"), (0.85, "850ms"), (0, "0s")])
def test_durations_are_formatted_for_people(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
