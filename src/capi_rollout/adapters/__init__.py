"""Adapters: the only code in capi-rollout that talks to the network.

Contract: each subpackage wraps one external API behind a small, typed interface and turns transport
failures into values the rest of the tool can reason about (``talos``: the Talos API over gRPC with mTLS;
``kube``: the Kubernetes API). Nothing here makes rollout decisions.
"""
