"""The ``capi-rollout`` WorkflowTemplate, defined with Hera 7 (Argo Workflows v4 semantics).

Contract: :func:`build` returns the Hera object and :func:`manifest` its plain-dict form; no I/O, no cluster.
The shape, kept to plain, well-known Argo constructs:

* ``spec.arguments`` — one parameter per entry of :data:`capi_rollout.domain.params.DEFAULTS`, with its description
  (``clusterName`` has no default, so a submit without it is rejected).
* ``rollout`` (entrypoint, ``steps``): resolve → preflight → control-plane → workers, each a ``script``
  template whose pod runs ``python -m capi_rollout.workflow.entry <step>`` on the staged ``{{inputs.parameters}}``
  (built with Hera, run without it: see :mod:`capi_rollout.workflow.entry`).
* ``onExit: exit-handler`` (``steps``) → ``summary``, which runs after success and failure alike and gets
  ``{{workflow.status}}`` / ``{{workflow.failures}}`` through its environment.
* A workflow-level mutex per cluster (namespace + name): a second run for the same cluster waits.
* Leaf backstops: ``activeDeadlineSeconds`` (phases: from resolve's outputs, a little above the timeout);
  ``retryStrategy`` ``Always`` with :data:`RETRY_EXPRESSION`: Argo errors (pod vanished) and a pod killed from
  outside (graceful delete, drain, eviction: exit 143/137, not the deadline) — never a failed phase (exit 1/2);
  a retried phase resumes from the remediation ledger, which is keyed by the workflow name.
* Pods: non-root, read-only root filesystem (``/tmp`` is an ``emptyDir``), no capabilities, seccomp
  RuntimeDefault, modest requests/limits; the image from :mod:`capi_rollout.workflow.image`.
* Template metrics (Prometheus, ``argo_workflows_`` prefix added by Argo): phase duration (per attempt);
  remediations and rollout result counted once, by the summary from the ledger's totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hera.workflows import (
    Counter,
    Histogram,
    Label,
    Parameter,
    RetryStrategy,
    Script,
    Step,
    Steps,
    WorkflowTemplate,
)
from hera.workflows.metrics import _BaseMetric
from hera.workflows.models import (
    Backoff,
    Capabilities,
    EmptyDirVolumeSource,
    EnvVar,
    IntOrString,
    PodSecurityContext,
    Quantity,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    Synchronization,
    ValueFrom,
    Volume,
    VolumeMount,
)
from hera.workflows.models import Mutex as MutexModel

from capi_rollout.domain.deadlines import (
    PREFLIGHT_DEADLINE_SECONDS,
    RESOLVE_DEADLINE_SECONDS,
    SUMMARY_DEADLINE_SECONDS,
)
from capi_rollout.domain.params import DEFAULTS, DESCRIPTIONS, REBOOT_MODES
from capi_rollout.step_table import ROLLOUT, STEPS
from capi_rollout.workflow import steps
from capi_rollout.workflow.image import IMAGE

NAME = "capi-rollout"
NAMESPACE = "argo"
SERVICE_ACCOUNT = "capi-rollout-runner"
ENTRYPOINT = "rollout"
EXIT_HANDLER = "exit-handler"
RUN_AS_USER = 65532  # the Dockerfile's non-root user
TMP_VOLUME = "tmp"
OUTPUTS_DIRECTORY = steps.DEFAULT_OUTPUTS_DIRECTORY  # on the /tmp emptyDir
ENTRY_MODULE = "capi_rollout.workflow.entry"  # what every step pod runs (python -m)
INPUTS_SOURCE = "{{inputs.parameters}}"  # the script source: Argo substitutes the inputs as a JSON list
MUTEX_NAME = "capi-rollout-{{workflow.parameters.clusterNamespace}}-{{workflow.parameters.clusterName}}"

# Parameter names with a closed set of values: the Argo UI offers them as a drop-down.
_ENUMS: dict[str, list[str]] = {"rebootMode": list(REBOOT_MODES), "dryRun": ["false", "true"]}

_PHASE_DURATION_BUCKETS: list[float] = [60, 300, 600, 1200, 1800, 2700, 3600, 5400, 7200]


def _workflow_arguments() -> list[Parameter]:
    args: list[Parameter] = []
    for name, default in DEFAULTS.items():
        if default is None:  # required: no value at all, so Argo rejects a submit that omits it
            args.append(Parameter(name=name, description=DESCRIPTIONS[name]))
        else:
            args.append(Parameter(name=name, value=default, description=DESCRIPTIONS[name], enum=_ENUMS.get(name)))
    return args


def _param_inputs() -> list[Parameter]:
    return [Parameter(name=name) for name in DEFAULTS]


def _param_arguments() -> dict[str, str]:
    return {name: f"{{{{workflow.parameters.{name}}}}}" for name in DEFAULTS}


def _outputs(step: str) -> list[Parameter]:
    return [
        Parameter(name=name, value_from=ValueFrom(path=f"{OUTPUTS_DIRECTORY}/parameters/{name}"))
        for name in STEPS[step].outputs
    ]


def _env(*, exit_handler: bool = False) -> list[EnvVar]:
    env = [
        EnvVar(name=steps.ENV_RUN_ID, value="{{workflow.name}}"),
        EnvVar(name=steps.ENV_RUN_UID, value="{{workflow.uid}}"),
        EnvVar(name=steps.ENV_LEDGER_NAMESPACE, value="{{workflow.namespace}}"),
        EnvVar(name=steps.OUTPUTS_DIRECTORY_ENV, value=OUTPUTS_DIRECTORY),
        EnvVar(name="PYTHONUNBUFFERED", value="1"),
    ]
    if exit_handler:
        env += [
            EnvVar(name=steps.ENV_WORKFLOW_STATUS, value="{{workflow.status}}"),
            EnvVar(name=steps.ENV_WORKFLOW_FAILURES, value="{{workflow.failures}}"),
        ]
    return env


def _container_security() -> SecurityContext:
    return SecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        capabilities=Capabilities(drop=["ALL"]),
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def _pod_security() -> PodSecurityContext:
    return PodSecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        fs_group=RUN_AS_USER,
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def _resources() -> ResourceRequirements:
    return ResourceRequirements(
        requests={"cpu": Quantity("50m"), "memory": Quantity("128Mi")},
        limits={"cpu": Quantity("500m"), "memory": Quantity("256Mi")},
    )


# When a failed attempt is retried (Argo v4.0.2 processNodeRetries: policy, then limit, then this expression over
# lastRetry.status / exitCode / message, all strings; exitCode is "-1" when the pod vanished before reporting one):
# * status Error: Argo's own errors -- the pod vanished (force delete, lost node: "pod deleted"), init or wait
#   container failed, the pod failed before main started;
# * status Failed with main killed by a signal from outside -- 143 (SIGTERM: a graceful `kubectl delete pod`, a
#   drain, an API eviction; the kubelet marks the pod Failed) or 137 (SIGKILL: a grace period that ran out, a
#   node-pressure eviction) -- unless the kill was the pod's own activeDeadlineSeconds ("Pod was active on the
#   node longer than the specified deadline" / "Step exceeded its deadline"): that is the phase backstop.
# Never a step's own failure (exit 1: the phase failed; exit 2: started wrongly): that is a decision.
RETRY_EXPRESSION = (
    'lastRetry.status == "Error" || (lastRetry.status == "Failed" && lastRetry.exitCode in ["137", "143"]'
    ' && !(lastRetry.message contains "deadline"))'
)
RETRY_LIMIT = 2


def _retry() -> RetryStrategy:
    # Always + expression: OnError alone misses a graceful deletion or an eviction (the kubelet marks the pod
    # Failed, main exits 143: argo-workflows #3374, #3097). A retried phase resumes from the remediation ledger.
    return RetryStrategy(
        limit=RETRY_LIMIT,
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=Backoff(duration="15s", factor=IntOrString(2)),
    )


def _cluster_labels() -> list[Label]:
    return [
        Label(key="cluster_namespace", value="{{inputs.parameters.clusterNamespace}}"),
        Label(key="cluster_name", value="{{inputs.parameters.clusterName}}"),
    ]


def _phase_metrics(phase: str) -> list[_BaseMetric]:
    # Per attempt (Argo emits template metrics for every retry child): durations only, never counts.
    return [
        Histogram(
            name="capi_rollout_phase_duration_seconds",
            help="Duration of a rollout phase step, by cluster, phase and step status.",
            labels=[*_cluster_labels(), Label(key="phase", value=phase), Label(key="status", value="{{status}}")],
            value="{{duration}}",
            buckets=list(_PHASE_DURATION_BUCKETS),
        ),
    ]


def _result_metrics() -> list[_BaseMetric]:
    # Counted once per run, from the summary's ledger totals (the exit handler), so a retried phase never
    # counts its remediations twice.
    return [
        Counter(
            name="capi_rollout_remediations_total",
            help="Remediations performed (delete Machine + reboot node) by finished rollouts, by cluster.",
            labels=_cluster_labels(),
            value="{{outputs.parameters.remediations}}",
        ),
        Counter(
            name="capi_rollout_result_total",
            help="Finished rollouts, by cluster and result (Succeeded or Failed).",
            labels=[*_cluster_labels(), Label(key="result", value="{{outputs.parameters.result}}")],
            value="1",
        ),
    ]


def _script(
    step: str,
    *,
    deadline: int | str,
    extra_inputs: Sequence[Parameter] = (),
    exit_handler: bool = False,
    metrics: list[_BaseMetric] | None = None,
) -> Script:
    # Built with Hera, run without it: the pod runs our own small entry module (importing Hera's runner costs more
    # than a second per pod). The inline constructor keeps a str source verbatim; Argo stages it and appends its
    # path to the args, so the pod runs ``python -m capi_rollout.workflow.entry <step> /argo/staging/script``.
    return Script(
        name=step,
        constructor="inline",
        command=["python"],
        args=entry_args(step),
        source=INPUTS_SOURCE,
        image=IMAGE,
        image_pull_policy="IfNotPresent",
        inputs=[*_param_inputs(), *extra_inputs],
        outputs=_outputs(step),
        env=_env(exit_handler=exit_handler),
        resources=_resources(),
        security_context=_container_security(),
        volume_mounts=[VolumeMount(name=TMP_VOLUME, mount_path="/tmp")],
        active_deadline_seconds=deadline,
        retry_strategy=_retry(),
        metrics=metrics,
        add_cwd_to_sys_path=False,
    )


def entry_args(step: str) -> list[str]:
    """The script's ``args`` before the staged source path Argo appends (see :mod:`capi_rollout.workflow.entry`)."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    return ["-m", ENTRY_MODULE, step]


def _step(name: str, template: Script, extra_arguments: dict[str, str] | None = None) -> Step:
    return Step(name=name, template=template, arguments={**_param_arguments(), **(extra_arguments or {})})


def build() -> WorkflowTemplate:
    """The Hera WorkflowTemplate; see the module docstring for its shape."""
    deadline_input = [Parameter(name="deadlineSeconds", description="activeDeadlineSeconds of this phase pod.")]
    phase_deadline = "{{inputs.parameters.deadlineSeconds}}"
    scripts = {
        "resolve": _script("resolve", deadline=RESOLVE_DEADLINE_SECONDS),
        "preflight": _script("preflight", deadline=PREFLIGHT_DEADLINE_SECONDS),
        "control-plane": _script("control-plane", deadline=phase_deadline, extra_inputs=deadline_input,
                                 metrics=_phase_metrics("control-plane")),
        "workers": _script("workers", deadline=phase_deadline, extra_inputs=deadline_input,
                           metrics=_phase_metrics("workers")),
        "summary": _script("summary", deadline=SUMMARY_DEADLINE_SECONDS, exit_handler=True,
                           metrics=_result_metrics()),
    }
    if set(scripts) != set(STEPS):  # one template per step of the step table
        raise ValueError(f"templates {sorted(scripts)} do not match the steps {sorted(STEPS)}")
    # each phase's pod deadline comes from resolve's outputs
    phase_arguments = {
        "control-plane": {"deadlineSeconds": "{{steps.resolve.outputs.parameters.controlPlaneDeadlineSeconds}}"},
        "workers": {"deadlineSeconds": "{{steps.resolve.outputs.parameters.workersDeadlineSeconds}}"},
    }

    with WorkflowTemplate(
        name=NAME,
        namespace=NAMESPACE,
        labels={"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": NAME},
        annotations={
            "workflows.argoproj.io/description": (
                "Roll a Talos workload cluster through a Cluster API rolling replacement: resolve, preflight, "
                "control plane, workers, summary. Remediates a stalled rollout by deleting the unhealthy Machine "
                "and rebooting its node; never patches CAPI objects; stops on a node in Talos maintenance mode."
            ),
        },
        entrypoint=ENTRYPOINT,
        on_exit=EXIT_HANDLER,
        service_account_name=SERVICE_ACCOUNT,
        arguments=_workflow_arguments(),
        synchronization=Synchronization(mutexes=[MutexModel(name=MUTEX_NAME)]),
        security_context=_pod_security(),
        volumes=[Volume(name=TMP_VOLUME, empty_dir=EmptyDirVolumeSource(size_limit=Quantity("64Mi")))],
    ) as wt:
        with Steps(name=ENTRYPOINT):
            for name in ROLLOUT:
                _step(name, scripts[name], phase_arguments.get(name))
        with Steps(name=EXIT_HANDLER):
            for name in STEPS:
                if name not in ROLLOUT:
                    _step(name, scripts[name])
    return wt


def manifest() -> dict[str, Any]:
    """The WorkflowTemplate as the plain dict Argo receives (camelCase keys, no empty fields)."""
    built: dict[str, Any] = build().to_dict()
    return built
