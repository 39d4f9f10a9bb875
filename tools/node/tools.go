//go:build tools

// Package tools pins the node commands (kubelet, scheduler, controller manager, kube-proxy, kubectl) so
// `go build k8s.io/kubernetes/cmd/<name>` resolves from this module's go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
