#!/usr/bin/env bash
# Test-bed step 20: configure Podman for rootless JupyterLab containers on this kind of host.
#
# Run as root. Idempotent: every file is rewritten only when its content differs, so a re-run
# takes well under a second and does not disturb running containers.
#
# What this host needs and why (see shared/FACTS.md, measured on Debian 12 / podman 4.3.1):
#   * runtime: crun where it can run (it keeps the user's supplementary groups, so group-shared
#     project data is readable in the container), else runc. crun (1.8) refuses cgroup v1 hybrid
#     mode while a controller sits on the cgroup2 mount; on this kind of host that is `hugetlb`
#     only, and nothing uses it, so it is bound to its own v1 hierarchy first (see below).
#   * cgroup_manager "cgroupfs", events_logger "file": there is no systemd (PID 1) or journald.
#   * default_ulimits at or below the current hard limits: without CAP_SYS_RESOURCE Podman's own
#     default (nofile 1048576) fails with "setrlimit RLIMIT_NOFILE: Operation not permitted".
#   * storage driver "overlay": without it rootless Podman falls back to the slow vfs driver.
#   * additionalimagestores: root's Podman sees the site's shared, read-only image store.
#     CAUTION: rootless Podman 4.3 ignores [storage.options] of this file (it keeps only the driver
#     and ignore_chown_errors), so users see the store only through a storage.conf of their own:
#     CONTAINERS_STORAGE_CONF=FILE (the sh-jupyter supervisor writes one, with a node-local
#     graphroot) or ~/.config/containers/storage.conf, containing
#       additionalimagestores = ["/var/lib/sh-jupyter/images"]
#     (or STORAGE_OPTS=overlay.imagestore=/var/lib/sh-jupyter/images). Verified on 4.3.1.
#   * /dev/net/tun mode 0666: slirp4netns (rootless networking) opens it as the user.
#
# Environment overrides (all optional):
#   SH_JUPYTER_IMAGE_STORE   shared read-only image store (default /var/lib/sh-jupyter/images)
#   SH_JUPYTER_OCI_RUNTIME   OCI runtime to configure     (default crun where it runs, else runc)
set -euo pipefail

readonly IMAGE_STORE="${SH_JUPYTER_IMAGE_STORE:-/var/lib/sh-jupyter/images}"
readonly CONTAINERS_CONF=/etc/containers/containers.conf
readonly STORAGE_CONF=/etc/containers/storage.conf
readonly CGROUP_ROOT=/sys/fs/cgroup

# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root"
for tool in podman newuidmap newgidmap slirp4netns runc; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "'$tool' not found: install podman uidmap slirp4netns runc crun conmon catatonit"
done

# --- cgroups: let crun run on a v1 "hybrid" host ------------------------------------------------
# crun refuses hybrid mode while any controller is attached to the cgroup2 mount
# ($CGROUP_ROOT/unified). A controller that no v2 cgroup uses can be bound to a v1 hierarchy of
# its own instead, which detaches it from cgroup2. Only controllers that nothing enables on
# cgroup2 (empty subtree_control) are moved; the memory hierarchy is never touched (this
# machine's own tooling uses it). cgroup v2 hosts ($CGROUP_ROOT/cgroup.controllers) need nothing.
bind_unused_v2_controllers() {
    local unified="$CGROUP_ROOT/unified" ctrl
    [[ -r "$unified/cgroup.controllers" && ! -e "$CGROUP_ROOT/cgroup.controllers" ]] || return 0
    [[ -z "$(tr -d '[:space:]' <"$unified/cgroup.subtree_control")" ]] \
        || { warn "cgroup2 controllers are in use ($(cat "$unified/cgroup.subtree_control")): leaving them; crun cannot run here"; return 0; }
    for ctrl in $(cat "$unified/cgroup.controllers"); do
        [[ "$ctrl" == memory ]] && { warn "memory sits on cgroup2: not moving it; crun cannot run here"; continue; }
        mountpoint -q "$CGROUP_ROOT/$ctrl" && continue
        mkdir -p "$CGROUP_ROOT/$ctrl"
        mount -t cgroup -o "$ctrl" cgroup "$CGROUP_ROOT/$ctrl" \
            || { warn "could not bind the $ctrl controller to $CGROUP_ROOT/$ctrl"; continue; }
        log "bound the unused cgroup controller $ctrl to its own v1 hierarchy (crun needs cgroup2 empty)"
    done
}
bind_unused_v2_controllers

# crun where it can run containers here, else runc (the product chooses per session the same
# way: podman.runtime = "auto").
crun_usable() {
    command -v crun >/dev/null 2>&1 || return 1
    [[ -e "$CGROUP_ROOT/cgroup.controllers" ]] && return 0
    [[ -z "$(tr -d '[:space:]' <"$CGROUP_ROOT/unified/cgroup.controllers" 2>/dev/null)" ]]
}
if [[ -n "${SH_JUPYTER_OCI_RUNTIME:-}" ]]; then
    OCI_RUNTIME=$SH_JUPYTER_OCI_RUNTIME
elif crun_usable; then
    OCI_RUNTIME=crun
else
    OCI_RUNTIME=runc
    warn "crun cannot run on this host: sessions use runc and users' supplementary groups do not reach containers"
fi
readonly OCI_RUNTIME
command -v "$OCI_RUNTIME" >/dev/null 2>&1 || die "'$OCI_RUNTIME' not found"


# --- Podman version ----------------------------------------------------------------------------
# 4.x (Debian 12) and 5.x (Debian 13) read the same keys; 5.x defaults rootless networking to
# pasta, which may not be installed, so there we pin slirp4netns unless pasta is present.
podman_version=$(podman version --format '{{.Client.Version}}' 2>/dev/null || podman --version)
podman_version=${podman_version##* }
podman_major=${podman_version%%.*}
[[ $podman_major =~ ^[0-9]+$ ]] || die "cannot parse podman version '$podman_version'"
log "podman $podman_version, runtime $OCI_RUNTIME"

# --- ulimits from the current hard limits ------------------------------------------------------
# Use the hard limit itself (capped at the values Podman would pick on an unrestricted host): the
# container can never get more than the hard limit without CAP_SYS_RESOURCE, and asking for more
# makes every container fail to start.
clamp_hard_limit() {
    local hard=$1 cap=$2
    if [[ $hard == unlimited ]] || (( hard > cap )); then
        echo "$cap"
    else
        echo "$hard"
    fi
}
nofile=$(clamp_hard_limit "$(ulimit -Hn)" 1048576)
nproc=$(clamp_hard_limit "$(ulimit -Hu)" 32768)

network_lines=""
if (( podman_major >= 5 )) && ! command -v pasta >/dev/null 2>&1; then
    network_lines=$'\n[network]\ndefault_rootless_network_cmd = "slirp4netns"\n'
fi

# Keys only: Podman merges this file over /usr/share/containers/containers.conf.
write_if_changed "$CONTAINERS_CONF" 0644 <<EOF
# Managed by sh-jupyter testbed/steps/20-podman.sh: edits are overwritten.
[containers]
# At or below this host's hard limits (no CAP_SYS_RESOURCE here).
default_ulimits = [
  "nofile=${nofile}:${nofile}",
  "nproc=${nproc}:${nproc}",
]

[engine]
# crun where it runs (see above), else runc; there is no systemd for cgroups or the journal.
runtime = "${OCI_RUNTIME}"
cgroup_manager = "cgroupfs"
events_logger = "file"
${network_lines}
EOF

# storage.conf is not merged with the distribution's copy: this is the whole file. Root keeps the
# standard paths. Rootless users take only the driver from it (see the CAUTION above).
write_if_changed "$STORAGE_CONF" 0644 <<EOF
# Managed by sh-jupyter testbed/steps/20-podman.sh: edits are overwritten.
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"

[storage.options]
# Site image store: written by root (packaging/image/build), read-only for everyone else.
additionalimagestores = ["${IMAGE_STORE}"]

[storage.options.overlay]
mountopt = "nodev"
EOF

# --- the shared image store must exist and be readable ----------------------------------------
# A missing or unreadable additional store is silently treated as empty ("image not known" at
# run time), so create it world-readable now; the image build script fills it and keeps it so.
install -d -m 0755 "$(dirname "$IMAGE_STORE")" "$IMAGE_STORE"
for sub in overlay overlay-images overlay-layers; do
    install -d -m 0755 "$IMAGE_STORE/$sub"
done

# --- the store on a nodev,nosuid mount ---------------------------------------------------------
# Every user can open the files of the store's layers on the host (they must be readable), so the
# store must be a mount where a device node is not a device and a setuid bit is not a privilege,
# should the image build's strip ever miss one. A site gives the store such a mount (README); the
# bed bind-mounts the directory onto itself with nodev,nosuid, only when the mount holding it
# lacks either flag. In a testbed/release userland this happens inside its own mount namespace.
store_mount_options() {
    findmnt -n -o TARGET,OPTIONS --target "$IMAGE_STORE" | tail -n 1
}
read -r store_mnt store_opts <<<"$(store_mount_options)"
if [[ ,$store_opts, != *,nodev,* || ,$store_opts, != *,nosuid,* ]]; then
    if [[ $store_mnt != "$IMAGE_STORE" ]]; then
        mount --bind "$IMAGE_STORE" "$IMAGE_STORE"
    fi
    mount -o remount,bind,nodev,nosuid "$IMAGE_STORE"
    read -r store_mnt store_opts <<<"$(store_mount_options)"
    [[ ,$store_opts, == *,nodev,* && ,$store_opts, == *,nosuid,* ]] \
        || die "could not make $IMAGE_STORE a nodev,nosuid mount (it has: $store_opts)"
    log "mounted $IMAGE_STORE on itself with nodev,nosuid"
fi

# --- /dev/net/tun ------------------------------------------------------------------------------
# devtmpfs resets the mode on every boot, so this is re-applied on each run.
if [[ ! -c /dev/net/tun ]]; then
    install -d -m 0755 /dev/net
    mknod -m 0666 /dev/net/tun c 10 200
    log "created /dev/net/tun"
fi
if [[ $(stat -c %a /dev/net/tun) != 666 ]]; then
    chmod 0666 /dev/net/tun
    log "chmod 0666 /dev/net/tun"
fi

# --- sanity check: the configuration is what Podman actually uses -----------------------------
info=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Store.GraphDriverName}}')
[[ $info == "$OCI_RUNTIME cgroupfs overlay" ]] \
    || die "podman reports '$info', expected '$OCI_RUNTIME cgroupfs overlay' (old storage of another driver? see 'podman system reset')"
log "ok: podman $podman_version, $info, nofile=$nofile nproc=$nproc, store $IMAGE_STORE"
