# shellcheck shell=bash disable=SC2034  # variables here are used by the sourcing scripts
# Shared helpers for testbed/provision, testbed/teardown and testbed/steps/*.sh.
# Sourced, never executed. Every step runs as its own `bash` process and
# sources this file, so a step can also be run alone while debugging:
#   bash testbed/steps/60-slurm.sh

# Fixed locations shared by the steps and by the tests (keep in sync with the
# report in testbed/README or the lead's docs if they move).
TESTBED_STATE=/var/lib/sh-jupyter-testbed     # versions.env, slurm state, munge key
TESTBED_LOG=/var/log/sh-jupyter-testbed       # daemon logs
TESTBED_RUN=/run/sh-jupyter-testbed           # pid files, munge socket
TESTBED_VERSIONS="$TESTBED_STATE/versions.env"
TESTBED_USERS=(shjuser1 shjuser2)
# Group-shared project data, as a safe haven shares it: a project group whose members are
# shjuser1 and shjuser3 (a host-only user who never runs sessions) but not shjuser2, and a
# second project that shjuser1 does not belong to.
TESTBED_PROJECT=shjproj
TESTBED_PROJECT_MEMBERS=(shjuser1 shjuser3)
TESTBED_OTHER_PROJECT=shjother
TESTBED_OTHER_MEMBERS=(shjuser2)
# Resources running out (tests/e2e/test_resources.py): a user whose home is a small tmpfs the
# tests fill and empty again, and a small tmpfs a test config puts session scratch on.
TESTBED_FULL_USER=shjfull
TESTBED_FULL_HOME_SIZE=64m
TESTBED_SMALL_SCRATCH=/var/tmp/shj-small-scratch
TESTBED_SMALL_SCRATCH_OPTS=size=4m,nr_inodes=256,mode=0755
# Owns the synthetic held jobs of bench/queue.py (another user's queue); never runs anything.
TESTBED_BENCH_USER=shjbench
# Fake GPUs (steps 55 and 60): character devices /dev/shj-gpu0..N-1 with a major number that
# devices.txt reserves for local/experimental use and no driver claims, named by Slurm's
# gres.conf and by the CDI spec of kind example.com/gpu.
TESTBED_GPUS=4
TESTBED_GPU_MAJOR=120
TESTBED_GPU_PREFIX=/dev/shj-gpu
TESTBED_CDI_SPEC=/etc/cdi/sh-jupyter-testbed-gpu.json

# A second userland made by testbed/release (e.g. Debian 13 on a Debian 12 host) says here what
# differs from a machine of its own: its release name and its Slurm ports, so that its cluster
# and the host's run side by side. A normal machine has no such file and keeps the defaults.
TESTBED_PROFILE=/etc/sh-jupyter-testbed/bed.env
TESTBED_RELEASE=""
TESTBED_SLURMCTLD_PORT=""
TESTBED_SLURMD_PORT=""
if [[ -r "$TESTBED_PROFILE" ]]; then
    # shellcheck source=/dev/null
    . "$TESTBED_PROFILE"
fi

# The checkout this file lives in: CI clones the repository into another
# folder, so nothing may assume /work/main.
TESTBED_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
TESTBED_REPO="$(dirname -- "$TESTBED_DIR")"

# The Debian releases the bed can be provisioned for: this machine's own, and the others as a
# userland made by testbed/release (`--release NAME` of provision, test and teardown).
TESTBED_KNOWN_RELEASES=(bookworm trixie)
# Machines with a kernel of their own (testbed/vm: cgroup v2, systemd), where only the VM tier
# (tests/vm) runs. `--release all` runs them after the userlands, whose image they reuse.
TESTBED_VM_RELEASES=(trixie-vm)

# host_release: this machine's Debian codename (bookworm, trixie).
host_release() {
    (. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
}

# other_releases: the known releases that are not this machine's own, then the VM releases,
# one per line.
other_releases() {
    local r host
    host="$(host_release)"
    for r in "${TESTBED_KNOWN_RELEASES[@]}"; do
        if [[ "$r" != "$host" ]]; then
            printf '%s\n' "$r"
        fi
    done
    printf '%s\n' "${TESTBED_VM_RELEASES[@]}"
}

# apt must never stop to ask a question (there is no terminal in CI).
export DEBIAN_FRONTEND=noninteractive
# Sorting and tool output must not depend on the caller's locale.
export LC_ALL=C
# Job users must be able to read what we install (venv, configs, scripts) even
# when the caller's umask is stricter.
umask 022

log() {
    printf '    %s\n' "$*"
}

warn() {
    printf '    WARNING: %s\n' "$*" >&2
}

die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# write_if_changed PATH MODE [OWNER[:GROUP]] < content
# Writes stdin to PATH atomically (temp file in the same directory, then
# rename) only when the content differs, so daemons watching mtimes and the
# "config changed -> restart" logic see real changes only. Mode and owner are
# enforced on every call (cheap, and repairs drift). Always returns 0 so that
# `set -e` callers can use it as a plain statement; it sets
# WRITE_CHANGED=1 when it wrote the file and WRITE_CHANGED=0 otherwise.
WRITE_CHANGED=0
write_if_changed() {
    local path="$1" mode="$2" owner="${3:-root:root}"
    local dir tmp
    dir="$(dirname -- "$path")"
    mkdir -p -- "$dir"
    tmp="$(mktemp -- "$dir/.$(basename -- "$path").XXXXXX")"
    cat >"$tmp"
    if [[ -f "$path" ]] && cmp -s -- "$tmp" "$path"; then
        rm -f -- "$tmp"
        WRITE_CHANGED=0
    else
        chmod "$mode" -- "$tmp"
        chown "$owner" -- "$tmp"
        mv -f -- "$tmp" "$path"
        WRITE_CHANGED=1
    fi
    chmod "$mode" -- "$path"
    chown "$owner" -- "$path"
}

# ensure_dir PATH MODE [OWNER[:GROUP]]: create if missing, enforce mode/owner.
ensure_dir() {
    local path="$1" mode="$2" owner="${3:-root:root}"
    mkdir -p -- "$path"
    chmod "$mode" -- "$path"
    chown "$owner" -- "$path"
}

# pkg_installed PKG: true when dpkg reports PKG fully installed ("ii").
pkg_installed() {
    local status
    status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" || return 1
    [[ "$status" == "ii "* ]]
}

# apt_lists_fresh: package lists exist and are less than a day old. Only then
# may we install without `apt-get update` (which costs seconds and network).
apt_lists_fresh() {
    local newest
    newest="$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit 2>/dev/null)"
    [[ -n "$newest" ]]
}

# need_pkgs PKG...: apt-installs only the packages that are missing. Never
# upgrades anything already installed (a test bed that silently moves to a new
# Podman or Slurm would invalidate what FACTS.md measured). When everything is
# present it does not call apt at all, which keeps a re-provision fast.
need_pkgs() {
    local missing=() pkg
    for pkg in "$@"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    log "installing: ${missing[*]}"
    if ! apt_lists_fresh; then
        apt-get update -qq || die "apt-get update failed (is the package mirror reachable?)"
    fi
    # --no-install-recommends: we name every package we rely on, and
    # recommends (buildah, fuse-overlayfs, ...) would only add moving parts.
    apt-get install -y -qq --no-install-recommends --no-upgrade -o Dpkg::Use-Pty=0 "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
}

# load_versions: source versions.env written by steps/10-packages.sh.
load_versions() {
    [[ -r "$TESTBED_VERSIONS" ]] || die "$TESTBED_VERSIONS missing: run testbed/provision (step 10) first"
    # shellcheck source=/dev/null
    . "$TESTBED_VERSIONS"
}

# pid_from_file PIDFILE NAME: prints the pid when PIDFILE names a live process
# whose command name is NAME; returns 1 otherwise. Stale pid files (reboot, a
# crash, a pid reused by another program) therefore count as "not running".
pid_from_file() {
    local pidfile="$1" name="$2" pid comm
    [[ -r "$pidfile" ]] || return 1
    read -r pid <"$pidfile" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "$name" ]] || return 1
    printf '%s\n' "$pid"
}

# binary_replaced PID: true when the running program's file was replaced
# since it started (a package upgrade), so the daemon must be restarted.
binary_replaced() {
    local exe
    exe="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
    [[ "$exe" == *" (deleted)" ]]
}

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds.
# Returns 1 (without dying) when the deadline passes, so callers can print
# diagnostics before failing.
wait_for() {
    local seconds="$1" desc="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            warn "timed out after ${seconds}s waiting for: $desc"
            return 1
        fi
        sleep 0.2
    done
}

# stop_by_pidfile PIDFILE NAME [SECONDS]: SIGTERM the daemon named in PIDFILE,
# wait until it is gone, SIGKILL after SECONDS. Only ever signals the one pid
# the daemon recorded (and only if its name matches), never by name.
stop_by_pidfile() {
    local pidfile="$1" name="$2" seconds="${3:-30}" pid
    pid="$(pid_from_file "$pidfile" "$name")" || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$seconds" "$name (pid $pid) to exit" test ! -e "/proc/$pid"; then
        warn "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 10 "$name (pid $pid) to die" test ! -e "/proc/$pid" || die "cannot stop $name (pid $pid)"
    fi
    # Daemons remove their own pid file on a clean exit; a killed one does not.
    rm -f -- "$pidfile"
}

# as_user USER CMD...: run CMD as USER with a minimal login-like environment
# and a cwd the user can read (rootless Podman and Slurm clients need one).
as_user() {
    local user="$1" uid home
    shift
    uid="$(id -u "$user")"
    home="$(getent passwd "$user" | cut -d: -f6)"
    (cd /tmp && runuser -u "$user" -- env -i \
        PATH=/usr/local/bin:/usr/bin:/bin \
        HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 \
        XDG_RUNTIME_DIR="/run/user/$uid" \
        "$@")
}

# --- machines of our own made with Linux namespaces (testbed/release, testbed/cluster) ------
# Each runs catatonit as pid 1 of its own PID namespace: ending that one process ends every
# process inside (the kernel kills the rest of the namespace), and its mounts go with it.

# ns_init_pid PIDFILE: prints the pid (this machine's view) of the init recorded in PIDFILE
# and returns 0 only when it is catatonit and pid 1 of its own PID namespace, so a stale pid
# file (a reboot, a reused pid) counts as "not running".
ns_init_pid() {
    local pid nspid
    pid="$(pid_from_file "$1" catatonit)" || return 1
    nspid="$(sed -n 's/^NSpid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)" || return 1
    [[ "$nspid" == *[[:space:]]1 ]] || return 1
    printf '%s\n' "$pid"
}

# ns_start PIDFILE LOG WHAT UNSHARE_OPTION... -- CMD...: CMD as pid 1 of new namespaces
# (`unshare --fork UNSHARE_OPTION...`), in a session of its own; CMD must end by exec-ing
# catatonit. Waits until it has (every mount CMD made before succeeded), records the pid.
ns_start() {
    local pidfile="$1" logfile="$2" what="$3" unshare_pid pid started
    shift 3
    local -a opts=()
    while (($#)) && [[ "$1" != -- ]]; do
        opts+=("$1")
        shift
    done
    shift
    : >"$logfile"
    # setsid: the machine must not belong to the caller's session (CI's, or a terminal's).
    setsid unshare --fork --propagation private "${opts[@]}" -- "$@" </dev/null >>"$logfile" 2>&1 &
    unshare_pid=$!
    started=$SECONDS
    while :; do
        pid="$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null || true)"
        pid="${pid%% *}"
        if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == catatonit ]]; then
            break
        fi
        if [[ ! -e "/proc/$unshare_pid" ]] || ((SECONDS - started > 20)); then
            cat "$logfile" >&2
            die "$what did not start (log: $logfile)"
        fi
        sleep 0.05
    done
    printf '%s\n' "$pid" >"$pidfile"
}

# ns_stop PIDFILE WHAT: end the init recorded in PIDFILE (and so everything inside).
ns_stop() {
    local pidfile="$1" what="$2" pid
    pid="$(ns_init_pid "$pidfile")" || { rm -f -- "$pidfile"; return 0; }
    log "stopping $what (init pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 10 "$what's init to exit" test ! -e "/proc/$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 10 "$what's init to die" test ! -e "/proc/$pid" || die "cannot stop $what (pid $pid)"
    fi
    rm -f -- "$pidfile"
}
