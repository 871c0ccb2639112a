#!/bin/bash
# Step 80: what the JupyterHub spawner's end-to-end tests run (tests/e2e/test_jupyterhub.py
# starts the hub and its proxy on loopback itself, and stops them, for each test module):
#   * configurable-http-proxy from npm, pinned by tests/e2e/hub/package.json and
#     package-lock.json, installed into /opt/sh-jupyter/chp;
#   * JupyterHub itself is in the install venv (step 50: sh-jupyter[test] pins it); checked here
#     against the jupyterhub-singleuser in the JupyterLab image (its label
#     sh-jupyter.jupyterhub-version): hub and single-user server must be the same version;
#   * the shared image carries jupyterhub-singleuser (packaging/image/Containerfile pins it);
#   * /var/lib/sh-jupyter-testbed/hub.env: JUPYTERHUB_VERSION, HUB_IMAGE, HUB_STORE, CHP.
# Fast when everything is in place.
set -euo pipefail
# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

readonly VENV=/opt/sh-jupyter/venv
readonly CHP_DEST=/opt/sh-jupyter/chp
readonly CHP_SRC="$TESTBED_REPO/tests/e2e/hub"
readonly SHARED_STORE=/var/lib/sh-jupyter/images
readonly SHARED_IMAGE=localhost/sh-jupyter/jupyterlab:latest
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

# --- the image's jupyterhub-singleuser --------------------------------------------------------
store_label() { # store_label STORE IMAGE LABEL: as a session sees the store (read only)
    as_user "${TESTBED_USERS[0]}" podman --storage-opt "additionalimagestore=$1" image inspect \
        --format "{{index .Labels \"$3\"}}" "$2"
}
image_has="$(store_label "$SHARED_STORE" "$SHARED_IMAGE" sh-jupyter.jupyterhub-version)" \
    || die "cannot inspect $SHARED_IMAGE in $SHARED_STORE as ${TESTBED_USERS[0]} (step 40 builds it)"
[[ "$image_has" == "$hub_version" ]] \
    || die "the image $SHARED_IMAGE has jupyterhub '$image_has' but the hub is $hub_version: pin the same version in pyproject.toml's test extra and packaging/image/Containerfile"
hub_image="$SHARED_IMAGE" hub_store="$SHARED_STORE"

write_if_changed "$HUB_ENV" 0644 <<EOF
# Written by testbed/steps/80-jupyterhub.sh for tests/e2e/test_jupyterhub.py.
JUPYTERHUB_VERSION=$hub_version
HUB_IMAGE=$hub_image
HUB_STORE=$hub_store
CHP=$CHP
EOF
log "jupyterhub $hub_version (hub and $hub_image in $hub_store), configurable-http-proxy $want"
