//go:build tools

// Package tools pins the kustomize command so `go build sigs.k8s.io/kustomize/kustomize/v5` resolves from go.sum.
package tools

import _ "sigs.k8s.io/kustomize/kustomize/v5"
