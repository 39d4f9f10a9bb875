"""Pure rollout decisions: CAPI objects (as plain dicts) and ``now`` in, plans with human-readable reasons out.

Contract: nothing in this package performs I/O, reads the clock or talks to Kubernetes or Talos (enforced by
import-linter). Every function takes what it needs as keyword arguments and returns new values; nothing is
mutated in place. Both CAPI shapes are read: ``cluster.x-k8s.io/v1beta2`` (CAPI ≥ 1.11) and ``v1beta1`` (1.10).

Modules:

* ``params``      — the workflow parameters: defaults, descriptions, validation (one source for CLI, template, README).
* ``model``       — typed views of Cluster, TalosControlPlane, MachineDeployment, Machine, MachineHealthCheck.
* ``strategy``    — rollout-strategy and paused rules shared by preflight and ``capi-rollout lint``.
* ``resolve``     — which objects belong to one cluster (exactly one TCP, one talosconfig Secret, ...).
* ``preflight``   — every violation and warning before anything is done.
* ``progress``    — completion rules, the progress fingerprint and the progress line.
* ``remediation`` — the priority comparator, the etcd quorum guard.
* ``decide``      — one decision per poll for a phase: complete, wait, remediate or fail.
* ``deadlines``   — the Argo backstop deadlines of the steps (a phase's: a little above its timeout).
* ``ledger``      — the record of a run (phase clocks, remediations) that survives retries.
"""
