# Shared by the tool scripts: where the cache lives and the pinned versions.
# PLEXUS_CACHE_DIR (default: <repo>/.cache, which git ignores) holds every tool build output.
set -euo pipefail
PLEXUS_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PLEXUS_CACHE_DIR=${PLEXUS_CACHE_DIR:-$PLEXUS_REPO/.cache}
mkdir -p "$PLEXUS_CACHE_DIR"
PLEXUS_CACHE_DIR=$(cd "$PLEXUS_CACHE_DIR" && pwd)
# shellcheck source=versions.env
. "$PLEXUS_REPO/e2e/tools/versions.env"
export PLEXUS_REPO PLEXUS_CACHE_DIR
log() { printf '[tools] %s\n' "$*" >&2; }
