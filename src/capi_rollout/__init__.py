"""capi-rollout: drive a Talos Linux workload cluster safely through a Cluster API rollout.

Layers (enforced by import-linter, see ``.importlinter``):

* ``capi_rollout.domain`` — pure decision code: CAPI objects and ``now`` in, a plan with reasons out.
  No I/O, no clock, no network.
* ``capi_rollout.adapters`` — the only code that talks to Kubernetes (``kube``) or Talos (``talos``).
* ``capi_rollout.remediator`` — the one place that performs writes (delete Machine, reboot, ledger, Events).
* ``capi_rollout.rollout_loop`` — the loop: resolve → preflight → phases → summary, wiring the above.
* ``capi_rollout.workflow`` — the Hera WorkflowTemplate and the step entry points it runs.
"""

__version__ = "0.1.0"
