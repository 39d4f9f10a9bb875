"""The capi-rollout simulator: makes a Talos workload cluster *appear* on a Kubernetes API server.

It fakes only what the rollout tool observes — CAPI objects and their status, and the Talos API of each
node — never a real node, kubelet or CAPI controller. See ``sim/README.md`` for what it fakes and what
it never will.
"""
