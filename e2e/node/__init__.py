"""A real one-node Kubernetes for the e2e suite and the demo: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, containerd + runc, the kubelet and kube-proxy, all built from pinned sources, in a network
namespace the harness makes (no route out), with Argo Workflows installed from its pinned upstream manifests.

Modules: :mod:`~e2e.node.config` (addresses and configuration files, pure), :mod:`~e2e.node.netns` (the
namespace and teardown, host side), :mod:`~e2e.node.cluster` (the components, inside the namespace),
:mod:`~e2e.node.images` and :mod:`~e2e.node.archive` (images without a Docker engine), :mod:`~e2e.node.setup`
(what the machine lacks, where the pieces are), ``python -m e2e.node`` (the launcher).
"""
