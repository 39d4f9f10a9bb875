"""capi-rollout: drive a Talos Linux workload cluster safely through a Cluster API rollout.

Layers, top to bottom (enforced by import-linter, see ``.importlinter``):

* ``cli``, ``report``, ``commands``, ``lint`` — the ``capi-rollout`` verbs (argv in, exit code out).
* ``workflow`` — the Hera WorkflowTemplate and the step shell its pods run.
* ``run`` — runs one step (a workflow pod) or all of them (``capi-rollout run``) with connected adapters.
* ``rollout_loop`` — :class:`RolloutLoop`, one cluster's rollout: resolve → preflight → phases → summary.
* ``remediator`` — the one place that acts on the cluster: deletes a Machine, reboots its node, records it.
  ``observation`` — how the loop (and ``plan``) read the cluster into state. ``claim_store`` — one rollout per
  cluster. ``summary``, ``picture`` — the run's report, as a table and as an SVG timeline.
* ``recorder`` — every write of the run's ledger; ``ledger_store`` — where the ledger lives.
* ``step_table`` — the steps: name → outputs and handler, read by the step shell, the template and ``run``.
* ``ports`` — the Protocols the loop and the remediator need from Kubernetes and Talos.
* ``domain`` — pure decision code: CAPI objects and ``now`` in, a plan with reasons out; the parameters.
  No I/O, no clock, no network.
* ``adapters`` — the only code that talks to Kubernetes (``kube``, ``informer``) or Talos (``talos``).
"""

__version__ = "0.1.0"
