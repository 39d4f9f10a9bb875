"""The Argo Workflows side of capi-rollout: the Hera WorkflowTemplate and the step entry points it runs.

Contract:

* ``template`` builds the ``capi-rollout`` WorkflowTemplate from Python (Hera); nothing else in the project
  writes Argo template YAML. Arguments come from :mod:`capi_rollout.domain.params` (one source of truth).
* ``entry`` is the process every step pod runs (``python -m capi_rollout.workflow.entry <step> <inputs file>``,
  no Hera at run time); ``steps`` is what it calls, thin (inputs and environment in,
  :func:`capi_rollout.rollout_loop.run_step` called, output files and an exit code out).
* ``render`` writes or checks the committed YAML under ``overlay/``; ``semantic`` checks a rendered
  template's references and deadlines without a cluster; ``deadlines`` computes the leaf backstops;
  ``image`` names the step image from the package version.

Importing this package imports nothing else: each module is loaded where it is used.
"""
