//go:build tools

// Package tools pins talosctl v1.13.0 so `go build github.com/siderolabs/talos/cmd/talosctl` resolves from go.sum.
package tools

import _ "github.com/siderolabs/talos/cmd/talosctl"
