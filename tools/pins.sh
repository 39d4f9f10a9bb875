# Sourced by tools/build.sh and tools/crds.sh: sets $here, $cache and one shell variable per pin.
# tools/versions.env holds plain KEY=VALUE lines; they are read, never evaluated.
here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
cache="${CAPI_ROLLOUT_CACHE:-$HOME/.cache/capi-rollout}"
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  printf -v "${line%%=*}" '%s' "${line#*=}"
done < "$here/versions.env"

# kube_ldflags: the -X flags that make Kubernetes binaries report the pinned release (as upstream's build does).
kube_ldflags() {
  local major minor date flags="" key
  major="${KUBERNETES_VERSION#v}"; major="${major%%.*}"
  minor="${KUBERNETES_VERSION#v*.}"; minor="${minor%%.*}"
  date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.info" 2>/dev/null || true)"
  for key in client-go/pkg/version component-base/version; do
    flags+=" -X k8s.io/$key.gitVersion=$KUBERNETES_VERSION -X k8s.io/$key.gitMajor=$major"
    flags+=" -X k8s.io/$key.gitMinor=$minor -X k8s.io/$key.gitTreeState=clean"
    [[ -n "$date" ]] && flags+=" -X k8s.io/$key.buildDate=$date"
  done
  printf '%s' "$flags"
}
