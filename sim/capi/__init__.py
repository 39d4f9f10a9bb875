"""Fake CAPI controllers: pure planners (``phases``, ``rollout``, ``faults``) and the one I/O loop
(``controller``) that applies them to a Kubernetes API server through ``kube``."""
