#!/bin/bash
# Step 80: what the JupyterHub spawner's end-to-end tests run (tests/e2e/test_jupyterhub.py
# starts the hub and its proxy on loopback itself, and stops them, for each test module):
#   * configurable-http-proxy from npm, pinned by tests/e2e/hub/package.json and
#     package-lock.json, installed into /opt/sh-jupyter/chp;
#   * JupyterHub itself is in the install venv (step 50: sh-jupyter[test] pins it); checked here
#     against the jupyterhub-singleuser in the JupyterLab image (its label
#     sh-jupyter.jupyterhub-version): hub and single-user server must be the same version;
#   * an image with jupyterhub-singleuser: the shared store's when its label says it has it,
#     else the same image with jupyterhub added, built by packaging/image/build from a patched
#     copy of packaging/image into a SEPARATE store this step owns (/var/lib/sh-jupyter/
#     images-hub); the shared store is never touched here;
#   * /var/lib/sh-jupyter-testbed/hub.env: JUPYTERHUB_VERSION, HUB_IMAGE, HUB_STORE, CHP.
# Fast when everything is in place (the build script exits at once on an unchanged hash).
set -euo pipefail
# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

readonly VENV=/opt/sh-jupyter/venv
readonly CHP_DEST=/opt/sh-jupyter/chp
readonly CHP_SRC="$TESTBED_REPO/tests/e2e/hub"
readonly SHARED_STORE=/var/lib/sh-jupyter/images
readonly SHARED_IMAGE=localhost/sh-jupyter/jupyterlab:latest
readonly HUB_STORE_OWN=/var/lib/sh-jupyter/images-hub
readonly HUB_IMAGE_OWN=localhost/sh-jupyter/jupyterlab-hub:latest
readonly HUB_ENV="$TESTBED_STATE/hub.env"

# --- the proxy ---------------------------------------------------------------------------------
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    || die "node and npm missing (step 70 installs them)"
want="$(node -p "require('$CHP_SRC/package.json').dependencies['configurable-http-proxy']")"
have="$(node -p "require('$CHP_DEST/node_modules/configurable-http-proxy/package.json').version" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] || ! cmp -s "$CHP_SRC/package-lock.json" "$CHP_DEST/package-lock.json"; then
    log "installing configurable-http-proxy $want into $CHP_DEST"
    ensure_dir "$CHP_DEST" 0755
    install -m 0644 "$CHP_SRC/package.json" "$CHP_SRC/package-lock.json" "$CHP_DEST/"
    (cd "$CHP_DEST" && npm ci --no-audit --no-fund --loglevel=error) \
        || die "npm ci of configurable-http-proxy $want failed (is the npm registry reachable?)"
fi
chmod -R a+rX -- "$CHP_DEST"
readonly CHP="$CHP_DEST/node_modules/.bin/configurable-http-proxy"
"$CHP" --version >/dev/null || die "$CHP does not run"

# --- the hub's version -----------------------------------------------------------------------
hub_version="$("$VENV/bin/python" -c 'import jupyterhub; print(jupyterhub.__version__)' 2>/dev/null)" \
    || die "jupyterhub is not installed in $VENV (step 50 installs sh-jupyter[test], which pins it)"

# --- an image with jupyterhub-singleuser -----------------------------------------------------
store_label() { # store_label STORE IMAGE LABEL: as a session sees the store (read only)
    as_user "${TESTBED_USERS[0]}" podman --storage-opt "additionalimagestore=$1" image inspect \
        --format "{{index .Labels \"$3\"}}" "$2" 2>/dev/null || true
}
shared_has="$(store_label "$SHARED_STORE" "$SHARED_IMAGE" sh-jupyter.jupyterhub-version)"
if [[ -n "$shared_has" ]]; then
    [[ "$shared_has" == "$hub_version" ]] \
        || die "the image $SHARED_IMAGE has jupyterhub $shared_has but the hub is $hub_version: pin the same version in pyproject.toml's test extra and packaging/image/Containerfile"
    hub_image="$SHARED_IMAGE" hub_store="$SHARED_STORE"
else
    # The shared image has no jupyterhub yet: build the same image with it, separately.
    src="$(mktemp -d /tmp/sh-jupyter-hub-image.XXXXXX)"
    trap 'rm -rf -- "$src"' EXIT
    cp -a "$TESTBED_REPO/packaging/image/." "$src/"
    grep -q '^ARG ARGON2_CFFI_VERSION=' "$src/Containerfile" \
        || die "packaging/image/Containerfile changed: cannot add jupyterhub to it here"
    sed -i \
        -e "/^ARG ARGON2_CFFI_VERSION=/a ARG JUPYTERHUB_VERSION=$hub_version" \
        -e 's/"argon2-cffi==${ARGON2_CFFI_VERSION}";/"argon2-cffi==${ARGON2_CFFI_VERSION}" "jupyterhub==${JUPYTERHUB_VERSION}";/' \
        "$src/Containerfile"
    printf 'LABEL sh-jupyter.jupyterhub-version="%s"\n' "$hub_version" >>"$src/Containerfile"
    grep -q '"jupyterhub==${JUPYTERHUB_VERSION}"' "$src/Containerfile" \
        || die "could not add jupyterhub to the pip install line of the Containerfile"
    # Its own build cache, seeded with the shared build's debootstrap rootfs (read only).
    cache=/var/cache/sh-jupyter-hub
    ensure_dir "$cache" 0755
    for tarball in /var/cache/sh-jupyter/rootfs-*.tar; do
        [[ -e "$tarball" && ! -e "$cache/$(basename -- "$tarball")" ]] || continue
        cp -- "$tarball" "$cache/"
    done
    "$src/build" --store "$HUB_STORE_OWN" --tag "$HUB_IMAGE_OWN" --cache-dir "$cache" \
        || die "building $HUB_IMAGE_OWN into $HUB_STORE_OWN failed"
    hub_image="$HUB_IMAGE_OWN" hub_store="$HUB_STORE_OWN"
    log "the shared image has no jupyterhub yet: the hub tests use $hub_image from $hub_store"
fi
image_has="$(store_label "$hub_store" "$hub_image" sh-jupyter.jupyterhub-version)"
[[ "$image_has" == "$hub_version" ]] \
    || die "$hub_image in $hub_store has jupyterhub '$image_has', the hub $hub_version"

write_if_changed "$HUB_ENV" 0644 <<EOF
# Written by testbed/steps/80-jupyterhub.sh for tests/e2e/test_jupyterhub.py.
JUPYTERHUB_VERSION=$hub_version
HUB_IMAGE=$hub_image
HUB_STORE=$hub_store
CHP=$CHP
EOF
log "jupyterhub $hub_version (hub and $hub_image in $hub_store), configurable-http-proxy $want"
