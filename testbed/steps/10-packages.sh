#!/bin/bash
# Step 10: Debian packages the test bed needs (ruby renders the Open OnDemand
# app's ERB files as OOD does; chromium is the browser that step 70's
# playwright-core drives), and the versions other steps and the tests adapt to
# (Debian 12: Podman 4.3 / Slurm 22.05; Debian 13: Podman 5.x / Slurm 24.11).
# Installs only what is missing and never upgrades.
set -euo pipefail
# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

# Podman 5 (Debian 13) networks rootless containers with pasta (package passt) by default;
# slirp4netns stays installed as well, so both network modes can be used and tested.
network_pkgs=(slirp4netns)
if [[ "$(. /etc/os-release && printf '%s' "$VERSION_ID")" != 12 ]]; then
    network_pkgs+=(passt)
fi

need_pkgs \
    podman uidmap "${network_pkgs[@]}" runc crun conmon catatonit debootstrap \
    munge slurmctld slurmd slurm-client \
    curl ca-certificates iproute2 procps hostname \
    python3 python3-venv python3-pip \
    rpm cpio \
    ruby chromium

# Upstream version of an installed package: drop the epoch ("1:") and the
# Debian revision/suffixes ("+ds1-8+deb12u1", "-4+deb12u3").
upstream_version() {
    local v
    v="$(dpkg-query -W -f='${Version}' "$1")"
    v="${v#*:}"
    v="${v%%[-+~]*}"
    printf '%s\n' "$v"
}

podman_version="$(upstream_version podman)"
slurm_version="$(upstream_version slurmd)"
munge_version="$(upstream_version munge)"
python_version="$(/usr/bin/python3 -c 'import platform; print(platform.python_version())')"
debian_version="$(. /etc/os-release && printf '%s' "$VERSION_ID")"

[[ "$podman_version" =~ ^[0-9]+\.[0-9]+ ]] || die "cannot parse podman version '$podman_version'"
[[ "$slurm_version" =~ ^[0-9]+\.[0-9]+ ]] || die "cannot parse slurm version '$slurm_version'"

# Plain KEY=VALUE lines: sourceable by bash and trivially parsed by pytest.
write_if_changed "$TESTBED_VERSIONS" 0644 <<EOF
# Written by testbed/steps/10-packages.sh; versions of this machine's test bed.
DEBIAN_VERSION=$debian_version
PODMAN_VERSION=$podman_version
PODMAN_MAJOR=${podman_version%%.*}
SLURM_VERSION=$slurm_version
SLURM_SERIES=$(cut -d. -f1,2 <<<"$slurm_version")
MUNGE_VERSION=$munge_version
PYTHON3_VERSION=$python_version
EOF
if ((WRITE_CHANGED)); then
    log "recorded versions in $TESTBED_VERSIONS"
fi
log "debian $debian_version, podman $podman_version, slurm $slurm_version, python3 $python_version"
