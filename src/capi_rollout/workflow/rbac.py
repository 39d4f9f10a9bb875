"""The RBAC and the ledger CRD under overlay/, generated from Python (``capi-rollout render``), every rule commented.

Contract: pure functions from names to Kubernetes documents (plain dicts) and to the exact YAML committed.

* :func:`runner_documents`: the ``capi-rollout-runner`` ServiceAccount (namespace ``argo``) and its rights. Read
  CAPI objects cluster-wide; per cluster namespace delete Machines, create Events and ``get`` Secrets (never
  ``list``: the runner reads ``<cluster>-talosconfig`` by name). With ``clusters`` (``namespace/name`` pairs, the
  ``render --cluster`` option) each cluster namespace gets its own Role whose ``get`` on Secrets is narrowed by
  ``resourceNames`` to those clusters' talosconfig Secrets; without, one ClusterRole is bound in ``default``.
  In ``argo`` the runner reads Workflows by name (the holder of a cluster's claim) and writes only
  :data:`LEDGER_KIND` objects (a kind nothing else uses, see
  :func:`ledger_crd`) and the WorkflowTaskResults of Argo v4's executor: no ConfigMap, so never
  ``workflow-controller-configmap``.
* :func:`ledger_crd`: the ``RolloutLedger`` CustomResourceDefinition (``capi-rollout.io``): the remediation ledger
  stays in the Workflow's namespace, owned by the Workflow (garbage-collected with it).
* :func:`events_documents`: the EventSource's and the Sensor's ServiceAccounts and rights; the Sensor may only
  create Workflows in ``argo``, and (:func:`sensor_admission_policy`, an admission policy) only Workflows of this
  template that pass nothing but the cluster parameters.
* :func:`to_yaml`: documents as YAML with a comment above each document and each rule (the reason it exists).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

NAMESPACE = "argo"
RUNNER = "capi-rollout-runner"
READ_CAPI_ROLE = "capi-rollout-read-capi"
CLUSTER_NAMESPACE_ROLE = "capi-rollout-cluster-namespace"
DEFAULT_CLUSTER_NAMESPACE = "default"
EVENTS_NAMESPACE = "argo-events"
EVENTSOURCE_SA, SENSOR_SA = "capi-rollout-eventsource", "capi-rollout-sensor"
TEMPLATE_NAME = "capi-rollout"

LEDGER_GROUP, LEDGER_VERSION = "capi-rollout.io", "v1alpha1"
LEDGER_KIND, LEDGER_PLURAL = "RolloutLedger", "rolloutledgers"
LEDGER_API_VERSION = f"{LEDGER_GROUP}/{LEDGER_VERSION}"
LEDGER_MAX_BYTES = 262144

LABELS = {"app.kubernetes.io/name": "capi-rollout"}
TALOSCONFIG_SUFFIX = "-talosconfig"  # as capi_rollout.domain.resolve.talosconfig_secret_name
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


@dataclass(frozen=True)
class Rule:
    """One PolicyRule and the reason it exists (written as a comment above it)."""

    why: str
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiGroups": list(self.api_groups), "resources": list(self.resources)}
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        out["verbs"] = list(self.verbs)
        return out


@dataclass(frozen=True)
class Doc:
    """A document, the comment above it, and the reasons of its rules (same order)."""

    comment: str
    body: dict[str, Any]
    reasons: tuple[str, ...] = ()


def parse_cluster(text: str) -> tuple[str, str]:
    """``namespace/name`` (or ``name``, in ``default``) of a ``render --cluster`` value; ValueError if malformed."""
    namespace, slash, name = text.rpartition("/")
    if not slash:
        namespace = DEFAULT_CLUSTER_NAMESPACE
    if not (_DNS_LABEL.fullmatch(namespace) and len(namespace) <= 63 and _DNS_NAME.fullmatch(name)
            and len(name) + len(TALOSCONFIG_SUFFIX) <= 253):
        raise ValueError(f"--cluster {text!r}: expected NAMESPACE/NAME or NAME (lowercase DNS names, as Kubernetes "
                         "names them)")
    return namespace, name


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(LABELS)
    return meta


def _role(kind: str, name: str, namespace: str | None, rules: Sequence[Rule], comment: str) -> Doc:
    body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": _meta(name, namespace),
            "rules": [r.to_dict() for r in rules]}
    return Doc(comment, body, tuple(r.why for r in rules))


def _binding(kind: str, name: str, namespace: str | None, role_kind: str, role: str, sa: str, sa_namespace: str,
             comment: str = "") -> Doc:
    return Doc(comment, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": _meta(name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_namespace}],
    })


def _service_account(name: str, namespace: str, comment: str = "") -> Doc:
    return Doc(comment, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, namespace)})


READ_CAPI_RULES = (
    Rule("resolve finds the Cluster, its TalosControlPlane and MachineDeployments by the cluster-name label; the "
         "phases keep the Cluster, MachineDeployments and Machines in a list+watch cache to judge progress and "
         "stalls; preflight refuses to run beside a MachineHealthCheck that would race it. Read only.",
         ("cluster.x-k8s.io",), ("clusters", "machinedeployments", "machines", "machinehealthchecks"),
         ("get", "list", "watch")),
    Rule("The control-plane phase follows the TalosControlPlane's rollout (status and conditions). Read only.",
         ("controlplane.cluster.x-k8s.io",), ("taloscontrolplanes",), ("get", "list", "watch")),
)


def cluster_namespace_rules(talosconfig_secrets: Sequence[str] = ()) -> tuple[Rule, ...]:
    """What the runner may do in a cluster namespace; ``talosconfig_secrets`` narrows ``get`` on Secrets."""
    if talosconfig_secrets:
        secrets = Rule("The talosconfig Secrets of the clusters listed with `capi-rollout render --cluster`, read "
                       "by name (Talos API client certificate: reboot a node, detect maintenance mode). No list, "
                       "no watch, no write, and no other Secret (admin kubeconfigs, Talos secrets bundles).",
                       ("",), ("secrets",), ("get",), tuple(sorted(talosconfig_secrets)))
    else:
        secrets = Rule("The `<cluster>-talosconfig` Secret (Talos API client certificate: reboot a node, detect "
                       "maintenance mode), read by name; its cluster-name label is checked after the read. No "
                       "list or watch (no enumerating the namespace's Secrets), no write. `get` alone still "
                       "reaches any Secret whose name is known: `capi-rollout render --cluster NS/NAME` narrows "
                       "it to the named clusters' talosconfig Secrets (resourceNames).",
                       ("",), ("secrets",), ("get",))
    return (
        Rule("Remediation's only CAPI write: delete the one unhealthy Machine so its MachineSet or the "
             "TalosControlPlane replaces it. No patch, update or create on any CAPI object.",
             ("cluster.x-k8s.io",), ("machines",), ("delete",)),
        secrets,
        Rule("Every remediation (delete Machine, reboot node) is recorded as a core Event on the TalosControlPlane "
             "or MachineDeployment it acted for, in the cluster's namespace.", ("",), ("events",), ("create",)),
    )


ARGO_RULES = (
    Rule(f"The remediation ledger: one {LEDGER_KIND} ({LEDGER_GROUP}, a kind no other component reads) per "
         "Workflow, owned by it (garbage-collected with it), that lets a retried or later step resume with the "
         "remediations already done and the phase clocks: read, create, replace. No delete: the ownerReference "
         "removes it. No ConfigMap: the workflow controller's ConfigMap is out of reach.",
         (LEDGER_GROUP,), (LEDGER_PLURAL,), ("get", "create", "update")),
    Rule("One rollout per cluster: resolve reads, by name, the Workflow holding the cluster's claim (a "
         f"{LEDGER_KIND} named after the cluster) to see whether it still runs. No list, no watch, no write.",
         ("argoproj.io",), ("workflows",), ("get",)),
    Rule("Argo Workflows v4's executor (the `wait` container) reports step outputs and results through "
         "WorkflowTaskResults in the workflow's namespace, with the pod's own ServiceAccount.",
         ("argoproj.io",), ("workflowtaskresults",), ("create", "patch")),
)

RUNNER_HEADER = (
    "RBAC for the capi-rollout WorkflowTemplate's pods (serviceAccountName: capi-rollout-runner in `argo`).\n"
    "Generated by `capi-rollout render` from src/capi_rollout/workflow/rbac.py: change the Python, not this file.\n"
    "Least privilege: the rollout reads CAPI objects everywhere, but the only write it makes to a CAPI object is\n"
    "deleting one unhealthy Machine; it never patches, updates or creates CAPI objects. Secrets (get by name, never\n"
    "list), Machine deletion and Events are granted per cluster namespace, never cluster-wide. In `argo` it writes\n"
    "only its own RolloutLedgers and the executor's WorkflowTaskResults.\n"
    "Anyone who may create Workflows in `argo` can run one as capi-rollout-runner: see docs/workflow.md (RBAC)."
)


def runner_documents(clusters: Sequence[tuple[str, str]] = ()) -> list[Doc]:
    """The runner's ServiceAccount and RBAC; ``clusters`` (namespace, name) narrows Secrets per namespace."""
    docs = [
        _service_account(RUNNER, NAMESPACE, RUNNER_HEADER),
        _role("ClusterRole", READ_CAPI_ROLE, None, READ_CAPI_RULES, ""),
        _binding("ClusterRoleBinding", READ_CAPI_ROLE, None, "ClusterRole", READ_CAPI_ROLE, RUNNER, NAMESPACE),
    ]
    if not clusters:
        docs += [
            _role("ClusterRole", CLUSTER_NAMESPACE_ROLE, None, cluster_namespace_rules(),
                  "Granted only where workload clusters live: bind it with one RoleBinding per cluster namespace\n"
                  "(below: the homelab cluster's namespace `default`). A ClusterRole so the rules are written once.\n"
                  "To narrow Secrets to named clusters, use `capi-rollout render --cluster NAMESPACE/NAME ...`."),
            _binding("RoleBinding", RUNNER, DEFAULT_CLUSTER_NAMESPACE, "ClusterRole", CLUSTER_NAMESPACE_ROLE, RUNNER,
                     NAMESPACE),
        ]
    else:
        by_namespace: dict[str, set[str]] = {}
        for namespace, name in clusters:
            by_namespace.setdefault(namespace, set()).add(f"{name}{TALOSCONFIG_SUFFIX}")
        for namespace, secrets in sorted(by_namespace.items()):
            docs += [
                _role("Role", RUNNER, namespace, cluster_namespace_rules(sorted(secrets)),
                      f"Cluster namespace {namespace}: only the clusters named with --cluster "
                      f"({', '.join(sorted(s.removesuffix(TALOSCONFIG_SUFFIX) for s in secrets))})."),
                _binding("RoleBinding", RUNNER, namespace, "Role", RUNNER, RUNNER, NAMESPACE),
            ]
    docs += [
        _role("Role", RUNNER, NAMESPACE, ARGO_RULES, ""),
        _binding("RoleBinding", RUNNER, NAMESPACE, "Role", RUNNER, RUNNER, NAMESPACE),
    ]
    return docs


def ledger_crd() -> Doc:
    """The RolloutLedger CRD: the ledger JSON (``spec.ledger``) and, for ``kubectl get``, its cluster."""
    string = {"type": "string"}
    schema = {
        "type": "object",
        "description": "capi-rollout's remediation ledger of one Workflow (owned by it): the remediations done "
                       "and the phase clocks, so a retried step resumes instead of starting over.",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [{
                    "rule": "has(self.ledger) != has(self.holder)",
                    "message": "a RolloutLedger holds either a run's ledger or a cluster's claim (holder)",
                }],
                "properties": {
                    "clusterName": {**string, "description": "the cluster the Workflow rolls"},
                    "clusterNamespace": {**string, "description": "its namespace"},
                    "ledger": {**string, "maxLength": LEDGER_MAX_BYTES,
                               "description": "the ledger as JSON (capi_rollout.domain.ledger.Ledger)"},
                    "holder": {
                        "type": "object", "required": ["workflow", "uid"],
                        "description": "in a cluster's claim (capi-rollout-claim-<namespace>-<cluster>): the "
                                       "Workflow rolling it; one rollout per cluster",
                        "properties": {"workflow": string, "uid": string, "since": string},
                    },
                },
            },
        },
    }
    body = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": _meta(f"{LEDGER_PLURAL}.{LEDGER_GROUP}"),
        "spec": {
            "group": LEDGER_GROUP, "scope": "Namespaced",
            "names": {"kind": LEDGER_KIND, "listKind": f"{LEDGER_KIND}List", "plural": LEDGER_PLURAL,
                      "singular": LEDGER_KIND.lower()},
            "versions": [{
                "name": LEDGER_VERSION, "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
                "additionalPrinterColumns": [
                    {"name": "Cluster", "type": "string", "jsonPath": ".spec.clusterName"},
                    {"name": "Namespace", "type": "string", "jsonPath": ".spec.clusterNamespace"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }],
        },
    }
    return Doc(
        "The capi-rollout remediation ledger: one RolloutLedger per Workflow, in the Workflow's namespace, owned by\n"
        "the Workflow, and one claim per cluster (spec.holder: the Workflow rolling it).\n"
        "Generated by `capi-rollout render` from src/capi_rollout/workflow/rbac.py.\n"
        "Its own kind so that the runner's write access in `argo` reaches nothing another component reads (a\n"
        "ConfigMap grant would reach workflow-controller-configmap); see docs/workflow.md (Where the ledger lives).",
        body)


SENSOR_HEADER = (
    "RBAC for the Argo Events side of capi-rollout (EventSource and Sensor run in argo-events).\n"
    "Generated by `capi-rollout render` from src/capi_rollout/workflow/rbac.py: change the Python, not this file."
)


def events_documents() -> list[Doc]:
    """The EventSource's (list/watch two CRDs) and the Sensor's (create Workflows in argo) identities."""
    eventsource_rules = (
        Rule("The resource EventSource runs an informer (list + watch) on TalosControlPlanes in every namespace.",
             ("controlplane.cluster.x-k8s.io",), ("taloscontrolplanes",), ("list", "watch")),
        Rule("Same for MachineDeployments (the workers' rollouts).",
             ("cluster.x-k8s.io",), ("machinedeployments",), ("list", "watch")),
    )
    sensor_rules = (
        Rule("The k8s trigger creates the Workflow in argo, and nothing else: no other kind (no pods, "
             "WorkflowTemplates, CronWorkflows, Secrets, ConfigMaps), no read, update or delete of Workflows. "
             "RBAC cannot say which template a created Workflow references: the admission policy below does "
             "(and Argo's `templateReferencing: Strict`, docs/workflow.md).",
             ("argoproj.io",), ("workflows",), ("create",)),
    )
    return [
        _service_account(EVENTSOURCE_SA, EVENTS_NAMESPACE, SENSOR_HEADER),
        _role("ClusterRole", EVENTSOURCE_SA, None, eventsource_rules, ""),
        _binding("ClusterRoleBinding", EVENTSOURCE_SA, None, "ClusterRole", EVENTSOURCE_SA, EVENTSOURCE_SA,
                 EVENTS_NAMESPACE),
        _service_account(SENSOR_SA, EVENTS_NAMESPACE),
        _role("Role", SENSOR_SA, NAMESPACE, sensor_rules, ""),
        _binding("RoleBinding", SENSOR_SA, NAMESPACE, "Role", SENSOR_SA, SENSOR_SA, EVENTS_NAMESPACE),
        *sensor_admission_policy(),
    ]


SENSOR_POLICY = "capi-rollout-sensor-workflows"
SENSOR_PARAMETERS = ("clusterName", "clusterNamespace")


def sensor_admission_policy() -> list[Doc]:
    """What RBAC cannot say: a Workflow the Sensor creates references this template and sets nothing else.

    A ValidatingAdmissionPolicy (GA since Kubernetes 1.30) bound with ``Deny``: for the Sensor's ServiceAccount
    only, a Workflow's spec may hold ``workflowTemplateRef`` (this namespaced template) and ``arguments`` with the
    two cluster parameters, nothing more (no inline templates, no ``serviceAccountName``, no ``podSpecPatch``, no
    other parameter such as ``dryRun`` or ``rebootMode``). Users and other components are not matched."""
    user = f"system:serviceaccount:{EVENTS_NAMESPACE}:{SENSOR_SA}"
    allowed = "[" + ", ".join(f"'{p}'" for p in SENSOR_PARAMETERS) + "]"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": SENSOR_POLICY, "labels": {"app.kubernetes.io/name": TEMPLATE_NAME}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{  # operations first: "- apiGroups:" marks an RBAC rule here
                "operations": ["CREATE"], "apiGroups": ["argoproj.io"], "apiVersions": ["*"],
                "resources": ["workflows"]}]},
            "matchConditions": [{"name": "created-by-the-capi-rollout-sensor",
                                 "expression": f"request.userInfo.username == '{user}'"}],
            "validations": [
                {"expression": "has(object.spec) && object.spec.all(k, k in ['workflowTemplateRef', 'arguments'])",
                 "message": "the capi-rollout Sensor may set only spec.workflowTemplateRef and spec.arguments"},
                {"expression": (f"has(object.spec.workflowTemplateRef) && object.spec.workflowTemplateRef.name == "
                                f"'{TEMPLATE_NAME}' && !(has(object.spec.workflowTemplateRef.clusterScope) && "
                                "object.spec.workflowTemplateRef.clusterScope == true)"),
                 "message": f"the capi-rollout Sensor may only run the WorkflowTemplate {TEMPLATE_NAME}"},
                {"expression": ("!has(object.spec.arguments) || (object.spec.arguments.all(k, k == 'parameters') && "
                                "(!has(object.spec.arguments.parameters) || object.spec.arguments.parameters.all("
                                f"p, p.name in {allowed})))"),
                 "message": "the capi-rollout Sensor may pass only the clusterName and clusterNamespace parameters"},
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": SENSOR_POLICY, "labels": {"app.kubernetes.io/name": TEMPLATE_NAME}},
        "spec": {"policyName": SENSOR_POLICY, "validationActions": ["Deny"]},
    }
    return [
        Doc("RBAC lets the Sensor create any Workflow in argo; this admission policy (Kubernetes >= 1.30) narrows it\n"
            "to Workflows of the capi-rollout template with only the cluster parameters. It matches the Sensor's\n"
            "ServiceAccount only.", policy),
        Doc("Enforce the policy above (Deny: a Workflow that breaks it is refused, with the policy's message).",
            binding),
    ]


def _comment(text: str, indent: str = "") -> str:
    return "".join(f"{indent}# {line}".rstrip() + "\n" for line in _wrap(text))


def _wrap(text: str, width: int = 110) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            if current and len(current) + 1 + len(word) > width:
                lines.append(current)
                current = word
            else:
                current = f"{current} {word}" if current else word
        lines.append(current)
    return lines


def _flow(values: Iterable[str]) -> str:
    return json.dumps(list(values))


def _document(doc: Doc) -> str:
    body = dict(doc.body)
    rules: list[Mapping[str, Any]] = body.pop("rules", None) or []
    out = _comment(doc.comment) if doc.comment else ""
    out += yaml.safe_dump(body, sort_keys=False, width=120)
    if rules:
        out += "rules:\n"
        for rule, why in zip(rules, doc.reasons, strict=True):
            out += _comment(why, "  ")
            out += f"  - apiGroups: {_flow(rule['apiGroups'])}\n    resources: {_flow(rule['resources'])}\n"
            if rule.get("resourceNames"):
                out += f"    resourceNames: {_flow(rule['resourceNames'])}\n"
            out += f"    verbs: {_flow(rule['verbs'])}\n"
    return out


def to_yaml(docs: Sequence[Doc]) -> str:
    """The documents as one multi-document YAML text (comments above documents and rules)."""
    return "---\n".join(_document(d) for d in docs)


def bodies(docs: Sequence[Doc]) -> list[dict[str, Any]]:
    return [d.body for d in docs]
