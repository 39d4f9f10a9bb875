//go:build tools

// Package tools pins the kube-apiserver command so `go build k8s.io/kubernetes/cmd/kube-apiserver` resolves from go.sum.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
