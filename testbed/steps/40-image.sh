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

# A second, thin site image for the tests of the image choice ([[images]]): the same layers as
# the JupyterLab image plus a label and one environment variable the tests read to tell which
# image a session runs. Metadata only (no RUN, no new files), so it adds nothing to the store's
# contents; seconds to build, and rebuilt only when the image it is made from changed.
readonly VARIANT="${SH_JUPYTER_VARIANT_IMAGE:-localhost/sh-jupyter/jupyterlab-minimal:latest}"
# The store's own storage.conf, as packaging/image/build writes it: STORE is listed as an
# additional store for everybody, so it is written only as the graphroot of a private config.
run_dir="/run/sh-jupyter/build/$(printf '%s' "$IMAGE_STORE" | sha256sum | cut -c1-12)"
install -d -m 0700 "$run_dir"
variant_conf=$(mktemp /tmp/sh-jupyter-variant.XXXXXX)
trap 'rm -f -- "$variant_conf"' EXIT
cat >"$variant_conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$IMAGE_STORE"
runroot = "$run_dir/runroot"

[storage.options.overlay]
mountopt = "nodev"
CONF
store_podman() { CONTAINERS_STORAGE_CONF=$variant_conf podman --tmpdir "$run_dir/tmp" "$@"; }
install -d -m 0700 "$run_dir/tmp" "$run_dir/variant-context"
base_id=$(store_podman image inspect --format '{{.Id}}' "$IMAGE")
have=$(store_podman image inspect --format '{{index .Labels "sh-jupyter.variant-of"}}' "$VARIANT" 2>/dev/null || true)
if [[ "$have" != "$base_id" ]]; then
    log "building the thin variant $VARIANT from $IMAGE"
    store_podman build --pull=never --network=none --tag "$VARIANT" --file - "$run_dir/variant-context" <<CONTAINERFILE >/dev/null
FROM $IMAGE
LABEL sh-jupyter.variant-of="$base_id" org.opencontainers.image.title="sh-jupyter test variant"
ENV SH_JUPYTER_TESTBED_IMAGE=minimal
CONTAINERFILE
    # As packaging/image/build's secure_store: readable by everyone, writable and setid by
    # nobody (root's entries only; tests/security and doctor check the whole store).
    find "$IMAGE_STORE" -xdev -uid 0 ! -type l -exec chmod a+rX,go-w,ug-s {} +
fi
log "variant image $VARIANT is in $IMAGE_STORE"
