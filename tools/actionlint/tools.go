//go:build tools

// Package tools pins actionlint (the GitHub Actions workflow checker) for `make lint`.
package tools

import _ "github.com/rhysd/actionlint/cmd/actionlint"
