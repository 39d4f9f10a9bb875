#!/usr/bin/env bash
# Extract the pinned upstream CRDs from Go module zips into $CAPI_ROLLOUT_CACHE/crds/<set>-<version>/.
#
# Contract: pins come from tools/versions.env; each set directory holds only the CRD YAML files listed below and
# a .stamp written last, so a complete set is never fetched again. Nothing here is committed to the repository.
set -euo pipefail

# shellcheck source=tools/pins.sh
source "$(dirname "${BASH_SOURCE[0]}")/pins.sh"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS="-mod=mod" GOTOOLCHAIN=local
log() { printf '[tools] %s\n' "$*" >&2; }

# extract <set> <module> <version> <dir in module> <file>... [expected h1 sum via $want_sum]
extract() {
  local set="$1" module="$2" version="$3" subdir="$4"; shift 4
  local dest="$cache/crds/$set-$version" json dir sum file
  if [[ -f "$dest/.stamp" ]]; then
    log "CRDs $set $version up to date in $dest"
    return
  fi
  log "downloading $module@$version for $set CRDs"
  json="$(cd "$cache" && GONOSUMDB="${nosumdb:-}" go mod download -json "$module@$version")"
  dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  sum="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')"
  if [[ -z "$dir" ]]; then
    printf '%s\n' "$json" >&2
    exit 1
  fi
  if [[ -n "${want_sum:-}" && "$sum" != "$want_sum" ]]; then
    log "checksum mismatch for $module@$version: got $sum, pinned $want_sum"
    exit 1
  fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  for file in "$@"; do
    install -m 0644 "$dir/$subdir/$file" "$dest.tmp/$file"
  done
  printf '%s %s %s\n' "$module" "$version" "$sum" > "$dest.tmp/.stamp"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  log "extracted $# CRD files into $dest"
}

mkdir -p "$cache/crds"
capi_core=(cluster.x-k8s.io_clusters.yaml cluster.x-k8s.io_machines.yaml cluster.x-k8s.io_machinesets.yaml
  cluster.x-k8s.io_machinedeployments.yaml cluster.x-k8s.io_machinehealthchecks.yaml)
extract capi sigs.k8s.io/cluster-api "$CAPI_V110_VERSION" config/crd/bases "${capi_core[@]}"
extract capi sigs.k8s.io/cluster-api "$CAPI_V114_VERSION" core/config/crd/bases "${capi_core[@]}"
nosumdb=github.com/siderolabs/cluster-api-control-plane-provider-talos want_sum="$TALOS_CONTROLPLANE_SUM" \
  extract talos-controlplane github.com/siderolabs/cluster-api-control-plane-provider-talos \
  "$TALOS_CONTROLPLANE_VERSION" config/crd/bases controlplane.cluster.x-k8s.io_taloscontrolplanes.yaml
extract talos-bootstrap github.com/siderolabs/cluster-api-bootstrap-provider-talos "$TALOS_BOOTSTRAP_VERSION" \
  config/crd/bases bootstrap.cluster.x-k8s.io_talosconfigs.yaml bootstrap.cluster.x-k8s.io_talosconfigtemplates.yaml
extract argo-workflows github.com/argoproj/argo-workflows/v4 "$ARGO_WORKFLOWS_VERSION" manifests/base/crds/full \
  argoproj.io_clusterworkflowtemplates.yaml argoproj.io_cronworkflows.yaml argoproj.io_workflowartifactgctasks.yaml \
  argoproj.io_workfloweventbindings.yaml argoproj.io_workflows.yaml argoproj.io_workflowtaskresults.yaml \
  argoproj.io_workflowtasksets.yaml argoproj.io_workflowtemplates.yaml
extract argo-events github.com/argoproj/argo-events "$ARGO_EVENTS_VERSION" manifests/base/crds \
  argoproj.io_eventbus.yaml argoproj.io_eventsources.yaml argoproj.io_sensors.yaml
extract argo-cd github.com/argoproj/argo-cd/v3 "$ARGO_CD_VERSION" manifests/crds \
  application-crd.yaml applicationset-crd.yaml appproject-crd.yaml
