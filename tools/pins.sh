# Sourced by tools/build.sh and tools/crds.sh: sets $here, $cache and one shell variable per pin.
# tools/versions.env holds plain KEY=VALUE lines; they are read, never evaluated.
here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
cache="${CAPI_ROLLOUT_CACHE:-$HOME/.cache/capi-rollout}"
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  printf -v "${line%%=*}" '%s' "${line#*=}"
done < "$here/versions.env"
