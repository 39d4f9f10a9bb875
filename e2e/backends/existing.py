"""The ``existing`` e2e backend (and the base of ``kind`` and ``node``): the WorkflowTemplate run by the Argo
Workflows controller of a cluster that already runs it.

Contract: :class:`ClusterBackend` talks to the cluster of ``KUBECONFIG`` (Argo Workflows v4 installed, a drill's
throwaway namespace) through one :class:`~e2e.backends.cluster.ClusterClient`:

* ``install`` server-side-applies documents (field manager ``capi-rollout-e2e``), each through
  :meth:`ClusterBackend.localize`: re-homed into the throwaway namespace, with every cluster-scoped object and every
  binding outside it renamed ``<name>-<namespace>`` (:func:`rehome`), so a drill never overwrites the deployed
  tool; step images overridden (``E2E_STEP_IMAGE``, ``E2E_SIM_IMAGE``). ``close`` removes exactly what was added
  (:meth:`ClusterBackend.cleanup`; ``E2E_KEEP=1`` keeps it);
* ``submit`` creates a ``Workflow`` with a ``workflowTemplateRef`` (what ``argo submit --from
  workflowtemplate/<name>`` creates); ``faults`` (:class:`~e2e.argo_local.KillStep`) delete the attempt's pod when
  due (:func:`kill_due`: a time into the attempt, and a count of finished remediations in the run's ledger when
  the fault asks for one), which Argo reports as a lost pod;
* ``wait`` polls the phase with a deadline and converts it with :func:`e2e.argo_local.run_from_argo_workflow`,
  saving each pod's ``main`` log;
* ``deploy_simulator`` runs ``sim/deploy``'s manifests with the scenario once the cluster can hold its CAPI line
  (:meth:`ClusterBackend.capi_line_available`: a drill cluster is never changed, its Machine CRD must store the
  line's version) and returns its :class:`~e2e.backends.sim_pod.SimDeployment`.

Pure helpers (:func:`workflow_object`, :func:`override_images`, :func:`rehome`, :func:`outside`,
:func:`image_overrides`, :func:`serves_capi_line`, :func:`kill_due` with :func:`finished_remediations`,
:func:`progress_lines`, :func:`template_copy`) carry the decisions and are unit-tested; install, localize and
cleanup run against the real local API server (``tests/e2e/test_drill_backend.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from capi_rollout.domain.ledger import INTENT_OUTCOME
from capi_rollout.waiting import wait_until
from capi_rollout.workflow.image import IMAGE as STEP_IMAGE
from e2e.argo_local import KillStep, WorkflowRun, run_from_argo_workflow
from e2e.argo_local.model import COMPLETED_PHASES, POD, pod_name
from e2e.backends.base import ARGO_GROUP, ARGO_VERSION, Manifest, load_manifests
from e2e.backends.cluster import ClusterClient, ObjectRef
from e2e.backends.sim_pod import SimDeployment, simulator_documents
from sim.deploy import SIM_IMAGE
from sim.scenario import Scenario
from sim.scenario_format import load

WORKFLOW_API = f"{ARGO_GROUP}/{ARGO_VERSION}"
POLL_SECONDS = 1.0
FAULT_POLL_SECONDS = 0.25
# Environment of the ``existing`` backend: the images a drill cluster pulls instead of the released tags.
IMAGE_ENV = {"E2E_STEP_IMAGE": STEP_IMAGE, "E2E_SIM_IMAGE": SIM_IMAGE}
# Kinds whose objects live in a namespace; anything else is cluster-scoped and applied as is.
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                            "PriorityClass", "ClusterWorkflowTemplate"})


# --- pure helpers ------------------------------------------------------------------------------------------


def workflow_object(template: str, namespace: str, parameters: Mapping[str, str], *,
                    generate_name: str | None = None) -> dict[str, Any]:
    """The Workflow ``argo submit --from workflowtemplate/<template> -p k=v`` creates."""
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
        "kind": "Workflow",
        "metadata": {"generateName": generate_name or f"{template}-", "namespace": namespace,
                     "labels": {"workflows.argoproj.io/workflow-template": template}},
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {"parameters": [{"name": k, "value": str(v)} for k, v in parameters.items()]},
        },
    }


def override_images(doc: Mapping[str, Any], images: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a WorkflowTemplate whose script/container ``image`` values are replaced per ``images``."""
    out = yaml.safe_load(yaml.safe_dump(dict(doc)))
    if out.get("kind") != "WorkflowTemplate":
        return dict(out)
    for tmpl in out["spec"].get("templates", []):
        for kind in ("script", "container"):
            if kind in tmpl and tmpl[kind].get("image") in images:
                tmpl[kind]["image"] = images[tmpl[kind]["image"]]
    return dict(out)


def rehome(doc: Mapping[str, Any], namespace: str, *, from_namespace: str = "argo",
           cluster_roles: Collection[str] = ()) -> dict[str, Any]:
    """A copy of ``doc`` for the throwaway namespace ``namespace`` of a shared (drill) cluster.

    Objects of ``from_namespace`` move into ``namespace`` and ServiceAccount subjects follow. Everything else —
    cluster-scoped objects, and objects left in another namespace (the per-cluster-namespace RoleBinding) — is
    renamed ``<name>-<namespace>``, and a ``roleRef`` to one of ``cluster_roles`` (the ClusterRoles installed, so
    renamed, for this namespace) follows: a drill never overwrites the deployed tool's RBAC, and removing what it
    added is removing what carries its suffix. Namespaces and CRDs keep their names."""
    out = yaml.safe_load(yaml.safe_dump(dict(doc)))
    kind, meta = out.get("kind"), out["metadata"]
    if kind in CLUSTER_SCOPED:
        if kind not in ("Namespace", "CustomResourceDefinition"):
            meta["name"] = f"{meta['name']}-{namespace}"
    elif meta.get("namespace", from_namespace) == from_namespace:
        meta["namespace"] = namespace
    else:
        meta["name"] = f"{meta['name']}-{namespace}"
    for subject in out.get("subjects", []) or []:
        if subject.get("kind") == "ServiceAccount" and subject.get("namespace", from_namespace) == from_namespace:
            subject["namespace"] = namespace
    ref = out.get("roleRef") or {}
    if ref.get("kind") == "ClusterRole" and ref.get("name") in cluster_roles:
        ref["name"] = f"{ref['name']}-{namespace}"
    return dict(out)


def outside(doc: Mapping[str, Any], namespace: str) -> ObjectRef | None:
    """Where a rehomed document lives if that is outside ``namespace`` (what deleting the namespace does not
    remove), else None. Namespaces and CRDs are never the drill's to remove."""
    kind, meta = str(doc.get("kind")), doc.get("metadata") or {}
    if kind in ("Namespace", "CustomResourceDefinition"):
        return None
    if kind in CLUSTER_SCOPED:
        return str(doc["apiVersion"]), kind, None, str(meta["name"])
    if meta.get("namespace") != namespace:
        return str(doc["apiVersion"]), kind, meta.get("namespace"), str(meta["name"])
    return None


def image_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """``{released tag: replacement}`` from ``E2E_STEP_IMAGE`` / ``E2E_SIM_IMAGE`` (a drill cluster pulls images
    from a registry it can reach; kind loads the locally built ones under the released tags)."""
    return {default: env[name].strip() for name, default in IMAGE_ENV.items() if env.get(name, "").strip()}


def serves_capi_line(crd: Mapping[str, Any], capi_line: str) -> tuple[bool, str]:
    """Does the Machine CRD ``crd`` store the version the simulator writes for ``capi_line``? (The simulator
    writes its line's version only; a cluster storing another one would convert through CAPI's webhook, which
    the e2e suite must not depend on.)"""
    from sim.objects import capi_version

    wanted = capi_version(capi_line)
    storage = [v.get("name") for v in (crd.get("spec") or {}).get("versions", []) if v.get("storage")]
    if wanted in storage:
        return True, f"the Machine CRD stores {wanted}"
    return False, (f"the CAPI {capi_line} scenarios write {wanted} Machines, but this cluster's Machine CRD stores "
                   f"{', '.join(str(v) for v in storage) or 'nothing'}")


def progress_lines(run: WorkflowRun, seen: dict[str, str]) -> list[str]:
    """``<workflow>: <step attempt> <phase>[: message]`` for every Pod node whose phase differs from ``seen``
    (updated), and the workflow's own phase when it changed: what a test prints while a remote run goes on."""
    lines: list[str] = []
    for node in run.nodes.values():
        if node.type != POD or seen.get(node.name) == node.phase:
            continue
        seen[node.name] = node.phase
        lines.append(f"{run.name}: {node.display_name} {node.phase}" + (f": {node.message}" if node.message else ""))
    if seen.get(run.name) != run.phase:
        seen[run.name] = run.phase
        lines.append(f"{run.name}: workflow {run.phase}" + (f": {run.message}" if run.message else ""))
    return lines


def template_copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deployed WorkflowTemplate as a manifest to install elsewhere: kind, name, labels, annotations (minus
    kubectl's last-applied copy) and spec; nothing the server owns (uid, resourceVersion, managedFields...)."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    copied_meta: dict[str, Any] = {"name": meta["name"], "namespace": meta.get("namespace", "argo")}
    if meta.get("labels"):
        copied_meta["labels"] = dict(meta["labels"])
    if annotations:
        copied_meta["annotations"] = annotations
    return {"apiVersion": obj.get("apiVersion", f"{ARGO_GROUP}/{ARGO_VERSION}"), "kind": "WorkflowTemplate",
            "metadata": copied_meta, "spec": yaml.safe_load(yaml.safe_dump(obj["spec"]))}


def kill_due(run: WorkflowRun, fault: KillStep, *, now: float, ledger: Mapping[str, Any] | None = None) -> str | None:
    """The pod to delete for ``fault`` now, or None: its attempt has started, is still running, has run for
    ``fault.after`` seconds and, with ``fault.after_remediations``, ``ledger`` (the run's, decoded) shows that many
    of the phase's remediations finished (:func:`finished_remediations`)."""
    attempts = run.attempts(fault.step)
    if len(attempts) <= fault.attempt:
        return None
    node = attempts[fault.attempt]
    if node.phase not in ("Pending", "Running") or node.started is None or now < node.started + fault.after:
        return None
    if fault.after_remediations and finished_remediations(ledger, fault.step) < fault.after_remediations:
        return None
    return pod_name(run.name, node.name, node.template)


def finished_remediations(ledger: Mapping[str, Any] | None, phase: str) -> int:
    """How many of ``phase``'s remediations in a decoded ledger have their outcome written (not only the intent,
    :data:`~capi_rollout.domain.ledger.INTENT_OUTCOME`, that the remediator records before it acts)."""
    record = ((ledger or {}).get("phases") or {}).get(phase) or {}
    return sum(1 for r in record.get("remediations") or [] if r.get("outcome") not in (None, "", INTENT_OUTCOME))


# --- a cluster that runs Argo ------------------------------------------------------------------------------


class ClusterBackend:
    """The ``existing`` backend (and the base of ``kind``): Argo already runs in the cluster of ``kubeconfig``."""

    name = "existing"

    def __init__(self, kubeconfig: Path, results_dir: Path, *, namespace: str | None = None,
                 images: Mapping[str, str] | None = None, kubectl: Sequence[str] = ("kubectl",),
                 keep: bool = False, echo: Callable[[str], None] | None = None,
                 allow_real_capi: bool = False) -> None:
        self.client = ClusterClient(kubeconfig, kubectl=kubectl)
        self.kubeconfig = Path(kubeconfig)
        self.results_dir = Path(results_dir)
        self.namespace = namespace or f"capi-rollout-e2e-{uuid.uuid4().hex[:6]}"
        self.images = dict(images or {})
        self.keep = keep
        self.echo = echo  # progress while waiting: one line per step attempt whose phase changed
        self.allow_real_capi = allow_real_capi  # E2E_SIM_ALLOW_REAL_CAPI=1: see sim/README.md, "Safety"
        self.templates: list[str] = []
        self._injectors: list[threading.Thread] = []
        self._cluster_roles: set[str] = set()  # installed for this namespace, so renamed (see rehome)
        self._added: list[ObjectRef] = []  # what install() put outside the namespace

    @classmethod
    def from_kubeconfig(cls, *, results_dir: Path, **options: Any) -> ClusterBackend:
        path = options.pop("kubeconfig", None) or os.environ.get("KUBECONFIG")
        if not path:
            raise ValueError("E2E_CLUSTER=existing needs KUBECONFIG (a cluster with Argo Workflows installed)")
        images = {**image_overrides(os.environ), **(options.pop("images", None) or {})}
        options.setdefault("keep", os.environ.get("E2E_KEEP", "") not in ("", "0"))
        options.setdefault("allow_real_capi", os.environ.get("E2E_SIM_ALLOW_REAL_CAPI", "") not in ("", "0"))
        return cls(Path(path), results_dir, images=images, **options)

    # -- the cluster ------------------------------------------------------------------------------------------

    @property
    def api(self) -> Any:
        """The cluster's ``kubernetes.client.ApiClient`` (the scenarios' admin client)."""
        return self.client.api

    def apply(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Server-side apply, in order (a namespaced document without namespace goes to this backend's)."""
        self.client.apply(docs, namespace=self.namespace)

    # -- Backend ------------------------------------------------------------------------------------------

    def localize(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """``doc`` as this backend installs it: rehomed into the throwaway namespace (:func:`rehome`), images
        overridden; what lands outside the namespace is remembered for :meth:`cleanup`."""
        if doc.get("kind") == "ClusterRole":
            self._cluster_roles.add(doc["metadata"]["name"])
        out = override_images(rehome(doc, self.namespace, cluster_roles=self._cluster_roles), self.images)
        where = outside(out, self.namespace)
        if where is not None and where not in self._added:
            self._added.append(where)
        return out

    def install(self, manifests: Iterable[Manifest]) -> None:
        raw = load_manifests(manifests)
        self._cluster_roles |= {d["metadata"]["name"] for d in raw if d.get("kind") == "ClusterRole"}
        docs = [self.localize(d) for d in raw]
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        self.apply([ns, *[d for d in docs if d.get("kind") == "Namespace"]])
        self.apply([d for d in docs if d.get("kind") != "Namespace"])
        self.templates += [n for n in (d["metadata"]["name"] for d in docs if d.get("kind") == "WorkflowTemplate")
                           if n not in self.templates]  # installing the same template again updates it

    def deployed_template(self, ref: str) -> dict[str, Any]:
        """A copy (:func:`template_copy`) of the WorkflowTemplate ``<namespace>/<name>`` the cluster runs, so a
        drill plays what is deployed rather than this checkout's rendering (``E2E_DEPLOYED_TEMPLATE``)."""
        namespace, _, name = ref.rpartition("/")
        if not namespace or not name:
            raise ValueError(f"E2E_DEPLOYED_TEMPLATE={ref!r}: expected <namespace>/<name>, e.g. argo/capi-rollout")
        return template_copy(self.client.get(WORKFLOW_API, "WorkflowTemplate", name, namespace))

    def cleanup(self) -> None:
        """Remove what :meth:`install` added to the cluster: the throwaway namespace (template, runner
        ServiceAccount, Workflows, ledgers) and the suffixed objects outside it."""
        for ref in reversed(self._added):
            self.client.delete(ref)
        self.client.delete(("v1", "Namespace", None, self.namespace))

    def submit(self, parameters: Mapping[str, str], *, template: str | None = None,
               faults: Sequence[KillStep] = ()) -> WorkflowRun:
        if template is None:
            if len(self.templates) != 1:
                raise ValueError(f"name the template to run: installed {self.templates}")
            template = self.templates[0]
        run = run_from_argo_workflow(self.client.create(workflow_object(template, self.namespace, parameters)))
        if faults:
            injector = threading.Thread(target=self._inject, args=(run.name, tuple(faults)), daemon=True,
                                        name=f"faults-{run.name}")
            injector.start()
            self._injectors.append(injector)
        return run

    def _inject(self, name: str, faults: tuple[KillStep, ...], timeout: float = 900.0) -> None:
        """Play ``faults`` on the running Workflow ``name``: ``after`` seconds after its attempt started, each
        :class:`KillStep` deletes the attempt's pod: ``force`` with grace period 0 (a lost node: Argo marks the node
        Error "pod deleted"), ``graceful`` with a grace period (the kubelet SIGTERMs main, exit 143, pod Failed),
        ``evict`` through the Eviction API (graceful too). The template's retry expression retries all three."""
        from kubernetes.client.exceptions import ApiException

        pending = list(faults)

        def played() -> bool:
            run = run_from_argo_workflow(self.client.get(WORKFLOW_API, "Workflow", name, self.namespace))
            ledger = self._ledger(name) if any(f.after_remediations for f in pending) else None
            for fault in list(pending):
                due = kill_due(run, fault, now=time.time(), ledger=ledger)
                if due is None:
                    continue
                with contextlib.suppress(ApiException):
                    if fault.how == "evict":
                        self.client.evict(self.namespace, due)
                    else:
                        self.client.delete(("v1", "Pod", self.namespace, due),
                                           grace_seconds=0 if fault.how == "force" else 5)
                pending.remove(fault)
            return not pending or run.phase in COMPLETED_PHASES

        with contextlib.suppress(TimeoutError):  # faults not due by then are not played
            wait_until(played, timeout=timeout, interval=FAULT_POLL_SECONDS, what=f"the faults of {name}")

    def _ledger(self, workflow: str) -> dict[str, Any] | None:
        """The decoded ledger of ``workflow`` (None until the runner wrote one)."""
        from kubernetes.client.exceptions import ApiException

        from capi_rollout.adapters.kube import LEDGER_API_VERSION, LEDGER_KIND
        from capi_rollout.ledger_store import ledger_name

        try:
            obj = self.client.get(LEDGER_API_VERSION, LEDGER_KIND, ledger_name(workflow), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        text = (obj.get("spec") or {}).get("ledger")
        return json.loads(text) if text else None

    def wait(self, run: WorkflowRun, timeout: float) -> WorkflowRun:
        seen: dict[str, str] = {}
        latest: list[dict[str, Any]] = []

        def completed() -> dict[str, Any] | None:  # each look is an API call
            obj = self.client.get(WORKFLOW_API, "Workflow", run.name, self.namespace)
            latest[:] = [obj]
            if self.echo is not None:
                for line in progress_lines(run_from_argo_workflow(obj), seen):
                    self.echo(line)
            return obj if (obj.get("status") or {}).get("phase") in COMPLETED_PHASES else None

        try:
            obj = wait_until(completed, timeout=timeout, interval=POLL_SECONDS, what=f"{run.name} completed")
        except TimeoutError:
            current = run_from_argo_workflow(latest[0])
            raise TimeoutError(f"{run.name} did not complete within {timeout:g}s:\n{current.text()}") from None
        done = run_from_argo_workflow(obj)
        self._save_logs(done)
        done.results_dir = done.write(self.results_dir / done.name)
        return done

    def _save_logs(self, run: WorkflowRun) -> None:
        from kubernetes.client.exceptions import ApiException

        directory = self.results_dir / run.name
        directory.mkdir(parents=True, exist_ok=True)
        for node in run.nodes.values():
            if node.type != POD:
                continue
            path = directory / f"{node.name}.log"
            try:
                text = self.client.log(self.namespace, pod_name(run.name, node.name, node.template), container="main")
            except ApiException as exc:
                text = f"# log unavailable: {exc.status} {exc.reason}\n"
            path.write_text(text)
            node.log_path = str(path)

    # -- the simulator in the cluster ---------------------------------------------------------------------

    def prepare_simulation(self, capi_line: str) -> None:
        """Make the cluster ready for a simulator of ``capi_line``. A drill cluster is never changed: its CAPI
        CRDs must already serve the line's version (:func:`serves_capi_line`), else ``RuntimeError`` says so."""
        ok, why = self.capi_line_available(capi_line)
        if not ok:
            raise RuntimeError(why)

    def capi_line_available(self, capi_line: str) -> tuple[bool, str]:
        """Can a simulator of ``capi_line`` run here, and why not."""
        from kubernetes.client.exceptions import ApiException

        try:
            crd = self.client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "machines.cluster.x-k8s.io")
        except ApiException as exc:
            return False, f"the Machine CRD cannot be read: {exc.status} {exc.reason}"
        return serves_capi_line(crd, capi_line)

    def deploy_simulator(self, scenario: Scenario | str, *, namespace: str | None = None,
                         trigger_after: float = -1.0, timeout: float = 300.0) -> SimDeployment:
        """Run the simulator in the cluster with ``scenario`` and wait until its objects exist: the pod ready
        (the simulated cluster is up), the talosconfig Secret, one Service per Machine. Its timeline is printed
        as JSON lines (``--output json``), which :class:`SimDeployment` reads back."""
        s = load(scenario) if isinstance(scenario, str) else scenario
        ns = namespace or f"sim-{uuid.uuid4().hex[:8]}"
        self.prepare_simulation(s.capi_line)
        docs = simulator_documents(s, ns, trigger_after=trigger_after, image=self.images.get(SIM_IMAGE, SIM_IMAGE),
                                   allow_real_capi=self.allow_real_capi)
        self.apply([d for d in docs if d["kind"] == "Namespace"])
        self.apply([d for d in docs if d["kind"] != "Namespace"])
        deployment = SimDeployment(self.client, ns, replace(s, namespace=ns))
        try:
            deployment.wait_ready(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                deployment.remove()
            raise
        return deployment

    def close(self) -> None:
        """Wait for fault injectors, remove what was installed (unless ``keep``: ``E2E_KEEP=1``), close the client."""
        for injector in self._injectors:
            injector.join(timeout=FAULT_POLL_SECONDS * 5)
        try:
            if not self.keep:
                self.cleanup()
        finally:
            self.client.close()
