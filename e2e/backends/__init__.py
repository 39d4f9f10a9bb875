"""Where the e2e suite runs the rendered WorkflowTemplate: one interface, four backends, chosen by ``E2E_CLUSTER``.

The interface and the manifests it takes: :mod:`.base`. The choice: :mod:`.selection`. One module per backend:
:mod:`.local` (the local API server and :mod:`e2e.argo_local`), :mod:`.existing` (a cluster that runs Argo),
:mod:`.kind` (a kind cluster of the test's own), :mod:`.node` (the real node of ``python -m e2e.node``). What the
cluster backends share: :mod:`.cluster` (the one client they talk to a cluster with), :mod:`.argo_install` (Argo
Workflows and Argo Events installed from the pinned modules) and :mod:`.sim_pod` (the simulator as a pod).
"""
