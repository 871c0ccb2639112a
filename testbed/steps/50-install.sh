#!/bin/bash
# Step 50: install this checkout of sh-jupyter the way a site would:
#   * a venv at /opt/sh-jupyter/venv built from Debian's /usr/bin/python3
#     (root's own python3 may be a pyenv build under /root that job users
#     cannot execute), with the package installed non-editable plus its test
#     extra, so tests exercise the installed code and job users can run it;
#   * slurm/* (Prolog/Epilog) in /usr/libexec/sh-jupyter/, bin/* in
#     /usr/local/bin/, the site config in /etc/sh-jupyter/config.toml;
#   * /var/log/sh-jupyter for the hooks' log.
# The checkout is the one this script lives in (CI clones elsewhere). The
# package is reinstalled only when its sources changed, so re-runs are fast.
set -euo pipefail
# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

readonly PREFIX=/opt/sh-jupyter
readonly VENV="$PREFIX/venv"
readonly BASE_PYTHON=/usr/bin/python3
readonly HASH_FILE="$VENV/.sh-jupyter-source.sha256"
readonly REPO="$TESTBED_REPO"

[[ -f "$REPO/pyproject.toml" ]] || die "$REPO/pyproject.toml not found: is $REPO a sh-jupyter checkout?"
[[ -x "$BASE_PYTHON" ]] || die "$BASE_PYTHON missing (step 10 installs python3)"

# source_hash: one digest over the names and contents of everything that ends
# up installed. Build litter (__pycache__, egg-info) is left out so that it
# cannot trigger a reinstall by itself.
source_hash() {
    local parts=() part
    for part in pyproject.toml src slurm bin; do
        if [[ -e "$REPO/$part" ]]; then
            parts+=("$part")
        fi
    done
    (
        cd -- "$REPO"
        find "${parts[@]}" -type f \
            ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 \
            | sort -z | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1
    )
}

# venv_ok: the venv exists, runs, and was made from the base interpreter at its
# current version (a Debian upgrade of python3 breaks a venv's symlinks).
venv_ok() {
    [[ -x "$VENV/bin/python" && -r "$VENV/pyvenv.cfg" ]] || return 1
    grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" || return 1
    local want have
    want="$("$BASE_PYTHON" -c 'import sys; print(sys.version)')"
    have="$("$VENV/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" || return 1
    [[ "$want" == "$have" ]]
}

ensure_dir "$PREFIX" 0755
if ! venv_ok; then
    log "creating $VENV from $BASE_PYTHON"
    rm -rf -- "$VENV"
    "$BASE_PYTHON" -m venv "$VENV"
fi

want_hash="$(source_hash)"
have_hash="$(cat "$HASH_FILE" 2>/dev/null || true)"
if [[ "$want_hash" != "$have_hash" ]]; then
    log "installing sh-jupyter[test] from $REPO"
    # Build from a clean copy of just the build inputs: building in the
    # checkout would leave root-owned build/ and *.egg-info in the work tree,
    # and setuptools' stale build/lib can carry deleted modules into wheels.
    build="$(mktemp -d)"
    trap 'rm -rf -- "$build"' EXIT
    for part in pyproject.toml setup.py setup.cfg MANIFEST.in README.md README.rst LICENSE LICENSE.txt src; do
        if [[ -e "$REPO/$part" ]]; then
            cp -a -- "$REPO/$part" "$build/"
        fi
    done
    find "$build" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf -- {} +
    # Forget the hash first: an interrupted install must not look complete.
    rm -f -- "$HASH_FILE"
    # A path requirement with an unchanged version number would otherwise be
    # kept as "already satisfied".
    "$VENV/bin/python" -m pip uninstall -y -q sh-jupyter >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input "${build}[test]" \
        || die "pip install of sh-jupyter[test] failed (PyPI reachable? pyproject.toml valid?)"
    printf '%s\n' "$want_hash" >"$HASH_FILE"
    # Only check what this step is responsible for: the package imports with
    # the venv's interpreter, as a job user will run it.
    "$VENV/bin/python" -c 'import sh_jupyter' || die "sh_jupyter does not import after install"
fi
# Job users run the venv's python (supervisor, hooks) and tests read it.
chmod -R a+rX -- "$PREFIX"

# install_files SRC_DIR DEST_DIR MODE: copy each regular file, only if changed.
install_files() {
    local src_dir="$1" dest_dir="$2" mode="$3" f
    [[ -d "$src_dir" ]] || return 0
    for f in "$src_dir"/*; do
        [[ -f "$f" ]] || continue
        # shellcheck disable=SC2094  # reads the source, writes the destination
        write_if_changed "$dest_dir/$(basename -- "$f")" "$mode" <"$f"
        if ((WRITE_CHANGED)); then
            log "installed $dest_dir/$(basename -- "$f")"
        fi
    done
}

# Slurm runs Prolog/Epilog as root: root-owned, not writable by anyone else.
ensure_dir /usr/libexec/sh-jupyter 0755
install_files "$REPO/slurm" /usr/libexec/sh-jupyter 0755
install_files "$REPO/bin" /usr/local/bin 0755

if [[ -f "$REPO/packaging/config/config.toml" ]]; then
    ensure_dir /etc/sh-jupyter 0755
    write_if_changed /etc/sh-jupyter/config.toml 0644 <"$REPO/packaging/config/config.toml"
    if ((WRITE_CHANGED)); then
        log "installed /etc/sh-jupyter/config.toml"
    fi
fi

ensure_dir /var/log/sh-jupyter 0755
log "sh-jupyter $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("sh-jupyter"))') in $VENV"
