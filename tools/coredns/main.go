// CoreDNS with the plugins of the Kubernetes module's cluster/addons/dns/coredns Corefile, for the real node's
// cluster DNS (tools/events.sh builds it; e2e/backends/node.py installs it). Upstream's coredns.go imports every
// plugin (core/plugin); this imports only those, the way CoreDNS documents a custom build. Directive order is
// CoreDNS's own (core/dnsserver.Directives).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
