#!/bin/bash
# Step 60: a one-node Slurm cluster on this machine, without systemd.
#   * munged with a private key and socket (AuthInfo=socket=...), so no system
#     munge configuration is needed or disturbed;
#   * slurmctld (as the "slurm" user) and slurmd (as root) with the settings
#     measured in shared/FACTS.md, sh-jupyter's Prolog/Epilog, cgroup limits;
#   * GRES gpu: the fake GPUs of step 55 in gres.conf, ConstrainDevices=yes;
#   * then waits until the node is idle and a job as shjuser1 really runs.
# Daemons are started only when not already running (pid file + process name),
# and restarted when their configuration or binary changed.
set -euo pipefail
# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"
load_versions

NODE="$(hostname -s)"
readonly NODE
readonly SLURM_CONF=/etc/slurm/slurm.conf
readonly CGROUP_CONF=/etc/slurm/cgroup.conf
readonly GRES_CONF=/etc/slurm/gres.conf
readonly MARKER="# Managed by sh-jupyter testbed/steps/60-slurm.sh"

readonly MUNGE_STATE="$TESTBED_STATE/munge"      # key and PRNG seed (munge only)
readonly MUNGE_KEY="$MUNGE_STATE/munge.key"
readonly MUNGE_RUN="$TESTBED_RUN/munge"          # socket: every job user connects
readonly MUNGE_SOCKET="$MUNGE_RUN/munge.socket.2"
readonly MUNGE_PID="$MUNGE_RUN/munged.pid"
readonly MUNGE_LOG="$TESTBED_LOG/munged.log"

readonly SLURM_STATE="$TESTBED_STATE/slurm"
readonly CTLD_STATE="$SLURM_STATE/ctld"
readonly SLURMD_SPOOL="$SLURM_STATE/d"
readonly SLURM_RUN="$TESTBED_RUN/slurm"
readonly CTLD_PID="$SLURM_RUN/slurmctld.pid"
readonly SLURMD_PID="$SLURM_RUN/slurmd.pid"
# slurmctld (user slurm) wants a log directory it can write to (it also
# chdirs there for core files), and creates jobcomp.log itself.
readonly CTLD_LOGDIR="$TESTBED_LOG/slurmctld"
readonly CTLD_LOG="$CTLD_LOGDIR/slurmctld.log"
readonly SLURMD_LOG="$TESTBED_LOG/slurmd.log"

# Daemons get a clean environment: root's (pyenv PATH, PIP_*, proxies) must not
# leak into slurmd and from there into job steps or hooks.
readonly -a CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

case "$SLURM_SERIES" in
    22.05 | 23.* | 24.* | 25.*) ;;
    *) warn "Slurm $SLURM_VERSION has not been tried; the config targets 22.05 and 24.11" ;;
esac
getent passwd slurm >/dev/null || die "user 'slurm' missing (the slurmctld package creates it)"
getent passwd munge >/dev/null || die "user 'munge' missing (the munge package creates it)"

# --- directories ---------------------------------------------------------------
# munged refuses directories that others can write; job users must be able to
# reach the socket, so the socket's directories are 0755 all the way down.
ensure_dir "$TESTBED_STATE" 0755
ensure_dir "$TESTBED_LOG" 0755
ensure_dir "$CTLD_LOGDIR" 0755 slurm:slurm
ensure_dir "$TESTBED_RUN" 0755
ensure_dir "$MUNGE_STATE" 0700 munge:munge
ensure_dir "$MUNGE_RUN" 0755 munge:munge
ensure_dir "$SLURM_STATE" 0755
ensure_dir "$CTLD_STATE" 0700 slurm:slurm
ensure_dir "$SLURMD_SPOOL" 0755
# slurmctld runs as "slurm" and removes its own pid file on exit.
ensure_dir "$SLURM_RUN" 0755 slurm:slurm
ensure_dir /etc/slurm 0755
# munged opens its log after dropping root, in a directory it must not be able
# to write (it checks), so the file is created for it.
if [[ ! -e "$MUNGE_LOG" ]]; then
    install -m 0640 -o munge -g munge /dev/null "$MUNGE_LOG"
fi

# --- munge ---------------------------------------------------------------------
if [[ ! -s "$MUNGE_KEY" ]]; then
    mungekey --create --keyfile="$MUNGE_KEY"
    log "created munge key $MUNGE_KEY"
fi
chown munge:munge "$MUNGE_KEY"
chmod 0600 "$MUNGE_KEY"

munge_works() {
    munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null
}

start_munged() {
    log "starting munged"
    # munged forks and returns once its socket is ready; stdio goes to a file so
    # that no daemon keeps the caller's pipes (CI's log) open.
    (cd / && runuser -u munge -- "${CLEAN_ENV[@]}" /usr/sbin/munged \
        --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
        --log-file="$MUNGE_LOG" --seed-file="$MUNGE_STATE/munged.seed" \
        </dev/null >>"$TESTBED_LOG/munged.out" 2>&1) \
        || { tail -n 5 "$TESTBED_LOG/munged.out" "$MUNGE_LOG" >&2; die "munged failed to start"; }
}

if pid="$(pid_from_file "$MUNGE_PID" munged)" && binary_replaced "$pid"; then
    log "munged binary was upgraded: restarting it"
    stop_by_pidfile "$MUNGE_PID" munged
fi
if ! pid_from_file "$MUNGE_PID" munged >/dev/null; then
    # A socket left by a killed munged would make the new one refuse to start.
    rm -f -- "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    start_munged
fi
wait_for 10 "munge credentials via $MUNGE_SOCKET" munge_works \
    || { tail -n 5 "$MUNGE_LOG" >&2; die "munged runs but does not answer on $MUNGE_SOCKET"; }

# --- configuration ---------------------------------------------------------------
# Memory: a margin below what slurmd measures, or slurmd marks the node
# invalid ("Low RealMemory"). Rounded to 1 GiB so the config stays stable.
measured_mb="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
[[ "$measured_mb" =~ ^[0-9]+$ ]] || die "cannot read RealMemory from 'slurmd -C'"
real_mb=$((measured_mb * 9 / 10 / 1024 * 1024))
((real_mb >= 8192)) || warn "only ${real_mb} MB for Slurm: 8 concurrent 2-CPU sessions need 8192"

# cgroup plugin: FACTS.md machines are cgroup v1 (hybrid); a pure v2 host
# (cgroup2fs at /sys/fs/cgroup) needs the v2 plugin, which without systemd
# must not ask systemd for a scope (not yet measured on such a host).
if [[ "$(stat -f -c %T /sys/fs/cgroup)" == cgroup2fs ]]; then
    cgroup_lines=$'CgroupPlugin=cgroup/v2\nIgnoreSystemd=yes'
else
    cgroup_lines='CgroupPlugin=cgroup/v1'
fi

# Options that differ between Slurm releases. 25.05 split PrologEpilogTimeout
# into PrologTimeout and EpilogTimeout; Debian 12 (22.05) and 13 (24.11) both
# still take the single option.
case "$SLURM_SERIES" in
    2[0-4].*) hook_timeout_lines='PrologEpilogTimeout=180' ;;
    *) hook_timeout_lines=$'PrologTimeout=180\nEpilogTimeout=180' ;;
esac

# Slurm's default ports, unless this is a second userland beside the host's cluster
# (testbed/release sets its ports in bed.env). Each line ends in a newline and is put in front
# of the next option, so the default config has no extra line (and the host's daemons see no
# change).
port_lines=""
if [[ -n "$TESTBED_SLURMCTLD_PORT" ]]; then
    port_lines+="SlurmctldPort=$TESTBED_SLURMCTLD_PORT"$'\n'
fi
if [[ -n "$TESTBED_SLURMD_PORT" ]]; then
    port_lines+="SlurmdPort=$TESTBED_SLURMD_PORT"$'\n'
fi

# A config that is not ours (a real site's) is kept aside once, never lost.
for f in "$SLURM_CONF" "$CGROUP_CONF" "$GRES_CONF"; do
    if [[ -f "$f" ]] && ! grep -qF "$MARKER" "$f"; then
        mv -- "$f" "$f.before-sh-jupyter-testbed"
        warn "moved existing $f to $f.before-sh-jupyter-testbed"
    fi
done

# GRES gpu: step 55's device nodes (slurmd refuses to start without them).
for ((i = 0; i < TESTBED_GPUS; i++)); do
    [[ -c "$TESTBED_GPU_PREFIX$i" ]] || die "$TESTBED_GPU_PREFIX$i missing: run testbed/provision 55 first"
done
gpu_files="$TESTBED_GPU_PREFIX[0-$((TESTBED_GPUS - 1))]"

# Only options spelled the same in Slurm 22.05 (Debian 12) and 24.11 (Debian
# 13): e.g. select/cons_res is gone in 24.x, so cons_tres; no SwitchType (the
# switch/none plugin was removed in 23.x); no CgroupAutomount (removed).
config_changed=0
write_if_changed "$SLURM_CONF" 0644 <<EOF
$MARKER: edits are overwritten.
# Slurm $SLURM_VERSION, one node, no systemd. Clients find this file at the
# default path; SLURM_CONF=$SLURM_CONF is only needed if it moves.
ClusterName=shjtest
SlurmctldHost=$NODE(127.0.0.1)
${port_lines}SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Private munged (the system's /run/munge socket is not used).
AuthInfo=socket=$MUNGE_SOCKET

StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
# There is no slurmdbd (so no sacct): keep finished jobs visible in squeue
# for 5 minutes, and one line per finished job (state, exit code) here.
MinJobAge=300
# bench/queue.py measures status/list/submit --wait with 50,000 held jobs of another user in
# the queue (a real cluster's size); the default (10000) would refuse them.
MaxJobCount=100000
JobCompType=jobcomp/filetxt
JobCompLoc=$CTLD_LOGDIR/jobcomp.log

# Jobs and everything they start (rootless Podman included) live in the job's
# cgroups: memory and cores are enforced there (see cgroup.conf).
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default every job takes all the node's memory and jobs serialize.
DefMemPerCPU=512
SchedulerType=sched/backfill
# sbatch to RUNNING in 0.1-1 s instead of several seconds.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
# No mail on this machine (the default /usr/bin/mail is not installed).
MailProg=/bin/true
# GPUs (gres.conf): fake devices, enough for the GPU tests' concurrent sessions.
GresTypes=gpu

# sh-jupyter's node hooks; Alloc runs the Prolog when the job is allocated
# (before any step), which is where the user's Podman pause process must start.
Prolog=/usr/libexec/sh-jupyter/prolog
Epilog=/usr/libexec/sh-jupyter/epilog
PrologFlags=Alloc
# A hung hook must not hold the node forever (it drains the node instead).
$hook_timeout_lines
# SIGTERM to the batch script, SIGKILL 10 s later (the supervisor's budget).
KillWait=10
SlurmctldTimeout=60
SlurmdTimeout=60
MessageTimeout=20
InactiveLimit=0
# A node that was DOWN comes back by itself once slurmd registers again.
ReturnToService=2

# The VM has 2 cores; the node claims 16 CPUs so that 8 concurrent 2-CPU
# sessions fit (config_overrides: trust this file, not the hardware).
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=16 RealMemory=$real_mb Gres=gpu:$TESTBED_GPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
if ((WRITE_CHANGED)); then
    config_changed=1
fi

write_if_changed "$CGROUP_CONF" 0644 <<EOF
$MARKER: edits are overwritten.
$cgroup_lines
# A job over its --mem is OOM-killed (state OUT_OF_MEMORY); a job sees only
# its allocated cores.
ConstrainRAMSpace=yes
ConstrainCores=yes
# A job may open only the GRES device files it was allocated (the others give EPERM):
# what sh-jupyter maps a job's GPUs by.
ConstrainDevices=yes
EOF
if ((WRITE_CHANGED)); then
    config_changed=1
fi

# No AutoDetect: these are not NVIDIA devices. GPU index i is the i-th file.
write_if_changed "$GRES_CONF" 0644 <<EOF
$MARKER: edits are overwritten.
AutoDetect=off
NodeName=$NODE Name=gpu File=$gpu_files
EOF
if ((WRITE_CHANGED)); then
    config_changed=1
fi

# --- daemons ---------------------------------------------------------------------

ctld_up() {
    scontrol ping 2>/dev/null | grep -q 'is UP'
}

# start_daemon NAME PIDFILE LOGFILE READY_CMD...: start a Slurm daemon and
# poll READY_CMD; fail fast (with its log) if the daemon dies meanwhile.
start_daemon() {
    local name="$1" pidfile="$2" logfile="$3"
    shift 3
    local out="$TESTBED_LOG/$name.out" started=$SECONDS
    log "starting $name"
    # It daemonizes after reading its config; errors from before its log is
    # open go to NAME.out. No stdio stays connected to our caller.
    if ! (cd / && "${CLEAN_ENV[@]}" "/usr/sbin/$name" </dev/null >>"$out" 2>&1); then
        tail -n 5 "$out" "$logfile" >&2 || true
        die "$name failed to start (logs: $out, $logfile)"
    fi
    until "$@" >/dev/null 2>&1; do
        # Dead (no live pid after a 3 s grace for the pid file to appear after
        # forking) or not ready within 30 s: stop with its log.
        if ((SECONDS - started >= 30)) ||
            { ((SECONDS - started >= 3)) && ! pid_from_file "$pidfile" "$name" >/dev/null; }; then
            tail -n 10 "$out" "$logfile" >&2 || true
            die "$name did not come up (logs: $out, $logfile)"
        fi
        sleep 0.2
    done
}

restart=0
if ((config_changed)); then
    restart=1
fi
for d in slurmctld:"$CTLD_PID" slurmd:"$SLURMD_PID"; do
    if pid="$(pid_from_file "${d#*:}" "${d%%:*}")" && binary_replaced "$pid"; then
        log "${d%%:*} binary was upgraded"
        restart=1
    fi
done
if ((restart)); then
    # Not `scontrol reconfigure`: node CPUs/memory, auth and plugin changes
    # need a real restart, and a restart takes only a few seconds here.
    stop_by_pidfile "$SLURMD_PID" slurmd
    stop_by_pidfile "$CTLD_PID" slurmctld
fi

if ! pid_from_file "$CTLD_PID" slurmctld >/dev/null; then
    start_daemon slurmctld "$CTLD_PID" "$CTLD_LOG" ctld_up
fi
wait_for 30 "slurmctld to answer (scontrol ping)" ctld_up \
    || { tail -n 10 "$CTLD_LOG" >&2; die "slurmctld runs but does not answer"; }

if ! pid_from_file "$SLURMD_PID" slurmd >/dev/null; then
    start_daemon slurmd "$SLURMD_PID" "$SLURMD_LOG" pid_from_file "$SLURMD_PID" slurmd
fi

# --- node state ----------------------------------------------------------------
# %T: long state name with suffix ("*": not responding, "~": powered off).
node_state() {
    sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1
}
node_reason() {
    sinfo -h -N -n "$NODE" -o '%E' 2>/dev/null | head -n 1
}

deadline=$((SECONDS + 60))
resumed=0
while :; do
    state="$(node_state)"
    case "$state" in
        idle | mixed | allocated | completing)
            break
            ;;
        *'*')
            : # slurmd has not registered (yet): keep polling
            ;;
        drain* | down | fail*)
            # Left over from earlier trouble (a failed Prolog drains the node).
            # Resume once; if it drains again the smoke test below says why.
            if ((resumed == 0)); then
                log "node $NODE is $state (reason: $(node_reason)): resuming it"
                scontrol update nodename="$NODE" state=resume
                resumed=1
            fi
            ;;
        inval*)
            die "node $NODE is INVALID: $(node_reason) (its slurm.conf line exceeds what slurmd measured?)"
            ;;
    esac
    if ((SECONDS >= deadline)); then
        tail -n 10 "$SLURMD_LOG" >&2 || true
        die "node $NODE not usable after 60 s: state '$state', reason '$(node_reason)'"
    fi
    sleep 0.2
done

# --- smoke test: a real job as a test user ----------------------------------------
# Runs the Prolog and Epilog too, so a broken hook fails provisioning here
# (and the node's drain reason below tells which) rather than in the tests.
smoke_user="${TESTBED_USERS[0]}"
out="$(as_user "$smoke_user" timeout 60 srun --quiet -J testbed-smoke -N1 -n1 -t 1 id -un 2>&1)" || {
    printf '%s\n' "$out" >&2
    tail -n 10 "$SLURMD_LOG" >&2 || true
    die "a trivial srun as $smoke_user failed; node $NODE is '$(node_state)' (reason: '$(node_reason)')"
}
[[ "$out" == "$smoke_user" ]] || die "srun as $smoke_user printed '$out', expected '$smoke_user'"
# Hand the tests an idle node: the smoke job's Epilog may still be running.
node_settled() {
    [[ "$(node_state)" != completing ]]
}
wait_for 30 "the smoke job's Epilog to finish" node_settled \
    || die "node $NODE stays 'completing' after the smoke job: is the Epilog hanging? (see $SLURMD_LOG)"
state="$(node_state)"
case "$state" in
    # '+' marks a node with a further flag (e.g. planned by backfill) while other jobs, such
    # as a running demo session, hold it: still healthy.
    idle | mixed | allocated | idle+ | mixed+ | allocated+) ;;
    *) die "node $NODE is '$state' after the smoke job (reason: '$(node_reason)'); a failing Epilog drains it" ;;
esac
log "slurm $SLURM_VERSION: node $NODE $state, srun as $smoke_user ok"
