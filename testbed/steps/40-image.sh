#!/usr/bin/env bash
# Test-bed step 40: build and publish the JupyterLab image into the shared read-only store.
#
# Run as root, after 20-podman.sh. Idempotent: packaging/image/build exits at once (about a
# tenth of a second) when the store already holds an image with the same content hash; from
# scratch it takes about two minutes (debootstrap, then pip from PyPI).
#
# Uses the same script and defaults a site admin would, so the test bed tests the real thing.
# Extra arguments go to the build script (e.g. --force, --refresh-base, --prune-old).
#
# Environment overrides (all optional):
#   SH_JUPYTER_IMAGE_STORE   shared read-only image store (default /var/lib/sh-jupyter/images)
#   SH_JUPYTER_IMAGE         image name                   (default localhost/sh-jupyter/jupyterlab:latest)
set -euo pipefail

STEP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly REPO_DIR="$STEP_DIR/../.."
readonly IMAGE_STORE="${SH_JUPYTER_IMAGE_STORE:-/var/lib/sh-jupyter/images}"
readonly IMAGE="${SH_JUPYTER_IMAGE:-localhost/sh-jupyter/jupyterlab:latest}"

# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root"

# debootstrap makes the base image (no container registry is reachable here). Only installed
# when missing, so a re-run does not touch apt.
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get install -y --no-install-recommends debootstrap >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends debootstrap >/dev/null; }
fi

# The build runs podman from its own temporary directory, but a readable cwd avoids surprises
# when this step is started from a directory other users (or root in a userns) cannot read.
cd /

"$REPO_DIR/packaging/image/build" --store "$IMAGE_STORE" --tag "$IMAGE" "$@"
